"""Importance-weighting estimators: replay, IPW, clipped IPW, self-normalised IPW and
marginalised IPW (weights on action embeddings)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from recsys.evaluation.estimators.base import BaseEstimator, Terms
from recsys.evaluation.estimators.feedback import SUM_TOL, FloatArray, LoggedFeedback

__all__ = [
    "ClippedIPW",
    "InverseProbabilityWeighting",
    "MarginalizedIPW",
    "ReplayMethod",
    "SelfNormalizedIPW",
]


@dataclass
class ReplayMethod(BaseEstimator):
    """Replay (Li et al. 2011), Rao-Blackwellised: each round counts with weight
    ``pi_e(a_i | x_i)``, the probability that the evaluation policy would have picked the
    logged action; value = ``sum(pi_e(a_i) r_i) / sum(pi_e(a_i))``. For a deterministic policy
    this is obp's replay (mean reward over matching rounds). Unbiased only under uniform
    logging."""

    name: ClassVar[str] = "replay"

    def _terms(self, fb: LoggedFeedback, extra: dict[str, Any]) -> Terms:
        match = fb.eval_prob_of_logged()
        if not np.any(match > 0):
            raise ValueError("replay: the evaluation policy never picks a logged action")
        return Terms(match * fb.reward, match, match)


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

    def _terms(self, fb: LoggedFeedback, extra: dict[str, Any]) -> Terms:
        w = self._weights(fb)
        return Terms(w * fb.reward, None, w)


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

    def _terms(self, fb: LoggedFeedback, extra: dict[str, Any]) -> Terms:
        w = self._weights(fb)
        return Terms(w * fb.reward, w, w)


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

    def _terms(self, fb: LoggedFeedback, extra: dict[str, Any]) -> Terms:
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
        return Terms(w * fb.reward, w if self.self_normalized else None, w)
