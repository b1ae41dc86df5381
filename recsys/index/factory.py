"""Build a :class:`~recsys.index.base.VectorIndex` from a factory string, or load a saved one.

``"numpy"`` gives the brute-force reference; anything else is a FAISS factory string
(``"Flat"``, ``"HNSW32"``, ``"IVF256,PQ16"``, ...). ``faiss`` is imported only when needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recsys.index._common import load_arrays
from recsys.index.base import VectorIndex


def make_index(factory: str, dim: int, **params: Any) -> VectorIndex:
    """A new empty index. ``params`` go to the implementation (for FAISS: ``ef_search``,
    ``ef_construction``, ``nprobe``, ``compact_fraction``, ``normalize``)."""
    if not isinstance(factory, str) or not factory.strip():
        raise ValueError(f"factory must be a non-empty string, got {factory!r}")
    if factory.strip().lower() in ("numpy", "bruteforce", "brute-force"):
        from recsys.index.numpy_index import NumpyIndex

        return NumpyIndex(dim, **params)
    from recsys.index.faiss_index import FaissIndex

    return FaissIndex(dim, factory, **params)


def load_index(path: str | Path) -> VectorIndex:
    """Load an index saved by ``save`` (the file records which implementation wrote it)."""
    meta, arrays = load_arrays(Path(path))
    kind = meta.get("kind")
    if kind == "numpy":
        from recsys.index.numpy_index import NumpyIndex

        return NumpyIndex.from_arrays(meta, arrays)
    if kind == "faiss":
        from recsys.index.faiss_index import FaissIndex

        return FaissIndex.from_arrays(meta, arrays)
    raise ValueError(f"index file {path} has unknown kind {kind!r}")
