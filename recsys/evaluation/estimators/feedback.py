"""Logged bandit feedback: validation into :class:`LoggedFeedback`, the estimators' output
:class:`EstimateOutput`, and the Kish effective sample size."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "SUM_TOL",
    "EstimateOutput",
    "FloatArray",
    "IntArray",
    "LoggedFeedback",
    "check_logged_feedback",
    "effective_sample_size",
    "float_1d",
    "int_1d",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Tolerance for "each action distribution sums to 1".
SUM_TOL = 1e-6


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class EstimateOutput:
    """One estimator's estimate of a policy value (units of the reward, e.g. CTR).

    ``ci_low`` / ``ci_high`` bound a ``1 - alpha`` percentile bootstrap interval;
    ``std_error`` is the bootstrap standard deviation; ``effective_sample_size`` is Kish's
    ``(sum w)^2 / sum w^2`` of the importance weights (``n_rounds`` for DM); ``max_weight`` is
    the largest importance weight used (``None`` for DM).
    """

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    std_error: float
    effective_sample_size: float
    n_rounds: int
    alpha: float
    n_bootstrap: int
    max_weight: float | None = None
    #: The bootstrap replicates (n_bootstrap,), kept only with ``keep_replicates=True``. Two
    #: estimates with the same ``random_state`` and ``n_rounds`` resample the same rounds, so
    #: their replicates pair up (e.g. for a lift interval).
    replicates: FloatArray | None = field(default=None, repr=False, compare=False)

    def relative_error(self, truth: float) -> float:
        """``|value - truth| / |truth|``."""
        if truth == 0:
            raise ValueError("truth must be non-zero for a relative error")
        return abs(self.value - truth) / abs(truth)

    def covers(self, truth: float) -> bool:
        """Whether ``ci_low <= truth <= ci_high``."""
        return self.ci_low <= truth <= self.ci_high

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return {
            "estimator": self.estimator,
            "value": self.value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "std_error": self.std_error,
            "effective_sample_size": self.effective_sample_size,
            "n_rounds": self.n_rounds,
            "alpha": self.alpha,
            "n_bootstrap": self.n_bootstrap,
            "max_weight": self.max_weight,
        }


@dataclass(frozen=True)
class LoggedFeedback:
    """Validated logs. ``reward`` float64 (n,), ``action`` / ``position`` int64 (n,), ``pscore``
    float64 (n,) in (0, 1], ``action_dist`` float64 (n, n_actions, len_list), ``context``
    float64 (n, d) or None, ``estimated_rewards`` float64 (n, n_actions, len_list) or None."""

    reward: FloatArray
    action: IntArray
    position: IntArray
    pscore: FloatArray
    action_dist: FloatArray
    context: FloatArray | None = None
    estimated_rewards: FloatArray | None = None

    @property
    def n_rounds(self) -> int:
        return int(self.reward.shape[0])

    @property
    def n_actions(self) -> int:
        return int(self.action_dist.shape[1])

    @property
    def len_list(self) -> int:
        return int(self.action_dist.shape[2])

    def eval_prob_of_logged(self) -> FloatArray:
        """``pi_e(a_i | x_i, k_i)``, shape (n,)."""
        idx = np.arange(self.n_rounds)
        return self.action_dist[idx, self.action, self.position]

    def dist_at_position(self) -> FloatArray:
        """``pi_e(. | x_i, k_i)``, shape (n, n_actions)."""
        return self.action_dist[np.arange(self.n_rounds), :, self.position]


# --------------------------------------------------------------------------- validation


def float_1d(name: str, values: ArrayLike) -> FloatArray:
    """float64 ``(n,)`` finite values of argument ``name`` (ValueError naming it)."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {type(values).__name__}: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of shape (n_rounds,), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} must be finite, got {arr[bad]} at index {bad}")
    return arr


def int_1d(name: str, values: ArrayLike) -> IntArray:
    """int64 ``(n,)`` integral values of argument ``name`` (ValueError naming it)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of shape (n_rounds,), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        as_float = np.asarray(arr, dtype=np.float64)
        if not np.all(np.isfinite(as_float)) or not np.all(as_float == np.round(as_float)):
            raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def check_logged_feedback(
    *,
    reward: ArrayLike,
    action: ArrayLike,
    pscore: ArrayLike,
    action_dist: ArrayLike,
    position: ArrayLike | None = None,
    context: ArrayLike | None = None,
    estimated_rewards: ArrayLike | None = None,
) -> LoggedFeedback:
    """Validate and convert logged feedback; raises ``ValueError`` naming the bad argument.

    ``action_dist`` of shape (n, n_actions) is accepted as (n, n_actions, 1). ``position``
    defaults to zeros.
    """
    r = float_1d("reward", reward)
    n = r.shape[0]
    if n == 0:
        raise ValueError("reward must hold at least one round, got 0")
    a = int_1d("action", action)
    p = float_1d("pscore", pscore)
    pos = np.zeros(n, dtype=np.int64) if position is None else int_1d("position", position)
    for name, arr in (("action", a), ("pscore", p), ("position", pos)):
        if arr.shape[0] != n:
            raise ValueError(
                f"{name} must have the same length as reward ({n}), got {arr.shape[0]}"
            )
    if np.any(p <= 0) or np.any(p > 1):
        bad = int(np.flatnonzero((p <= 0) | (p > 1))[0])
        raise ValueError(
            f"pscore must be in (0, 1] (a logged action needs a positive propensity), "
            f"got {p[bad]} at index {bad}"
        )
    dist = np.asarray(action_dist, dtype=np.float64)
    if dist.ndim == 2:
        dist = dist[:, :, None]
    if dist.ndim != 3:
        raise ValueError(
            f"action_dist must have shape (n_rounds, n_actions, len_list), got shape {dist.shape}"
        )
    if dist.shape[0] != n:
        raise ValueError(
            f"action_dist must have n_rounds={n} rows like reward, got shape {dist.shape}"
        )
    if not np.all(np.isfinite(dist)):
        raise ValueError("action_dist must be finite, found NaN or inf")
    if np.any(dist < 0):
        raise ValueError(f"action_dist must be >= 0, got minimum {dist.min()}")
    sums = dist.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > SUM_TOL):
        i, k = np.unravel_index(int(np.argmax(np.abs(sums - 1.0))), sums.shape)
        raise ValueError(
            "action_dist must sum to 1 over actions (axis 1) for every round and position, "
            f"got {sums[i, k]:.6g} at round {i}, position {k}"
        )
    n_actions, len_list = dist.shape[1], dist.shape[2]
    if a.min() < 0 or a.max() >= n_actions:
        raise ValueError(
            f"action must be in [0, n_actions={n_actions}), got range [{a.min()}, {a.max()}]"
        )
    if pos.min() < 0 or pos.max() >= len_list:
        raise ValueError(
            f"position must be in [0, len_list={len_list}), got range "
            f"[{pos.min()}, {pos.max()}] (positions are 0-based)"
        )
    ctx: FloatArray | None = None
    if context is not None:
        ctx = np.asarray(context, dtype=np.float64)
        if ctx.ndim == 1:
            ctx = ctx[:, None]
        if ctx.ndim != 2 or ctx.shape[0] != n:
            raise ValueError(f"context must have shape (n_rounds={n}, dim), got {ctx.shape}")
        if not np.all(np.isfinite(ctx)):
            raise ValueError("context must be finite, found NaN or inf")
    q: FloatArray | None = None
    if estimated_rewards is not None:
        q = np.asarray(estimated_rewards, dtype=np.float64)
        if q.ndim == 2:
            q = q[:, :, None]
        if q.shape != dist.shape:
            raise ValueError(
                f"estimated_rewards must have the shape of action_dist {dist.shape}, got {q.shape}"
            )
        if not np.all(np.isfinite(q)):
            raise ValueError("estimated_rewards must be finite, found NaN or inf")
    return LoggedFeedback(r, a, pos, p, dist, ctx, q)


def effective_sample_size(weights: ArrayLike) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` (0 if all weights are 0)."""
    w = np.asarray(weights, dtype=np.float64)
    denom = float(np.sum(w * w))
    return float(np.sum(w) ** 2 / denom) if denom > 0 else 0.0
