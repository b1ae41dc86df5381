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

from recsys.evaluation.estimators.base import BaseEstimator
from recsys.evaluation.estimators.feedback import (
    EstimateOutput,
    LoggedFeedback,
    check_logged_feedback,
    effective_sample_size,
)
from recsys.evaluation.estimators.importance import (
    ClippedIPW,
    InverseProbabilityWeighting,
    MarginalizedIPW,
    ReplayMethod,
    SelfNormalizedIPW,
)
from recsys.evaluation.estimators.model_based import (
    DirectMethod,
    DoublyRobust,
    SwitchDoublyRobust,
)
from recsys.evaluation.estimators.reward_model import RegressionModel

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
