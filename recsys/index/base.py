"""The ``VectorIndex`` protocol: inner-product search over L2-normalised vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class VectorIndex(Protocol):
    """Inner-product nearest-neighbour search with stable int64 ids.

    ``upsert(ids (n,), vectors (n, dim) float32)`` adds or replaces; ``remove(ids)`` deletes;
    ``search(queries (q, dim), k)`` returns ``(scores (q, k) float32, ids (q, k) int64)``,
    best first, padded with id -1 and score -inf when fewer than ``k`` exist. Indexes with
    quantizers (IVF / PQ) start untrained: ``train(vectors (n, dim))`` before the first
    upsert (exact indexes are always trained; their ``train`` does nothing).
    """

    @property
    def dim(self) -> int: ...

    @property
    def is_trained(self) -> bool: ...

    def train(self, vectors: np.ndarray) -> None: ...

    def __len__(self) -> int: ...

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def reconstruct(self, ids: np.ndarray) -> np.ndarray: ...

    def save(self, path: Path) -> None: ...
