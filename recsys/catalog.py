"""The catalog's vectors under ``home/index``: product embeddings, the vector index, the style
vocabulary's text embeddings and the segments' saved state. Every build is idempotent and
skips unchanged work.

Files under ``home/index``:

- ``products.npz``: ``ids`` int64 ``(n,)``, ``vectors`` float32 ``(n, dim)``, ``keys`` (content
  key per product: model id + image bytes + title), ``model_id``; the source of truth for
  product vectors (profiles read it without loading CLIP);
- ``products.index``: the :class:`VectorIndex` built from it (FAISS, via the index factory);
- ``style_terms.npz``: the vocabulary's text embeddings for one model (so profile builds need
  no text encoder once computed);
- ``segments_state.json``: the input digest, sizes and centroids of the last segment build
  (written by :mod:`recsys.segment_store`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from data.files import atomic_write, under_home
from data.models import Product
from recsys.config import RecsysConfig
from recsys.embedders.base import Embedder
from recsys.index import factory
from recsys.index.base import VectorIndex
from recsys.profiles import ItemVectors
from recsys.progress import progress_bar
from recsys.terms import StyleTermScorer, StyleVocabulary

__all__ = [
    "INDEX_FILE",
    "PRODUCTS_FILE",
    "SEGMENTS_STATE_FILE",
    "TERMS_FILE",
    "EmbedderSource",
    "IndexBuildOutput",
    "build_index",
    "index_dir",
    "load_embedder",
    "load_item_vectors",
    "load_product_index",
    "load_scorer",
    "load_segment_centroids",
    "make_product_index",
]

PRODUCTS_FILE = "products.npz"
INDEX_FILE = "products.index"
TERMS_FILE = "style_terms.npz"
SEGMENTS_STATE_FILE = "segments_state.json"

#: An embedder, a zero-argument factory called only when something needs embedding, or None
#: (the configured model, see :func:`load_embedder`).
EmbedderSource = Embedder | Callable[[], Embedder] | None


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


def index_dir(home: Path) -> Path:
    """``home/index``, created when missing."""
    d = Path(home) / "index"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` of ``arrays`` to ``path``, atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]

    atomic_write(path, write)


def load_embedder(config: RecsysConfig) -> Embedder:
    """The configured CLIP embedder (the shipped small model by default)."""
    from recsys.embedders.clip import OpenClipEmbedder

    return OpenClipEmbedder.load(
        config.clip_model or "default",
        pretrained=config.clip_pretrained,
        device=config.clip_device,
        batch_size=config.clip_batch_size,
    )


def _resolve_embedder(embedder: EmbedderSource, config: RecsysConfig) -> Embedder:
    """``embedder`` itself, what its factory returns, or the configured model when None."""
    if embedder is None:
        return load_embedder(config)
    if isinstance(embedder, Embedder):
        return embedder
    return embedder()


def make_product_index(config: RecsysConfig, dim: int, *, n: int) -> VectorIndex:
    """An empty index of the configured kind for ``n`` vectors (``index_factory``; "auto",
    the default, picks by ``n``: exact Flat below 50k, IVF-PQ fast-scan with exact re-ranking
    above, see :func:`recsys.index.factory.plan_index`)."""
    return factory.make_index(config.index_factory or "auto", dim, n=n)


def load_product_index(home: Path) -> VectorIndex:
    """The saved product index (``products.index``)."""
    return factory.load_index(index_dir(home) / INDEX_FILE)


def _resolve_image(image: str | None, home: Path) -> Path | None:
    if not image or "://" in image:
        return None
    p = under_home(image, home)
    return p if p.is_file() else None


def _product_text(p: Product) -> str:
    return f"{p.title}. {p.description}".strip()[:300]


def build_index(
    engine: Engine,
    *,
    config: RecsysConfig,
    home: Path,
    embedder: EmbedderSource = None,
    progress: bool = True,
    batch_size: int = 64,
) -> IndexBuildOutput:
    """Embed every product (reusing unchanged ones by content key), save ``products.npz`` and
    rebuild the vector index when anything changed. ``embedder`` may be a zero-argument
    factory, called only when something needs embedding."""
    from PIL import Image

    t0 = time.perf_counter()
    bar = progress_bar(progress)
    d = index_dir(home)
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
            resolved = _resolve_embedder(embedder, config)
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
    for p in bar(products, "hashing products", len(products)):
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
        for start in bar(range(0, len(todo), batch_size), "embedding products", None):
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
    index = make_product_index(config, vectors.shape[1], n=int(vectors.shape[0]))
    if not index.is_trained:
        # IVF / PQ indexes need training before vectors can be added
        index.train(vectors)
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
    store = index_dir(home) / PRODUCTS_FILE
    if not store.is_file():
        raise FileNotFoundError(f"no product vectors at {store}: run `tailorshot index build`")
    with np.load(store, allow_pickle=False) as z:
        return ItemVectors(ids=z["ids"], vectors=z["vectors"]), str(z["model_id"])


def load_scorer(
    *,
    config: RecsysConfig,
    home: Path,
    items: ItemVectors,
    model_id: str,
    embedder: EmbedderSource = None,
) -> StyleTermScorer:
    """The calibrated style-term scorer; vocabulary text embeddings are cached per model."""
    vocabulary = StyleVocabulary.load(config.style_vocab_path)
    digest = hashlib.sha256(
        json.dumps([model_id, vocabulary.terms, vocabulary.prompts()]).encode()
    ).hexdigest()
    cache = index_dir(home) / TERMS_FILE
    term_emb: np.ndarray | None = None
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["digest"]) == digest:
                term_emb = z["embeddings"]
    if term_emb is None:
        scorer = StyleTermScorer.fit(
            vocabulary=vocabulary,
            embedder=_resolve_embedder(embedder, config),
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


def load_segment_centroids(home: Path) -> dict[int, np.ndarray]:
    """Segment id -> centroid float32 ``(dim,)`` from the last segment build (empty if none)."""
    path = index_dir(home) / SEGMENTS_STATE_FILE
    if not path.is_file():
        return {}
    state = json.loads(path.read_text())
    return {int(k): np.asarray(v, dtype=np.float32) for k, v in state.get("centroids", {}).items()}
