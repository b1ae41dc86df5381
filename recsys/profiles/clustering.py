"""The profile's arithmetic: time-decayed event weights and agglomerative clustering of a
history's items into interests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 1.25,
    "add_to_cart": 1.5,
    "purchase": 2.0,
}

_SECONDS_PER_DAY = 86400.0


def decayed_weights(
    kinds: Sequence[str],
    timestamps: Sequence[datetime],
    *,
    event_weights: Mapping[str, float],
    half_life_days: float,
    now: datetime | None = None,
) -> np.ndarray:
    """float64 ``(n,)``: ``event_weights[kind] * 0.5 ** (age_days / half_life_days)``, age
    measured from ``now`` (default: the latest timestamp). Unknown kinds weigh 0."""
    if half_life_days <= 0:
        raise ValueError(f"half_life_days: expected > 0, got {half_life_days}")
    if len(kinds) != len(timestamps):
        raise ValueError(f"kinds and timestamps differ in length: {len(kinds)}, {len(timestamps)}")
    if not timestamps:
        return np.zeros(0)
    ref = now if now is not None else max(timestamps)
    age = np.array([(ref - t).total_seconds() / _SECONDS_PER_DAY for t in timestamps])
    age = np.maximum(age, 0.0)  # events "after" now count as fresh, never as boosted
    base = np.array([float(event_weights.get(k, 0.0)) for k in kinds])
    return base * np.power(0.5, age / half_life_days)


def cluster_items(vectors: np.ndarray, *, threshold: float, linkage: str = "average") -> np.ndarray:
    """Agglomerative clustering of unit vectors ``(m, dim)``; int64 labels ``(m,)`` from 0.

    ``average`` linkage cuts at a mean cosine distance of ``threshold`` (scale-free in the
    history length); ``ward`` cuts the Ward merge height (Euclidean) at ``threshold``.
    """
    from scipy.cluster.hierarchy import fcluster
    from scipy.cluster.hierarchy import linkage as scipy_linkage

    x = np.asarray(vectors, dtype=np.float64)
    m = x.shape[0]
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    if m == 1:
        return np.zeros(1, dtype=np.int64)
    if linkage == "average":
        z = scipy_linkage(x, method="average", metric="cosine")
    elif linkage == "ward":
        z = scipy_linkage(x, method="ward")
    else:
        raise ValueError(f"linkage: expected 'average' or 'ward', got {linkage!r}")
    labels = fcluster(z, t=threshold, criterion="distance")
    # relabel by first appearance so labels are deterministic and start at 0
    _, first = np.unique(labels, return_index=True)
    order = {int(labels[i]): n for n, i in enumerate(sorted(first))}
    return np.array([order[int(v)] for v in labels], dtype=np.int64)


def threshold_from_quantile(
    vectors: np.ndarray, quantile: float, *, sample: int = 2000, seed: int = 0
) -> float:
    """The ``quantile`` of pairwise cosine distances among (a seeded sample of at most
    ``sample``) unit ``vectors`` ``(n, dim)``: a clustering cut that adapts to the spread of
    whichever embedding model made them."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile: expected a value in (0, 1), got {quantile}")
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"vectors: expected shape (n >= 2, dim), got {x.shape}")
    if x.shape[0] > sample:
        x = x[np.random.default_rng(seed).choice(x.shape[0], size=sample, replace=False)]
    d = 1.0 - x @ x.T
    iu = np.triu_indices(x.shape[0], 1)
    return float(max(np.quantile(d[iu], quantile), 1e-6))


def merge_close_centroids(
    vectors: np.ndarray, weights: np.ndarray, labels: np.ndarray, *, threshold: float
) -> np.ndarray:
    """Merge clusters whose weighted centroids are closer than ``threshold`` (cosine
    distance), closest pair first. Average linkage keeps apart two halves of one interest
    whose items are spread out (e.g. the same colour in two categories) although their
    centres nearly coincide; this pass joins them. Labels are renumbered from 0."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    x = np.asarray(vectors, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    while True:
        ids = np.unique(labels)
        if len(ids) < 2:
            break
        cents = np.stack([(w[labels == i, None] * x[labels == i]).sum(axis=0) for i in ids])
        cents /= np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)
        dist = 1.0 - cents @ cents.T
        np.fill_diagonal(dist, np.inf)
        a, b = np.unravel_index(int(np.argmin(dist)), dist.shape)
        if dist[a, b] >= threshold:
            break
        labels[labels == ids[b]] = ids[a]
    _, first = np.unique(labels, return_index=True)
    order = {int(labels[i]): n for n, i in enumerate(sorted(first))}
    return np.array([order[int(v)] for v in labels], dtype=np.int64)
