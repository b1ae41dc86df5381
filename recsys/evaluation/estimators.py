"""Off-policy estimators of a policy's value (e.g. click-through) from logged bandit feedback.

Semantics follow Open Bandit Pipeline (obp): logs are ``n_rounds`` rounds of
``(context, action, position, reward, pscore)`` where ``pscore`` is the logging policy's
probability of the logged action at the logged position, and the evaluation policy is given
as ``action_dist`` of shape ``(n_rounds, n_actions, len_list)``: ``action_dist[i, a, k]`` is
the probability that it shows action ``a`` at position ``k`` in round ``i`` (each
``action_dist[i, :, k]`` sums to 1). Positions are 0-based.

Every estimator is one small class with validated hyperparameters and two methods:

- ``estimate_policy_value(...) -> float``
- ``estimate_interval(..., n_bootstrap, alpha, random_state) -> EstimateOutput``: the point
  estimate on all rounds plus a percentile bootstrap interval over rounds (the reward model of
  DM / DR is fitted once and held fixed, as in obp), the bootstrap standard error and the
  Kish effective sample size of the importance weights.

All estimators reduce to per-round terms: the value is ``mean(numerator)`` or, for the
self-normalised ones, ``mean(numerator) / mean(denominator)``; the bootstrap resamples rounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "BaseEstimator",
    "ClippedIPW",
    "DirectMethod",
    "DoublyRobust",
    "EstimateOutput",
    "InverseProbabilityWeighting",
    "LoggedFeedback",
    "MarginalizedIPW",
    "RegressionModel",
    "ReplayMethod",
    "SelfNormalizedIPW",
    "SwitchDoublyRobust",
    "check_logged_feedback",
    "effective_sample_size",
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


def _float_1d(name: str, values: ArrayLike) -> FloatArray:
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


def _int_1d(name: str, values: ArrayLike) -> IntArray:
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
    r = _float_1d("reward", reward)
    n = r.shape[0]
    if n == 0:
        raise ValueError("reward must hold at least one round, got 0")
    a = _int_1d("action", action)
    p = _float_1d("pscore", pscore)
    pos = np.zeros(n, dtype=np.int64) if position is None else _int_1d("position", position)
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


def _check_alpha(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(alpha)


def _check_n_bootstrap(n_bootstrap: int) -> int:
    if isinstance(n_bootstrap, bool) or int(n_bootstrap) != n_bootstrap or n_bootstrap < 10:
        raise ValueError(f"n_bootstrap must be an integer >= 10, got {n_bootstrap!r}")
    return int(n_bootstrap)


# --------------------------------------------------------------------------- reward model


@dataclass
class RegressionModel:
    """A scikit-learn reward model ``q(x, a, k) = E[r | x, a, k]`` for DM / DR.

    Features per (round, action, position): ``[context, action_context[a], one-hot(a),
    one-hot(k)]`` (each part optional). ``base_model`` is any scikit-learn regressor or
    classifier (a classifier's ``predict_proba[:, 1]`` is used); ``None`` means logistic
    regression. ``n_folds > 1`` cross-fits: each round's prediction comes from a model that
    did not see it (reduces DR's bias from over-fitting). ``logged_position_only`` predicts
    each round only at its logged position and copies that to the other positions: the
    estimators here read only the logged position, and it is ``len_list`` times cheaper.
    """

    base_model: Any = None
    n_folds: int = 1
    action_context: FloatArray | None = None
    one_hot_action: bool = True
    one_hot_position: bool = True
    chunk_rows: int = 20_000
    logged_position_only: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.n_folds, bool) or int(self.n_folds) != self.n_folds or self.n_folds < 1:
            raise ValueError(f"n_folds must be an integer >= 1, got {self.n_folds!r}")
        if self.chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {self.chunk_rows}")
        if self.base_model is not None and not hasattr(self.base_model, "fit"):
            raise ValueError(
                f"base_model must be a scikit-learn estimator, got {type(self.base_model)}"
            )
        if self.action_context is not None:
            ac = np.asarray(self.action_context, dtype=np.float64)
            if ac.ndim != 2:
                raise ValueError(f"action_context must be (n_actions, dim), got shape {ac.shape}")
            self.action_context = ac

    def _new_model(self) -> Any:
        from sklearn.base import clone
        from sklearn.linear_model import LogisticRegression

        if self.base_model is None:
            return LogisticRegression(C=1.0, max_iter=1000)
        return clone(self.base_model)

    def _features(
        self,
        context: FloatArray | None,
        action: IntArray,
        position: IntArray,
        n_actions: int,
        len_list: int,
    ) -> FloatArray:
        parts: list[FloatArray] = []
        m = action.shape[0]
        if context is not None:
            parts.append(context)
        if self.action_context is not None:
            if self.action_context.shape[0] != n_actions:
                raise ValueError(
                    f"action_context must have n_actions={n_actions} rows, "
                    f"got {self.action_context.shape[0]}"
                )
            parts.append(self.action_context[action])
        if self.one_hot_action:
            oh = np.zeros((m, n_actions))
            oh[np.arange(m), action] = 1.0
            parts.append(oh)
        if self.one_hot_position and len_list > 1:
            ohp = np.zeros((m, len_list))
            ohp[np.arange(m), position] = 1.0
            parts.append(ohp)
        if not parts:
            return np.ones((m, 1))
        return np.hstack(parts)

    @staticmethod
    def _predict(model: Any, features: FloatArray) -> FloatArray:
        if hasattr(model, "predict_proba"):
            proba = model.predict_proba(features)
            classes = list(model.classes_)
            if 1 in classes or 1.0 in classes:
                return np.asarray(proba[:, classes.index(1)], dtype=np.float64)
            return np.zeros(features.shape[0])
        return np.asarray(model.predict(features), dtype=np.float64)

    def _fit_one(self, feats: FloatArray, reward: FloatArray) -> Any:
        model = self._new_model()
        is_classifier = hasattr(model, "predict_proba")
        if is_classifier and np.unique(reward).size < 2:
            # a classifier cannot fit one class; the constant is the right prediction
            from sklearn.dummy import DummyRegressor

            model = DummyRegressor(strategy="mean")
        y = reward.astype(np.int64) if is_classifier and np.unique(reward).size >= 2 else reward
        model.fit(feats, y)
        return model

    def fit_predict(
        self,
        *,
        reward: ArrayLike,
        action: ArrayLike,
        n_actions: int,
        len_list: int = 1,
        position: ArrayLike | None = None,
        context: ArrayLike | None = None,
        random_state: int = 0,
    ) -> FloatArray:
        """Fit on the logs and return ``q_hat`` of shape (n_rounds, n_actions, len_list)."""
        r = _float_1d("reward", reward)
        a = _int_1d("action", action)
        n = r.shape[0]
        pos = np.zeros(n, dtype=np.int64) if position is None else _int_1d("position", position)
        ctx = None if context is None else np.asarray(context, dtype=np.float64).reshape(n, -1)
        if a.shape[0] != n or pos.shape[0] != n:
            raise ValueError("reward, action and position must have the same length")
        feats = self._features(ctx, a, pos, n_actions, len_list)
        out = np.zeros((n, n_actions, len_list))
        if self.n_folds == 1:
            folds = [(np.arange(n), np.arange(n))]
        else:
            from sklearn.model_selection import KFold

            kf = KFold(n_splits=self.n_folds, shuffle=True, random_state=random_state)
            folds = list(kf.split(feats))
        for train_idx, pred_idx in folds:
            model = self._fit_one(feats[train_idx], r[train_idx])
            self._fill(model, out, ctx, pred_idx, pos, n_actions, len_list)
        return out

    def _fill(
        self,
        model: Any,
        out: FloatArray,
        ctx: FloatArray | None,
        rows: IntArray,
        position: IntArray,
        n_actions: int,
        len_list: int,
    ) -> None:
        if self.logged_position_only:
            # one prediction per (round, action) at the round's logged position
            step = max(1, self.chunk_rows // n_actions)
            for start in range(0, rows.shape[0], step):
                chunk = rows[start : start + step]
                m = chunk.shape[0]
                c = None if ctx is None else np.repeat(ctx[chunk], n_actions, axis=0)
                k = np.repeat(position[chunk], n_actions)
                a = np.tile(np.arange(n_actions), m)
                pred = self._predict(model, self._features(c, a, k, n_actions, len_list))
                out[chunk] = pred.reshape(m, n_actions, 1)
            return
        per_round = n_actions * len_list
        step = max(1, self.chunk_rows // per_round)
        grid_a = np.repeat(np.arange(n_actions), len_list)
        grid_k = np.tile(np.arange(len_list), n_actions)
        for start in range(0, rows.shape[0], step):
            chunk = rows[start : start + step]
            m = chunk.shape[0]
            c = None if ctx is None else np.repeat(ctx[chunk], per_round, axis=0)
            feats = self._features(c, np.tile(grid_a, m), np.tile(grid_k, m), n_actions, len_list)
            out[chunk] = self._predict(model, feats).reshape(m, n_actions, len_list)


# --------------------------------------------------------------------------- estimators


@dataclass(frozen=True)
class _Terms:
    numerator: FloatArray
    denominator: FloatArray | None
    weights: FloatArray | None


class BaseEstimator:
    """Shared validation, point estimate and bootstrap; subclasses define ``_terms``."""

    name: ClassVar[str] = "base"
    needs_reward_model: ClassVar[bool] = False

    #: Extra keyword arguments the estimate methods accept (e.g. MIPS's embeddings).
    _extra_args: ClassVar[tuple[str, ...]] = ()

    def _terms(self, fb: LoggedFeedback, extra: dict[str, Any]) -> _Terms:  # pragma: no cover
        raise NotImplementedError

    def _prepare(
        self, random_state: int, extra: dict[str, Any], **kwargs: Any
    ) -> tuple[LoggedFeedback, _Terms]:
        unknown = sorted(set(extra) - set(self._extra_args))
        if unknown:
            raise TypeError(f"{self.name} got unexpected keyword arguments {unknown}")
        fb = check_logged_feedback(**kwargs)
        if self.needs_reward_model and fb.estimated_rewards is None:
            fb = self._fit_reward_model(fb, random_state)
        return fb, self._terms(fb, extra)

    def _fit_reward_model(self, fb: LoggedFeedback, random_state: int) -> LoggedFeedback:
        model: RegressionModel | None = getattr(self, "reward_model", None)
        if model is None:
            raise ValueError(
                f"{self.name} needs estimated_rewards of shape (n_rounds, n_actions, len_list) "
                "or a reward_model (RegressionModel) to fit them"
            )
        q = model.fit_predict(
            reward=fb.reward,
            action=fb.action,
            position=fb.position,
            context=fb.context,
            n_actions=fb.n_actions,
            len_list=fb.len_list,
            random_state=random_state,
        )
        return LoggedFeedback(
            fb.reward, fb.action, fb.position, fb.pscore, fb.action_dist, fb.context, q
        )

    @staticmethod
    def _value(t: _Terms) -> float:
        num = float(np.mean(t.numerator))
        if t.denominator is None:
            return num
        den = float(np.mean(t.denominator))
        return num / den if den > 0 else 0.0

    def estimate_policy_value(
        self,
        *,
        reward: ArrayLike,
        action: ArrayLike,
        pscore: ArrayLike,
        action_dist: ArrayLike,
        position: ArrayLike | None = None,
        context: ArrayLike | None = None,
        estimated_rewards: ArrayLike | None = None,
        random_state: int = 0,
        **extra: Any,
    ) -> float:
        """Point estimate of the evaluation policy's value (mean reward per round)."""
        _fb, terms = self._prepare(
            random_state,
            extra,
            reward=reward,
            action=action,
            pscore=pscore,
            action_dist=action_dist,
            position=position,
            context=context,
            estimated_rewards=estimated_rewards,
        )
        return self._value(terms)

    def estimate_interval(
        self,
        *,
        reward: ArrayLike,
        action: ArrayLike,
        pscore: ArrayLike,
        action_dist: ArrayLike,
        position: ArrayLike | None = None,
        context: ArrayLike | None = None,
        estimated_rewards: ArrayLike | None = None,
        n_bootstrap: int = 1000,
        alpha: float = 0.05,
        random_state: int = 0,
        keep_replicates: bool = False,
        **extra: Any,
    ) -> EstimateOutput:
        """Point estimate plus a ``1 - alpha`` percentile bootstrap interval (seeded)."""
        n_bootstrap = _check_n_bootstrap(n_bootstrap)
        alpha = _check_alpha(alpha)
        fb, terms = self._prepare(
            random_state,
            extra,
            reward=reward,
            action=action,
            pscore=pscore,
            action_dist=action_dist,
            position=position,
            context=context,
            estimated_rewards=estimated_rewards,
        )
        value = self._value(terms)
        boot = _bootstrap(terms, n_bootstrap, random_state)
        lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
        w = terms.weights
        return EstimateOutput(
            estimator=self.name,
            value=value,
            ci_low=float(lo),
            ci_high=float(hi),
            std_error=float(np.std(boot, ddof=1)),
            effective_sample_size=float(fb.n_rounds) if w is None else effective_sample_size(w),
            n_rounds=fb.n_rounds,
            alpha=alpha,
            n_bootstrap=n_bootstrap,
            max_weight=None if w is None else float(np.max(w)),
            replicates=boot if keep_replicates else None,
        )

    def importance_weights(
        self,
        *,
        action: ArrayLike,
        pscore: ArrayLike,
        action_dist: ArrayLike,
        position: ArrayLike | None = None,
        reward: ArrayLike | None = None,
        **extra: Any,
    ) -> FloatArray:
        """The (possibly clipped) importance weights this estimator uses, shape (n,) (ones for
        DM). ``reward`` is accepted for convenience and ignored."""
        n = np.asarray(action).shape[0]
        _fb, terms = self._prepare(
            0,
            extra,
            reward=np.zeros(n),
            action=action,
            pscore=pscore,
            action_dist=action_dist,
            position=position,
            estimated_rewards=np.zeros_like(np.asarray(action_dist, dtype=np.float64)),
        )
        w = terms.weights
        return np.ones(n) if w is None else w


def _bootstrap(terms: _Terms, n_bootstrap: int, random_state: int) -> FloatArray:
    """Bootstrap replicates of the estimate, resampling rounds with replacement."""
    rng = np.random.default_rng(random_state)
    n = terms.numerator.shape[0]
    out = np.empty(n_bootstrap)
    # chunked so that n_bootstrap x n_rounds indices never sit in memory at once
    step = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n_bootstrap, step):
        b = min(step, n_bootstrap - start)
        idx = rng.integers(0, n, size=(b, n))
        num = terms.numerator[idx].mean(axis=1)
        if terms.denominator is None:
            out[start : start + b] = num
        else:
            den = terms.denominator[idx].mean(axis=1)
            out[start : start + b] = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return out


@dataclass
class ReplayMethod(BaseEstimator):
    """Replay (Li et al. 2011), Rao-Blackwellised: each round counts with weight
    ``pi_e(a_i | x_i)``, the probability that the evaluation policy would have picked the
    logged action; value = ``sum(pi_e(a_i) r_i) / sum(pi_e(a_i))``. For a deterministic policy
    this is obp's replay (mean reward over matching rounds). Unbiased only under uniform
    logging."""

    name: ClassVar[str] = "replay"

    def _terms(self, fb: LoggedFeedback, extra: dict[str, Any]) -> _Terms:
        match = fb.eval_prob_of_logged()
        if not np.any(match > 0):
            raise ValueError("replay: the evaluation policy never picks a logged action")
        return _Terms(match * fb.reward, match, match)


@dataclass
class InverseProbabilityWeighting(BaseEstimator):
    """IPW / IPS: ``mean(w_i r_i)`` with ``w_i = pi_e(a_i|x_i,k_i) / pscore_i``.

    ``max_weight`` (default inf: none) clips the weights (obp's ``lambda_``).
    """

    max_weight: float = math.inf
    name: ClassVar[str] = "ipw"

    def __post_init__(self) -> None:
        if not (self.max_weight > 0):
            raise ValueError(f"max_weight must be > 0, got {self.max_weight}")

    def _weights(self, fb: LoggedFeedback) -> FloatArray:
        return np.minimum(fb.eval_prob_of_logged() / fb.pscore, self.max_weight)

    def _terms(self, fb: LoggedFeedback, extra: dict[str, Any]) -> _Terms:
        w = self._weights(fb)
        return _Terms(w * fb.reward, None, w)


@dataclass
class ClippedIPW(InverseProbabilityWeighting):
    """IPW with weights clipped at ``max_weight`` (required, finite): trades bias for variance."""

    max_weight: float = 10.0
    name: ClassVar[str] = "clipped_ipw"

    def __post_init__(self) -> None:
        if not (0 < self.max_weight < math.inf):
            raise ValueError(f"max_weight must be finite and > 0, got {self.max_weight}")


@dataclass
class SelfNormalizedIPW(InverseProbabilityWeighting):
    """SNIPW / SNIPS: ``sum(w_i r_i) / sum(w_i)``; bounded by the reward range, less variance."""

    name: ClassVar[str] = "snipw"

    def _terms(self, fb: LoggedFeedback, extra: dict[str, Any]) -> _Terms:
        w = self._weights(fb)
        return _Terms(w * fb.reward, w, w)


@dataclass
class DirectMethod(BaseEstimator):
    """DM: ``mean_i sum_a pi_e(a|x_i,k_i) q_hat(x_i, a, k_i)``.

    Pass ``estimated_rewards`` (n, n_actions, len_list) to the estimate methods, or set
    ``reward_model`` (a ``RegressionModel``) to fit them from the logs (with ``context``).
    As in obp, the bootstrap holds the fitted model fixed, so DM's interval reflects only the
    spread of contexts, not the reward model's own error: it is far too narrow whenever the
    model is biased. Prefer DR's interval.
    """

    reward_model: RegressionModel | None = field(default_factory=RegressionModel)
    name: ClassVar[str] = "dm"
    needs_reward_model: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.reward_model is not None and not isinstance(self.reward_model, RegressionModel):
            raise ValueError(
                f"reward_model must be a RegressionModel, got {type(self.reward_model)}"
            )

    def _terms(self, fb: LoggedFeedback, extra: dict[str, Any]) -> _Terms:
        assert fb.estimated_rewards is not None
        q = fb.estimated_rewards[np.arange(fb.n_rounds), :, fb.position]
        return _Terms(np.sum(fb.dist_at_position() * q, axis=1), None, None)


@dataclass
class DoublyRobust(DirectMethod):
    """DR: ``mean_i [ q_hat(x_i, pi_e) + w_i (r_i - q_hat(x_i, a_i)) ]``.

    Unbiased if either the propensities or the reward model are right. ``max_weight`` clips
    the weights (default inf: none).
    """

    max_weight: float = math.inf
    name: ClassVar[str] = "dr"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.max_weight > 0):
            raise ValueError(f"max_weight must be > 0, got {self.max_weight}")

    def _parts(self, fb: LoggedFeedback) -> tuple[FloatArray, FloatArray, FloatArray]:
        assert fb.estimated_rewards is not None
        idx = np.arange(fb.n_rounds)
        q_all = fb.estimated_rewards[idx, :, fb.position]
        q_pi = np.sum(fb.dist_at_position() * q_all, axis=1)
        q_logged = q_all[idx, fb.action]
        w = np.minimum(fb.eval_prob_of_logged() / fb.pscore, self.max_weight)
        return q_pi, q_logged, w

    def _terms(self, fb: LoggedFeedback, extra: dict[str, Any]) -> _Terms:
        q_pi, q_logged, w = self._parts(fb)
        return _Terms(q_pi + w * (fb.reward - q_logged), None, w)


@dataclass
class SwitchDoublyRobust(DoublyRobust):
    """Switch-DR (Wang et al. 2017, obp semantics): the DR correction only where
    ``w_i <= switch_threshold``; DM alone where the weight is larger."""

    switch_threshold: float = 10.0
    name: ClassVar[str] = "switch_dr"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.switch_threshold >= 0):
            raise ValueError(f"switch_threshold must be >= 0, got {self.switch_threshold}")

    def _terms(self, fb: LoggedFeedback, extra: dict[str, Any]) -> _Terms:
        q_pi, q_logged, w = self._parts(fb)
        keep = w <= self.switch_threshold
        return _Terms(q_pi + keep * w * (fb.reward - q_logged), None, w * keep)


@dataclass
@dataclass
class MarginalizedIPW(BaseEstimator):
    """MIPS (Saito & Joachims 2022): importance weights on action *embeddings* instead of actions,
    ``w(x, e) = p(e | x, pi_e) / p(e | x, pi_b)`` with ``p(e | x, pi) = sum_{a: e(a)=e} pi(a|x)``.

    Needs the logging policy's whole distribution ``behavior_action_dist`` (n, n_actions,
    len_list) and a discrete embedding of the actions, passed to the estimate methods as either
    ``action_embedding``: (n_actions,) codes or (n_actions, d) rows (equal rows = same
    embedding), or ``context_action_embedding``: (n_rounds, n_actions) int codes when the
    embedding depends on the round (e.g. "this creative's colour matches the shopper's").
    Unbiased when the reward depends on the action only through its embedding, with far
    smaller weights when many actions share an embedding; it can value creatives never logged
    exactly (their ``pi_b`` may be 0 as long as their embedding was logged).
    ``self_normalized`` divides by the mean weight.
    """

    self_normalized: bool = False
    name: ClassVar[str] = "mipw"
    _extra_args: ClassVar[tuple[str, ...]] = (
        "behavior_action_dist",
        "action_embedding",
        "context_action_embedding",
    )

    def __post_init__(self) -> None:
        if not isinstance(self.self_normalized, bool):
            raise ValueError(f"self_normalized must be a bool, got {self.self_normalized!r}")

    @staticmethod
    def _same_embedding(fb: LoggedFeedback, extra: dict[str, Any]) -> NDArray[np.bool_]:
        """(n, n_actions): does action ``a`` share round ``i``'s logged action's embedding?"""
        emb, ctx_emb = extra.get("action_embedding"), extra.get("context_action_embedding")
        if (emb is None) == (ctx_emb is None):
            raise ValueError("mipw needs exactly one of action_embedding, context_action_embedding")
        idx = np.arange(fb.n_rounds)
        if ctx_emb is not None:
            c = np.asarray(ctx_emb)
            if c.shape != (fb.n_rounds, fb.n_actions):
                raise ValueError(
                    "context_action_embedding must have shape (n_rounds, n_actions) = "
                    f"{(fb.n_rounds, fb.n_actions)}, got {c.shape}"
                )
            return np.asarray(c == c[idx, fb.action][:, None])
        e = np.asarray(emb)
        if e.shape[0] != fb.n_actions:
            raise ValueError(
                f"action_embedding must have n_actions={fb.n_actions} rows, got {e.shape[0]}"
            )
        codes = np.unique(e.reshape(fb.n_actions, -1), axis=0, return_inverse=True)[1].ravel()
        return np.asarray(codes[None, :] == codes[fb.action][:, None])

    def _terms(self, fb: LoggedFeedback, extra: dict[str, Any]) -> _Terms:
        pi_b = extra.get("behavior_action_dist")
        if pi_b is None:
            raise ValueError("mipw needs behavior_action_dist (the logging policy's distribution)")
        b = np.asarray(pi_b, dtype=np.float64)
        if b.ndim == 2:
            b = b[:, :, None]
        if b.shape != fb.action_dist.shape:
            raise ValueError(
                f"behavior_action_dist must have shape {fb.action_dist.shape}, got {b.shape}"
            )
        if np.any(b < 0) or np.any(np.abs(b.sum(axis=1) - 1.0) > SUM_TOL):
            raise ValueError("behavior_action_dist must be >= 0 and sum to 1 over actions")
        idx = np.arange(fb.n_rounds)
        b_pos = b[idx, :, fb.position]
        if not np.allclose(b_pos[idx, fb.action], fb.pscore, rtol=1e-4, atol=1e-9):
            bad = int(np.argmax(np.abs(b_pos[idx, fb.action] - fb.pscore)))
            raise ValueError(
                f"behavior_action_dist disagrees with pscore at round {bad}: "
                f"{b_pos[bad, fb.action[bad]]} vs {fb.pscore[bad]}"
            )
        same = self._same_embedding(fb, extra)
        p_e = np.sum(fb.dist_at_position() * same, axis=1)
        p_b = np.sum(b_pos * same, axis=1)  # >= pscore > 0
        w = p_e / p_b
        return _Terms(w * fb.reward, w if self.self_normalized else None, w)
