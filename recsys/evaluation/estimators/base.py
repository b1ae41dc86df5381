"""What every estimator shares: validation, the point estimate from per-round terms and the
round-resampling bootstrap; subclasses define ``_terms``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike

from recsys.evaluation.estimators.feedback import (
    EstimateOutput,
    FloatArray,
    LoggedFeedback,
    check_logged_feedback,
    effective_sample_size,
)

__all__ = ["BaseEstimator", "Terms"]


def _check_alpha(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(alpha)


def _check_n_bootstrap(n_bootstrap: int) -> int:
    if isinstance(n_bootstrap, bool) or int(n_bootstrap) != n_bootstrap or n_bootstrap < 10:
        raise ValueError(f"n_bootstrap must be an integer >= 10, got {n_bootstrap!r}")
    return int(n_bootstrap)


@dataclass(frozen=True)
class Terms:
    """Per-round terms: the value is ``mean(numerator)`` (over ``mean(denominator)`` when
    self-normalised); ``weights`` the importance weights (None for DM)."""

    numerator: FloatArray
    denominator: FloatArray | None
    weights: FloatArray | None


class BaseEstimator:
    """Shared validation, point estimate and bootstrap; subclasses define ``_terms``."""

    name: ClassVar[str] = "base"
    needs_reward_model: ClassVar[bool] = False

    #: Extra keyword arguments the estimate methods accept (e.g. MIPS's embeddings).
    _extra_args: ClassVar[tuple[str, ...]] = ()

    def _terms(self, fb: LoggedFeedback, extra: dict[str, Any]) -> Terms:  # pragma: no cover
        raise NotImplementedError

    def _prepare(
        self, random_state: int, extra: dict[str, Any], **kwargs: Any
    ) -> tuple[LoggedFeedback, Terms]:
        unknown = sorted(set(extra) - set(self._extra_args))
        if unknown:
            raise TypeError(f"{self.name} got unexpected keyword arguments {unknown}")
        fb = check_logged_feedback(**kwargs)
        if self.needs_reward_model and fb.estimated_rewards is None:
            fb = self._complete(fb, random_state)
        return fb, self._terms(fb, extra)

    def _complete(self, fb: LoggedFeedback, random_state: int) -> LoggedFeedback:
        """Hook for estimators with a reward model: fill in ``estimated_rewards``."""
        return fb

    @staticmethod
    def _value(t: Terms) -> float:
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


def _bootstrap(terms: Terms, n_bootstrap: int, random_state: int) -> FloatArray:
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
