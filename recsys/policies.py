"""Exploration policies that log propensities.

Each policy turns per-candidate evidence into an action distribution over the candidates and
samples from it, returning the propensity of its choice, so that any policy can later be
evaluated offline from any other policy's logs (``recsys.evaluation.estimators``).

Evidence, shape ``(n_candidates,)``:

- ``scores``: any "higher is better" score (e.g. a predicted CTR or a similarity), or, when
  ``trials`` is given, click counts with ``trials`` the impression counts;
- ``EpsilonGreedyPolicy`` / ``SoftmaxPolicy`` turn counts into a smoothed CTR
  ``(clicks + 1) / (trials + 2)`` (an untried candidate scores 0.5: optimistic);
  ``ThompsonSamplingPolicy`` needs counts (Beta posteriors).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "EpsilonGreedyPolicy",
    "ExplorationPolicy",
    "PolicyChoice",
    "SoftmaxPolicy",
    "ThompsonSamplingPolicy",
    "UniformPolicy",
    "hash_uniform",
    "make_policy",
    "sample_index",
]

FloatArray = NDArray[np.float64]


class PolicyChoice(NamedTuple):
    """A sampled choice: candidate ``index``, its ``propensity`` and the whole ``distribution``
    (float64, shape (n_candidates,), sums to 1)."""

    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose
    propensity: float
    distribution: FloatArray


def _evidence(scores: ArrayLike, trials: ArrayLike | None) -> tuple[FloatArray, FloatArray | None]:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] == 0:
        raise ValueError(f"scores must have shape (n_candidates,) with n >= 1, got {s.shape}")
    if not np.isfinite(s.sum()):
        raise ValueError("scores must be finite, found NaN or inf")
    if trials is None:
        return s, None
    t = np.asarray(trials, dtype=np.float64)
    if t.shape != s.shape:
        raise ValueError(f"trials must have the shape of scores {s.shape}, got {t.shape}")
    if not (np.isfinite(t.sum()) and s.min() >= 0 and (t - s).min() >= 0):
        raise ValueError("with trials, scores are click counts: need 0 <= scores <= trials")
    return s, t


def _smoothed(s: FloatArray, t: FloatArray | None) -> FloatArray:
    return s if t is None else (s + 1.0) / (t + 2.0)


class ExplorationPolicy:
    """Base class: subclasses implement ``action_distribution``."""

    name: ClassVar[str] = "policy"

    def action_distribution(
        self, scores: ArrayLike, *, trials: ArrayLike | None = None
    ) -> FloatArray:
        """Probabilities over the candidates, float64 shape (n_candidates,), summing to 1."""
        raise NotImplementedError

    def choose(
        self,
        scores: ArrayLike,
        *,
        trials: ArrayLike | None = None,
        rng: np.random.Generator,
    ) -> PolicyChoice:
        """Sample a candidate from ``action_distribution``; the propensity is exact."""
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy Generator, got {type(rng).__name__}")
        dist = self.action_distribution(scores, trials=trials)
        index = sample_index(np.cumsum(dist).tolist(), dist.tolist(), rng.random())
        return PolicyChoice(index, float(dist[index]), dist)


def sample_index(cdf: list[float], probabilities: list[float], u: float) -> int:
    """Inverse-CDF sampling: the index of ``u`` (uniform in [0, 1)) in ``cdf`` (the cumulative
    sums of ``probabilities``); never lands on a p = 0 slot. Plain floats (no numpy), so a
    server can keep ``cdf`` per candidate set and sample in a microsecond."""
    index = min(bisect.bisect_right(cdf, u * cdf[-1]), len(cdf) - 1)
    while probabilities[index] == 0.0 and index > 0:
        index -= 1
    return index


_MASK64 = (1 << 64) - 1


def hash_uniform(seed: int, counter: int, *parts: str) -> float:
    """A deterministic uniform draw in [0, 1) from ``(seed, counter, *parts)``: the first 53
    bits of a BLAKE2b-64 digest. As good as a seeded generator for choosing an arm (the
    logged propensity is the policy's probability whatever the draw), and ~50x cheaper than
    building a ``numpy.random.Generator`` per decision."""
    key = f"{seed & _MASK64}|{counter}|{'|'.join(parts)}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return (int.from_bytes(digest, "little") >> 11) * (1.0 / (1 << 53))


@dataclass(frozen=True)
class UniformPolicy(ExplorationPolicy):
    """Every candidate with probability ``1 / n_candidates``."""

    name: ClassVar[str] = "uniform"

    def action_distribution(
        self, scores: ArrayLike, *, trials: ArrayLike | None = None
    ) -> FloatArray:
        s, _ = _evidence(scores, trials)
        return np.full(s.shape[0], 1.0 / s.shape[0])


@dataclass(frozen=True)
class EpsilonGreedyPolicy(ExplorationPolicy):
    """With probability ``1 - epsilon`` the best candidate (ties share it), else uniform:
    ``p = epsilon / n + (1 - epsilon) * 1[best] / n_best``."""

    epsilon: float = 0.1
    name: ClassVar[str] = "epsilon_greedy"

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")

    def action_distribution(
        self, scores: ArrayLike, *, trials: ArrayLike | None = None
    ) -> FloatArray:
        s, t = _evidence(scores, trials)
        v = _smoothed(s, t)
        n = v.shape[0]
        best = v >= v.max() - 1e-12
        return self.epsilon / n + (1.0 - self.epsilon) * best / best.sum()


@dataclass(frozen=True)
class SoftmaxPolicy(ExplorationPolicy):
    """Boltzmann exploration: ``p ∝ exp(score / temperature)``. With counts the score is the
    smoothed CTR, so pick a small temperature (e.g. 0.01-0.05)."""

    temperature: float = 0.1
    name: ClassVar[str] = "softmax"

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be finite and > 0, got {self.temperature}")

    def action_distribution(
        self, scores: ArrayLike, *, trials: ArrayLike | None = None
    ) -> FloatArray:
        s, t = _evidence(scores, trials)
        z = _smoothed(s, t) / self.temperature
        z = np.exp(z - z.max())  # shift for stability
        return np.asarray(z / z.sum(), dtype=np.float64)


@dataclass(frozen=True)
class ThompsonSamplingPolicy(ExplorationPolicy):
    """Beta-Bernoulli Thompson sampling. Its action distribution (the probability that each
    candidate's posterior draw is the largest) is estimated by ``n_samples`` Monte-Carlo draws
    seeded by ``seed`` (so it is reproducible), then floored at ``min_propensity`` by mixing
    with uniform, so every candidate keeps a positive propensity for off-policy evaluation.
    ``scores`` are click counts and ``trials`` impression counts (required)."""

    n_samples: int = 2000
    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    min_propensity: float = 0.0
    seed: int = 0
    name: ClassVar[str] = "thompson"

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        if not (self.prior_alpha > 0 and self.prior_beta > 0):
            raise ValueError(
                f"prior_alpha and prior_beta must be > 0, got {self.prior_alpha}, {self.prior_beta}"
            )
        if not 0.0 <= self.min_propensity < 1.0:
            raise ValueError(f"min_propensity must be in [0, 1), got {self.min_propensity}")

    def action_distribution(
        self, scores: ArrayLike, *, trials: ArrayLike | None = None
    ) -> FloatArray:
        if trials is None:
            raise ValueError("thompson sampling needs trials (impression counts) with the clicks")
        s, t = _evidence(scores, trials)
        assert t is not None
        n = s.shape[0]
        if self.min_propensity * n >= 1.0:
            raise ValueError(
                f"min_propensity={self.min_propensity} is too large for {n} candidates "
                f"(need min_propensity * n < 1)"
            )
        p = _thompson_win_probabilities(
            tuple(s.tolist()),
            tuple(t.tolist()),
            self.prior_alpha,
            self.prior_beta,
            self.n_samples,
            self.seed,
        )
        # floor via a uniform mixture: p' = (1 - n m) p + m keeps the sum at 1
        return np.asarray((1.0 - n * self.min_propensity) * p + self.min_propensity)


@functools.lru_cache(maxsize=4096)
def _thompson_win_probabilities(
    clicks: tuple[float, ...],
    trials: tuple[float, ...],
    prior_alpha: float,
    prior_beta: float,
    n_samples: int,
    seed: int,
) -> FloatArray:
    """Monte-Carlo P(candidate's Beta draw is the largest); cached because the storefront asks
    again and again with the same counts (the result is deterministic given the seed)."""
    s, t = np.asarray(clicks), np.asarray(trials)
    rng = np.random.default_rng(seed)
    draws = rng.beta(prior_alpha + s, prior_beta + (t - s), size=(n_samples, s.shape[0]))
    counts = np.bincount(np.argmax(draws, axis=1), minlength=s.shape[0]).astype(np.float64)
    out = counts / counts.sum()
    out.setflags(write=False)  # shared through the cache
    return out


_POLICIES: dict[str, type[ExplorationPolicy]] = {
    "uniform": UniformPolicy,
    "epsilon_greedy": EpsilonGreedyPolicy,
    "softmax": SoftmaxPolicy,
    "thompson": ThompsonSamplingPolicy,
}


def make_policy(name: str, **params: Any) -> ExplorationPolicy:
    """Build a policy by name (``uniform``, ``epsilon_greedy``, ``softmax``, ``thompson``)."""
    key = name.replace("-", "_").lower()
    if key not in _POLICIES:
        raise ValueError(f"unknown policy {name!r}; expected one of {sorted(_POLICIES)}")
    return _POLICIES[key](**params)
