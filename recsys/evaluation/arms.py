"""Arm-level off-policy evaluation from exploration logs with per-impression candidate sets.

The storefront logs, for every impression, its candidates (each of an *arm*: personalized,
segment or generic hero), the logging policy's probability of each, the chosen one and
whether it was clicked. From such logs this module estimates, for every arm ``A``, the CTR of
the policy "show arm A" (uniform over the candidates of arm A; rounds where A was not on
offer keep the logged distribution, i.e. "show A whenever possible"), with several
estimators, intervals, effective sample sizes and the lift over a control arm.

Candidate slots are padded to a fixed width ``K``: ``arms[i, j] == ""`` marks an empty slot
(probability 0), so the estimators see ``action_dist`` of shape (n, K, 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from recsys.evaluation.estimators import (
    BaseEstimator,
    ClippedIPW,
    DirectMethod,
    DoublyRobust,
    EstimateOutput,
    InverseProbabilityWeighting,
    RegressionModel,
    SelfNormalizedIPW,
    SwitchDoublyRobust,
    effective_sample_size,
)

__all__ = [
    "ArmEvaluationOutput",
    "ArmPolicyEstimate",
    "CandidateLogs",
    "arm_policy_distribution",
    "default_arm_estimators",
    "evaluate_arm_policies",
    "wilson_interval",
]


@dataclass(frozen=True)
class CandidateLogs:
    """Exploration logs. ``reward`` float64 (n,) in {0, 1}; ``chosen`` int64 (n,) slot index;
    ``pscore`` float64 (n,) the logged propensity of the chosen slot; ``behaviour_dist``
    float64 (n, K) the logged distribution over slots (rows sum to 1); ``arms`` str (n, K) the
    arm of each slot (``""`` = empty); ``context`` float64 (n, d) or None (features for the
    DM / DR reward model); ``policy`` the logging policy's name."""

    reward: NDArray[np.float64]
    chosen: NDArray[np.int64]
    pscore: NDArray[np.float64]
    behaviour_dist: NDArray[np.float64]
    arms: NDArray[np.str_]
    context: NDArray[np.float64] | None = None
    policy: str = "logged"

    def __post_init__(self) -> None:
        n = self.reward.shape[0]
        if self.behaviour_dist.shape != self.arms.shape or self.behaviour_dist.shape[0] != n:
            raise ValueError(
                f"behaviour_dist {self.behaviour_dist.shape} and arms {self.arms.shape} must "
                f"both be (n_rounds={n}, K)"
            )
        if self.chosen.shape != (n,) or self.pscore.shape != (n,):
            raise ValueError(f"chosen and pscore must have shape ({n},)")
        if n and np.any(self.arms[np.arange(n), self.chosen] == ""):
            raise ValueError("chosen points at an empty candidate slot")

    @property
    def n_rounds(self) -> int:
        return int(self.reward.shape[0])

    def arm_labels(self) -> list[str]:
        """Distinct arms present, sorted."""
        return sorted({str(a) for a in np.unique(self.arms) if a != ""})

    def chosen_arms(self) -> NDArray[np.str_]:
        return self.arms[np.arange(self.n_rounds), self.chosen]

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[tuple[Sequence[tuple[str, float]], int, float, float]],
        *,
        policy: str = "logged",
        context: NDArray[np.float64] | None = None,
    ) -> CandidateLogs:
        """From ``(candidates [(arm, probability), ...], chosen index, propensity, reward)``."""
        n = len(rows)
        k = max((len(r[0]) for r in rows), default=1)
        arms = np.full((n, k), "", dtype=object)
        dist = np.zeros((n, k))
        for i, (cands, _, _, _) in enumerate(rows):
            for j, (arm, p) in enumerate(cands):
                arms[i, j] = str(arm)
                dist[i, j] = float(p)
        return cls(
            reward=np.array([float(r[3]) for r in rows]),
            chosen=np.array([int(r[1]) for r in rows], dtype=np.int64),
            pscore=np.array([float(r[2]) for r in rows]),
            behaviour_dist=dist,
            arms=arms.astype(str),
            context=context,
            policy=policy,
        )


def arm_policy_distribution(logs: CandidateLogs, arm: str) -> NDArray[np.float64]:
    """The "show ``arm`` whenever possible" policy, (n, K): uniform over ``arm``'s slots; the
    logged distribution in rounds without ``arm``."""
    is_arm = (logs.arms == arm).astype(np.float64)
    count = is_arm.sum(axis=1, keepdims=True)
    uniform = np.divide(is_arm, count, out=np.zeros_like(is_arm), where=count > 0)
    return np.where(count > 0, uniform, logs.behaviour_dist)


def wilson_interval(clicks: float, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (``(0, 1)`` when ``n == 0``)."""
    if n <= 0:
        return 0.0, 1.0
    from scipy.stats import norm

    z = float(norm.ppf(1 - alpha / 2))
    p = clicks / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def default_arm_estimators() -> dict[str, BaseEstimator]:
    """Estimators used for arm policies, by report name."""
    return {
        "ipw": InverseProbabilityWeighting(),
        "snipw": SelfNormalizedIPW(),
        "clipped_ipw": ClippedIPW(max_weight=20.0),
        "dm": DirectMethod(),
        "dr": DoublyRobust(),
        "switch_dr": SwitchDoublyRobust(switch_threshold=20.0),
    }


@dataclass(frozen=True)
class ArmPolicyEstimate:
    """Estimates of one arm policy's CTR. ``coverage`` is the fraction of rounds where the arm
    was on offer; ``weights`` the plain importance weights (n,) of the policy (for plots);
    ``lift`` per estimator: ``value / control - 1`` with a paired-bootstrap interval."""

    arm: str
    coverage: float
    estimates: dict[str, EstimateOutput]
    weights: NDArray[np.float64] = field(repr=False)
    effective_sample_size: float
    lift: dict[str, tuple[float, float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class ArmEvaluationOutput:
    """Arm policies estimated from ``logs``, with the logged (on-policy) CTR and its interval."""

    policy: str
    n_rounds: int
    clicks: int
    logged_ctr: float
    logged_ci: tuple[float, float]
    control: str | None
    arms: dict[str, ArmPolicyEstimate]
    served: dict[str, int]
    alpha: float

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able summary."""
        return {
            "logging_policy": self.policy,
            "n_impressions": self.n_rounds,
            "clicks": self.clicks,
            "logged_ctr": {
                "value": self.logged_ctr,
                "ci_low": self.logged_ci[0],
                "ci_high": self.logged_ci[1],
            },
            "served": dict(self.served),
            "control": self.control,
            "alpha": self.alpha,
            "arms": {
                arm: {
                    "coverage": a.coverage,
                    "effective_sample_size": a.effective_sample_size,
                    "max_weight": float(a.weights.max()) if a.weights.size else 0.0,
                    "estimates": {
                        name: {
                            "value": e.value,
                            "ci_low": e.ci_low,
                            "ci_high": e.ci_high,
                            "std_error": e.std_error,
                            "effective_sample_size": e.effective_sample_size,
                        }
                        for name, e in a.estimates.items()
                    },
                    "lift_vs_control": {
                        name: {"value": v, "ci_low": lo, "ci_high": hi}
                        for name, (v, lo, hi) in a.lift.items()
                    },
                }
                for arm, a in self.arms.items()
            },
        }


def _arm_mean_rewards(logs: CandidateLogs) -> NDArray[np.float64]:
    """A context-free reward model: each slot's smoothed CTR of its arm, (n, K, 1)."""
    chosen = logs.chosen_arms()
    q = np.zeros(logs.arms.shape)
    overall = (logs.reward.sum() + 1.0) / (logs.n_rounds + 2.0)
    for arm in logs.arm_labels():
        mask = chosen == arm
        # shrink toward the overall CTR with a prior worth 10 impressions
        q[logs.arms == arm] = (logs.reward[mask].sum() + 10 * overall) / (mask.sum() + 10)
    return q[:, :, None]


def evaluate_arm_policies(
    logs: CandidateLogs,
    *,
    arms: Sequence[str] | None = None,
    control: str | None = "generic",
    estimators: Mapping[str, BaseEstimator] | None = None,
    reward_model: RegressionModel | None = None,
    n_bootstrap: int = 500,
    alpha: float = 0.05,
    random_state: int = 0,
) -> ArmEvaluationOutput:
    """Estimate every arm policy's CTR from ``logs``.

    The DM / DR reward model is ``reward_model`` fitted on ``logs.context`` with one-hot arms
    (a ``RegressionModel`` whose action one-hot is replaced by the slot's arm), or, when
    ``None`` or the logs carry no context, each arm's smoothed logged CTR.
    """
    if logs.n_rounds == 0:
        raise ValueError("logs: no impressions to evaluate")
    labels = list(arms) if arms is not None else logs.arm_labels()
    chosen_est = dict(estimators) if estimators is not None else default_arm_estimators()
    q_hat = _fit_rewards(logs, reward_model, random_state)
    results: dict[str, ArmPolicyEstimate] = {}
    for arm in labels:
        dist = arm_policy_distribution(logs, arm)
        kw: dict[str, Any] = {
            "reward": logs.reward,
            "action": logs.chosen,
            "pscore": logs.pscore,
            "action_dist": dist[:, :, None],
        }
        outs = {
            name: est.estimate_interval(
                **kw,
                estimated_rewards=q_hat if est.needs_reward_model else None,
                n_bootstrap=n_bootstrap,
                alpha=alpha,
                random_state=random_state,
                keep_replicates=True,
            )
            for name, est in chosen_est.items()
        }
        w = dist[np.arange(logs.n_rounds), logs.chosen] / logs.pscore
        results[arm] = ArmPolicyEstimate(
            arm=arm,
            coverage=float(np.mean(np.any(logs.arms == arm, axis=1))),
            estimates=outs,
            weights=w,
            effective_sample_size=effective_sample_size(w),
        )
    if control is not None and control in results:
        base = results[control].estimates
        for a in results.values():
            for name, e in a.estimates.items():
                c = base[name]
                if c.value <= 0 or e.replicates is None or c.replicates is None:
                    continue
                ratio = np.divide(
                    e.replicates,
                    c.replicates,
                    out=np.full_like(e.replicates, np.nan),
                    where=c.replicates > 0,
                )
                ratio = ratio[np.isfinite(ratio)] - 1.0
                lo, hi = np.quantile(ratio, [alpha / 2, 1 - alpha / 2]) if ratio.size else (0, 0)
                a.lift[name] = (e.value / c.value - 1.0, float(lo), float(hi))
    clicks = int(logs.reward.sum())
    served = {
        arm: int(n)
        for arm, n in zip(*np.unique(logs.chosen_arms(), return_counts=True), strict=True)
    }
    return ArmEvaluationOutput(
        policy=logs.policy,
        n_rounds=logs.n_rounds,
        clicks=clicks,
        logged_ctr=float(logs.reward.mean()),
        logged_ci=wilson_interval(clicks, logs.n_rounds, alpha),
        control=control if control in results else None,
        arms=results,
        served=served,
        alpha=alpha,
    )


def _fit_rewards(
    logs: CandidateLogs, reward_model: RegressionModel | None, random_state: int
) -> NDArray[np.float64]:
    if reward_model is None or logs.context is None:
        return _arm_mean_rewards(logs)
    # Fit on (context, arm) with arms as the "actions", then read each slot's arm.
    labels = logs.arm_labels()
    code = {a: i for i, a in enumerate(labels)}
    chosen_code = np.array([code[a] for a in logs.chosen_arms()], dtype=np.int64)
    q_arm = reward_model.fit_predict(
        reward=logs.reward,
        action=chosen_code,
        context=logs.context,
        n_actions=len(labels),
        random_state=random_state,
    )[:, :, 0]
    slot_code = np.vectorize(lambda a: code.get(a, 0))(logs.arms)
    q = np.take_along_axis(q_arm, slot_code, axis=1)
    return np.where(logs.arms == "", 0.0, q)[:, :, None]
