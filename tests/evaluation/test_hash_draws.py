"""The storefront's cheap draws (#16): ``hash_uniform`` is a deterministic uniform in [0, 1),
``sample_index`` is the inverse-CDF sampling ``choose`` always made, and the hero policy
adapter's choices follow its logged propensities."""

from __future__ import annotations

import numpy as np

from api.services.policy import ArmStats, RecsysPolicyAdapter
from recsys.policies import EpsilonGreedyPolicy, SoftmaxPolicy, hash_uniform, sample_index


def test_hash_uniform_is_deterministic_and_uniform() -> None:
    draws = np.array([hash_uniform(7, n, "u1", "banner") for n in range(20_000)])
    assert draws.min() >= 0.0 and draws.max() < 1.0
    assert hash_uniform(7, 3, "u1", "banner") == draws[3]
    assert hash_uniform(8, 3, "u1", "banner") != draws[3]
    assert hash_uniform(7, 3, "u2", "banner") != draws[3]
    assert hash_uniform(7, 3, "u1", "story") != draws[3]
    # 10 bins of 2,000 expected: the binomial sd is 42, so +-200 is ~5 sd.
    counts = np.histogram(draws, bins=10, range=(0.0, 1.0))[0]
    assert np.all(np.abs(counts - 2000) < 200), counts
    assert abs(draws.mean() - 0.5) < 0.01
    # Successive draws are not correlated (lag-1 correlation of a uniform sequence ~ 0).
    assert abs(np.corrcoef(draws[:-1], draws[1:])[0, 1]) < 0.03


def _numpy_inverse_cdf(dist: np.ndarray, u: float) -> int:
    """The sampling ``ExplorationPolicy.choose`` made before #16 (numpy searchsorted)."""
    cdf = np.cumsum(dist)
    index = min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), dist.shape[0] - 1)
    while dist[index] == 0.0 and index > 0:
        index -= 1
    return index


def test_sample_index_equals_the_numpy_inverse_cdf() -> None:
    rng = np.random.default_rng(0)
    for _ in range(2000):
        n = int(rng.integers(1, 7))
        dist = rng.random(n) * (rng.random(n) > 0.3)  # some zero-probability slots
        if dist.sum() == 0:
            dist[0] = 1.0
        dist = dist / dist.sum()
        u = float(rng.random())
        got = sample_index(np.cumsum(dist).tolist(), dist.tolist(), u)
        assert got == _numpy_inverse_cdf(dist, u)
        assert dist[got] > 0.0
    assert sample_index([0.5, 1.0], [0.5, 0.5], 0.0) == 0
    assert sample_index([0.5, 1.0], [0.5, 0.5], 0.5) == 1
    assert sample_index([0.0, 1.0, 1.0], [0.0, 1.0, 0.0], 0.9999) == 1


def test_adapter_choices_follow_the_logged_propensities() -> None:
    arms = [ArmStats(2.0, 98.0), ArmStats(5.0, 95.0), ArmStats(1.0, 99.0)]
    for policy in (EpsilonGreedyPolicy(epsilon=0.2), SoftmaxPolicy(temperature=0.02)):
        adapter = RecsysPolicyAdapter(policy)
        n = 30_000
        picks = np.zeros(3)
        logged = None
        for i in range(n):
            d = adapter.decide(arms, hash_uniform(0, i, "u1", "banner"))
            picks[d.index] += 1
            assert d.propensity == d.distribution[d.index]
            logged = d.distribution
        assert logged is not None and abs(float(logged.sum()) - 1.0) < 1e-12
        # The exact distribution of the wrapped policy (computed once, kept per arm set).
        clicks = np.array([a.alpha for a in arms])
        trials = clicks + np.array([a.beta for a in arms])
        want = policy.action_distribution(clicks, trials=trials)
        np.testing.assert_array_equal(logged, want)
        # Frequencies within 4 binomial sd of the propensities.
        sd = np.sqrt(want * (1 - want) / n)
        assert np.all(np.abs(picks / n - want) <= 4 * sd + 1e-12), (picks / n, want)
