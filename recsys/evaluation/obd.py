"""The Open Bandit Dataset (ZOZOTOWN; Saito et al. 2020) and the off-policy check on it.

Layout (see the dataset's README): ``DIR/{bts,random}/{men,women}/{campaign}.csv`` with
columns ``timestamp, item_id, position (1-3), click, propensity_score, user_feature_*,
user-item_affinity_*`` and ``DIR/{policy}/{campaign}/item_context.csv``.

The experiment: the uniform-random policy ran live too, so its on-policy CTR (mean click in
the ``random`` logs) is the truth. We estimate it off-policy from the Bernoulli Thompson
sampling (``bts``) logs, with ``action_dist = 1 / n_items`` at every position, and report each
estimator's value, interval, relative error and whether the interval covers the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from recsys.evaluation.arms import default_arm_estimators
from recsys.evaluation.estimators import (
    BaseEstimator,
    EstimateOutput,
    RegressionModel,
)

__all__ = [
    "BEHAVIOR_POLICIES",
    "CAMPAIGNS",
    "OBDExperimentOutput",
    "OpenBanditDataset",
    "default_obd_estimators",
    "load_obd",
    "run_obd_experiment",
]

CAMPAIGNS: tuple[str, ...] = ("men", "women", "all")
BEHAVIOR_POLICIES: tuple[str, ...] = ("bts", "random")
LEN_LIST = 3


@dataclass(frozen=True)
class OpenBanditDataset:
    """One (behaviour policy, campaign) log. ``position`` is 0-based; ``context`` (n, d) is the
    one-hot user features plus the user-item affinities; ``action_context`` (n_actions, d_a) is
    the item features (numeric + one-hot)."""

    behavior_policy: str
    campaign: str
    reward: NDArray[np.float64]
    action: NDArray[np.int64]
    position: NDArray[np.int64]
    pscore: NDArray[np.float64]
    context: NDArray[np.float64]
    action_context: NDArray[np.float64]
    n_actions: int
    len_list: int = LEN_LIST

    @property
    def n_rounds(self) -> int:
        return int(self.reward.shape[0])

    def on_policy_value(self) -> float:
        """Mean click of these logs (the behaviour policy's own CTR)."""
        return float(self.reward.mean())

    def on_policy_interval(self, alpha: float = 0.05) -> tuple[float, float]:
        """Wilson score interval of the on-policy CTR."""
        from scipy.stats import norm

        n, p = self.n_rounds, self.on_policy_value()
        z = float(norm.ppf(1 - alpha / 2))
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return centre - half, centre + half


def _campaign_dir(path: Path, behavior_policy: str, campaign: str) -> Path:
    if behavior_policy not in BEHAVIOR_POLICIES:
        raise ValueError(
            f"behavior_policy must be one of {BEHAVIOR_POLICIES}, got {behavior_policy!r}"
        )
    if campaign not in CAMPAIGNS:
        raise ValueError(f"campaign must be one of {CAMPAIGNS}, got {campaign!r}")
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Open Bandit Dataset folder not found: {root} (expected DIR/{{bts,random}}/"
            "{men,women}/<campaign>.csv; see the dataset's README)"
        )
    d = root / behavior_policy / campaign
    if not (d / f"{campaign}.csv").is_file():
        raise FileNotFoundError(f"missing {d / f'{campaign}.csv'} in the Open Bandit Dataset")
    return d


def load_obd(path: str | Path, *, behavior_policy: str, campaign: str) -> OpenBanditDataset:
    """Load one log of the Open Bandit Dataset (small or full version)."""
    import pandas as pd

    d = _campaign_dir(Path(path), behavior_policy, campaign)
    df = pd.read_csv(d / f"{campaign}.csv", index_col=0)
    required = {"item_id", "position", "click", "propensity_score"}
    missing = required - set(df.columns)
    if missing:
        raise ValueError(f"{d / f'{campaign}.csv'} lacks columns {sorted(missing)}")
    user_cols = sorted(c for c in df.columns if c.startswith("user_feature_"))
    affinity_cols = [c for c in df.columns if c.startswith("user-item_affinity_")]
    user = pd.get_dummies(df[user_cols].astype(str), drop_first=True).to_numpy(np.float64)
    context = np.hstack([user, df[affinity_cols].to_numpy(np.float64)])
    action = df["item_id"].to_numpy(np.int64)
    item_path = d / "item_context.csv"
    if item_path.is_file():
        items = pd.read_csv(item_path, index_col=0).sort_values("item_id")
        num = items[["item_feature_0"]].to_numpy(np.float64)
        cats = [c for c in items.columns if c.startswith("item_feature_") and c != "item_feature_0"]
        onehot = pd.get_dummies(items[cats].astype(str), drop_first=True).to_numpy(np.float64)
        action_context = np.hstack([num, onehot])
        n_actions = int(items["item_id"].max()) + 1
    else:
        n_actions = int(action.max()) + 1
        action_context = np.eye(n_actions)
    n_actions = max(n_actions, int(action.max()) + 1)
    position = df["position"].to_numpy(np.int64) - 1  # the files count positions from 1
    if position.min() < 0 or position.max() >= LEN_LIST:
        raise ValueError(f"positions must be 1..{LEN_LIST}, got {position.min() + 1}..")
    return OpenBanditDataset(
        behavior_policy=behavior_policy,
        campaign=campaign,
        reward=df["click"].to_numpy(np.float64),
        action=action,
        position=position,
        pscore=df["propensity_score"].to_numpy(np.float64),
        context=context,
        action_context=action_context,
        n_actions=n_actions,
    )


def default_obd_estimators() -> dict[str, BaseEstimator]:
    """The estimators of the OBD check, by report name: the same set as the arm policies'
    (DM / DR share one reward model)."""
    return default_arm_estimators()


@dataclass(frozen=True)
class OBDExperimentOutput:
    """Off-policy estimates of ``evaluated_policy``'s CTR from ``logs_from``'s logs, with the
    on-policy ``truth`` (and its Wilson ``truth_ci``)."""

    campaign: str
    evaluated_policy: str
    logs_from: str
    truth: float
    truth_ci: tuple[float, float]
    n_rounds: int
    estimates: dict[str, EstimateOutput] = field(default_factory=dict)

    def relative_errors(self) -> dict[str, float]:
        return {k: v.relative_error(self.truth) for k, v in self.estimates.items()}

    def to_json(self, *, details: bool = False) -> dict[str, Any]:
        """The CLI's JSON: value, interval and relative error per estimator (``details`` adds
        coverage, standard error, effective sample size and the truth's interval)."""
        est: dict[str, Any] = {}
        for name, e in self.estimates.items():
            row: dict[str, Any] = {
                "value": e.value,
                "ci_low": e.ci_low,
                "ci_high": e.ci_high,
                "relative_error": e.relative_error(self.truth),
            }
            if details:
                row |= {
                    "covers_truth": e.covers(self.truth),
                    # the truth is itself a noisy on-policy mean: does the interval meet its CI?
                    "overlaps_truth_ci": e.ci_low <= self.truth_ci[1]
                    and e.ci_high >= self.truth_ci[0],
                    "std_error": e.std_error,
                    "effective_sample_size": e.effective_sample_size,
                    "max_weight": e.max_weight,
                }
            est[name] = row
        out: dict[str, Any] = {
            "campaign": self.campaign,
            "evaluated_policy": self.evaluated_policy,
            "logs_from": self.logs_from,
            "truth": self.truth,
            "estimates": est,
        }
        if details:
            out |= {"truth_ci": list(self.truth_ci), "n_rounds": self.n_rounds}
        return out


def run_obd_experiment(
    path: str | Path,
    *,
    campaign: str,
    n_bootstrap: int = 500,
    alpha: float = 0.05,
    random_state: int = 0,
    n_folds: int = 3,
    estimators: dict[str, BaseEstimator] | None = None,
) -> OBDExperimentOutput:
    """Estimate the uniform-random policy's CTR from the BTS logs of ``campaign``.

    The reward model (logistic regression on user context, item features, item and position;
    cross-fitted over ``n_folds``) is fitted once and shared by DM and the DR variants.
    """
    logs = load_obd(path, behavior_policy="bts", campaign=campaign)
    truth_logs = load_obd(path, behavior_policy="random", campaign=campaign)
    n, k = logs.n_rounds, logs.n_actions
    action_dist = np.full((n, k, logs.len_list), 1.0 / k)
    chosen = estimators if estimators is not None else default_obd_estimators()
    q_hat = None
    if any(e.needs_reward_model for e in chosen.values()):
        model = RegressionModel(
            n_folds=n_folds, action_context=logs.action_context, logged_position_only=True
        )
        q_hat = model.fit_predict(
            reward=logs.reward,
            action=logs.action,
            position=logs.position,
            context=logs.context,
            n_actions=k,
            len_list=logs.len_list,
            random_state=random_state,
        )
    results: dict[str, EstimateOutput] = {}
    for name, est in chosen.items():
        results[name] = est.estimate_interval(
            reward=logs.reward,
            action=logs.action,
            position=logs.position,
            pscore=logs.pscore,
            action_dist=action_dist,
            estimated_rewards=q_hat if est.needs_reward_model else None,
            n_bootstrap=n_bootstrap,
            alpha=alpha,
            random_state=random_state,
        )
    return OBDExperimentOutput(
        campaign=campaign,
        evaluated_policy="random",
        logs_from="bts",
        truth=truth_logs.on_policy_value(),
        truth_ci=truth_logs.on_policy_interval(alpha),
        n_rounds=n,
        estimates=results,
    )
