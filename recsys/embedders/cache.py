"""Content-addressed on-disk embedding cache (SQLite), so unchanged inputs are embedded once.

Keys are ``sha256(model_id, kind, content)``: for images the encoded file bytes (or, for an
in-memory PIL image, its mode, size and raw pixels); for texts the UTF-8 text. A new model
id therefore never reuses another model's vectors, and an edited image gets a new key.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from recsys.config import RecsysConfig
from recsys.embedders.base import Embedder


def content_key(model_id: str, kind: str, payload: bytes) -> str:
    """Hex sha256 over ``model_id``, ``kind`` (``"image"``/``"text"``) and ``payload``."""
    h = hashlib.sha256()
    for part in (model_id.encode(), kind.encode(), payload):
        h.update(len(part).to_bytes(8, "little"))  # length-prefixed: no ambiguous concatenation
        h.update(part)
    return h.hexdigest()


def image_payload(image: Image.Image) -> bytes:
    """Bytes identifying an in-memory image: mode, size and raw pixels."""
    return f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode() + image.tobytes()


class EmbeddingCache:
    """SQLite store of float32 vectors by key (``<cache_dir>/embeddings.sqlite``).

    Safe to share between threads of one process and between processes (WAL journal).
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.path = Path(cache_dir) / "embeddings.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS embedding ("
            " key TEXT PRIMARY KEY, model_id TEXT NOT NULL, dim INTEGER NOT NULL,"
            " vector BLOB NOT NULL)"
        )
        self._conn.commit()

    def get_many(self, keys: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        """The cached vectors among ``keys`` (float32 ``(dim,)`` each); misses are absent."""
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT key, dim, vector FROM embedding WHERE key IN ({marks})", chunk
                ).fetchall()
                for key, d, blob in rows:
                    if d == dim:
                        found[key] = np.frombuffer(blob, dtype=np.float32).copy()
        return found

    def put_many(self, model_id: str, items: dict[str, np.ndarray]) -> None:
        """Store ``key -> vector (dim,)`` pairs (one transaction)."""
        rows = [
            (k, model_id, int(v.shape[0]), np.ascontiguousarray(v, np.float32).tobytes())
            for k, v in items.items()
        ]
        with self._lock, self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO embedding VALUES (?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM embedding").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class CachedEmbedder:
    """An :class:`Embedder` that consults an :class:`EmbeddingCache` before the model.

    Only misses reach ``embedder``; results are identical (float32, unit norm) either way.
    ``embed_image_bytes`` keys on the encoded file bytes and decodes only on a miss.
    """

    def __init__(self, embedder: Embedder, cache: EmbeddingCache) -> None:
        self.embedder = embedder
        self.cache = cache

    @property
    def dim(self) -> int:
        return self.embedder.dim

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    def _cached(self, keys: list[str], compute: Callable[[list[int]], np.ndarray]) -> np.ndarray:
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        hits = self.cache.get_many(keys, self.dim)
        missing = [i for i, k in enumerate(keys) if k not in hits]
        for i, k in enumerate(keys):
            if k in hits:
                out[i] = hits[k]
        if missing:
            # Duplicates within one call are embedded once.
            first: dict[str, int] = {}
            for i in missing:
                first.setdefault(keys[i], i)
            todo = list(first.values())
            vecs = compute(todo)
            fresh = {keys[i]: v for i, v in zip(todo, vecs, strict=True)}
            self.cache.put_many(self.model_id, fresh)
            for i in missing:
                out[i] = fresh[keys[i]]
        return out

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """float32 ``(len(images), dim)``; keyed on pixels (see :func:`image_payload`)."""
        keys = [content_key(self.model_id, "image", image_payload(im)) for im in images]
        return self._cached(keys, lambda idx: self.embedder.embed_images([images[i] for i in idx]))

    def embed_image_bytes(self, blobs: Sequence[bytes]) -> np.ndarray:
        """float32 ``(len(blobs), dim)`` for encoded image files (PNG, JPEG, ...)."""
        import io

        keys = [content_key(self.model_id, "image-file", b) for b in blobs]

        def compute(idx: list[int]) -> np.ndarray:
            images = []
            for i in idx:
                with Image.open(io.BytesIO(blobs[i])) as im:
                    im.load()
                    images.append(im.copy())
            return self.embedder.embed_images(images)

        return self._cached(keys, compute)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``(len(texts), dim)``; keyed on the UTF-8 text."""
        keys = [content_key(self.model_id, "text", t.encode("utf-8")) for t in texts]
        return self._cached(keys, lambda idx: self.embedder.embed_texts([texts[i] for i in idx]))


def embedder_from_config(config: RecsysConfig, *, home: Path | None = None) -> Embedder:
    """The configured OpenCLIP embedder (``clip_*`` settings), wrapped in the on-disk cache
    at ``embedding_cache_dir`` (default ``<home>/cache/embeddings``; no cache without either)."""
    from recsys.embedders.clip import OpenClipEmbedder

    embedder = OpenClipEmbedder.load(
        config.clip_model,
        pretrained=config.clip_pretrained,
        model_config=config.clip_model_config,
        device=config.clip_device,
        batch_size=config.clip_batch_size,
    )
    cache_dir = config.embedding_cache_dir or (
        Path(home) / "cache" / "embeddings" if home is not None else None
    )
    return CachedEmbedder(embedder, EmbeddingCache(cache_dir)) if cache_dir else embedder
