"""Taste profiles over the database: build every shopper's profile (skipping unchanged
inputs), store it in ``TasteProfileRecord`` and read it back. Shoppers with too little
history fall back to their segment (saved by :mod:`recsys.segment_store`), then to the
popular products."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from data.models import Segment, SegmentMembership, TasteProfileRecord, User, utcnow
from recsys.catalog import EmbedderSource, load_item_vectors, load_scorer, load_segment_centroids
from recsys.config import RecsysConfig
from recsys.histories import load_histories, popularity
from recsys.profiles import (
    ColdStart,
    FallbackProfile,
    HistoryEvent,
    ItemVectors,
    ProfileBuilder,
    TasteProfile,
)
from recsys.progress import progress_bar
from recsys.terms import StyleTerm, StyleTermScorer

__all__ = [
    "ProfilesBuildOutput",
    "build_profiles",
    "get_profile",
    "load_profiles",
    "popularity_fallback",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfilesBuildOutput:
    """Counts of one build: ``computed`` profiles, of which ``changed`` differ from the
    stored ones; ``unchanged`` counts skipped inputs and recomputed equal profiles;
    ``by_source`` computed profiles per source (history / segment / popularity)."""

    n_users: int
    computed: int
    changed: int
    unchanged: int
    by_source: dict[str, int]
    seconds: float


def popularity_fallback(
    items: ItemVectors,
    popularity: Mapping[int, float],
    scorer: StyleTermScorer | None,
    config: RecsysConfig,
) -> FallbackProfile | None:
    """The cold-start body of the 20 most popular products (None without any)."""
    ranked = [i for i in sorted(popularity, key=lambda i: (-popularity[i], i)) if i in items][:20]
    if not ranked:
        return None
    x = items.get(ranked)
    w = np.array([popularity[i] for i in ranked], dtype=np.float64)
    emb = (w[:, None] * x).sum(axis=0)
    terms: tuple[StyleTerm, ...] = ()
    if scorer is not None:
        terms = scorer.top_terms(
            scorer.score(x, w),
            n=config.profile_n_terms,
            max_per_facet=config.profile_max_terms_per_facet,
        )
    return FallbackProfile(
        embedding=emb / np.linalg.norm(emb), style_terms=terms, item_ids=tuple(ranked)
    )


def _cold_start(
    engine: Engine,
    *,
    home: Path,
    items: ItemVectors,
    popularity: Mapping[int, float],
    scorer: StyleTermScorer | None,
    config: RecsysConfig,
) -> ColdStart:
    """Fallbacks: the live segments that have a saved centroid, the memberships, popularity."""
    centroids = load_segment_centroids(home)
    segments: dict[int, FallbackProfile] = {}
    with Session(engine) as session:
        for seg in session.exec(select(Segment).where(col(Segment.size) > 0)):
            sid = int(seg.id)  # type: ignore[arg-type]
            if sid in centroids:
                segments[sid] = FallbackProfile(
                    embedding=centroids[sid],
                    style_terms=tuple(
                        StyleTerm(str(t[0]), str(t[1]), float(t[2])) for t in seg.terms
                    ),
                    item_ids=tuple(int(i) for i in seg.example_product_ids),
                )
        memberships = {
            str(m.user_id): int(m.segment_id) for m in session.exec(select(SegmentMembership))
        }
    return ColdStart(
        segments=segments,
        memberships=memberships,
        popularity=popularity_fallback(items, popularity, scorer, config),
    )


def _input_digest(events: Sequence[HistoryEvent], *, model_id: str, config_digest: str) -> str:
    h = hashlib.sha256(f"{model_id}|{config_digest}".encode())
    for e in sorted(events, key=lambda e: (e.ts, e.product_id, e.kind)):
        h.update(f"{e.product_id}|{e.kind}|{e.ts.isoformat()}\n".encode())
    return h.hexdigest()


def _config_digest(config: RecsysConfig) -> str:
    fields = {
        k: v
        for k, v in config.model_dump(mode="json").items()
        if k.startswith(("profile_", "style_", "mmr_"))
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_profiles(
    engine: Engine,
    *,
    config: RecsysConfig,
    home: Path,
    embedder: EmbedderSource = None,
    progress: bool = True,
    force: bool = False,
) -> ProfilesBuildOutput:
    """Compute every user's profile and store it in ``TasteProfileRecord``; users whose events,
    model, config and fallbacks did not change are skipped."""
    t0 = time.perf_counter()
    items, model_id = load_item_vectors(home)
    scorer = load_scorer(
        config=config, home=home, items=items, model_id=model_id, embedder=embedder
    )
    builder = ProfileBuilder.from_config(config, scorer=scorer, catalog_vectors=items.vectors)
    histories = load_histories(engine)
    cold = _cold_start(
        engine,
        home=home,
        items=items,
        popularity=popularity(histories),
        scorer=scorer,
        config=config,
    )
    cfg = _config_digest(config)
    # cold-start profiles depend on the segments too
    cold_digest = hashlib.sha256(
        json.dumps(
            [
                sorted(cold.segments),
                sorted(cold.memberships.items()),
                cold.popularity and cold.popularity.item_ids,
            ]
        ).encode()
    ).hexdigest()[:16]
    with Session(engine) as session:
        user_ids = list(session.exec(select(User.id).order_by(col(User.id))))
        stored = {
            r.user_id: (r.profile_hash, r.data.get("input_digest"))
            for r in session.exec(select(TasteProfileRecord))
        }
    computed = changed = unchanged = 0
    by_source: dict[str, int] = {}
    pending: list[TasteProfileRecord] = []
    for uid in progress_bar(progress)(user_ids, "taste profiles", len(user_ids)):
        evs = histories.get(uid, [])
        digest = _input_digest(evs, model_id=model_id, config_digest=cfg)
        if len(evs) < config.profile_min_events:
            digest = f"{digest[:48]}{cold_digest}"
        old = stored.get(uid)
        if not force and old is not None and old[1] == digest:
            unchanged += 1
            continue
        try:
            profile = builder.build(uid, evs, items, cold_start=cold)
        except ValueError as e:
            log.warning("no profile for %s: %s", uid, e)
            continue
        computed += 1
        by_source[profile.source] = by_source.get(profile.source, 0) + 1
        if old is not None and old[0] == profile.profile_hash:
            unchanged += 1
        else:
            changed += 1
        data = profile.to_dict()
        data["input_digest"] = digest
        data["model_id"] = model_id
        pending.append(
            TasteProfileRecord(
                user_id=uid, profile_hash=profile.profile_hash, data=data, updated_at=utcnow()
            )
        )
        if len(pending) >= 500:
            _store_profiles(engine, pending)
            pending = []
    _store_profiles(engine, pending)
    return ProfilesBuildOutput(
        n_users=len(user_ids),
        computed=computed,
        changed=changed,
        unchanged=unchanged,
        by_source=by_source,
        seconds=time.perf_counter() - t0,
    )


def _store_profiles(engine: Engine, records: Sequence[TasteProfileRecord]) -> None:
    if not records:
        return
    with Session(engine) as session:
        for r in records:
            session.merge(r)
        session.commit()


def get_profile(engine: Engine, *, user_id: str) -> TasteProfile | None:
    """The stored profile of ``user_id`` (None if none was built)."""
    with Session(engine) as session:
        rec = session.get(TasteProfileRecord, user_id)
    return None if rec is None else TasteProfile.from_dict(rec.data)


def load_profiles(engine: Engine) -> dict[str, TasteProfile]:
    """Every stored profile by user id."""
    with Session(engine) as session:
        return {
            r.user_id: TasteProfile.from_dict(r.data)
            for r in session.exec(
                select(TasteProfileRecord).order_by(col(TasteProfileRecord.user_id))
            )
        }
