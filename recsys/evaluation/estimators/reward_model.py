"""The reward model of DM / DR: a scikit-learn model of ``E[r | x, a, k]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from recsys.evaluation.estimators.feedback import FloatArray, IntArray, float_1d, int_1d

__all__ = ["RegressionModel"]


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
        r = float_1d("reward", reward)
        a = int_1d("action", action)
        n = r.shape[0]
        pos = np.zeros(n, dtype=np.int64) if position is None else int_1d("position", position)
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
