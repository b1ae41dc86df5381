"""Test doubles for the profile/terms/segments/recommend tests (imported, not a conftest,
so they never clash with the embedder tests' fixtures in this folder)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

from recsys.profiles import HistoryEvent, ItemVectors
from recsys.terms import StyleVocabulary

T0 = datetime(2026, 1, 1, 12, 0, 0)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class KeywordEmbedder:
    """Deterministic embedder: a text is the normalised sum of one fixed random direction per
    word it contains (so "a red item" and "red" agree); images are not supported."""

    def __init__(self, dim: int = 32, seed: int = 0) -> None:
        self._dim = dim
        self._seed = seed

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model_id(self) -> str:
        return f"keyword-{self._dim}-{self._seed}"

    def word(self, w: str) -> np.ndarray:
        h = int.from_bytes(hashlib.sha256(f"{self._seed}:{w}".encode()).digest()[:8], "little")
        return np.random.default_rng(h).standard_normal(self._dim).astype(np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = [
            sum(
                (self.word(w) for w in t.lower().replace(",", " ").split()),
                np.zeros(self._dim, np.float32),
            )
            for t in texts
        ]
        return unit(np.stack(out))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise NotImplementedError("KeywordEmbedder embeds texts only")


class BruteForceIndex:
    """Minimal exact inner-product VectorIndex double."""

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._vecs: dict[int, np.ndarray] = {}

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return len(self._vecs)

    @property
    def is_trained(self) -> bool:
        return True

    def train(self, vectors: np.ndarray) -> None:
        pass

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        for i, v in zip(ids, vectors, strict=True):
            self._vecs[int(i)] = np.asarray(v, dtype=np.float32)

    def remove(self, ids: np.ndarray) -> int:
        return sum(self._vecs.pop(int(i), None) is not None for i in ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.array(sorted(self._vecs), dtype=np.int64)
        mat = np.stack([self._vecs[int(i)] for i in ids])
        s = np.asarray(queries, dtype=np.float32) @ mat.T
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(s, order, axis=1)
        out_ids = ids[order]
        if k > len(ids):
            pad = k - len(ids)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            out_ids = np.pad(out_ids, ((0, 0), (0, pad)), constant_values=-1)
        return scores.astype(np.float32), out_ids

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        return np.stack([self._vecs[int(i)] for i in ids])

    def save(self, path: Path) -> None:
        raise NotImplementedError


def tiny_vocabulary() -> StyleVocabulary:
    return StyleVocabulary(
        facets={
            "colour": ("red", "blue", "green", "yellow"),
            "material": ("cotton", "leather"),
            "setting": ("studio", "beach"),
        },
        templates={"colour": ("a {} item",), "material": ("a {} item",), "setting": ("a {} item",)},
    )


def attribute_catalog(
    embedder: KeywordEmbedder, *, n_per: int = 10, seed: int = 0, noise: float = 0.15
) -> tuple[ItemVectors, dict[int, dict[str, str]]]:
    """Items whose vector is the keyword embedding of "colour material studio" plus noise:
    every item shares "studio". Ids from 1."""
    rng = np.random.default_rng(seed)
    vecs, attrs = [], {}
    pid = 1
    for colour in ("red", "blue", "green", "yellow"):
        for material in ("cotton", "leather"):
            for _ in range(n_per):
                base = embedder.embed_texts([f"{colour} {material} studio"])[0]
                vecs.append(
                    unit(base + noise * rng.standard_normal(embedder.dim) / np.sqrt(embedder.dim))
                )
                attrs[pid] = {"colour": colour, "material": material}
                pid += 1
    ids = np.arange(1, pid, dtype=np.int64)
    return ItemVectors(ids=ids, vectors=np.stack(vecs)), attrs


def events(pairs: Sequence[tuple[int, str, float]]) -> list[HistoryEvent]:
    """``(product_id, kind, days after T0)`` -> events."""
    return [HistoryEvent(product_id=p, kind=k, ts=T0 + timedelta(days=d)) for p, k, d in pairs]


class ColourImageEmbedder(KeywordEmbedder):
    """Images: the normalised mean RGB (centred) in the first 3 dims plus a small fixed
    offset; texts: keyword directions. Enough for service-level tests."""

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for n, im in enumerate(images):
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(axis=0)
            out[n, :3] = rgb / 255.0 - 0.5
            out[n, 3] = 0.05
        return unit(out)
