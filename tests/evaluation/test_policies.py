"""Exploration policies: distributions, propensities, and evaluating one from another's logs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from recsys.evaluation.estimators import InverseProbabilityWeighting, SelfNormalizedIPW
from recsys.policies import (
    EpsilonGreedyPolicy,
    ExplorationPolicy,
    SoftmaxPolicy,
    ThompsonSamplingPolicy,
    UniformPolicy,
    make_policy,
)

CLICKS = np.array([3.0, 10.0, 1.0, 0.0])
TRIALS = np.array([100.0, 100.0, 50.0, 0.0])

POLICIES: list[ExplorationPolicy] = [
    UniformPolicy(),
    EpsilonGreedyPolicy(epsilon=0.2),
    SoftmaxPolicy(temperature=0.05),
    ThompsonSamplingPolicy(n_samples=4000, min_propensity=0.01, seed=3),
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_distribution_sums_to_one_and_choice_propensity_matches(policy: ExplorationPolicy) -> None:
    dist = policy.action_distribution(CLICKS, trials=TRIALS)
    assert dist.shape == (4,) and dist.dtype == np.float64
    assert dist.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(dist > 0)
    rng = np.random.default_rng(0)
    counts = np.zeros(4)
    for _ in range(3000):
        index, propensity, d = policy.choose(CLICKS, trials=TRIALS, rng=rng)
        assert propensity == d[index]
        np.testing.assert_array_equal(d, dist)
        counts[index] += 1
    # empirical frequencies match the distribution (binomial 4-sigma band)
    sd = np.sqrt(dist * (1 - dist) / 3000)
    assert np.all(np.abs(counts / 3000 - dist) < 4 * sd + 1e-3)


def test_known_distributions() -> None:
    np.testing.assert_allclose(UniformPolicy().action_distribution([5.0, 1.0]), [0.5, 0.5])
    eg = EpsilonGreedyPolicy(epsilon=0.3).action_distribution([0.1, 0.5, 0.2])
    np.testing.assert_allclose(eg, [0.1, 0.8, 0.1])
    # ties share the greedy mass
    tie = EpsilonGreedyPolicy(epsilon=0.0).action_distribution([1.0, 1.0, 0.0])
    np.testing.assert_allclose(tie, [0.5, 0.5, 0.0])
    sm = SoftmaxPolicy(temperature=1.0).action_distribution([0.0, np.log(3.0)])
    np.testing.assert_allclose(sm, [0.25, 0.75])
    # counts -> smoothed CTR (c+1)/(t+2): arm 1 is best among the tried; untried scores 0.5
    eg_counts = EpsilonGreedyPolicy(epsilon=0.0).action_distribution(CLICKS[:3], trials=TRIALS[:3])
    np.testing.assert_allclose(eg_counts, [0, 1, 0])
    eg_untried = EpsilonGreedyPolicy(epsilon=0.0).action_distribution(CLICKS, trials=TRIALS)
    np.testing.assert_allclose(eg_untried, [0, 0, 0, 1])


def test_thompson_is_seeded_and_floored() -> None:
    ts = ThompsonSamplingPolicy(n_samples=2000, seed=1, min_propensity=0.02)
    a = ts.action_distribution(CLICKS, trials=TRIALS)
    b = ts.action_distribution(CLICKS, trials=TRIALS)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0.02 - 1e-12
    assert int(np.argmax(a)) == 3  # the untried candidate's Beta(1, 1) wins most draws
    tried = ts.action_distribution(CLICKS[:3], trials=TRIALS[:3])
    assert int(np.argmax(tried)) == 1
    # a clear winner takes almost everything without a floor
    sure = ThompsonSamplingPolicy(n_samples=2000, seed=1).action_distribution(
        [500.0, 10.0], trials=[1000.0, 1000.0]
    )
    assert sure[0] > 0.999
    with pytest.raises(ValueError, match="needs trials"):
        ts.action_distribution(CLICKS)
    with pytest.raises(ValueError, match=r"min_propensity=0\.3 is too large"):
        ThompsonSamplingPolicy(min_propensity=0.3).action_distribution(CLICKS, trials=TRIALS)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="epsilon must be in"):
        EpsilonGreedyPolicy(epsilon=1.5)
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        SoftmaxPolicy(temperature=0.0)
    with pytest.raises(ValueError, match="n_samples must be >= 1"):
        ThompsonSamplingPolicy(n_samples=0)
    with pytest.raises(ValueError, match="scores must have shape"):
        UniformPolicy().action_distribution(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="scores must be finite"):
        SoftmaxPolicy().action_distribution([np.nan, 1.0])
    with pytest.raises(ValueError, match="0 <= scores <= trials"):
        EpsilonGreedyPolicy().action_distribution([5.0], trials=[2.0])
    with pytest.raises(ValueError, match="rng must be a numpy Generator"):
        UniformPolicy().choose([1.0, 2.0], rng=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("greedy")
    assert isinstance(make_policy("epsilon-greedy", epsilon=0.1), EpsilonGreedyPolicy)


def test_one_policy_evaluated_from_another_policys_logs() -> None:
    """Log epsilon-greedy on a contextual bandit, estimate softmax's value with IPS / SNIPS."""
    rng = np.random.default_rng(11)
    n, k = 8_000, 3
    scores = rng.normal(size=(n, k))  # per-round context scores the policies see
    ctr = 1 / (1 + np.exp(-(scores - 2.0)))
    logger = EpsilonGreedyPolicy(epsilon=0.3)
    target = SoftmaxPolicy(temperature=0.5)
    action = np.zeros(n, dtype=np.int64)
    pscore = np.zeros(n)
    target_dist = np.zeros((n, k, 1))
    for i in range(n):
        index, propensity, _ = logger.choose(scores[i], rng=rng)
        action[i], pscore[i] = index, propensity
        target_dist[i, :, 0] = target.action_distribution(scores[i])
    reward = (rng.random(n) < ctr[np.arange(n), action]).astype(float)
    truth = float(np.mean(np.sum(target_dist[:, :, 0] * ctr, axis=1)))
    kw: dict[str, Any] = {
        "reward": reward,
        "action": action,
        "pscore": pscore,
        "action_dist": target_dist,
    }
    for est in (InverseProbabilityWeighting(), SelfNormalizedIPW()):
        out = est.estimate_interval(**kw, n_bootstrap=200, random_state=0)
        assert out.ci_low <= truth <= out.ci_high, (est.name, out, truth)
        assert out.relative_error(truth) < 0.1
