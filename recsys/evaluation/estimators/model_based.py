"""Reward-model estimators: the direct method, doubly robust and switch doubly robust."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from recsys.evaluation.estimators.base import BaseEstimator, Terms
from recsys.evaluation.estimators.feedback import FloatArray, LoggedFeedback
from recsys.evaluation.estimators.reward_model import RegressionModel

__all__ = ["DirectMethod", "DoublyRobust", "SwitchDoublyRobust"]


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

    def _complete(self, fb: LoggedFeedback, random_state: int) -> LoggedFeedback:
        """``fb`` with ``estimated_rewards`` fitted by ``reward_model`` on the logs."""
        if self.reward_model is None:
            raise ValueError(
                f"{self.name} needs estimated_rewards of shape (n_rounds, n_actions, len_list) "
                "or a reward_model (RegressionModel) to fit them"
            )
        q = self.reward_model.fit_predict(
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

    def _terms(self, fb: LoggedFeedback, extra: dict[str, Any]) -> Terms:
        assert fb.estimated_rewards is not None
        q = fb.estimated_rewards[np.arange(fb.n_rounds), :, fb.position]
        return Terms(np.sum(fb.dist_at_position() * q, axis=1), None, None)


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

    def _terms(self, fb: LoggedFeedback, extra: dict[str, Any]) -> Terms:
        q_pi, q_logged, w = self._parts(fb)
        return Terms(q_pi + w * (fb.reward - q_logged), None, w)


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

    def _terms(self, fb: LoggedFeedback, extra: dict[str, Any]) -> Terms:
        q_pi, q_logged, w = self._parts(fb)
        keep = w <= self.switch_threshold
        return Terms(q_pi + keep * w * (fb.reward - q_logged), None, w * keep)
