"""The taste profile's data: history events, item vectors, interests, the profile itself
and the cold-start fallbacks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from recsys.terms import StyleTerm

#: Bumped when the profile's content or its computation changes meaning.
PROFILE_VERSION = 1


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
