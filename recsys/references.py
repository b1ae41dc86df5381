"""Reference images for IP-Adapter: the history items nearest each interest, diversified with
maximal marginal relevance (MMR), never the product being featured."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

__all__ = ["allocate_slots", "mmr_select", "select_references"]


def mmr_select(
    relevance: np.ndarray,
    vectors: np.ndarray,
    *,
    k: int,
    lambda_: float,
    chosen_vectors: np.ndarray | None = None,
) -> list[int]:
    """Greedy MMR: indices (into ``relevance``) of up to ``k`` items, in selection order.

    Each step picks ``argmax lambda_ * relevance[i] - (1 - lambda_) * max_{s chosen} cos(i, s)``.
    ``relevance`` float ``(n,)``; ``vectors`` float32 ``(n, dim)`` unit rows; ``lambda_`` in
    [0, 1] (1 = pure relevance order); ``chosen_vectors`` ``(c, dim)``: items chosen before
    (they count as redundancy). Ties go to the lower index, so the result is deterministic.
    """
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_: expected a value in [0, 1], got {lambda_}")
    if k < 0:
        raise ValueError(f"k: expected >= 0, got {k}")
    rel = np.asarray(relevance, dtype=np.float64)
    x = np.asarray(vectors, dtype=np.float32)
    if rel.ndim != 1 or x.ndim != 2 or x.shape[0] != rel.shape[0]:
        raise ValueError(
            f"relevance (n,) and vectors (n, dim) must agree, got {rel.shape} and {x.shape}"
        )
    n = rel.shape[0]
    k = min(k, n)
    chosen: list[int] = []
    if k == 0:
        return chosen
    max_sim = np.full(n, -np.inf)
    if chosen_vectors is not None and len(chosen_vectors):
        prev = np.asarray(chosen_vectors, dtype=np.float32)
        max_sim = (x @ prev.T).max(axis=1).astype(np.float64)
    available = np.ones(n, dtype=bool)
    for _ in range(k):
        redundancy = np.where(np.isfinite(max_sim), max_sim, 0.0)
        gain = lambda_ * rel - (1.0 - lambda_) * redundancy
        gain[~available] = -np.inf
        best = int(np.argmax(gain))
        chosen.append(best)
        available[best] = False
        max_sim = np.maximum(max_sim, (x @ x[best]).astype(np.float64))
    return chosen


def allocate_slots(weights: Sequence[float], n: int) -> list[int]:
    """Split ``n`` slots across groups in proportion to ``weights`` (D'Hondt),
    giving every group at least one slot while ``n`` allows, heaviest groups first."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or np.any(w < 0):
        raise ValueError(f"weights: expected non-negative values, got {weights!r}")
    g = len(w)
    if g == 0 or n <= 0:
        return [0] * g
    slots = np.zeros(g, dtype=int)
    # one slot each, heaviest first, then D'Hondt: the next slot goes to max w / (slots + 1)
    for i in np.argsort(-w, kind="stable")[: min(n, g)]:
        slots[i] = 1
    for _ in range(n - min(n, g)):
        slots[int(np.argmax(w / (slots + 1)))] += 1
    return [int(s) for s in slots]


def select_references(
    *,
    centroids: np.ndarray,
    importances: Sequence[float],
    item_ids: np.ndarray,
    item_vectors: np.ndarray,
    n: int,
    lambda_: float,
    exclude_ids: Collection[int] = (),
) -> list[int]:
    """Up to ``n`` reference item ids from a user's history.

    ``centroids`` float32 ``(n_interests, dim)``; ``importances`` ``(n_interests,)``;
    ``item_ids`` int64 ``(m,)`` and ``item_vectors`` float32 ``(m, dim)``: the history items.
    Slots are shared among interests by importance; within an interest items are chosen by MMR
    (relevance = cosine to the centroid, redundancy = cosine to every reference already chosen,
    across interests). ``exclude_ids`` (the featured product) are never returned.
    """
    ids = np.asarray(item_ids, dtype=np.int64)
    x = np.asarray(item_vectors, dtype=np.float32)
    c = np.asarray(centroids, dtype=np.float32)
    if x.ndim != 2 or ids.shape != (x.shape[0],):
        raise ValueError(
            f"item_ids (m,) and item_vectors (m, dim) must agree, got {ids.shape}, {x.shape}"
        )
    if c.ndim != 2 or c.shape[0] != len(importances):
        raise ValueError(f"centroids: expected shape ({len(importances)}, dim), got {c.shape}")
    keep = ~np.isin(ids, np.fromiter(exclude_ids, dtype=np.int64, count=len(exclude_ids)))
    ids, x = ids[keep], x[keep]
    if len(ids) == 0 or n <= 0:
        return []
    w = np.asarray(importances, dtype=np.float64)
    slots = allocate_slots(importances, min(n, len(ids)))
    chosen: list[int] = []
    per_interest: dict[int, list[int]] = {}
    for ci in np.argsort(-w, kind="stable"):
        want = slots[int(ci)]
        if want == 0:
            continue
        taken = set(chosen)
        free = np.array([i for i in range(len(ids)) if i not in taken], dtype=int)
        if len(free) == 0:
            break
        picked = mmr_select(
            x[free] @ c[ci], x[free], k=want, lambda_=lambda_, chosen_vectors=x[chosen]
        )
        per_interest[int(ci)] = [int(free[p]) for p in picked]
        chosen.extend(per_interest[int(ci)])
    # interleave so that every prefix is itself a fair share: one per interest (heaviest
    # first), then D'Hondt order
    order: list[int] = []
    used = np.zeros(len(w), dtype=int)
    first = [int(ci) for ci in np.argsort(-w, kind="stable") if per_interest.get(int(ci))]
    for ci in first:
        order.append(per_interest[ci][0])
        used[ci] = 1
    while len(order) < len(chosen):
        left = np.array([used[i] < len(per_interest.get(i, [])) for i in range(len(w))])
        ci = int(np.argmax(np.where(left, w / (used + 1), -np.inf)))
        order.append(per_interest[ci][used[ci]])
        used[ci] += 1
    chosen = order
    return [int(ids[i]) for i in chosen]
