"""Shopper segments: k-means over profile embeddings, k chosen by silhouette, stable ids.

Rebuilding segments after a few new events must not rename them (variants and approvals hang
off segment ids): new clusters are matched to old segments with the Hungarian algorithm on
centroid cosine distance, and a match keeps the old id when the memberships overlap enough
(Jaccard >= ``min_jaccard``). Unmatched clusters get fresh ids.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["KMeansSegmenter", "SegmentFit", "match_segment_ids"]


@dataclass(frozen=True)
class SegmentFit:
    """``labels`` int64 ``(n_users,)`` in ``[0, k)``; ``centroids`` float32 ``(k, dim)`` unit
    rows; ``silhouettes`` the score of every k tried."""

    k: int
    labels: np.ndarray
    centroids: np.ndarray
    silhouettes: dict[int, float]

    def members(self) -> list[np.ndarray]:
        """Per cluster, the row indices of its users."""
        return [np.flatnonzero(self.labels == c) for c in range(self.k)]


class KMeansSegmenter:
    """k-means (scikit-learn, cosine via unit vectors) with k in ``[k_min, k_max]`` chosen by
    the silhouette score (on at most ``silhouette_sample`` users, seeded)."""

    def __init__(
        self,
        *,
        k_min: int = 2,
        k_max: int = 12,
        seed: int = 0,
        n_init: int = 4,
        silhouette_sample: int = 5000,
    ) -> None:
        if k_min < 2:
            raise ValueError(f"k_min: expected >= 2 (silhouette needs 2 clusters), got {k_min}")
        if k_max < k_min:
            raise ValueError(f"k_max: expected >= k_min ({k_min}), got {k_max}")
        if n_init < 1:
            raise ValueError(f"n_init: expected >= 1, got {n_init}")
        if silhouette_sample < 10:
            raise ValueError(f"silhouette_sample: expected >= 10, got {silhouette_sample}")
        self.k_min = int(k_min)
        self.k_max = int(k_max)
        self.seed = int(seed)
        self.n_init = int(n_init)
        self.silhouette_sample = int(silhouette_sample)

    def fit(self, embeddings: np.ndarray) -> SegmentFit:
        """Cluster ``embeddings`` float32 ``(n_users, dim)`` (unit rows)."""
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score

        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"embeddings: expected shape (n_users, dim), got {x.shape}")
        n = x.shape[0]
        if n < self.k_min + 1:
            raise ValueError(
                f"embeddings: need more than k_min={self.k_min} users to segment, got {n}"
            )
        best: tuple[float, int, np.ndarray, np.ndarray] | None = None
        scores: dict[int, float] = {}
        sample = min(n, self.silhouette_sample)
        for k in range(self.k_min, min(self.k_max, n - 1) + 1):
            km = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.seed).fit(x)
            labels = km.labels_.astype(np.int64)
            if len(np.unique(labels)) < 2:
                continue
            s = float(
                silhouette_score(
                    x, labels, metric="cosine", sample_size=sample, random_state=self.seed
                )
            )
            scores[k] = s
            # strictly better only: on ties the smaller k wins
            if best is None or s > best[0] + 1e-9:
                best = (s, k, labels, km.cluster_centers_)
        if best is None:
            raise ValueError("embeddings: every k gave a single cluster (all users identical?)")
        _, k, labels, centers = best
        norms = np.linalg.norm(centers, axis=1, keepdims=True)
        centroids = (centers / np.maximum(norms, 1e-12)).astype(np.float32)
        return SegmentFit(k=k, labels=labels, centroids=centroids, silhouettes=scores)


def match_segment_ids(
    *,
    old_centroids: Mapping[int, np.ndarray],
    old_members: Mapping[int, Collection[str]],
    new_centroids: np.ndarray,
    new_members: Sequence[Collection[str]],
    min_jaccard: float = 0.5,
) -> list[int | None]:
    """For each new cluster, the old segment id it continues, or ``None`` (a new segment).

    Pairs come from the Hungarian assignment on ``1 - cos(old, new)``; a pair is kept when the
    Jaccard overlap of the two memberships is at least ``min_jaccard``.
    """
    from scipy.optimize import linear_sum_assignment

    if not 0 <= min_jaccard <= 1:
        raise ValueError(f"min_jaccard: expected in [0, 1], got {min_jaccard}")
    new_c = np.asarray(new_centroids, dtype=np.float32)
    if new_c.ndim != 2 or new_c.shape[0] != len(new_members):
        raise ValueError(
            f"new_centroids: expected shape ({len(new_members)}, dim), got {new_c.shape}"
        )
    out: list[int | None] = [None] * len(new_members)
    old_ids = sorted(old_centroids)
    if not old_ids or len(new_members) == 0:
        return out
    old_c = np.stack([np.asarray(old_centroids[i], dtype=np.float32) for i in old_ids])
    cost = 1.0 - old_c @ new_c.T
    rows, cols = linear_sum_assignment(cost)
    for r, c in zip(rows, cols, strict=True):
        a = set(old_members.get(old_ids[r], ()))
        b = set(new_members[c])
        union = len(a | b)
        jaccard = len(a & b) / union if union else 0.0
        if jaccard >= min_jaccard:
            out[int(c)] = old_ids[int(r)]
    return out
