"""Brute-force inner-product index in numpy: the reference every FAISS index is tested against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.index._common import (
    atomic_save_arrays,
    check_ids,
    check_k,
    check_upsert,
    check_vectors,
    load_arrays_of_kind,
    normalise,
    pad_results,
)


class NumpyIndex:
    """Exact inner-product search over rows kept in a numpy array.

    ``normalize=True`` L2-normalises vectors and queries (scores are then cosines).
    Ties are broken by insertion order (stable sort).
    """

    kind = "numpy"

    def __init__(self, dim: int, *, normalize: bool = True) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an int >= 1, got {dim!r}")
        self._dim = dim
        self.normalize = normalize
        self._ids = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._row: dict[int, int] = {}

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return int(self._ids.size)

    def __contains__(self, item: object) -> bool:
        return isinstance(item, (int, np.integer)) and int(item) in self._row

    def ids(self) -> np.ndarray:
        """All ids, int64 ``(n,)``, in insertion order."""
        return self._ids.copy()

    @property
    def is_trained(self) -> bool:
        """Always True: exact search needs no training."""
        return True

    def train(self, vectors: np.ndarray) -> None:
        """Nothing to train (``vectors`` (n, dim) are only validated)."""
        check_vectors(vectors, self._dim)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add ``vectors`` (n, dim) under ``ids`` (n,); existing ids are replaced in place."""
        ids_arr, vec = check_upsert(ids, vectors, self._dim)
        if self.normalize:
            vec = normalise(vec)
        new_mask = np.array([int(i) not in self._row for i in ids_arr], dtype=bool)
        for i, v in zip(ids_arr[~new_mask], vec[~new_mask], strict=True):
            self._vectors[self._row[int(i)]] = v
        if new_mask.any():
            start = self._ids.size
            self._ids = np.concatenate([self._ids, ids_arr[new_mask]])
            self._vectors = np.concatenate([self._vectors, vec[new_mask]])
            for j, i in enumerate(ids_arr[new_mask].tolist()):
                self._row[i] = start + j

    def remove(self, ids: np.ndarray) -> int:
        """Delete ``ids`` (unknown ids are ignored); returns how many were removed."""
        ids_arr = check_ids(ids)
        drop = {int(i) for i in ids_arr if int(i) in self._row}
        if not drop:
            return 0
        keep = np.array([int(i) not in drop for i in self._ids], dtype=bool)
        self._ids, self._vectors = self._ids[keep], self._vectors[keep]
        self._row = {int(i): r for r, i in enumerate(self._ids.tolist())}
        return len(drop)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (q, k) float32, ids (q, k) int64)``, best first, padded with -inf / -1."""
        k = check_k(k)
        q = check_vectors(queries, self._dim, name="queries")
        if self.normalize:
            q = normalise(q)
        n = self._ids.size
        scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
        ids = np.full((q.shape[0], k), -1, dtype=np.int64)
        if n:
            sims = q @ self._vectors.T
            kk = min(k, n)
            order = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
            scores[:, :kk] = np.take_along_axis(sims, order, axis=1)
            ids[:, :kk] = self._ids[order]
        return pad_results(scores, ids)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of ``ids`` as float32 ``(n, dim)``; unknown ids raise ``KeyError``."""
        ids_arr = check_ids(ids)
        missing = [int(i) for i in ids_arr if int(i) not in self._row]
        if missing:
            raise KeyError(f"ids not in index: {missing[:10]}")
        return self._vectors[[self._row[int(i)] for i in ids_arr]].copy()

    def save(self, path: Path) -> None:
        """Write the index to ``path`` atomically (one file)."""
        atomic_save_arrays(
            Path(path),
            {"kind": self.kind, "dim": self._dim, "normalize": self.normalize},
            {"ids": self._ids, "vectors": self._vectors},
        )

    @classmethod
    def load(cls, path: Path) -> NumpyIndex:
        """Read an index written by :meth:`save`."""
        meta, arrays = load_arrays_of_kind(Path(path), cls.kind)
        return cls.from_arrays(meta, arrays)

    @classmethod
    def from_arrays(cls, meta: dict[str, object], arrays: dict[str, np.ndarray]) -> NumpyIndex:
        index = cls(int(meta["dim"]), normalize=bool(meta["normalize"]))  # type: ignore[call-overload]
        index._ids = arrays["ids"].astype(np.int64)
        index._vectors = np.ascontiguousarray(arrays["vectors"], dtype=np.float32)
        index._row = {int(i): r for r, i in enumerate(index._ids.tolist())}
        return index
