"""Ranking metrics for top-k recommendations and train/test split protocols.

Per-user metrics take ``recommended`` (a ranked sequence of item ids, best first) and
``relevant`` (a collection of relevant item ids, or a mapping item id -> graded gain for
NDCG) and return a float in [0, 1]. ``mean_at_k`` averages any of them over users, skipping
users with no relevant items (their recall / NDCG is undefined).

Conventions (those of RecBole / implicit): precision@k divides by ``k`` even when fewer than
``k`` items were recommended; AP@k divides by ``min(|relevant|, k)``; NDCG uses
``gain / log2(rank + 1)`` with ranks starting at 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "SplitOutput",
    "catalogue_coverage",
    "group_by_user",
    "hit_rate_at_k",
    "intra_list_diversity",
    "leave_last_out",
    "map_at_k",
    "mean_at_k",
    "ndcg_at_k",
    "novelty",
    "precision_at_k",
    "recall_at_k",
    "time_split",
]


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _top_k(recommended: Sequence[Hashable] | NDArray[Any], k: int) -> list[Hashable]:
    """First ``k`` items; a repeated item counts once (at its best rank)."""
    seen: set[Hashable] = set()
    out: list[Hashable] = []
    for item in list(recommended)[:k]:
        key = item.item() if isinstance(item, np.generic) else item
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def _as_set(relevant: Collection[Hashable] | NDArray[Any]) -> set[Hashable]:
    return {i.item() if isinstance(i, np.generic) else i for i in relevant}


def recall_at_k(
    recommended: Sequence[Hashable] | NDArray[Any],
    relevant: Collection[Hashable] | NDArray[Any],
    k: int,
) -> float:
    """|top-k ∩ relevant| / |relevant|; 0.0 when ``relevant`` is empty."""
    k = _check_k(k)
    rel = _as_set(relevant)
    if not rel:
        return 0.0
    hits = sum(1 for i in _top_k(recommended, k) if i in rel)
    return hits / len(rel)


def precision_at_k(
    recommended: Sequence[Hashable] | NDArray[Any],
    relevant: Collection[Hashable] | NDArray[Any],
    k: int,
) -> float:
    """|top-k ∩ relevant| / k."""
    k = _check_k(k)
    rel = _as_set(relevant)
    hits = sum(1 for i in _top_k(recommended, k) if i in rel)
    return hits / k


def hit_rate_at_k(
    recommended: Sequence[Hashable] | NDArray[Any],
    relevant: Collection[Hashable] | NDArray[Any],
    k: int,
) -> float:
    """1.0 if any of the top-k items is relevant, else 0.0."""
    k = _check_k(k)
    rel = _as_set(relevant)
    return 1.0 if any(i in rel for i in _top_k(recommended, k)) else 0.0


def ndcg_at_k(
    recommended: Sequence[Hashable] | NDArray[Any],
    relevant: Collection[Hashable] | Mapping[Any, float] | NDArray[Any],
    k: int,
) -> float:
    """Normalised discounted cumulative gain at k.

    ``relevant`` is a collection (binary gain 1) or a mapping item -> gain (>= 0). DCG is
    ``sum_{r=1..k} gain(item_r) / log2(r + 1)``, divided by the DCG of the ideal ordering.
    0.0 when no relevant item has positive gain.
    """
    k = _check_k(k)
    if isinstance(relevant, Mapping):
        gains = {
            (i.item() if isinstance(i, np.generic) else i): float(g) for i, g in relevant.items()
        }
        if any(g < 0 or not math.isfinite(g) for g in gains.values()):
            raise ValueError("relevant gains must be finite and >= 0")
    else:
        gains = dict.fromkeys(_as_set(relevant), 1.0)
    ideal = sorted((g for g in gains.values() if g > 0), reverse=True)[:k]
    if not ideal:
        return 0.0
    dcg = sum(gains.get(i, 0.0) / math.log2(r + 2) for r, i in enumerate(_top_k(recommended, k)))
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    return dcg / idcg


def map_at_k(
    recommended: Sequence[Hashable] | NDArray[Any],
    relevant: Collection[Hashable] | NDArray[Any],
    k: int,
) -> float:
    """Average precision at k: mean of precision@r over the ranks r <= k of the hits,
    divided by ``min(|relevant|, k)``. (Averaged over users by ``mean_at_k`` this is MAP@k.)"""
    k = _check_k(k)
    rel = _as_set(relevant)
    if not rel:
        return 0.0
    hits = 0
    total = 0.0
    for r, i in enumerate(_top_k(recommended, k), start=1):
        if i in rel:
            hits += 1
            total += hits / r
    return total / min(len(rel), k)


def mean_at_k(
    metric: Callable[[Any, Any, int], float],
    recommended: Mapping[Any, Sequence[Hashable]],
    relevant: Mapping[Any, Collection[Hashable]],
    k: int,
) -> float:
    """Mean of ``metric`` over the users of ``relevant`` that have at least one relevant item.

    A user with relevant items but no recommendations scores 0. NaN if no user qualifies.
    """
    k = _check_k(k)
    values = [metric(recommended.get(u, ()), rel, k) for u, rel in relevant.items() if len(rel) > 0]
    return float(np.mean(values)) if values else float("nan")


def catalogue_coverage(
    recommended_lists: Iterable[Sequence[Hashable] | NDArray[Any]],
    catalogue_size: int,
    k: int,
) -> float:
    """Fraction of the catalogue (``catalogue_size`` items) that appears in some top-k list."""
    k = _check_k(k)
    if catalogue_size < 1:
        raise ValueError(f"catalogue_size must be >= 1, got {catalogue_size}")
    shown: set[Hashable] = set()
    for rec in recommended_lists:
        shown.update(_top_k(rec, k))
    if len(shown) > catalogue_size:
        raise ValueError(
            f"catalogue_size={catalogue_size} is smaller than the {len(shown)} distinct items shown"
        )
    return len(shown) / catalogue_size


def intra_list_diversity(
    recommended: Sequence[Hashable] | NDArray[Any],
    embeddings: Mapping[Any, ArrayLike] | Callable[[Hashable], ArrayLike],
    k: int,
) -> float:
    """Mean pairwise cosine distance ``1 - cos(e_i, e_j)`` over the top-k items (in [0, 2]).

    ``embeddings`` maps an item id to its vector (shape ``(dim,)``); 0.0 for fewer than 2 items.
    """
    k = _check_k(k)
    items = _top_k(recommended, k)
    if len(items) < 2:
        return 0.0
    lookup = embeddings if callable(embeddings) else embeddings.__getitem__
    vecs = np.stack([np.asarray(lookup(i), dtype=np.float64).ravel() for i in items])
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("embeddings must be non-zero vectors")
    unit = vecs / norms
    sim = unit @ unit.T
    n = len(items)
    iu = np.triu_indices(n, k=1)
    return float(np.mean(1.0 - sim[iu]))


def novelty(
    recommended_lists: Iterable[Sequence[Hashable] | NDArray[Any]],
    item_popularity: Mapping[Any, float],
    n_users: int,
    k: int,
) -> float:
    """Mean self-information ``-log2(popularity(i) / n_users)`` of the recommended top-k items.

    ``item_popularity`` counts the users who interacted with each item (an unseen item counts
    as 1, so its novelty is finite: ``log2(n_users)``). Higher is more novel; in bits.
    """
    k = _check_k(k)
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    values: list[float] = []
    for rec in recommended_lists:
        for i in _top_k(rec, k):
            count = max(float(item_popularity.get(i, 0.0)), 1.0)
            if count > n_users:
                raise ValueError(f"item_popularity[{i!r}]={count} exceeds n_users={n_users}")
            values.append(-math.log2(count / n_users))
    return float(np.mean(values)) if values else 0.0


# --------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class SplitOutput:
    """Row indices (int64, ascending) into the interaction arrays given to a split."""

    train_index: NDArray[np.int64]
    test_index: NDArray[np.int64]


def _as_1d(name: str, values: ArrayLike, n: int | None = None) -> NDArray[Any]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} must have length {n}, got {arr.shape[0]}")
    return arr


def leave_last_out(
    user_ids: ArrayLike,
    timestamps: ArrayLike,
    *,
    n_test: int = 1,
    min_interactions: int = 2,
) -> SplitOutput:
    """Per user, the last ``n_test`` interactions (by timestamp) go to test, the rest to train.

    Users with fewer than ``min_interactions`` interactions stay wholly in train. Equal
    timestamps keep their input order (the later row counts as later).
    """
    if n_test < 1:
        raise ValueError(f"n_test must be >= 1, got {n_test}")
    if min_interactions < n_test + 1:
        raise ValueError(
            f"min_interactions must be >= n_test + 1 = {n_test + 1}, got {min_interactions}"
        )
    users = _as_1d("user_ids", user_ids)
    ts = _as_1d("timestamps", timestamps, len(users))
    order = np.lexsort((np.arange(len(users)), ts))  # by time, then input order
    by_user: dict[Hashable, list[int]] = {}
    for idx in order:
        u = users[idx]
        by_user.setdefault(u.item() if isinstance(u, np.generic) else u, []).append(int(idx))
    test: list[int] = []
    for rows in by_user.values():
        if len(rows) >= min_interactions:
            test.extend(rows[-n_test:])
    test_arr = np.sort(np.asarray(test, dtype=np.int64))
    mask = np.ones(len(users), dtype=bool)
    mask[test_arr] = False
    return SplitOutput(np.flatnonzero(mask).astype(np.int64), test_arr)


def time_split(
    timestamps: ArrayLike,
    *,
    cutoff: Any | None = None,
    test_fraction: float | None = None,
) -> SplitOutput:
    """Global temporal split: rows with ``timestamp >= cutoff`` go to test.

    Give either ``cutoff`` (comparable with the timestamps) or ``test_fraction`` in (0, 1), in
    which case the cutoff is the timestamp at that quantile (ties all go to test).
    """
    ts = _as_1d("timestamps", timestamps)
    if (cutoff is None) == (test_fraction is None):
        raise ValueError("give exactly one of cutoff or test_fraction")
    if test_fraction is not None:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        if len(ts) == 0:
            return SplitOutput(np.zeros(0, np.int64), np.zeros(0, np.int64))
        ordered = np.sort(ts, kind="stable")
        n_train = round(len(ts) * (1.0 - test_fraction))
        cutoff = ordered[min(n_train, len(ts) - 1)]
    is_test = ts >= cutoff
    return SplitOutput(
        np.flatnonzero(~is_test).astype(np.int64),
        np.flatnonzero(is_test).astype(np.int64),
    )


def group_by_user(
    user_ids: ArrayLike, item_ids: ArrayLike, index: ArrayLike | None = None
) -> dict[Hashable, list[Hashable]]:
    """``{user: [item, ...]}`` in row order, over ``index`` rows (all rows by default)."""
    users = _as_1d("user_ids", user_ids)
    items = _as_1d("item_ids", item_ids, len(users))
    rows = range(len(users)) if index is None else np.asarray(index, dtype=np.int64)
    out: dict[Hashable, list[Hashable]] = {}
    for r in rows:
        u, i = users[r], items[r]
        out.setdefault(u.item() if isinstance(u, np.generic) else u, []).append(
            i.item() if isinstance(i, np.generic) else i
        )
    return out
