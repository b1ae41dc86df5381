"""Product recommendations: which products to feature for a shopper, and similar products.

A candidate's relevance to a multi-interest profile is a soft maximum over interests,
``T * log(sum_i w_i * exp(cos(c_i, x) / T))``: an item close to any one interest scores high
(unlike the cosine to the blurred mean), and heavier interests count more. A popularity prior
(z-scored log counts) is added, purchased items are excluded, and the list is diversified with
MMR.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from recsys.config import RecsysConfig
from recsys.index.base import VectorIndex
from recsys.profiles import TasteProfile
from recsys.references import mmr_select

__all__ = [
    "InterestRecommender",
    "PopularityRecommender",
    "ProductRecommender",
    "Recommendations",
]


@dataclass(frozen=True)
class Recommendations:
    """``item_ids`` int64 ``(k,)`` best first, ``scores`` float32 ``(k,)``; ``propensities``
    float64 ``(k,)`` only when a stochastic policy chose (else ``None``). Explanations, when
    the recommender gives them: ``because_ids`` int64 ``(k,)`` the history product behind
    each pick (-1: none), ``interest_index`` int64 ``(k,)`` the profile interest it serves."""

    item_ids: np.ndarray
    scores: np.ndarray
    propensities: np.ndarray | None = None
    policy: str = "interest"
    because_ids: np.ndarray | None = None
    interest_index: np.ndarray | None = None

    def __post_init__(self) -> None:
        ids = np.asarray(self.item_ids, dtype=np.int64)
        scores = np.asarray(self.scores, dtype=np.float32)
        if ids.ndim != 1 or ids.shape != scores.shape:
            raise ValueError(
                f"item_ids and scores must be 1-D of one length: {ids.shape}, {scores.shape}"
            )
        object.__setattr__(self, "item_ids", ids)
        object.__setattr__(self, "scores", scores)
        if self.propensities is not None:
            p = np.asarray(self.propensities, dtype=np.float64)
            if p.shape != ids.shape or np.any((p <= 0) | (p > 1)):
                raise ValueError(f"propensities: expected {ids.shape} values in (0, 1], got {p!r}")
            object.__setattr__(self, "propensities", p)
        for name, v in (("because_ids", self.because_ids), ("interest_index", self.interest_index)):
            if v is not None:
                arr = np.asarray(v, dtype=np.int64)
                if arr.shape != ids.shape:
                    raise ValueError(f"{name}: expected shape {ids.shape}, got {arr.shape}")
                object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])


def _popularity_prior(popularity: Mapping[int, float] | None) -> dict[int, float]:
    """z-scored ``log1p(count)`` per item (0 for items never seen)."""
    if not popularity:
        return {}
    ids = list(popularity)
    logs = np.log1p(np.maximum(np.array([float(popularity[i]) for i in ids]), 0.0))
    std = float(logs.std()) or 1.0
    z = (logs - float(logs.mean())) / std
    return {int(i): float(v) for i, v in zip(ids, z, strict=True)}


class ProductRecommender(Protocol):
    """What the storefront and ``tailorshot recommend`` use (the interest and the hybrid
    recommenders): ``index`` the product vector index (None when the caller gave none)."""

    @property
    def index(self) -> VectorIndex | None: ...

    def recommend(
        self, profile: TasteProfile, *, k: int = 10, exclude_ids: Collection[int] = ()
    ) -> Recommendations: ...


class InterestRecommender:
    """Nearest products to each interest of a profile, from a :class:`VectorIndex`.

    ``popularity`` maps item id -> count; ``popularity_weight`` scales its z-scored log
    (0 = off); ``temperature`` (cosine units) sets how max-like the soft maximum over interests
    is; ``candidates`` neighbours are retrieved per interest; ``mmr_lambda`` 1 = no
    diversification.
    """

    def __init__(
        self,
        *,
        index: VectorIndex,
        popularity: Mapping[int, float] | None = None,
        popularity_weight: float = 0.02,
        temperature: float = 0.05,
        candidates: int = 100,
        mmr_lambda: float = 0.7,
    ) -> None:
        if popularity_weight < 0:
            raise ValueError(f"popularity_weight: expected >= 0, got {popularity_weight}")
        if temperature <= 0:
            raise ValueError(f"temperature: expected > 0, got {temperature}")
        if candidates < 1:
            raise ValueError(f"candidates: expected >= 1, got {candidates}")
        if not 0 <= mmr_lambda <= 1:
            raise ValueError(f"mmr_lambda: expected in [0, 1], got {mmr_lambda}")
        self.index = index
        self.popularity_weight = float(popularity_weight)
        self.temperature = float(temperature)
        self.candidates = int(candidates)
        self.mmr_lambda = float(mmr_lambda)
        self._prior = _popularity_prior(popularity)

    @classmethod
    def from_config(
        cls,
        config: RecsysConfig,
        *,
        index: VectorIndex,
        popularity: Mapping[int, float] | None = None,
    ) -> InterestRecommender:
        """With the ``recommend_*`` and ``mmr_lambda`` settings of a :class:`RecsysConfig`."""
        return cls(
            index=index,
            popularity=popularity,
            popularity_weight=config.recommend_popularity_weight,
            temperature=config.recommend_temperature,
            candidates=config.recommend_candidates,
            mmr_lambda=config.mmr_lambda,
        )

    def recommend(
        self, profile: TasteProfile, *, k: int = 10, exclude_ids: Collection[int] = ()
    ) -> Recommendations:
        """Top ``k`` products for ``profile``, never one of ``exclude_ids`` (pass the user's
        purchases)."""
        if k < 1:
            raise ValueError(f"k: expected >= 1, got {k}")
        if profile.dim != self.index.dim:
            raise ValueError(
                f"profile {profile.user_id!r}: embedding dim {profile.dim} does not match the "
                f"index dim {self.index.dim}"
            )
        centroids = np.stack([i.centroid for i in profile.interests]).astype(np.float32)
        weights = np.array([i.weight for i in profile.interests], dtype=np.float64)
        weights = weights / weights.sum()
        excluded = {int(i) for i in exclude_ids}
        n_cand = min(len(self.index), self.candidates + len(excluded))
        if n_cand == 0:
            return Recommendations(np.zeros(0, np.int64), np.zeros(0, np.float32))
        _, cand = self.index.search(centroids, n_cand)
        ids = np.unique(cand[cand >= 0])
        ids = ids[~np.isin(ids, np.fromiter(excluded, np.int64, len(excluded)))]
        if len(ids) == 0:
            return Recommendations(np.zeros(0, np.int64), np.zeros(0, np.float32))
        vecs = self.index.reconstruct(ids).astype(np.float32)
        sims = vecs @ centroids.T  # (n, n_interests)
        t = self.temperature
        # log-sum-exp with the max taken out, for stability
        m = sims.max(axis=1, keepdims=True)
        rel = (m[:, 0] + t * np.log((weights * np.exp((sims - m) / t)).sum(axis=1))).astype(
            np.float64
        )
        if self.popularity_weight > 0 and self._prior:
            rel += self.popularity_weight * np.array([self._prior.get(int(i), 0.0) for i in ids])
        picked = mmr_select(rel, vecs, k=k, lambda_=self.mmr_lambda)
        return Recommendations(item_ids=ids[picked], scores=rel[picked], policy="interest")

    def similar(
        self, product_id: int, *, k: int = 10, exclude_ids: Collection[int] = ()
    ) -> Recommendations:
        """The ``k`` products nearest ``product_id`` (itself excluded), by cosine."""
        if k < 1:
            raise ValueError(f"k: expected >= 1, got {k}")
        try:
            query = self.index.reconstruct(np.array([product_id], dtype=np.int64))
        except (KeyError, IndexError, RuntimeError, ValueError) as e:
            raise KeyError(f"product_id {product_id} is not in the index") from e
        excluded = {int(product_id), *(int(i) for i in exclude_ids)}
        n = min(len(self.index), k + len(excluded))
        scores, ids = self.index.search(query.astype(np.float32), n)
        keep = (ids[0] >= 0) & ~np.isin(ids[0], np.fromiter(excluded, np.int64, len(excluded)))
        return Recommendations(
            item_ids=ids[0][keep][:k], scores=scores[0][keep][:k], policy="similar"
        )


class PopularityRecommender:
    """The baseline: most popular items (by count), excluding ``exclude_ids``."""

    def __init__(self, *, popularity: Mapping[int, float]) -> None:
        if not popularity:
            raise ValueError("popularity: expected counts for at least one item, got none")
        # ties broken by id so the ranking is deterministic
        self._ranked = sorted(popularity, key=lambda i: (-float(popularity[i]), int(i)))
        self._count = {int(i): float(c) for i, c in popularity.items()}

    def recommend(self, *, k: int = 10, exclude_ids: Collection[int] = ()) -> Recommendations:
        if k < 1:
            raise ValueError(f"k: expected >= 1, got {k}")
        excluded = {int(i) for i in exclude_ids}
        out = [int(i) for i in self._ranked if int(i) not in excluded][:k]
        return Recommendations(
            item_ids=np.array(out, dtype=np.int64),
            scores=np.array([self._count[i] for i in out], dtype=np.float32),
            policy="popularity",
        )
