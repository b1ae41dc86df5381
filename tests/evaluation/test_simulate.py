"""The demo-world A/B simulation: offline estimates against the click model's truth."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.evaluation.estimators import DirectMethod, DoublyRobust, SelfNormalizedIPW
from recsys.evaluation.simulate import (
    ARMS,
    SimulationConfig,
    SimulationOutput,
    coverage_over_seeds,
    hero_attributes,
    run_simulation,
    simulate_logs,
)


@pytest.fixture(scope="module")
def simulation() -> SimulationOutput:
    estimators = {"snipw": SelfNormalizedIPW(), "dr": DoublyRobust(), "dm": DirectMethod()}
    return run_simulation(SimulationConfig(seed=0, n_bootstrap=200), estimators=estimators)


def test_snipw_and_dr_intervals_cover_each_arms_true_ctr(simulation: SimulationOutput) -> None:
    for arm in ARMS:
        for name in ("snipw", "dr"):
            e = simulation.evaluation.arms[arm].estimates[name]
            assert e.covers(simulation.truth[arm]), (arm, name, e, simulation.truth[arm])
            assert e.relative_error(simulation.truth[arm]) < 0.25


def test_personalized_beats_segment_beats_generic(simulation: SimulationOutput) -> None:
    t = simulation.truth
    assert t["personalized"] > 2 * t["segment"]
    assert t["segment"] > t["generic"]
    lift = simulation.evaluation.arms["personalized"].lift["dr"]
    assert lift[1] > 1.0  # DR's lower bound: more than double the generic hero's CTR


def test_json_shape(simulation: SimulationOutput) -> None:
    out = simulation.to_json()
    assert set(out) == {"arms"} and set(out["arms"]) == set(ARMS)
    for arm in ARMS:
        assert set(out["arms"][arm]) == {"truth", "estimates"}
        assert {"snipw", "dr"} <= set(out["arms"][arm]["estimates"])
        assert set(out["arms"][arm]["estimates"]["dr"]) == {"value", "ci_low", "ci_high"}


def test_logs_are_seeded_and_propensities_explore() -> None:
    cfg = SimulationConfig(seed=3, n_users=100, n_products=60, n_rounds=2000, epsilon=0.3)
    a, b = simulate_logs(cfg), simulate_logs(cfg)
    np.testing.assert_array_equal(a.logs.chosen, b.logs.chosen)
    np.testing.assert_array_equal(a.logs.reward, b.logs.reward)
    assert a.logs.pscore.min() >= 0.1 - 1e-12  # epsilon / 3 arms
    np.testing.assert_allclose(a.logs.behaviour_dist.sum(axis=1), 1.0)
    np.testing.assert_allclose(a.logs.pscore, a.logs.behaviour_dist[np.arange(2000), a.logs.chosen])


def test_hero_attributes_follow_the_taste() -> None:
    taste = {
        "interests": [{"colour": "red", "group": "home", "weight": 1.0}],
        "categories": {"mug": 0.6, "lamp": 0.3, "chair": 0.1, "t-shirt": 0.0},
        "patterns": {"striped": 0.7, "solid": 0.3},
        "materials": {"metal": 0.6, "ceramic": 0.4},
        "styles": {"vintage": 1.0},
        "settings": {"kitchen": 1.0},
        "lighting": {"neon": 1.0},
    }
    heroes, segment = hero_attributes([taste])
    p = heroes[0]["personalized"]
    assert p == {
        "colour": "red",
        "category": "mug",
        "pattern": "striped",
        "material": "metal",
        "style": "vintage",
        "setting": "kitchen",
        "lighting": "neon",
    }
    assert heroes[0]["generic"]["colour"] == "white"
    assert segment.tolist() == [2]  # "home" is the third group


def test_invalid_config() -> None:
    with pytest.raises(ValueError, match="epsilon must be in"):
        SimulationConfig(epsilon=0.0)
    with pytest.raises(ValueError, match="n_rounds must be >= 1"):
        SimulationConfig(n_rounds=0)


def test_coverage_over_seeds_reports_rates() -> None:
    cfg = SimulationConfig(seed=5, n_users=60, n_products=30, n_rounds=1500, n_bootstrap=20)
    cov = coverage_over_seeds(cfg, 2)
    assert cov["n_intervals"] == 6
    assert set(cov["coverage"]) >= {"snipw", "dr"}
    assert all(0.0 <= v <= 1.0 for v in cov["coverage"].values())
    with pytest.raises(ValueError, match="n_seeds must be >= 1"):
        coverage_over_seeds(cfg, 0)
