"""Shopper segments over the database: k-means over the history-based taste profiles, each
segment described by its distinctive style terms and example products; segment ids stay
stable across rebuilds (Hungarian matching). The centroids go to ``segments_state.json``
(see :mod:`recsys.catalog`), where cold-start profiles find them."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sqlalchemy.engine import Engine
from sqlmodel import Session, delete, select

from data.files import atomic_write_json
from data.models import CreativeVariant, Segment, SegmentMembership, utcnow
from recsys.catalog import SEGMENTS_STATE_FILE, index_dir, load_item_vectors, load_scorer
from recsys.config import RecsysConfig
from recsys.histories import load_histories
from recsys.hybrid import HybridRecommender
from recsys.profile_store import load_profiles
from recsys.profiles import TasteProfile
from recsys.progress import progress_bar
from recsys.references import mmr_select
from recsys.segments import KMeansSegmenter, match_segment_ids
from recsys.serving import make_hybrid
from recsys.terms import StyleTermScorer

__all__ = ["SegmentsBuildOutput", "build_segments"]


@dataclass(frozen=True)
class SegmentsBuildOutput:
    """``sizes`` and ``silhouettes`` by segment id; ``kept_ids`` / ``new_ids`` /
    ``retired_ids`` segment ids matched to an old segment, created, retired."""

    k: int
    sizes: dict[int, int]
    silhouettes: dict[int, float]
    kept_ids: list[int]
    new_ids: list[int]
    retired_ids: list[int]
    skipped: bool
    seconds: float


def _segment_relevance(
    hybrid: HybridRecommender,
    members: Sequence[TasteProfile],
    sims: np.ndarray,
    *,
    seed: int,
    max_members: int = 200,
) -> np.ndarray:
    """Relevance of every catalog product ``(n_items,)`` to a segment: the mean z-scored
    cosine to the segment centroid (``sims``) and the z-scored mean hybrid relevance over
    (up to ``max_members``, a seeded sample of) its members, equally weighted, scaled to
    [0, 1] for MMR."""

    def z(v: np.ndarray) -> np.ndarray:
        sd = float(v.std())
        return (v - float(v.mean())) / (sd if sd > 1e-12 else 1.0)

    rel = z(np.asarray(sims, dtype=np.float64))
    if members:
        rng = np.random.default_rng(seed)
        chosen = [members[int(i)] for i in rng.permutation(len(members))[:max_members]]
        rows = sp.vstack([hybrid.stored_row(p.user_id) for p in chosen]).tocsr()
        blended = hybrid.blend(
            hybrid.component_scores(chosen, rows), [p.n_events for p in chosen]
        ).mean(axis=0)
        rel = 0.5 * rel + 0.5 * z(blended)
    spread = float(rel.max() - rel.min())
    return (rel - rel.min()) / spread if spread > 0 else np.ones_like(rel)


def build_segments(
    engine: Engine,
    *,
    config: RecsysConfig,
    home: Path,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
) -> SegmentsBuildOutput:
    """k-means over the history-based profiles; segment rows keep their ids when their
    membership barely moves (Hungarian matching). Skips when no profile changed."""
    t0 = time.perf_counter()
    profiles = {u: p for u, p in load_profiles(engine).items() if p.source == "history"}
    if len(profiles) <= config.segments_k_min:
        raise ValueError(
            f"segments: need more than {config.segments_k_min} users with a history profile, "
            f"got {len(profiles)} (run `tailorshot index build` and build profiles first)"
        )
    users = sorted(profiles)
    digest = hashlib.sha256(
        json.dumps(
            [
                seed,
                config.segments_k_min,
                config.segments_k_max,
                [profiles[u].profile_hash for u in users],
            ]
        ).encode()
    ).hexdigest()
    state_path = index_dir(home) / SEGMENTS_STATE_FILE
    if not force and state_path.is_file():
        state = json.loads(state_path.read_text())
        if state.get("digest") == digest:
            return SegmentsBuildOutput(
                k=int(state["k"]),
                sizes={int(k): int(v) for k, v in state["sizes"].items()},
                silhouettes={int(k): float(v) for k, v in state["silhouettes"].items()},
                kept_ids=[],
                new_ids=[],
                retired_ids=[],
                skipped=True,
                seconds=time.perf_counter() - t0,
            )
    x = np.stack([profiles[u].embedding for u in users])
    fit = KMeansSegmenter(k_min=config.segments_k_min, k_max=config.segments_k_max, seed=seed).fit(
        x
    )
    members = [{users[i] for i in m} for m in fit.members()]
    items, model_id = load_item_vectors(home)
    # example products: what the members' hybrid recommendations favour, near the centroid
    hybrid = make_hybrid(load_histories(engine), items=items, config=config, seed=seed)
    scorer = load_scorer(config=config, home=home, items=items, model_id=model_id)
    # Segments are described against the population of shoppers, not the catalog: a profile
    # embedding is a normalised mean of many items, which shifts every term's cosine the
    # same way for every shopper; calibrating on the profiles cancels that shift, so a
    # segment's terms are what sets it apart from the other shoppers.
    population = StyleTermScorer.calibrate(
        vocabulary=scorer.vocabulary,
        term_embeddings=scorer.term_embeddings,
        catalog_vectors=x,
        std_floor=config.style_std_floor,
    )

    with Session(engine) as session:
        old_segments = {int(s.id): s for s in session.exec(select(Segment))}  # type: ignore[arg-type]
        old_members: dict[int, set[str]] = {}
        for m in session.exec(select(SegmentMembership)):
            old_members.setdefault(int(m.segment_id), set()).add(str(m.user_id))
        # old centroids: the mean of the old members' current embeddings
        old_centroids = {}
        for sid, us in old_members.items():
            vs = [profiles[u].embedding for u in us if u in profiles]
            if vs and sid in old_segments:
                c = np.mean(vs, axis=0)
                old_centroids[sid] = c / max(float(np.linalg.norm(c)), 1e-12)
        matched = match_segment_ids(
            old_centroids=old_centroids,
            old_members=old_members,
            new_centroids=fit.centroids,
            new_members=members,
            min_jaccard=config.segments_min_jaccard,
        )
        now = utcnow()
        final_ids: list[int] = []
        kept: list[int] = []
        created: list[int] = []
        for c in progress_bar(progress)(range(fit.k), "segments", fit.k):
            idx = np.flatnonzero(fit.labels == c)
            member_x = x[idx]
            scores = population.score(member_x)
            terms = population.top_terms(
                scores, n=config.profile_n_terms, max_per_facet=config.profile_max_terms_per_facet
            )
            sims = items.vectors @ fit.centroids[c]
            rel = _segment_relevance(
                hybrid, [profiles[users[int(i)]] for i in idx], sims, seed=seed + c
            )
            top = np.argsort(-rel, kind="stable")[: 5 * config.segments_n_examples]
            pick = mmr_select(
                rel[top],
                items.vectors[top],
                k=config.segments_n_examples,
                lambda_=config.mmr_lambda,
            )
            examples = [int(items.ids[top[i]]) for i in pick]
            # the label names what the products show (settings and lighting only correlate)
            shown = population.top_terms(
                scores, n=3, max_per_facet=1, facets=("colour", "aesthetic", "pattern", "material")
            )
            label = " ".join(t.term for t in shown) or f"segment {c}"
            matched_id = matched[c]
            seg = old_segments.get(matched_id) if matched_id is not None else None
            if seg is None:
                seg = Segment(label=label, created_at=now)
                session.add(seg)
            else:
                if old_members.get(int(seg.id), set()) != members[c]:  # type: ignore[arg-type]
                    seg.version += 1
            seg.label = label
            seg.size = len(idx)
            seg.terms = [t.to_list() for t in terms]
            seg.example_product_ids = examples
            seg.updated_at = now
            session.flush()
            final_ids.append(int(seg.id))  # type: ignore[arg-type]
            (kept if matched_id is not None else created).append(int(seg.id))  # type: ignore[arg-type]
        # memberships: replace wholesale
        session.exec(delete(SegmentMembership))  # type: ignore[call-overload]
        for c, sid in enumerate(final_ids):
            for i in np.flatnonzero(fit.labels == c):
                session.add(
                    SegmentMembership(
                        user_id=users[int(i)],
                        segment_id=sid,
                        score=float(x[int(i)] @ fit.centroids[c]),
                    )
                )
        retired: list[int] = []
        for sid, seg in old_segments.items():
            if sid in final_ids:
                continue
            retired.append(sid)
            has_variants = session.exec(
                select(CreativeVariant.id).where(CreativeVariant.segment_id == sid).limit(1)
            ).first()
            if has_variants is None:
                session.delete(seg)
            else:
                seg.size = 0  # keep the row: variants point at it
                seg.updated_at = now
        session.commit()
    sizes = {sid: int((fit.labels == c).sum()) for c, sid in enumerate(final_ids)}
    state = {
        "digest": digest,
        "k": fit.k,
        "sizes": sizes,
        "silhouettes": fit.silhouettes,
        "centroids": {sid: fit.centroids[c].tolist() for c, sid in enumerate(final_ids)},
    }

    atomic_write_json(state_path, state)
    return SegmentsBuildOutput(
        k=fit.k,
        sizes=sizes,
        silhouettes=fit.silhouettes,
        kept_ids=kept,
        new_ids=created,
        retired_ids=retired,
        skipped=False,
        seconds=time.perf_counter() - t0,
    )
