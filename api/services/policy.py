"""The storefront's exploration policy, behind one narrow call.

``decide(arms, rng)`` returns the chosen index, its propensity and the full action
distribution (logged with every impression so other policies can be evaluated offline).
The policies themselves live in ``recsys.policies`` (the evaluation replays the same
classes); this module only adapts them to the hero's candidates (Beta posteriors per variant).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from api.settings import ApiConfig
from recsys.policies import ExplorationPolicy, make_policy


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
    """Wraps a ``recsys.policies`` policy. Each arm's Beta posterior is passed as pseudo
    counts (``clicks = alpha``, ``trials = alpha + beta``), so the per-source priors steer the
    greedy choice until real clicks outweigh them."""

    def __init__(self, policy: ExplorationPolicy) -> None:
        self.policy = policy
        self.name = str(policy.name)

    def decide(self, arms: list[ArmStats], rng: np.random.Generator) -> PolicyDecision:
        if not arms:
            raise ValueError("arms: expected at least one candidate, got none")
        clicks = np.array([a.alpha for a in arms], dtype=np.float64)
        trials = clicks + np.array([a.beta for a in arms], dtype=np.float64)
        out = self.policy.choose(clicks, trials=trials, rng=rng)
        return PolicyDecision(
            index=int(out.index),
            propensity=float(out.propensity),
            distribution=np.asarray(out.distribution, dtype=np.float64),
        )


def make_hero_policy(config: ApiConfig) -> HeroPolicy:
    """The configured exploration policy (``config.policy``) from ``recsys.policies``."""
    if config.policy == "epsilon_greedy":
        policy = make_policy("epsilon_greedy", epsilon=config.policy_epsilon)
    elif config.policy == "softmax":
        policy = make_policy("softmax", temperature=config.policy_temperature)
    elif config.policy == "thompson":
        # A floor keeps every logged propensity positive (IPS divides by it).
        policy = make_policy(
            "thompson", min_propensity=0.01 / config.max_candidates, seed=config.seed
        )
    else:
        raise ValueError(
            f"api.policy: expected epsilon_greedy, softmax or thompson, got {config.policy!r}"
        )
    return RecsysPolicyAdapter(policy)
