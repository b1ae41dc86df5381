"""``batch embed``: the catalog index build with the embedding spread over the executor.

``recsys.catalog.build_index`` stays the one index build (content keys, reuse of unchanged
products, ``products.npz``, the index file); it is handed a :class:`DistributedEmbedder`
whose ``embed_images`` / ``embed_texts`` send chunks to actors that hold the same embedder
(loaded once per actor) and call the same methods. A rerun re-embeds only products whose
image or text changed (their content key is new).

Images travel to the actors as losslessly encoded PNG (the pixels the embedder sees are
the ones the in-process build sees).
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy.engine import Engine

from api.batch.engine import Row, run_chunks
from api.batch.runner import RunOptions
from api.settings import Settings
from recsys.catalog import build_index, load_embedder
from recsys.config import RecsysConfig
from recsys.embedders.base import Embedder


def _encode(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _decode(text: str) -> Image.Image:
    with Image.open(io.BytesIO(base64.b64decode(text))) as im:
        im.load()
        return im.copy()


class EmbedWork:
    """Chunk work: ``{"kind": "image"|"text", "items": [...]}`` → one row per item with its
    vector (a float32 list). The embedder is loaded once per process."""

    def __init__(self, config_json: str, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.embedder = load_embedder(RecsysConfig.model_validate_json(config_json))

    def __call__(self, chunk: Row) -> list[Row]:
        start = int(chunk["start"])
        if chunk["kind"] == "image":
            vecs = self.embedder.embed_images([_decode(s) for s in chunk["items"]])
        else:
            vecs = self.embedder.embed_texts([str(s) for s in chunk["items"]])
        return [
            {"i": start + j, "v": np.asarray(v, np.float32).tolist()} for j, v in enumerate(vecs)
        ]


@dataclass(frozen=True)
class EmbedFactory:
    """Picklable ``factory()`` → :class:`EmbedWork`."""

    config_json: str
    threads: int = 1

    def __call__(self) -> EmbedWork:
        return EmbedWork(self.config_json, self.threads)


class DistributedEmbedder:
    """An :class:`~recsys.embedders.base.Embedder` whose work runs on the executor of
    ``options`` in chunks of ``options.chunk_size``; ``local`` describes the model (its id
    and dimension: a swapped checkpoint never passes for the one that made stored vectors)."""

    def __init__(self, config: RecsysConfig, local: Embedder, options: RunOptions) -> None:
        self.config = config
        self.local = local
        self.options = options
        self.items = 0
        self.seconds = 0.0

    @property
    def dim(self) -> int:
        return self.local.dim

    @property
    def model_id(self) -> str:
        return self.local.model_id

    def _run(self, kind: str, payload: list[Any]) -> np.ndarray:
        size = self.options.chunk_size
        chunks = [
            {"kind": kind, "start": s, "items": payload[s : s + size]}
            for s in range(0, len(payload), size)
        ]
        t0 = time.perf_counter()
        factory = EmbedFactory(self.config.model_dump_json(), self.options.threads)
        rows = run_chunks(chunks, factory, self.options.executor)
        self.seconds += time.perf_counter() - t0
        self.items += len(payload)
        out = np.zeros((len(payload), self.dim), np.float32)
        for r in rows:
            out[int(r["i"])] = np.asarray(r["v"], np.float32)
        return out

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self._run("image", [_encode(im) for im in images])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._run("text", list(texts))


def run_embed(settings: Settings, engine: Engine, *, options: RunOptions) -> dict[str, Any]:
    """Build or extend the index with the embedding on the executor; the JSON summary."""
    t0 = time.perf_counter()
    local = load_embedder(settings.recsys)
    dist = DistributedEmbedder(settings.recsys, local, options)
    # One build_index chunk for everything to embed: the executor does the chunking.
    out = build_index(
        engine,
        config=settings.recsys,
        home=settings.home,
        embedder=dist,
        progress=options.progress,
        batch_size=1_000_000,
    )
    seconds = time.perf_counter() - t0
    return {
        "command": "embed",
        "executor": options.executor.executor,
        "actors": options.executor.actors,
        "planned": out.n_products,
        "done_before": out.reused,
        "rendered": out.embedded,
        "removed": out.removed,
        "dim": out.dim,
        "model_id": out.model_id,
        "index_path": str(out.index_path),
        "seconds": round(seconds, 3),
        "embed_seconds": round(dist.seconds, 3),
        "items_per_s": round(dist.items / dist.seconds, 3) if dist.seconds else 0.0,
        "quality": {
            "checked": ["unit L2 norm of every vector", "one vector per product"],
            "refused": {},
        },
        "unit_norm": _unit_norm(settings),
    }


def _unit_norm(settings: Settings) -> bool:
    """Every stored product vector has unit L2 norm (to 1e-3)."""
    from recsys.catalog import load_item_vectors

    vectors, _model = load_item_vectors(settings.home)
    norms = np.linalg.norm(np.asarray(vectors.vectors, np.float64), axis=1)
    return bool(np.all(np.abs(norms - 1.0) < 1e-3))
