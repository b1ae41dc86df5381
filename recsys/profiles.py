"""Multi-interest taste profiles (PinnerSage-style) from a shopper's events.

Each event weighs ``event_weights[kind] * 0.5 ** (age / half_life)``; weights are summed per
item. The user's distinct history items are clustered (agglomerative, cut at a distance
threshold) into interests: each interest has a medoid item, a centroid (normalised weighted
mean) and an importance (its share of the decayed weight). Small interests (noise: stray
views) are dropped. Users with too little history fall back to their segment, then to the
catalog's popular items.

Decay is measured from the user's latest event (or ``now``): every weight shares the same
factor whichever reference time is used, and only relative weights matter, so the profile
(and its hash) change only when the events do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from recsys.references import select_references
from recsys.terms import StyleTerm, StyleTermScorer

__all__ = [
    "DEFAULT_EVENT_WEIGHTS",
    "PROFILE_VERSION",
    "ColdStart",
    "FallbackProfile",
    "HistoryEvent",
    "Interest",
    "ItemVectors",
    "ProfileBuilder",
    "TasteProfile",
    "cluster_items",
    "decayed_weights",
    "merge_close_centroids",
    "threshold_from_quantile",
]

#: Bumped when the profile's content or its computation changes meaning.
PROFILE_VERSION = 1

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 1.25,
    "add_to_cart": 1.5,
    "purchase": 2.0,
}

_SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class HistoryEvent:
    """One event of a user's history (``kind`` in view/click/add_to_cart/purchase)."""

    product_id: int
    kind: str
    ts: datetime


@dataclass(frozen=True)
class ItemVectors:
    """Item embeddings: ``ids`` int64 ``(n,)``, ``vectors`` float32 ``(n, dim)`` unit rows."""

    ids: np.ndarray
    vectors: np.ndarray
    _row: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids, dtype=np.int64)
        vecs = np.asarray(self.vectors, dtype=np.float32)
        if vecs.ndim != 2 or ids.shape != (vecs.shape[0],):
            raise ValueError(
                f"ids (n,) and vectors (n, dim) must agree, got {ids.shape} and {vecs.shape}"
            )
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "vectors", vecs)
        row = {int(i): r for r, i in enumerate(ids)}
        if len(row) != len(ids):
            raise ValueError("ids: expected unique item ids, got duplicates")
        object.__setattr__(self, "_row", row)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, (int, np.integer)) and int(item_id) in self._row

    def rows(self, item_ids: Iterable[int]) -> np.ndarray:
        """Row positions int64 of ``item_ids`` (KeyError naming the first unknown id)."""
        out = []
        for i in item_ids:
            try:
                out.append(self._row[int(i)])
            except KeyError:
                raise KeyError(f"item id {int(i)} has no vector") from None
        return np.asarray(out, dtype=np.int64)

    def get(self, item_ids: Iterable[int]) -> np.ndarray:
        """float32 ``(len(item_ids), dim)``."""
        return self.vectors[self.rows(item_ids)]


@dataclass(frozen=True)
class Interest:
    """One interest: ``centroid`` float32 ``(dim,)`` unit norm, ``weight`` its share of the
    profile (interests' weights sum to 1), ``medoid_id`` its most central history item,
    ``item_ids`` its history items (heaviest first), ``terms`` its best style terms."""

    centroid: np.ndarray
    weight: float
    medoid_id: int
    item_ids: tuple[int, ...]
    terms: tuple[StyleTerm, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "centroid": [float(v) for v in self.centroid],
            "weight": float(self.weight),
            "medoid_id": int(self.medoid_id),
            "item_ids": [int(i) for i in self.item_ids],
            "terms": [t.to_list() for t in self.terms],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Interest:
        return cls(
            centroid=np.asarray(d["centroid"], dtype=np.float32),
            weight=float(d["weight"]),
            medoid_id=int(d["medoid_id"]),
            item_ids=tuple(int(i) for i in d["item_ids"]),
            terms=tuple(StyleTerm.from_list(t) for t in d.get("terms", [])),
        )


@dataclass(frozen=True)
class TasteProfile:
    """A shopper's taste.

    ``embedding`` float32 ``(dim,)`` unit norm; ``interests`` heaviest first; ``style_terms``
    best first; ``reference_ids`` history items for IP-Adapter (a few spare at the end, so
    :meth:`references_for` can leave out a featured product); ``source`` is ``history``,
    ``segment`` or ``popularity``; ``profile_hash`` hashes the content (rounded), so it
    changes only when the profile does.
    """

    user_id: str
    embedding: np.ndarray
    interests: tuple[Interest, ...]
    style_terms: tuple[StyleTerm, ...]
    reference_ids: tuple[int, ...]
    source: str
    n_events: int
    segment_id: int | None = None
    version: int = PROFILE_VERSION
    profile_hash: str = ""

    def __post_init__(self) -> None:
        emb = np.asarray(self.embedding, dtype=np.float32)
        if emb.ndim != 1:
            raise ValueError(f"embedding: expected shape (dim,), got {emb.shape}")
        object.__setattr__(self, "embedding", emb)
        if not self.profile_hash:
            object.__setattr__(self, "profile_hash", self.compute_hash())

    def compute_hash(self) -> str:
        """sha256 hex of the content, floats rounded to 4 decimals (the hash is not stored
        in itself)."""
        d = self._content()
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def _content(self) -> dict[str, Any]:
        def r(x: float) -> str:
            # format, not round(): "-0.0000" and "0.0000" must not differ by platform
            s = f"{float(x):.4f}"
            return "0.0000" if s == "-0.0000" else s

        return {
            "user_id": self.user_id,
            "version": self.version,
            "source": self.source,
            "n_events": self.n_events,
            "segment_id": self.segment_id,
            "embedding": [r(v) for v in self.embedding],
            "interests": [
                {
                    "w": r(i.weight),
                    "m": i.medoid_id,
                    "items": list(i.item_ids),
                    "c": [r(v) for v in i.centroid],
                    "t": [[t.term, t.facet, r(t.score)] for t in i.terms],
                }
                for i in self.interests
            ],
            "terms": [[t.term, t.facet, r(t.score)] for t in self.style_terms],
            "refs": list(self.reference_ids),
        }

    @property
    def dim(self) -> int:
        return int(self.embedding.shape[0])

    def references_for(self, featured_product_id: int | None, n: int) -> list[int]:
        """Up to ``n`` reference ids, never ``featured_product_id``."""
        return [i for i in self.reference_ids if i != featured_product_id][:n]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``TasteProfileRecord.data`` stores)."""
        return {
            "user_id": self.user_id,
            "version": self.version,
            "profile_hash": self.profile_hash,
            "source": self.source,
            "n_events": self.n_events,
            "segment_id": self.segment_id,
            "embedding": [float(v) for v in self.embedding],
            "interests": [i.to_dict() for i in self.interests],
            "style_terms": [t.to_list() for t in self.style_terms],
            "reference_ids": [int(i) for i in self.reference_ids],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TasteProfile:
        """Inverse of :meth:`to_dict` (keeps the stored hash)."""
        return cls(
            user_id=str(d["user_id"]),
            embedding=np.asarray(d["embedding"], dtype=np.float32),
            interests=tuple(Interest.from_dict(i) for i in d["interests"]),
            style_terms=tuple(StyleTerm.from_list(t) for t in d["style_terms"]),
            reference_ids=tuple(int(i) for i in d["reference_ids"]),
            source=str(d["source"]),
            n_events=int(d["n_events"]),
            segment_id=None if d.get("segment_id") is None else int(d["segment_id"]),
            version=int(d.get("version", PROFILE_VERSION)),
            profile_hash=str(d.get("profile_hash", "")),
        )


@dataclass(frozen=True)
class FallbackProfile:
    """A ready-made profile body for cold start: a segment's or the popular items'."""

    embedding: np.ndarray
    style_terms: tuple[StyleTerm, ...]
    item_ids: tuple[int, ...]


@dataclass(frozen=True)
class ColdStart:
    """Fallbacks for users with too little history: ``segments`` by id (their centroids are
    the fallback embeddings), ``memberships`` user -> segment id, ``popularity``."""

    segments: Mapping[int, FallbackProfile] = field(default_factory=dict)
    memberships: Mapping[str, int] = field(default_factory=dict)
    popularity: FallbackProfile | None = None


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


def _normalise(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 0 else v.astype(np.float32)


class ProfileBuilder:
    """Builds :class:`TasteProfile` objects; hyperparameters are validated here, data arrives
    in :meth:`build`. ``scorer`` (optional) adds style terms."""

    def __init__(
        self,
        *,
        event_weights: Mapping[str, float] | None = None,
        half_life_days: float = 30.0,
        linkage: str = "average",
        cluster_threshold: float = 0.5,
        max_interests: int = 4,
        min_interest_share: float = 0.1,
        min_events: int = 3,
        n_terms: int = 8,
        max_terms_per_facet: int = 2,
        n_references: int = 4,
        mmr_lambda: float = 0.7,
        merge_centroids: bool = True,
        scorer: StyleTermScorer | None = None,
    ) -> None:
        weights = dict(DEFAULT_EVENT_WEIGHTS if event_weights is None else event_weights)
        if not weights or any(w < 0 for w in weights.values()):
            raise ValueError(f"event_weights: expected non-negative weights, got {weights!r}")
        if half_life_days <= 0:
            raise ValueError(f"half_life_days: expected > 0, got {half_life_days}")
        if linkage not in ("average", "ward"):
            raise ValueError(f"linkage: expected 'average' or 'ward', got {linkage!r}")
        if cluster_threshold <= 0:
            raise ValueError(f"cluster_threshold: expected > 0, got {cluster_threshold}")
        for name, value in (
            ("max_interests", max_interests),
            ("min_events", min_events),
            ("n_terms", n_terms),
            ("max_terms_per_facet", max_terms_per_facet),
            ("n_references", n_references),
        ):
            if value < 1:
                raise ValueError(f"{name}: expected >= 1, got {value}")
        if not 0 <= min_interest_share < 1:
            raise ValueError(f"min_interest_share: expected in [0, 1), got {min_interest_share}")
        if not 0 <= mmr_lambda <= 1:
            raise ValueError(f"mmr_lambda: expected in [0, 1], got {mmr_lambda}")
        self.event_weights = weights
        self.half_life_days = float(half_life_days)
        self.linkage = linkage
        self.cluster_threshold = float(cluster_threshold)
        self.max_interests = int(max_interests)
        self.min_interest_share = float(min_interest_share)
        self.min_events = int(min_events)
        self.n_terms = int(n_terms)
        self.max_terms_per_facet = int(max_terms_per_facet)
        self.n_references = int(n_references)
        self.mmr_lambda = float(mmr_lambda)
        self.merge_centroids = bool(merge_centroids)
        self.scorer = scorer

    @classmethod
    def from_config(
        cls,
        config: Any,
        *,
        scorer: StyleTermScorer | None = None,
        catalog_vectors: np.ndarray | None = None,
    ) -> ProfileBuilder:
        """From a :class:`recsys.config.RecsysConfig`; with ``profile_cluster_quantile`` set and
        ``catalog_vectors`` given, the cut height comes from the catalog's distances."""
        threshold = float(config.profile_cluster_threshold)
        quantile = getattr(config, "profile_cluster_quantile", None)
        if quantile is not None and catalog_vectors is not None and len(catalog_vectors) >= 2:
            threshold = threshold_from_quantile(catalog_vectors, quantile)
        return cls(
            event_weights=config.profile_event_weights,
            half_life_days=config.profile_half_life_days,
            linkage=config.profile_linkage,
            cluster_threshold=threshold,
            max_interests=config.profile_max_interests,
            min_interest_share=config.profile_min_interest_share,
            min_events=config.profile_min_events,
            n_terms=config.profile_n_terms,
            max_terms_per_facet=config.profile_max_terms_per_facet,
            n_references=config.profile_n_references,
            mmr_lambda=config.mmr_lambda,
            merge_centroids=getattr(config, "profile_merge_centroids", True),
            scorer=scorer,
        )

    # ------------------------------------------------------------------ public
    def build(
        self,
        user_id: str,
        events: Sequence[HistoryEvent],
        items: ItemVectors,
        *,
        now: datetime | None = None,
        cold_start: ColdStart | None = None,
        exclude_reference_ids: Collection[int] = (),
    ) -> TasteProfile:
        """The profile of ``user_id`` from ``events`` (any order; events on items without a
        vector or of unknown kinds are ignored). Fewer than ``min_events`` usable events:
        the segment fallback (the nearest segment to the thin history, else the stored
        membership), then popularity; with neither, a ``ValueError``."""
        usable = [e for e in events if e.product_id in items and e.kind in self.event_weights]
        if len(usable) >= self.min_events:
            return self._from_history(user_id, usable, items, now, exclude_reference_ids)
        return self._cold(user_id, usable, items, cold_start, now)

    def interests(
        self,
        item_ids: np.ndarray,
        vectors: np.ndarray,
        weights: np.ndarray,
    ) -> tuple[Interest, ...]:
        """Interests of distinct items ``item_ids`` ``(m,)`` with unit ``vectors`` ``(m, dim)``
        and decayed ``weights`` ``(m,)``: heaviest first, weights summing to 1."""
        labels = cluster_items(vectors, threshold=self.cluster_threshold, linkage=self.linkage)
        if self.merge_centroids:
            labels = merge_close_centroids(
                vectors, weights, labels, threshold=self.cluster_threshold
            )
        total = float(weights.sum())
        clusters = []
        for lab in np.unique(labels):
            members = np.flatnonzero(labels == lab)
            clusters.append((float(weights[members].sum()), members))
        clusters.sort(key=lambda c: (-c[0], int(item_ids[c[1][0]])))
        kept = [c for c in clusters if total > 0 and c[0] / total >= self.min_interest_share]
        kept = (kept or clusters[:1])[: self.max_interests]
        kept_total = sum(c[0] for c in kept) or 1.0
        out = []
        for importance, members in kept:
            w = weights[members]
            x = vectors[members]
            centroid = _normalise((w[:, None] * x).sum(axis=0))
            # medoid: the member with the highest weighted similarity to the others
            medoid = members[int(np.argmax((x @ x.T) @ w))]
            order = members[np.lexsort((item_ids[members], -w))]
            terms: tuple[StyleTerm, ...] = ()
            if self.scorer is not None:
                scores = self.scorer.score(x, w)
                terms = self.scorer.top_terms(
                    scores, n=self.n_terms, max_per_facet=self.max_terms_per_facet
                )
            out.append(
                Interest(
                    centroid=centroid,
                    weight=importance / kept_total,
                    medoid_id=int(item_ids[medoid]),
                    item_ids=tuple(int(i) for i in item_ids[order]),
                    terms=terms,
                )
            )
        return tuple(out)

    # ------------------------------------------------------------------ internals
    def _aggregate(
        self, events: Sequence[HistoryEvent], now: datetime | None
    ) -> tuple[np.ndarray, np.ndarray]:
        w = decayed_weights(
            [e.kind for e in events],
            [e.ts for e in events],
            event_weights=self.event_weights,
            half_life_days=self.half_life_days,
            now=now,
        )
        per_item: dict[int, float] = {}
        for e, wi in zip(events, w, strict=True):
            per_item[int(e.product_id)] = per_item.get(int(e.product_id), 0.0) + float(wi)
        ids = np.array(sorted(per_item), dtype=np.int64)
        return ids, np.array([per_item[int(i)] for i in ids], dtype=np.float64)

    def _from_history(
        self,
        user_id: str,
        events: Sequence[HistoryEvent],
        items: ItemVectors,
        now: datetime | None,
        exclude_reference_ids: Collection[int],
    ) -> TasteProfile:
        ids, weights = self._aggregate(events, now)
        if weights.sum() <= 0:
            # every usable event had weight 0 (e.g. a kind configured to 0): treat as uniform
            weights = np.ones_like(weights)
        x = items.get(ids)
        interests = self.interests(ids, x, weights)
        kept = np.isin(ids, [i for it in interests for i in it.item_ids])
        embedding = _normalise((weights[kept, None] * x[kept]).sum(axis=0))
        terms: tuple[StyleTerm, ...] = ()
        if self.scorer is not None:
            terms = self.scorer.top_terms(
                self.scorer.score(x[kept], weights[kept]),
                n=self.n_terms,
                max_per_facet=self.max_terms_per_facet,
            )
        refs = select_references(
            centroids=np.stack([i.centroid for i in interests]),
            importances=[i.weight for i in interests],
            item_ids=ids[kept],
            item_vectors=x[kept],
            # spares so that references_for() can drop a featured product
            n=self.n_references + 2,
            lambda_=self.mmr_lambda,
            exclude_ids=exclude_reference_ids,
        )
        return TasteProfile(
            user_id=user_id,
            embedding=embedding,
            interests=interests,
            style_terms=terms,
            reference_ids=tuple(refs),
            source="history",
            n_events=len(events),
        )

    def _cold(
        self,
        user_id: str,
        events: Sequence[HistoryEvent],
        items: ItemVectors,
        cold_start: ColdStart | None,
        now: datetime | None,
    ) -> TasteProfile:
        cs = cold_start or ColdStart()
        seg_id: int | None = None
        if cs.segments and events:
            ids, weights = self._aggregate(events, now)
            if weights.sum() <= 0:
                weights = np.ones_like(weights)
            thin = _normalise((weights[:, None] * items.get(ids)).sum(axis=0))
            seg_ids = sorted(cs.segments)
            sims = np.stack([cs.segments[s].embedding for s in seg_ids]) @ thin
            seg_id = seg_ids[int(np.argmax(sims))]
        elif user_id in cs.memberships and cs.memberships[user_id] in cs.segments:
            seg_id = cs.memberships[user_id]
        if seg_id is not None:
            body, source = cs.segments[seg_id], "segment"
        elif cs.popularity is not None:
            body, source = cs.popularity, "popularity"
        else:
            raise ValueError(
                f"user {user_id!r}: {len(events)} usable events (need {self.min_events}) "
                "and no cold-start fallback (segments or popularity) was given"
            )
        emb = _normalise(np.asarray(body.embedding, dtype=np.float32))
        interest = Interest(
            centroid=emb,
            weight=1.0,
            medoid_id=int(body.item_ids[0]) if body.item_ids else -1,
            item_ids=tuple(body.item_ids),
            terms=tuple(body.style_terms),
        )
        return TasteProfile(
            user_id=user_id,
            embedding=emb,
            interests=(interest,),
            style_terms=tuple(body.style_terms),
            reference_ids=tuple(body.item_ids[: self.n_references + 2]),
            source=source,
            n_events=len(events),
            segment_id=seg_id,
        )
