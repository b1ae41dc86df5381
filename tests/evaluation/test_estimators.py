"""Off-policy estimators: known answers and input validation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from recsys.evaluation.estimators import (
    ClippedIPW,
    DirectMethod,
    DoublyRobust,
    EstimateOutput,
    InverseProbabilityWeighting,
    MarginalizedIPW,
    RegressionModel,
    ReplayMethod,
    SelfNormalizedIPW,
    SwitchDoublyRobust,
    check_logged_feedback,
    effective_sample_size,
)

N_ACTIONS = 5
# four equally likely discrete contexts make the policy value exact
CONTEXTS = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [-1.0, 0.5]])
THETA = np.array([[0.5, -0.3], [-0.4, 0.6], [0.2, 0.2], [0.9, -0.8], [-0.1, 0.1]])
BIAS = np.array([-1.0, -1.5, -0.5, -2.0, -1.2])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def q_true(x: np.ndarray) -> np.ndarray:
    """True CTR per (context, action), shape (n, N_ACTIONS)."""
    return 1.0 / (1.0 + np.exp(-(x @ THETA.T + BIAS)))


def behaviour(x: np.ndarray) -> np.ndarray:
    return _softmax(x @ np.array([[1.0, 0.0, -1.0, 0.5, 0.0], [0.0, 1.0, 0.5, -1.0, 0.0]]))


def evaluation(x: np.ndarray) -> np.ndarray:
    return _softmax(2.0 * q_true(x) * 5)


TRUE_VALUE = float(np.mean(np.sum(evaluation(CONTEXTS) * q_true(CONTEXTS), axis=1)))


@dataclass
class Logs:
    context: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    action_dist: np.ndarray
    behaviour_dist: np.ndarray

    def kwargs(self) -> dict[str, Any]:
        return {
            "reward": self.reward,
            "action": self.action,
            "pscore": self.pscore,
            "action_dist": self.action_dist,
        }


def make_logs(n: int, seed: int) -> Logs:
    rng = np.random.default_rng(seed)
    x = CONTEXTS[rng.integers(0, len(CONTEXTS), size=n)]
    pb = behaviour(x)
    a = (rng.random(n)[:, None] > np.cumsum(pb, axis=1)).sum(axis=1)
    r = (rng.random(n) < q_true(x)[np.arange(n), a]).astype(float)
    return Logs(x, a, r, pb[np.arange(n), a], evaluation(x)[:, :, None], pb[:, :, None])


def test_ipw_is_unbiased_over_seeds() -> None:
    ipw = InverseProbabilityWeighting()
    estimates = np.array(
        [ipw.estimate_policy_value(**make_logs(400, seed).kwargs()) for seed in range(300)]
    )
    se = estimates.std(ddof=1) / math.sqrt(len(estimates))
    assert abs(estimates.mean() - TRUE_VALUE) < 3 * se
    # and the test has power: the behaviour policy's value is far from the evaluated one
    behaviour_value = float(np.mean(np.sum(behaviour(CONTEXTS) * q_true(CONTEXTS), axis=1)))
    assert abs(behaviour_value - TRUE_VALUE) > 10 * se


def test_dr_is_unbiased_with_a_wrong_reward_model() -> None:
    dr = DoublyRobust()
    wrong = np.full((400, N_ACTIONS, 1), 0.3)
    estimates = np.array(
        [
            dr.estimate_policy_value(**make_logs(400, s).kwargs(), estimated_rewards=wrong)
            for s in range(300)
        ]
    )
    se = estimates.std(ddof=1) / math.sqrt(len(estimates))
    assert abs(estimates.mean() - TRUE_VALUE) < 3 * se


def test_snipw_equals_ipw_when_weights_average_one() -> None:
    # uniform logging over 2 actions, evaluation always picks action 0, half the rounds log 0:
    # weights are 2, 0, 2, 0, ... with mean exactly 1
    n = 200
    rng = np.random.default_rng(0)
    action = np.tile([0, 1], n // 2)
    reward = (rng.random(n) < 0.3).astype(float)
    dist = np.zeros((n, 2, 1))
    dist[:, 0, 0] = 1.0
    kw: dict[str, Any] = {
        "reward": reward,
        "action": action,
        "pscore": np.full(n, 0.5),
        "action_dist": dist,
    }
    ipw = InverseProbabilityWeighting().estimate_policy_value(**kw)
    snipw = SelfNormalizedIPW().estimate_policy_value(**kw)
    assert snipw == pytest.approx(ipw, abs=1e-12)
    assert ipw == pytest.approx(reward[action == 0].mean())
    # replay with uniform logging and a deterministic policy: mean reward over matches
    assert ReplayMethod().estimate_policy_value(**kw) == pytest.approx(ipw)


def test_dr_equals_dm_when_reward_model_is_exact() -> None:
    logs = make_logs(500, 1)
    q = q_true(logs.context)
    # deterministic rewards equal to the model: every residual is 0
    reward = q[np.arange(500), logs.action]
    kw = {**logs.kwargs(), "reward": reward, "estimated_rewards": q[:, :, None]}
    dm = DirectMethod().estimate_policy_value(**kw)
    dr = DoublyRobust().estimate_policy_value(**kw)
    switch = SwitchDoublyRobust(switch_threshold=1.0).estimate_policy_value(**kw)
    assert dr == pytest.approx(dm, abs=1e-12)
    assert switch == pytest.approx(dm, abs=1e-12)
    expected = np.mean(np.sum(evaluation(logs.context) * q, axis=1))
    assert dm == pytest.approx(expected, abs=1e-12)


def test_switch_dr_interpolates_between_dm_and_dr() -> None:
    logs = make_logs(500, 2)
    q = np.full((500, N_ACTIONS, 1), 0.2)
    kw = {**logs.kwargs(), "estimated_rewards": q}
    dm = DirectMethod().estimate_policy_value(**kw)
    dr = DoublyRobust().estimate_policy_value(**kw)
    assert SwitchDoublyRobust(switch_threshold=0.0).estimate_policy_value(**kw) == pytest.approx(dm)
    assert SwitchDoublyRobust(switch_threshold=1e9).estimate_policy_value(**kw) == pytest.approx(dr)


def test_clipping_bounds_the_weights() -> None:
    logs = make_logs(2000, 3)
    raw = InverseProbabilityWeighting().importance_weights(**logs.kwargs())
    assert raw.max() > 3.0  # so clipping has something to do
    clipped = ClippedIPW(max_weight=3.0)
    w = clipped.importance_weights(**logs.kwargs())
    assert w.max() <= 3.0
    np.testing.assert_allclose(w, np.minimum(raw, 3.0))
    out = clipped.estimate_interval(**logs.kwargs(), n_bootstrap=50, random_state=0)
    assert out.max_weight is not None and out.max_weight <= 3.0
    assert out.value == pytest.approx(np.mean(w * logs.reward))
    dr = DoublyRobust(max_weight=2.0).importance_weights(**logs.kwargs())
    assert dr.max() <= 2.0


def test_dm_with_a_fitted_reward_model_is_close() -> None:
    # reward model well specified: logit = x.w + b_a
    rng = np.random.default_rng(5)
    n = 4000
    x = rng.normal(size=(n, 2))
    b = np.array([-2.0, -1.0, 0.0])
    logit = (x @ np.array([0.8, -0.5]))[:, None] + b[None, :]
    q = 1 / (1 + np.exp(-logit))
    a = rng.integers(0, 3, size=n)
    r = (rng.random(n) < q[np.arange(n), a]).astype(float)
    pi_e = np.zeros((n, 3, 1))
    pi_e[:, 2, 0] = 1.0
    truth = float(q[:, 2].mean())
    kw = {
        "reward": r,
        "action": a,
        "pscore": np.full(n, 1 / 3),
        "action_dist": pi_e,
        "context": x,
    }
    dm = DirectMethod(reward_model=RegressionModel(n_folds=1))
    assert dm.estimate_policy_value(**kw) == pytest.approx(truth, abs=0.03)
    dr = DoublyRobust(reward_model=RegressionModel(n_folds=2))
    out = dr.estimate_interval(**kw, n_bootstrap=200, random_state=1)
    assert out.ci_low <= truth <= out.ci_high
    with pytest.raises(ValueError, match="needs estimated_rewards"):
        DirectMethod(reward_model=None).estimate_policy_value(**kw)


def test_mips_identity_embedding_equals_ipw_and_shared_embedding_cuts_variance() -> None:
    logs = make_logs(500, 4)
    ident = np.arange(N_ACTIONS)
    mips = MarginalizedIPW().estimate_policy_value(
        **logs.kwargs(), behavior_action_dist=logs.behaviour_dist, action_embedding=ident
    )
    ipw = InverseProbabilityWeighting().estimate_policy_value(**logs.kwargs())
    assert mips == pytest.approx(ipw, abs=1e-12)

    # 10 actions in 2 embedding groups; reward depends on the group only
    n_act, n = 10, 300
    group = np.repeat([0, 1], 5)
    ctr = np.where(group == 0, 0.1, 0.4)
    pb = np.linspace(1.0, 3.0, n_act)
    pb /= pb.sum()
    pe = np.r_[np.full(5, 0.02), np.array([0.5, 0.2, 0.1, 0.1, 0.0])]
    truth = float(pe @ ctr)
    est_mips, est_ipw = [], []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        a = rng.choice(n_act, size=n, p=pb)
        r = (rng.random(n) < ctr[a]).astype(float)
        kw: dict[str, Any] = {
            "reward": r,
            "action": a,
            "pscore": pb[a],
            "action_dist": np.broadcast_to(pe[None, :, None], (n, n_act, 1)),
        }
        est_ipw.append(InverseProbabilityWeighting().estimate_policy_value(**kw))
        est_mips.append(
            MarginalizedIPW().estimate_policy_value(
                **kw,
                behavior_action_dist=np.broadcast_to(pb[None, :, None], (n, n_act, 1)),
                action_embedding=group,
            )
        )
    m, i = np.array(est_mips), np.array(est_ipw)
    assert abs(m.mean() - truth) < 3 * m.std(ddof=1) / math.sqrt(len(m))
    assert m.std() < 0.7 * i.std()


def test_interval_is_seeded_and_contains_the_estimate() -> None:
    logs = make_logs(1000, 6)
    est = SelfNormalizedIPW()
    a = est.estimate_interval(**logs.kwargs(), n_bootstrap=300, alpha=0.1, random_state=7)
    b = est.estimate_interval(**logs.kwargs(), n_bootstrap=300, alpha=0.1, random_state=7)
    assert isinstance(a, EstimateOutput)
    assert a == b
    assert a.ci_low <= a.value <= a.ci_high
    assert a.estimator == "snipw" and a.n_rounds == 1000 and a.alpha == 0.1
    w = est.importance_weights(**logs.kwargs())
    assert a.effective_sample_size == pytest.approx(effective_sample_size(w))
    assert 0 < a.effective_sample_size <= 1000
    assert a.covers(a.value) and a.relative_error(a.value) == 0.0
    dm = DirectMethod().estimate_interval(
        **logs.kwargs(), estimated_rewards=np.full((1000, N_ACTIONS, 1), 0.1), n_bootstrap=20
    )
    assert dm.effective_sample_size == 1000 and dm.max_weight is None


def test_interval_coverage_over_seeds() -> None:
    """95% intervals of SNIPW cover the true value in most seeded runs."""
    est = SelfNormalizedIPW()
    hits = [
        est.estimate_interval(**make_logs(500, s).kwargs(), n_bootstrap=200, random_state=s).covers(
            TRUE_VALUE
        )
        for s in range(40)
    ]
    assert np.mean(hits) >= 0.85


def test_effective_sample_size() -> None:
    assert effective_sample_size(np.ones(10)) == pytest.approx(10)
    assert effective_sample_size(np.r_[np.zeros(9), 5.0]) == pytest.approx(1)
    assert effective_sample_size(np.zeros(3)) == 0.0


# --------------------------------------------------------------------------- validation


def _valid(n: int = 4) -> dict[str, Any]:
    return {
        "reward": np.array([0.0, 1.0, 0.0, 1.0])[:n],
        "action": np.array([0, 1, 1, 0])[:n],
        "pscore": np.full(n, 0.5),
        "action_dist": np.full((n, 2, 1), 0.5),
    }


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"pscore": np.array([0.5, 0.0, 0.5, 0.5])},
            r"pscore must be in \(0, 1\].*got 0.0 at index 1",
        ),
        ({"pscore": np.array([0.5, 1.5, 0.5, 0.5])}, r"pscore must be in \(0, 1\].*got 1.5"),
        ({"pscore": np.full(3, 0.5)}, "pscore must have the same length as reward"),
        ({"action_dist": np.full((4, 2, 1), 0.4)}, "action_dist must sum to 1.*got 0.8"),
        ({"action_dist": np.full((3, 2, 1), 0.5)}, "action_dist must have n_rounds=4"),
        ({"action_dist": np.full((4, 2, 1, 1), 0.5)}, "action_dist must have shape"),
        (
            {"reward": np.array([0.0, np.nan, 0.0, 1.0])},
            "reward must be finite, got nan at index 1",
        ),
        ({"action": np.array([0, 2, 1, 0])}, r"action must be in \[0, n_actions=2\)"),
        ({"action": np.array([0.5, 1, 1, 0])}, "action must hold integers"),
        ({"position": np.array([0, 1, 0, 0])}, r"position must be in \[0, len_list=1\)"),
        ({"reward": np.zeros((4, 1))}, "reward must be a 1-D array"),
        (
            {
                "reward": np.zeros(0),
                "action": np.zeros(0, int),
                "pscore": np.zeros(0),
                "action_dist": np.zeros((0, 2, 1)),
            },
            "at least one round",
        ),
    ],
)
def test_invalid_input_raises_clear_error(change: dict[str, np.ndarray], match: str) -> None:
    kw = {**_valid(), **change}
    with pytest.raises(ValueError, match=match):
        InverseProbabilityWeighting().estimate_policy_value(**kw)


def test_invalid_hyperparameters_and_arguments() -> None:
    with pytest.raises(ValueError, match="max_weight must be finite and > 0"):
        ClippedIPW(max_weight=math.inf)
    with pytest.raises(ValueError, match="max_weight must be > 0"):
        InverseProbabilityWeighting(max_weight=0.0)
    with pytest.raises(ValueError, match="switch_threshold must be >= 0"):
        SwitchDoublyRobust(switch_threshold=-1.0)
    with pytest.raises(ValueError, match="n_folds must be an integer >= 1"):
        RegressionModel(n_folds=0)
    with pytest.raises(ValueError, match="reward_model must be a RegressionModel"):
        DirectMethod(reward_model="logistic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha must be in"):
        InverseProbabilityWeighting().estimate_interval(**_valid(), alpha=1.5)
    with pytest.raises(ValueError, match="n_bootstrap must be an integer >= 10"):
        InverseProbabilityWeighting().estimate_interval(**_valid(), n_bootstrap=2)
    with pytest.raises(TypeError, match="unexpected keyword"):
        InverseProbabilityWeighting().estimate_policy_value(**_valid(), action_embedding=[0, 1])
    with pytest.raises(ValueError, match="estimated_rewards must have the shape"):
        DoublyRobust().estimate_policy_value(**_valid(), estimated_rewards=np.zeros((4, 3, 1)))
    with pytest.raises(ValueError, match="mipw needs behavior_action_dist"):
        MarginalizedIPW().estimate_policy_value(**_valid())


def test_two_dimensional_action_dist_is_len_list_one() -> None:
    fb = check_logged_feedback(
        reward=[1.0, 0.0], action=[0, 1], pscore=[0.5, 0.5], action_dist=np.full((2, 2), 0.5)
    )
    assert fb.action_dist.shape == (2, 2, 1) and fb.position.tolist() == [0, 0]


def test_mips_values_a_creative_never_logged() -> None:
    """A new creative (pi_b = 0) whose embedding ("matches the shopper") was logged."""
    n, n_act = 600, 4
    # per context type, which actions match the shopper; action 3 (new) always matches
    matches = np.array([[1, 0, 0, 1], [1, 1, 0, 1]])
    pb = np.array([1 / 3, 1 / 3, 1 / 3, 0.0])
    est_mips, est_ipw = [], []
    for seed in range(100):
        rng = np.random.default_rng(seed)
        ctx = rng.integers(0, 2, size=n)
        a = rng.integers(0, 3, size=n)  # uniform over the three logged creatives
        emb = matches[ctx]  # (n, n_act) codes
        r = (rng.random(n) < np.where(emb[np.arange(n), a] == 1, 0.3, 0.05)).astype(float)
        pe = np.zeros((n, n_act, 1))
        pe[:, 3, 0] = 1.0
        kw: dict[str, Any] = {"reward": r, "action": a, "pscore": pb[a], "action_dist": pe}
        behaviour = np.broadcast_to(pb[None, :, None], (n, n_act, 1))
        est_mips.append(
            MarginalizedIPW().estimate_policy_value(
                **kw, behavior_action_dist=behaviour, context_action_embedding=emb
            )
        )
        est_ipw.append(InverseProbabilityWeighting().estimate_policy_value(**kw))
    m = np.array(est_mips)
    assert abs(m.mean() - 0.3) < 3 * m.std(ddof=1) / math.sqrt(len(m))
    assert max(est_ipw) == 0.0  # IPS cannot see an action it never logged
    with pytest.raises(ValueError, match="disagrees with pscore"):
        MarginalizedIPW().estimate_policy_value(
            **{**kw, "pscore": np.full(n, 0.5)},
            behavior_action_dist=behaviour,
            context_action_embedding=emb,
        )
    with pytest.raises(ValueError, match="exactly one of"):
        MarginalizedIPW().estimate_policy_value(**kw, behavior_action_dist=behaviour)
