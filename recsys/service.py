"""recsys services over the database: product vectors and index, taste profiles, segments,
recommendations. Every build is idempotent and skips unchanged work.

Files under ``home/index``:

- ``products.npz``: ``ids`` int64 ``(n,)``, ``vectors`` float32 ``(n, dim)``, ``keys`` (content
  key per product: model id + image bytes + title), ``model_id``; the source of truth for
  product vectors (profiles read it without loading CLIP);
- ``products.index``: the :class:`VectorIndex` built from it (FAISS, via the index factory);
- ``style_terms.npz``: the vocabulary's text embeddings for one model (so profile builds need
  no text encoder once computed);
- ``segments_state.json``: the input digest of the last segment build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, delete, select

from data.models import (
    CreativeVariant,
    Event,
    Product,
    Segment,
    SegmentMembership,
    TasteProfileRecord,
    User,
    utcnow,
)
from recsys.config import RecsysConfig
from recsys.embedders.base import Embedder
from recsys.index.base import VectorIndex
from recsys.profiles import (
    ColdStart,
    FallbackProfile,
    HistoryEvent,
    ItemVectors,
    ProfileBuilder,
    TasteProfile,
)
from recsys.recommend import InterestRecommender, Recommendations
from recsys.references import mmr_select
from recsys.segments import KMeansSegmenter, match_segment_ids
from recsys.terms import StyleTerm, StyleTermScorer, StyleVocabulary

__all__ = [
    "IndexBuildOutput",
    "ProfilesBuildOutput",
    "RecsysBuildOutput",
    "SegmentsBuildOutput",
    "build_index",
    "build_profiles",
    "build_recsys",
    "build_segments",
    "evaluate_recommenders",
    "evaluate_recsys",
    "get_profile",
    "last_purchase_cutoffs",
    "load_embedder",
    "load_histories",
    "load_item_vectors",
    "load_recommender",
    "load_scorer",
    "make_hybrid",
    "recommend_for_user",
]

log = logging.getLogger(__name__)

PRODUCTS_FILE = "products.npz"
INDEX_FILE = "products.index"
TERMS_FILE = "style_terms.npz"
SEGMENTS_STATE_FILE = "segments_state.json"
#: EASE's l2 and ALS's factors in the hybrid: what the demo's validation folds chose
#: (l2 50 and 100, factors 32 in both).
HYBRID_EASE_L2 = 100.0
HYBRID_ALS_FACTORS = 32

Progress = Callable[[Iterable[Any], str, int | None], Iterable[Any]]


def _tqdm(progress: bool) -> Progress:
    def wrap(it: Iterable[Any], desc: str, total: int | None) -> Iterable[Any]:
        if not progress:
            return it
        from tqdm import tqdm

        return tqdm(it, desc=desc, total=total, unit="it", leave=False)

    return wrap


# ---------------------------------------------------------------------------- outputs
@dataclass(frozen=True)
class IndexBuildOutput:
    """``embedded`` products were (re-)embedded, ``reused`` came from the cache."""

    n_products: int
    embedded: int
    reused: int
    removed: int
    dim: int
    model_id: str
    index_path: Path
    skipped: bool
    seconds: float


@dataclass(frozen=True)
class ProfilesBuildOutput:
    n_users: int
    computed: int
    changed: int
    unchanged: int
    by_source: dict[str, int]
    seconds: float


@dataclass(frozen=True)
class SegmentsBuildOutput:
    k: int
    sizes: dict[int, int]
    silhouettes: dict[int, float]
    kept_ids: list[int]
    new_ids: list[int]
    retired_ids: list[int]
    skipped: bool
    seconds: float


@dataclass(frozen=True)
class RecsysBuildOutput:
    index: IndexBuildOutput
    profiles: ProfilesBuildOutput
    segments: SegmentsBuildOutput | None
    profiles_after_segments: ProfilesBuildOutput | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- helpers
def _index_dir(home: Path) -> Path:
    d = Path(home) / "index"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _save_npz(path: Path, **arrays: Any) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    _atomic_write_bytes(path, write)


def load_embedder(config: RecsysConfig) -> Embedder:
    """The configured CLIP embedder (the shipped small model by default)."""
    from recsys.embedders.clip import OpenClipEmbedder

    names = ("clip_model", "embedder_model", "embedding_model", "model_name", "model")
    model = next((getattr(config, n) for n in names if getattr(config, n, None)), "default")
    kwargs: dict[str, Any] = {}
    for name, key in (
        ("clip_pretrained", "pretrained"),
        ("pretrained", "pretrained"),
        ("device", "device"),
        ("clip_device", "device"),
        ("batch_size", "batch_size"),
        ("clip_batch_size", "batch_size"),
    ):
        value = getattr(config, name, None)
        if value is not None and key not in kwargs:
            kwargs[key] = value
    return OpenClipEmbedder.load(model, **kwargs)


def _resolve_image(image: str | None, home: Path) -> Path | None:
    if not image or "://" in image:
        return None
    p = Path(image)
    if not p.is_absolute():
        p = Path(home) / p
    return p if p.is_file() else None


def _product_text(p: Product) -> str:
    return f"{p.title}. {p.description}".strip()[:300]


def _make_index(config: RecsysConfig, dim: int) -> VectorIndex:
    from recsys.index import factory

    spec = getattr(config, "index_factory", None) or "Flat"
    return factory.make_index(spec, dim)  # type: ignore[no-any-return]


def _load_index(path: Path) -> VectorIndex:
    from recsys.index import factory

    return factory.load_index(path)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- index
def build_index(
    engine: Engine,
    *,
    config: RecsysConfig,
    home: Path,
    embedder: Embedder | Callable[[], Embedder] | None = None,
    progress: bool = True,
    batch_size: int = 64,
) -> IndexBuildOutput:
    """Embed every product (reusing unchanged ones by content key), save ``products.npz`` and
    rebuild the vector index when anything changed. ``embedder`` may be a zero-argument
    factory, called only when something needs embedding."""
    from PIL import Image

    t0 = time.perf_counter()
    d = _index_dir(home)
    with Session(engine) as session:
        products = list(session.exec(select(Product).order_by(col(Product.id))))
    old: dict[str, np.ndarray] = {}
    old_ids: set[int] = set()
    store = d / PRODUCTS_FILE
    if store.is_file():
        with np.load(store, allow_pickle=False) as z:
            old_ids = {int(i) for i in z["ids"]}
            old = {str(k): v for k, v in zip(z["keys"], z["vectors"], strict=True)}

    resolved: Embedder | None = None

    def get_embedder() -> Embedder:
        nonlocal resolved
        if resolved is None:
            if embedder is None:
                resolved = load_embedder(config)
            elif isinstance(embedder, Embedder):
                resolved = embedder
            else:
                resolved = embedder()
        return resolved

    # the model id is part of every key, so the configured model is always resolved (a
    # swapped checkpoint must never be mistaken for the one that made the stored vectors)
    model_id = get_embedder().model_id

    def key_of(p: Product) -> tuple[str, Path | None]:
        h = hashlib.sha256(model_id.encode())
        path = _resolve_image(p.image, home)
        if path is not None:
            h.update(b"img:" + path.read_bytes())
        else:
            h.update(b"txt:" + _product_text(p).encode())
        return h.hexdigest(), path

    keys: list[str] = []
    paths: list[Path | None] = []
    for p in _tqdm(progress)(products, "hashing products", len(products)):
        k, path = key_of(p)
        keys.append(k)
        paths.append(path)
    ids = np.array([int(p.id) for p in products], dtype=np.int64)  # type: ignore[arg-type]
    todo = [i for i, k in enumerate(keys) if k not in old]
    index_path = d / INDEX_FILE
    if not todo and index_path.exists() and old_ids == set(ids.tolist()) and len(old) == len(keys):
        dim = next(iter(old.values())).shape[0] if old else 0
        return IndexBuildOutput(
            n_products=len(products),
            embedded=0,
            reused=len(products),
            removed=0,
            dim=int(dim),
            model_id=model_id,
            index_path=index_path,
            skipped=True,
            seconds=time.perf_counter() - t0,
        )
    new_vecs: dict[str, np.ndarray] = {}
    if todo:
        emb = get_embedder()
        if emb.model_id != model_id:
            # the store was written by another model: everything must be re-embedded
            model_id = emb.model_id
            keys = [key_of(p)[0] for p in products]
            todo = list(range(len(products)))
            old = {}
        bar = _tqdm(progress)(range(0, len(todo), batch_size), "embedding products", None)
        for start in bar:
            chunk = todo[start : start + batch_size]
            with_img = [i for i in chunk if paths[i] is not None]
            text_only = [i for i in chunk if paths[i] is None]
            if with_img:
                images = []
                for i in with_img:
                    with Image.open(paths[i]) as im:  # type: ignore[arg-type]
                        images.append(
                            im.convert("RGBA")
                            if im.mode in ("RGBA", "LA", "P")
                            else im.convert("RGB")
                        )
                for i, v in zip(with_img, emb.embed_images(images), strict=True):
                    new_vecs[keys[i]] = v
            if text_only:
                texts = [_product_text(products[i]) for i in text_only]
                for i, v in zip(text_only, emb.embed_texts(texts), strict=True):
                    new_vecs[keys[i]] = v
    vectors = np.stack([new_vecs[k] if k in new_vecs else old[k] for k in keys]).astype(np.float32)
    _save_npz(store, ids=ids, vectors=vectors, keys=np.array(keys), model_id=np.array(model_id))
    index = _make_index(config, vectors.shape[1])
    if not getattr(index, "is_trained", True):
        # IVF / PQ indexes need training before vectors can be added
        index.train(vectors)  # type: ignore[attr-defined]
    index.upsert(ids, vectors)
    index.save(index_path)
    return IndexBuildOutput(
        n_products=len(products),
        embedded=len(new_vecs),
        reused=len(products) - len(new_vecs),
        removed=len(old_ids - set(ids.tolist())),
        dim=int(vectors.shape[1]),
        model_id=model_id,
        index_path=index_path,
        skipped=False,
        seconds=time.perf_counter() - t0,
    )


def load_item_vectors(home: Path) -> tuple[ItemVectors, str]:
    """Product vectors from ``products.npz`` and the model id that made them."""
    store = _index_dir(home) / PRODUCTS_FILE
    if not store.is_file():
        raise FileNotFoundError(f"no product vectors at {store}: run `tailorshot index build`")
    with np.load(store, allow_pickle=False) as z:
        return ItemVectors(ids=z["ids"], vectors=z["vectors"]), str(z["model_id"])


# ---------------------------------------------------------------------------- terms
def load_scorer(
    *,
    config: RecsysConfig,
    home: Path,
    items: ItemVectors,
    model_id: str,
    embedder: Embedder | Callable[[], Embedder] | None = None,
) -> StyleTermScorer:
    """The calibrated style-term scorer; vocabulary text embeddings are cached per model."""
    vocab_path = config.style_vocab_path
    vocabulary = StyleVocabulary.load(vocab_path)
    digest = hashlib.sha256(
        json.dumps([model_id, vocabulary.terms, vocabulary.prompts()]).encode()
    ).hexdigest()
    cache = _index_dir(home) / TERMS_FILE
    term_emb: np.ndarray | None = None
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["digest"]) == digest:
                term_emb = z["embeddings"]
    if term_emb is None:
        if embedder is None:
            emb = load_embedder(config)
        elif isinstance(embedder, Embedder):
            emb = embedder
        else:
            emb = embedder()
        scorer = StyleTermScorer.fit(
            vocabulary=vocabulary,
            embedder=emb,
            catalog_vectors=items.vectors,
            std_floor=config.style_std_floor,
        )
        _save_npz(cache, embeddings=scorer.term_embeddings, digest=np.array(digest))
        return scorer
    return StyleTermScorer.calibrate(
        vocabulary=vocabulary,
        term_embeddings=term_emb,
        catalog_vectors=items.vectors,
        std_floor=config.style_std_floor,
    )


# ---------------------------------------------------------------------------- histories
def load_histories(
    engine: Engine, *, before: Mapping[str, datetime] | None = None
) -> dict[str, list[HistoryEvent]]:
    """Every user's events (time order); with ``before``, only a user's events earlier than
    ``before[user]`` (users absent from ``before`` keep all)."""
    out: dict[str, list[HistoryEvent]] = {}
    with Session(engine) as session:
        rows = session.exec(
            select(Event.user_id, Event.product_id, Event.kind, Event.ts).order_by(
                col(Event.user_id), col(Event.ts), col(Event.id)
            )
        )
        for user_id, product_id, kind, ts in rows:
            if before is not None and user_id in before and ts >= before[user_id]:
                continue
            out.setdefault(user_id, []).append(
                HistoryEvent(product_id=int(product_id), kind=str(kind), ts=ts)
            )
    return out


def _popularity(histories: Mapping[str, Sequence[HistoryEvent]]) -> dict[int, float]:
    """Distinct users per product."""
    seen: dict[int, set[str]] = {}
    for user, evs in histories.items():
        for e in evs:
            seen.setdefault(e.product_id, set()).add(user)
    return {p: float(len(u)) for p, u in seen.items()}


def _popularity_fallback(
    items: ItemVectors,
    popularity: Mapping[int, float],
    scorer: StyleTermScorer | None,
    config: RecsysConfig,
) -> FallbackProfile | None:
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


def _segment_fallbacks(engine: Engine) -> tuple[dict[int, FallbackProfile], dict[str, int]]:
    segments: dict[int, FallbackProfile] = {}
    with Session(engine) as session:
        for seg in session.exec(select(Segment).where(col(Segment.size) > 0)):
            # the centroid lives in segments_state.json; filled in by _cold_start
            segments[int(seg.id)] = FallbackProfile(  # type: ignore[arg-type]
                embedding=np.zeros(0, dtype=np.float32),
                style_terms=tuple(StyleTerm(str(t[0]), str(t[1]), float(t[2])) for t in seg.terms),
                item_ids=tuple(int(i) for i in seg.example_product_ids),
            )
        memberships = {
            str(m.user_id): int(m.segment_id) for m in session.exec(select(SegmentMembership))
        }
    return segments, memberships


def _cold_start(
    engine: Engine,
    *,
    home: Path,
    items: ItemVectors,
    popularity: Mapping[int, float],
    scorer: StyleTermScorer | None,
    config: RecsysConfig,
) -> ColdStart:
    segments, memberships = _segment_fallbacks(engine)
    centroids = _load_segment_centroids(home)
    segments = {
        sid: FallbackProfile(
            embedding=centroids[sid], style_terms=f.style_terms, item_ids=f.item_ids
        )
        for sid, f in segments.items()
        if sid in centroids
    }
    return ColdStart(
        segments=segments,
        memberships=memberships,
        popularity=_popularity_fallback(items, popularity, scorer, config),
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


# ---------------------------------------------------------------------------- profiles
def build_profiles(
    engine: Engine,
    *,
    config: RecsysConfig,
    home: Path,
    embedder: Embedder | Callable[[], Embedder] | None = None,
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
    popularity = _popularity(histories)
    cold = _cold_start(
        engine, home=home, items=items, popularity=popularity, scorer=scorer, config=config
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
    for uid in _tqdm(progress)(user_ids, "taste profiles", len(user_ids)):
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


def _load_profiles(engine: Engine) -> dict[str, TasteProfile]:
    with Session(engine) as session:
        return {
            r.user_id: TasteProfile.from_dict(r.data)
            for r in session.exec(
                select(TasteProfileRecord).order_by(col(TasteProfileRecord.user_id))
            )
        }


# ---------------------------------------------------------------------------- segments
def _load_segment_centroids(home: Path) -> dict[int, np.ndarray]:
    path = _index_dir(home) / SEGMENTS_STATE_FILE
    if not path.is_file():
        return {}
    state = json.loads(path.read_text())
    return {int(k): np.asarray(v, dtype=np.float32) for k, v in state.get("centroids", {}).items()}


def _segment_relevance(
    hybrid: Any,
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
    profiles = {u: p for u, p in _load_profiles(engine).items() if p.source == "history"}
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
    state_path = _index_dir(home) / SEGMENTS_STATE_FILE
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
        for c in _tqdm(progress)(range(fit.k), "segments", fit.k):
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

    def write_state(tmp: Path) -> None:
        tmp.write_text(json.dumps(state))

    _atomic_write_bytes(state_path, write_state)
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


# ---------------------------------------------------------------------------- recommend
def load_recommender(
    engine: Engine, *, config: RecsysConfig, home: Path, kind: str = "hybrid", seed: int = 0
) -> Any:
    """The product recommender the storefront, the segment builder and ``tailorshot
    recommend`` use: ``kind="hybrid"`` (default) a :class:`~recsys.hybrid.HybridRecommender`
    fitted on every shopper's events (EASE below the product-count threshold, ALS above),
    ``kind="interest"`` the CLIP-only :class:`InterestRecommender`. Both expose ``.index``
    (the vector index) and ``.recommend(profile, k=, exclude_ids=)``."""
    if kind not in ("hybrid", "interest"):
        raise ValueError(f"kind: expected 'hybrid' or 'interest', got {kind!r}")
    index = _load_index(_index_dir(home) / INDEX_FILE)
    histories = load_histories(engine)
    if kind == "interest":
        return InterestRecommender(
            index=index,
            popularity=_popularity(histories),
            popularity_weight=config.recommend_popularity_weight,
            temperature=config.recommend_temperature,
            candidates=config.recommend_candidates,
            mmr_lambda=config.mmr_lambda,
        )
    return make_hybrid(
        histories, items=load_item_vectors(home)[0], config=config, seed=seed, index=index
    )


def make_hybrid(
    histories: Mapping[str, Sequence[HistoryEvent]],
    *,
    items: ItemVectors,
    config: RecsysConfig,
    seed: int = 0,
    index: VectorIndex | None = None,
) -> Any:
    """A :class:`~recsys.hybrid.HybridRecommender` fitted on ``histories`` with the default
    blend weights (those tuned on the demo's validation shoppers)."""
    from recsys.collaborative import Interactions, make_collaborative
    from recsys.hybrid import HybridRecommender

    inter = Interactions.from_histories(
        histories,
        item_ids=set(items.ids.tolist()) | {e.product_id for h in histories.values() for e in h},
    )
    collab = make_collaborative(
        len(inter.item_ids), ease_l2=HYBRID_EASE_L2, als_factors=HYBRID_ALS_FACTORS, seed=seed
    )
    collab.fit(inter.matrix)
    hybrid = HybridRecommender(
        collaborative=collab,
        interactions=inter,
        items=items,
        temperature=config.recommend_temperature,
    )
    hybrid.index = index
    return hybrid


def purchased_ids(engine: Engine, *, user_id: str) -> set[int]:
    """Products the user bought."""
    with Session(engine) as session:
        rows = session.exec(
            select(Event.product_id).where(Event.user_id == user_id, Event.kind == "purchase")
        )
        return {int(r) for r in rows}


def recommend_for_user(
    engine: Engine,
    *,
    user_id: str,
    config: RecsysConfig,
    home: Path,
    k: int = 10,
    recommender: Any | None = None,
) -> Recommendations:
    """Products to feature for ``user_id`` (purchases excluded, explained), from the hybrid
    recommender by default; needs a stored profile."""
    profile = get_profile(engine, user_id=user_id)
    if profile is None:
        raise KeyError(f"user_id {user_id!r}: no taste profile (build profiles first)")
    rec = recommender or load_recommender(engine, config=config, home=home)
    return rec.recommend(profile, k=k, exclude_ids=purchased_ids(engine, user_id=user_id))


# ---------------------------------------------------------------------------- all at once
def build_recsys(
    engine: Engine,
    *,
    settings_or_config: Any,
    home: Path,
    seed: int = 0,
    embedder: Embedder | Callable[[], Embedder] | None = None,
    progress: bool = True,
) -> RecsysBuildOutput:
    """Index, profiles, segments, then the cold-start profiles again (they fall back to the
    new segments). Idempotent: each stage skips unchanged work. ``settings_or_config`` is the
    root ``Settings`` (its ``recsys`` section is used) or a :class:`RecsysConfig`."""
    config = getattr(settings_or_config, "recsys", settings_or_config)
    if not isinstance(config, RecsysConfig):
        raise TypeError(
            "settings_or_config: expected Settings or RecsysConfig, got "
            f"{type(settings_or_config).__name__}"
        )
    if embedder is None:
        cached: list[Embedder] = []

        def lazy() -> Embedder:
            if not cached:
                cached.append(load_embedder(config))
            return cached[0]

        embedder = lazy
    idx = build_index(engine, config=config, home=home, embedder=embedder, progress=progress)
    prof = build_profiles(engine, config=config, home=home, embedder=embedder, progress=progress)
    seg: SegmentsBuildOutput | None = None
    again: ProfilesBuildOutput | None = None
    try:
        seg = build_segments(engine, config=config, home=home, seed=seed, progress=progress)
    except ValueError as e:
        log.warning("segments not built: %s", e)
    if seg is not None and not seg.skipped:
        again = build_profiles(
            engine, config=config, home=home, embedder=embedder, progress=progress
        )
    return RecsysBuildOutput(index=idx, profiles=prof, segments=seg, profiles_after_segments=again)


# ---------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class RecsysEvalOutput:
    """Acceptance figures on the demo world (fractions in [0, 1]).

    ``colour_recovery``: users with >= ``min_events`` events whose profile's best colour term
    is their true dominant colour. ``two_interest_match``: two-interest users whose two
    heaviest interests are their two true (colour, category group) pairs (an interest's colour
    is its best colour term, its group the weighted majority group of its items);
    ``two_interest_colour_match`` compares colours only. ``recall_at_10``/``ndcg_at_10``:
    each user's last purchase held out; the profile is built from the events before that
    purchase's session (the views and cart adds leading to it are not seen); purchases
    before are excluded; the popularity baseline ranks by distinct users in those histories.
    """

    n_users: int
    colour_recovery: float
    colour_recovery_n: int
    two_interest_match: float
    two_interest_colour_match: float
    two_interest_n: int
    recall_at_10: float
    recall_at_10_popularity: float
    ndcg_at_10: float
    ndcg_at_10_popularity: float
    leave_last_out_n: int
    model_id: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _interest_group(item_ids: Sequence[int], group_of: Mapping[int, str]) -> str:
    counts: dict[str, int] = {}
    for i in item_ids:
        g = group_of.get(int(i))
        if g is not None:
            counts[g] = counts.get(g, 0) + 1
    return max(sorted(counts), key=lambda g: counts[g]) if counts else ""


def _best_colour(terms: Sequence[StyleTerm]) -> str:
    return next((t.term for t in terms if t.facet == "colour"), "")


def last_purchase_cutoffs(
    engine: Engine, histories: Mapping[str, Sequence[HistoryEvent]]
) -> tuple[dict[str, datetime], dict[str, int]]:
    """Leave-last-out: per shopper with a purchase, the start of their last purchase's
    session (their history must end before it) and the product bought."""
    with Session(engine) as session:
        sessions = {
            (str(u), int(p), ts): sess
            for u, p, ts, sess in session.exec(
                select(Event.user_id, Event.product_id, Event.ts, Event.session).where(
                    Event.kind == "purchase"
                )
            )
        }
        session_start: dict[tuple[str, str], datetime] = {}
        for u, sess, ts in session.exec(select(Event.user_id, Event.session, Event.ts)):
            key = (str(u), str(sess))
            if key not in session_start or ts < session_start[key]:
                session_start[key] = ts
    cutoff: dict[str, datetime] = {}
    target: dict[str, int] = {}
    for u, evs in histories.items():
        buys = [e for e in evs if e.kind == "purchase"]
        if not buys:
            continue
        last = buys[-1]
        sess = sessions.get((u, last.product_id, last.ts))
        start = session_start.get((u, str(sess)), last.ts) if sess is not None else last.ts
        cutoff[u] = min(start, last.ts)
        target[u] = last.product_id
    return cutoff, target


def evaluate_recommenders(
    engine: Engine,
    *,
    config: RecsysConfig,
    home: Path,
    k: int = 10,
    seed: int = 0,
    n_bootstrap: int = 1000,
    protocols: Sequence[str] = ("leave_last_out", "time_split", "new_products"),
    embedder: Embedder | Callable[[], Embedder] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Popularity, item-kNN, EASE, ALS, the interest recommender and the hybrid on the
    leave-last-out, global time split and new-product protocols
    (:mod:`recsys.evaluation.protocols`); per protocol its summary (recall / NDCG at ``k``
    with bootstrap 95% intervals, the hybrid's lift over the best baseline), the cold-start
    shoppers' (<= 2 training events) summary and what each fold tuned."""
    from recsys.evaluation.protocols import (
        drop_products,
        global_time_split,
        run_protocol,
        split_before,
    )

    known = {"leave_last_out", "time_split", "new_products"}
    if set(protocols) - known:
        raise ValueError(f"protocols: expected some of {sorted(known)}, got {list(protocols)}")
    items, model_id = load_item_vectors(home)
    scorer = load_scorer(
        config=config, home=home, items=items, model_id=model_id, embedder=embedder
    )
    builder = ProfileBuilder.from_config(config, scorer=scorer, catalog_vectors=items.vectors)
    histories = load_histories(engine)
    cutoff, target = last_purchase_cutoffs(engine, histories)
    index = _make_index(config, items.dim)
    index.upsert(items.ids, items.vectors)
    bar = _tqdm(progress)
    out: dict[str, Any] = {"model_id": model_id, "k": k, "seed": seed}

    def run(split: Any) -> Any:
        popularity = _popularity(split.train)
        cold = ColdStart(popularity=_popularity_fallback(items, popularity, scorer, config))
        interest = InterestRecommender(
            index=index,
            popularity=popularity,
            popularity_weight=config.recommend_popularity_weight,
            temperature=config.recommend_temperature,
            candidates=config.recommend_candidates,
            mmr_lambda=config.mmr_lambda,
        )
        return run_protocol(
            split,
            items=items,
            profile_of=lambda u, h: builder.build(u, h, items, cold_start=cold),
            interest_recommend=lambda p, kk, ex: interest.recommend(
                p, k=kk, exclude_ids=ex
            ).item_ids.tolist(),
            k=k,
            seed=seed,
            hybrid_params={"temperature": config.recommend_temperature},
            progress=bar,
        )

    llo = split_before(histories, cutoff, target)
    for name in protocols:
        if name == "leave_last_out":
            res = run(llo)
            mask = None
        elif name == "time_split":
            res = run(global_time_split(histories))
            mask = None
        else:
            split, new = drop_products(llo, items.ids.tolist(), seed=seed)
            res = run(split)
            mask = np.array(
                [bool(res_rel & new) for res_rel in (split.relevant[u] for u in res.users)]
            )
        summary = res.summary(n_bootstrap=n_bootstrap, seed=seed, mask=mask)
        summary["cold_start"] = res.summary(
            n_bootstrap=n_bootstrap, seed=seed, mask=res.cold if mask is None else res.cold & mask
        )
        summary["tuned"] = res.tuned
        out[name] = summary
    return out


def evaluate_recsys(
    engine: Engine,
    *,
    config: RecsysConfig,
    home: Path,
    group_of_category: Mapping[str, str],
    min_events: int = 10,
    k: int = 10,
    embedder: Embedder | Callable[[], Embedder] | None = None,
    progress: bool = True,
) -> RecsysEvalOutput:
    """The acceptance figures (see :class:`RecsysEvalOutput`) from the ``DemoTaste`` rows,
    events and product vectors (``build_index`` first). ``group_of_category`` maps a product
    category to its demo category group."""
    from data.models import DemoTaste
    from recsys.evaluation.ranking import mean_at_k, ndcg_at_k, recall_at_k
    from recsys.recommend import PopularityRecommender

    t0 = time.perf_counter()
    with Session(engine) as session:
        tastes = {str(t.user_id): dict(t.taste) for t in session.exec(select(DemoTaste))}
        group_of = {
            int(pid): group_of_category.get(str(cat), "")  # type: ignore[arg-type]
            for pid, cat in session.exec(select(Product.id, Product.category))
        }
    if not tastes:
        raise ValueError(
            "no DemoTaste rows: build the demo world first (tailorshot demo --no-serve)"
        )
    items, model_id = load_item_vectors(home)
    scorer = load_scorer(
        config=config, home=home, items=items, model_id=model_id, embedder=embedder
    )
    builder = ProfileBuilder.from_config(config, scorer=scorer, catalog_vectors=items.vectors)
    histories = load_histories(engine)

    colour_hits: list[bool] = []
    pair_hits: list[bool] = []
    colour_pair_hits: list[bool] = []
    users = sorted(u for u in tastes if u in histories)
    for u in _tqdm(progress)(users, "profiles vs true tastes", len(users)):
        evs = histories[u]
        if len(evs) < max(min_events, builder.min_events):
            continue
        taste = tastes[u]
        profile = builder.build(u, evs, items)
        colour_hits.append(_best_colour(profile.style_terms) == taste.get("dominant_colour"))
        true = taste.get("interests", [])
        if len(true) == 2:
            top = profile.interests[:2]
            got = {(_best_colour(i.terms), _interest_group(i.item_ids, group_of)) for i in top}
            want = {(str(t["colour"]), str(t["group"])) for t in true}
            pair_hits.append(len(top) == 2 and got == want)
            colour_pair_hits.append(
                len(top) == 2 and {c for c, _ in got} == {str(t["colour"]) for t in true}
            )

    cutoff, target = last_purchase_cutoffs(engine, histories)
    train = load_histories(engine, before=cutoff)
    popularity = _popularity(train)
    index = _make_index(config, items.dim)
    index.upsert(items.ids, items.vectors)
    recommender = InterestRecommender(
        index=index,
        popularity=popularity,
        popularity_weight=config.recommend_popularity_weight,
        temperature=config.recommend_temperature,
        candidates=config.recommend_candidates,
        mmr_lambda=config.mmr_lambda,
    )
    baseline = PopularityRecommender(popularity=popularity)
    cold = ColdStart(popularity=_popularity_fallback(items, popularity, scorer, config))
    ours: dict[Hashable, Sequence[Hashable]] = {}
    pops: dict[Hashable, Sequence[Hashable]] = {}
    relevant: dict[Hashable, Collection[Hashable]] = {}
    eval_users = sorted(target)
    for u in _tqdm(progress)(eval_users, "leave-last-out", len(eval_users)):
        hist = train.get(u, [])
        bought = {e.product_id for e in hist if e.kind == "purchase"}
        profile = builder.build(u, hist, items, cold_start=cold)
        ours[u] = recommender.recommend(profile, k=k, exclude_ids=bought).item_ids.tolist()
        pops[u] = baseline.recommend(k=k, exclude_ids=bought).item_ids.tolist()
        relevant[u] = [target[u]]
    return RecsysEvalOutput(
        n_users=len(users),
        colour_recovery=float(np.mean(colour_hits)) if colour_hits else float("nan"),
        colour_recovery_n=len(colour_hits),
        two_interest_match=float(np.mean(pair_hits)) if pair_hits else float("nan"),
        two_interest_colour_match=(
            float(np.mean(colour_pair_hits)) if colour_pair_hits else float("nan")
        ),
        two_interest_n=len(pair_hits),
        recall_at_10=mean_at_k(recall_at_k, ours, relevant, k),
        recall_at_10_popularity=mean_at_k(recall_at_k, pops, relevant, k),
        ndcg_at_10=mean_at_k(ndcg_at_k, ours, relevant, k),
        ndcg_at_10_popularity=mean_at_k(ndcg_at_k, pops, relevant, k),
        leave_last_out_n=len(relevant),
        model_id=model_id,
        seconds=time.perf_counter() - t0,
    )
