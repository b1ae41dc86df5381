"""Builds :class:`~recsys.profiles.model.TasteProfile` objects from events (see
:mod:`recsys.profiles` for the method)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

import numpy as np

from recsys.config import RecsysConfig
from recsys.profiles.clustering import (
    DEFAULT_EVENT_WEIGHTS,
    cluster_items,
    decayed_weights,
    merge_close_centroids,
    threshold_from_quantile,
)
from recsys.profiles.model import ColdStart, HistoryEvent, Interest, ItemVectors, TasteProfile
from recsys.references import select_references
from recsys.terms import StyleTerm, StyleTermScorer

__all__ = ["ProfileBuilder"]


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
        config: RecsysConfig,
        *,
        scorer: StyleTermScorer | None = None,
        catalog_vectors: np.ndarray | None = None,
    ) -> ProfileBuilder:
        """From a :class:`~recsys.config.RecsysConfig`; with ``profile_cluster_quantile`` set and
        ``catalog_vectors`` given, the cut height comes from the catalog's distances."""
        threshold = float(config.profile_cluster_threshold)
        quantile = config.profile_cluster_quantile
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
            merge_centroids=config.profile_merge_centroids,
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
