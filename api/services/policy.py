"""The storefront's exploration policy, behind one narrow call.

``decide(arms, u)`` returns the chosen index, its propensity and the full action
distribution (logged with every impression so other policies can be evaluated offline);
``u`` is a uniform draw in [0, 1) (``recsys.policies.hash_uniform``: no generator per
decision). The distribution of a set of arms is computed once and kept (the arms change only
when the click statistics are reloaded), so a decision is a dict lookup and a bisection.
The policies themselves live in ``recsys.policies`` (the evaluation replays the same
classes); this module only adapts them to the hero's candidates (Beta posteriors per variant).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from api.settings import ApiConfig
from recsys.policies import ExplorationPolicy, make_policy, sample_index


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

    def decide(self, arms: list[ArmStats], u: float) -> PolicyDecision: ...


#: Distributions kept per set of arms (cleared when full: cheap to recompute).
MAX_PREPARED = 10_000


class RecsysPolicyAdapter:
    """Wraps a ``recsys.policies`` policy. Each arm's Beta posterior is passed as pseudo
    counts (``clicks = alpha``, ``trials = alpha + beta``), so the per-source priors steer the
    greedy choice until real clicks outweigh them."""

    def __init__(self, policy: ExplorationPolicy) -> None:
        self.policy = policy
        self.name = str(policy.name)
        # (alphas, betas) -> (distribution, its cumulative sums, its values as floats)
        self._prepared: dict[
            tuple[tuple[float, ...], tuple[float, ...]], tuple[np.ndarray, list[float], list[float]]
        ] = {}
        self._lock = threading.Lock()

    def _prepare(self, arms: list[ArmStats]) -> tuple[np.ndarray, list[float], list[float]]:
        alphas = tuple(a.alpha for a in arms)
        betas = tuple(a.beta for a in arms)
        key = (alphas, betas)
        hit = self._prepared.get(key)
        if hit is not None:
            return hit
        clicks = np.array(alphas, dtype=np.float64)
        trials = clicks + np.array(betas, dtype=np.float64)
        dist = np.asarray(
            self.policy.action_distribution(clicks, trials=trials), dtype=np.float64
        ).copy()
        dist.setflags(write=False)  # shared by every decision on these arms
        out = (dist, np.cumsum(dist).tolist(), dist.tolist())
        with self._lock:
            if len(self._prepared) >= MAX_PREPARED:
                self._prepared.clear()
            self._prepared[key] = out
        return out

    def decide(self, arms: list[ArmStats], u: float) -> PolicyDecision:
        if not arms:
            raise ValueError("arms: expected at least one candidate, got none")
        if not 0.0 <= u < 1.0:
            raise ValueError(f"u: expected a uniform draw in [0, 1), got {u}")
        dist, cdf, probs = self._prepare(arms)
        index = sample_index(cdf, probs, u)
        return PolicyDecision(index=index, propensity=probs[index], distribution=dist)


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
