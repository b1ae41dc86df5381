"""Build a :class:`~recsys.index.base.VectorIndex` from a factory string, or load a saved one.

``"numpy"`` gives the brute-force reference; ``"auto"`` picks a FAISS index by collection size
(:func:`plan_index`); anything else is a FAISS factory string (``"Flat"``, ``"HNSW32"``,
``"IVF4096,Flat"``, ...). ``faiss`` is imported only when needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.index._common import load_arrays
from recsys.index.base import VectorIndex

#: Below this many vectors exact search (``"Flat"``) is fast enough and needs no training or
#: tuning: at 50k x 128 float32 one query scans 25 MB (0.12 ms p50 measured at 10k, one thread).
FLAT_MAX = 50_000

#: IVF lists per vector: ``nlist`` is the power of two nearest ``4 * sqrt(n)`` (FAISS's rule of
#: thumb, 4096 at 1M), capped so every list gets at least this many training points.
MIN_POINTS_PER_LIST = 39

#: Share of the IVF lists probed per query: 3/64 (192 of 4096 at 1M). On the clustered
#: CLIP-like 1M set of ``bench/bench_index.py`` recall@10 was 0.922 / 0.971 / 0.992 at 128 / 192 /
#: 256 lists (2.4 ms CPU per query at 192 on the loaded build machine).
NPROBE_FRACTION = 3 / 64
MIN_NPROBE = 16

#: HNSW search beam when the HNSW family is asked for (recall@10 0.996 at 60k clustered).
HNSW_EF_SEARCH = 128


@dataclass(frozen=True)
class IndexPlan:
    """A FAISS factory string plus the :class:`FaissIndex` keyword params that tune it."""

    factory: str
    params: dict[str, int] = field(default_factory=dict)


def plan_index(n: int, dim: int, *, flat_max: int = FLAT_MAX, family: str = "ivf") -> IndexPlan:
    """The index for ``n`` vectors of ``dim`` dimensions.

    ``n < flat_max``: ``"Flat"`` (exact). Above: ``family="ivf"`` gives ``"IVF{nlist},Flat"``
    with ``nprobe = max(16, 3 * nlist / 64)`` (native add/remove, quick to build: k-means on a
    sample, then one assignment per vector); ``family="hnsw"`` gives ``"HNSW32"`` with
    ``ef_search`` 128 (removal by tombstones; building takes minutes per million vectors).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an int >= 1, got {dim!r}")
    if family not in ("ivf", "hnsw"):
        raise ValueError(f"family must be 'ivf' or 'hnsw', got {family!r}")
    if n < flat_max:
        return IndexPlan("Flat")
    if family == "hnsw":
        return IndexPlan("HNSW32", {"ef_search": HNSW_EF_SEARCH, "ef_construction": 200})
    nlist = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))
    while nlist > 1 and nlist * MIN_POINTS_PER_LIST > n:
        nlist //= 2
    nprobe = min(nlist, max(MIN_NPROBE, round(nlist * NPROBE_FRACTION)))
    return IndexPlan(f"IVF{nlist},Flat", {"nprobe": nprobe})


def make_index(factory: str, dim: int, *, n: int | None = None, **params: Any) -> VectorIndex:
    """A new empty index. ``params`` go to the implementation (for FAISS: ``ef_search``,
    ``ef_construction``, ``nprobe``, ``compact_fraction``, ``normalize``).

    ``factory="auto"`` needs ``n``, the expected number of vectors, and builds
    :func:`plan_index` ``(n, dim)``; explicit ``params`` override the plan's.
    """
    if not isinstance(factory, str) or not factory.strip():
        raise ValueError(f"factory must be a non-empty string, got {factory!r}")
    name = factory.strip().lower()
    if name in ("numpy", "bruteforce", "brute-force"):
        from recsys.index.numpy_index import NumpyIndex

        return NumpyIndex(dim, **params)
    from recsys.index.faiss_index import FaissIndex

    if name == "auto":
        if n is None:
            raise ValueError("factory 'auto' needs n, the expected number of vectors")
        plan = plan_index(n, dim)
        return FaissIndex(dim, plan.factory, **{**plan.params, **params})
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
