"""The off-policy check on the real Open Bandit Dataset (../shared/data/obd).

The uniform-random policy's CTR is estimated from the Bernoulli-TS logs and compared with its
on-policy CTR. The small OBD has 10,000 rounds and about 50 clicks per log, so the truth
itself has a relative standard error near 15%; the bounds below allow for that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.evaluation.obd import OBDExperimentOutput, load_obd, run_obd_experiment

N_ITEMS = {"men": 34, "women": 46}


@pytest.fixture(scope="module", params=["men", "women"])
def experiment(request: pytest.FixtureRequest, obd_path: Path) -> OBDExperimentOutput:
    return run_obd_experiment(
        obd_path, campaign=request.param, n_bootstrap=200, n_folds=1, random_state=0
    )


def test_loader(obd_path: Path) -> None:
    logs = load_obd(obd_path, behavior_policy="bts", campaign="men")
    assert logs.n_rounds == 10_000 and logs.n_actions == N_ITEMS["men"] and logs.len_list == 3
    assert set(np.unique(logs.position)) == {0, 1, 2}
    assert np.all((logs.pscore > 0) & (logs.pscore <= 1))
    assert logs.context.shape[0] == 10_000 and logs.action_context.shape[0] == N_ITEMS["men"]
    random = load_obd(obd_path, behavior_policy="random", campaign="women")
    # the uniform-random logger's propensity is 1 / n_items
    np.testing.assert_allclose(random.pscore, 1 / N_ITEMS["women"])
    with pytest.raises(FileNotFoundError, match="Open Bandit Dataset folder not found"):
        load_obd(obd_path / "nope", behavior_policy="bts", campaign="men")
    with pytest.raises(ValueError, match="campaign must be one of"):
        load_obd(obd_path, behavior_policy="bts", campaign="kids")


def test_obd_estimates_are_sane(experiment: OBDExperimentOutput, obd_path: Path) -> None:
    truth_logs = load_obd(obd_path, behavior_policy="random", campaign=experiment.campaign)
    assert experiment.truth == pytest.approx(truth_logs.reward.mean())
    lo, hi = experiment.truth_ci
    assert lo < experiment.truth < hi
    est = experiment.estimates
    assert {"ipw", "snipw", "dm", "dr", "switch_dr", "clipped_ipw"} <= set(est)
    for name, e in est.items():
        assert np.isfinite(e.value) and e.ci_low <= e.value <= e.ci_high, name
        assert 0 < e.effective_sample_size <= experiment.n_rounds
    rel = experiment.relative_errors()
    # SNIPW / DR within 60% of a truth that is itself +-30% (95%); switch-DR within 30%
    assert rel["snipw"] < 0.6 and rel["dr"] < 0.6
    assert rel["switch_dr"] < 0.3
    for name in ("snipw", "dr", "switch_dr"):
        assert est[name].covers(experiment.truth), (name, est[name], experiment.truth)
    # clipping cannot raise the largest weight above its bound, and helps the ESS
    assert est["clipped_ipw"].max_weight is not None and est["clipped_ipw"].max_weight <= 20.0
    assert est["clipped_ipw"].effective_sample_size >= est["ipw"].effective_sample_size


def test_json_shape(experiment: OBDExperimentOutput) -> None:
    out = experiment.to_json()
    assert set(out) == {"campaign", "evaluated_policy", "logs_from", "truth", "estimates"}
    assert out["evaluated_policy"] == "random" and out["logs_from"] == "bts"
    for name in ("ipw", "snipw", "dm", "dr"):
        assert set(out["estimates"][name]) == {"value", "ci_low", "ci_high", "relative_error"}
