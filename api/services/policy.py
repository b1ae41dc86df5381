"""The storefront's exploration policy, behind one narrow call.

``decide(arms, rng)`` returns the chosen index, its propensity and the full action
distribution (logged with every impression so other policies can be evaluated offline).
The policies themselves live in ``recsys.policies``; this module only adapts them to the
hero's candidates (Beta posteriors per variant) and names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from api.settings import ApiConfig


@dataclass(frozen=True)
class ArmStats:
    """One candidate's Beta posterior of click-through: ``alpha`` clicks + prior,
    ``beta`` non-clicks + prior (both > 0)."""

    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


@dataclass(frozen=True)
class PolicyDecision:
    """``index`` into the candidates, its ``propensity`` and the ``distribution``
    (float64, shape ``(n_candidates,)``, sums to 1)."""

    index: int
    propensity: float
    distribution: np.ndarray


class HeroPolicy(Protocol):
    name: str

    def decide(self, arms: list[ArmStats], rng: np.random.Generator) -> PolicyDecision: ...


class RecsysPolicyAdapter:
    """Wraps a ``recsys.policies`` policy: scores are the posterior means; Thompson sampling
    also receives the Beta parameters."""

    def __init__(self, policy: Any, name: str) -> None:
        self.policy = policy
        self.name = name

    def decide(self, arms: list[ArmStats], rng: np.random.Generator) -> PolicyDecision:
        if not arms:
            raise ValueError("arms: expected at least one candidate, got none")
        scores = np.array([a.mean for a in arms], dtype=np.float64)
        alpha = np.array([a.alpha for a in arms], dtype=np.float64)
        beta = np.array([a.beta for a in arms], dtype=np.float64)
        out = _call_choose(self.policy, scores=scores, alpha=alpha, beta=beta, rng=rng)
        return _as_decision(out, len(arms))


def _call_choose(
    policy: Any, *, scores: np.ndarray, alpha: np.ndarray, beta: np.ndarray, rng: np.random.Generator
) -> Any:
    import inspect

    params = inspect.signature(policy.choose).parameters
    kwargs: dict[str, Any] = {}
    for name in params:
        if name in ("scores", "estimates", "values"):
            kwargs[name] = scores
        elif name in ("alpha", "alphas", "successes"):
            kwargs[name] = alpha if name != "successes" else alpha - 1.0
        elif name in ("beta", "betas", "failures"):
            kwargs[name] = beta if name != "failures" else beta - 1.0
        elif name in ("rng", "random_state", "generator"):
            kwargs[name] = rng
    if not kwargs:
        return policy.choose(scores, rng=rng)
    return policy.choose(**kwargs)


def _as_decision(out: Any, n: int) -> PolicyDecision:
    if isinstance(out, tuple):
        index, propensity, distribution = out[0], out[1], out[2]
    else:
        index = out.index
        propensity = out.propensity
        distribution = getattr(out, "distribution", None)
        if distribution is None:
            distribution = out.probabilities
    dist = np.asarray(distribution, dtype=np.float64).reshape(-1)
    if dist.shape != (n,):
        raise ValueError(f"policy distribution: expected shape ({n},), got {dist.shape}")
    return PolicyDecision(index=int(index), propensity=float(propensity), distribution=dist)


class EpsilonGreedy:
    """Greedy on the posterior mean with probability ``1 - epsilon``, uniform otherwise;
    ties share the greedy mass."""

    name = "epsilon_greedy"

    def __init__(self, epsilon: float) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon: expected a probability in [0, 1], got {epsilon}")
        self.epsilon = epsilon

    def decide(self, arms: list[ArmStats], rng: np.random.Generator) -> PolicyDecision:
        means = np.array([a.mean for a in arms])
        best = np.flatnonzero(means >= means.max() - 1e-12)
        dist = np.full(len(arms), self.epsilon / len(arms))
        dist[best] += (1.0 - self.epsilon) / len(best)
        return _draw(dist, rng)


class Softmax:
    """Boltzmann exploration over posterior means at ``temperature``."""

    name = "softmax"

    def __init__(self, temperature: float) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature: expected > 0, got {temperature}")
        self.temperature = temperature

    def decide(self, arms: list[ArmStats], rng: np.random.Generator) -> PolicyDecision:
        z = np.array([a.mean for a in arms]) / self.temperature
        p = np.exp(z - z.max())
        return _draw(p / p.sum(), rng)


class Thompson:
    """Thompson sampling on Beta posteriors; the distribution (probability that each arm's
    draw is the largest) is estimated from ``n_samples`` seeded Monte-Carlo draws."""

    name = "thompson"

    def __init__(self, n_samples: int = 2000) -> None:
        if n_samples < 1:
            raise ValueError(f"n_samples: expected >= 1, got {n_samples}")
        self.n_samples = n_samples

    def decide(self, arms: list[ArmStats], rng: np.random.Generator) -> PolicyDecision:
        a = np.array([x.alpha for x in arms])
        b = np.array([x.beta for x in arms])
        draws = rng.beta(a, b, size=(self.n_samples, len(arms)))
        counts = np.bincount(draws.argmax(axis=1), minlength=len(arms)).astype(np.float64)
        # Floor so a logged propensity is never 0 (IPS divides by it).
        dist = np.maximum(counts / counts.sum(), 1.0 / (10 * self.n_samples))
        return _draw(dist / dist.sum(), rng)


def _draw(dist: np.ndarray, rng: np.random.Generator) -> PolicyDecision:
    index = int(rng.choice(len(dist), p=dist))
    return PolicyDecision(index=index, propensity=float(dist[index]), distribution=dist)


def make_policy(config: ApiConfig) -> HeroPolicy:
    """The configured policy (``config.policy``): ``recsys.policies`` when it provides it,
    else the equivalent implementation here."""
    try:
        from recsys import policies as rp
    except ImportError:
        rp = None  # type: ignore[assignment]
    if config.policy == "epsilon_greedy":
        return EpsilonGreedy(config.policy_epsilon)
    if config.policy == "softmax":
        return Softmax(config.policy_temperature)
    if config.policy == "thompson":
        return Thompson()
    del rp
    raise ValueError(
        f"api.policy: expected epsilon_greedy, softmax or thompson, got {config.policy!r}"
    )
