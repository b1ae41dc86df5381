"""Build a :class:`~recsys.index.base.VectorIndex` from a factory string, or load a saved one.

``"numpy"`` gives the brute-force reference; ``"auto"`` picks a FAISS index by collection size
(:func:`plan_index`: exact Flat below 50k vectors, IVF-PQ fast-scan with exact re-ranking
above); anything else is a FAISS factory string (``"Flat"``, ``"HNSW32"``,
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

#: Above ``FLAT_MAX`` (``family="ivf"``): ``"IVF{nlist},PQ{dim}x4fs,RFlat"``. ``nlist`` is the
#: power of two nearest ``sqrt(n)`` (1024 at 1M), capped so every list gets at least
#: ``MIN_POINTS_PER_LIST`` training points. Each vector is kept as a 4-bit code per dimension,
#: scanned with FAISS's SIMD fast-scan, and the ``k * k_factor`` best candidates are re-ranked
#: by exact inner product with the float32 vectors (kept beside the codes).
MIN_POINTS_PER_LIST = 39

#: Share of the lists probed per query (52 of 1024 at 1M) and the re-ranking factor: the
#: cheapest setting whose recall@10 on 300 validation queries of the clustered CLIP-like 1M set
#: of ``bench/bench_index.py`` (128-d, 1 thread) is >= 0.955, a margin of 0.005 over the 0.95
#: goal for the sampling error of 300 queries (nprobe 50 reached 0.951 on validation but 0.947
#: on the measured queries). Validation / 300 other queries at load ~2.5, k_factor 16: nprobe
#: 50 / 52 / 54 / 56 -> 0.951 / 0.955 / 0.961 / 0.965 and 0.947 / 0.953 / 0.959 / 0.964 at p50
#: 0.90 / 0.93 / 0.96 / 1.00 ms CPU per query; k_factor 8 at nprobe 56: 0.948 (load ~13).
NPROBE_FRACTION = 13 / 256
MIN_NPROBE = 16
K_FACTOR = 16

#: The previous plan, kept as ``family="ivf-flat"``: lists of float32 vectors, ~4 * sqrt(n)
#: of them (4096 at 1M), 3/64 probed: recall@10 0.971 at p50 2.4 ms CPU on the same 1M set.
IVF_FLAT_NPROBE_FRACTION = 3 / 64

#: HNSW search beam when the HNSW family is asked for (recall@10 0.996 at 60k clustered).
HNSW_EF_SEARCH = 128

_FAMILIES = ("ivf", "ivf-flat", "hnsw")


@dataclass(frozen=True)
class IndexPlan:
    """A FAISS factory string plus the :class:`FaissIndex` keyword params that tune it."""

    factory: str
    params: dict[str, int] = field(default_factory=dict)


def _nlist(n: int, per_sqrt: float) -> int:
    """Power of two nearest ``per_sqrt * sqrt(n)``, halved until each list gets at least
    ``MIN_POINTS_PER_LIST`` of the ``n`` vectors."""
    nlist = 2 ** round(math.log2(max(1.0, per_sqrt * math.sqrt(n))))
    while nlist > 1 and nlist * MIN_POINTS_PER_LIST > n:
        nlist //= 2
    return nlist


def plan_index(n: int, dim: int, *, flat_max: int = FLAT_MAX, family: str = "ivf") -> IndexPlan:
    """The index for ``n`` vectors of ``dim`` dimensions.

    ``n < flat_max``: ``"Flat"`` (exact). Above, ``family``:

    - ``"ivf"`` (default): ``"IVF{nlist},PQ{dim}x4fs,RFlat"`` with ``nprobe = max(16,
      7 * nlist / 128)`` and ``k_factor`` 16: 4-bit fast-scan codes, exact re-ranking; add and
      remove without a rebuild (removal by tombstones, compacted past ``compact_fraction``);
    - ``"ivf-flat"``: ``"IVF{nlist},Flat"`` (``nlist`` ~ ``4 * sqrt(n)``), ``nprobe`` 3/64 of
      the lists; native removal;
    - ``"hnsw"``: ``"HNSW32"`` with ``ef_search`` 128 (building takes minutes per million).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an int >= 1, got {dim!r}")
    if family not in _FAMILIES:
        raise ValueError(f"family must be one of {_FAMILIES}, got {family!r}")
    if n < flat_max:
        return IndexPlan("Flat")
    if family == "hnsw":
        return IndexPlan("HNSW32", {"ef_search": HNSW_EF_SEARCH, "ef_construction": 200})
    if family == "ivf-flat":
        nlist = _nlist(n, 4.0)
        nprobe = min(nlist, max(MIN_NPROBE, round(nlist * IVF_FLAT_NPROBE_FRACTION)))
        return IndexPlan(f"IVF{nlist},Flat", {"nprobe": nprobe})
    nlist = _nlist(n, 1.0)
    nprobe = min(nlist, max(MIN_NPROBE, round(nlist * NPROBE_FRACTION)))
    return IndexPlan(f"IVF{nlist},PQ{dim}x4fs,RFlat", {"nprobe": nprobe, "k_factor": K_FACTOR})


def make_index(factory: str, dim: int, *, n: int | None = None, **params: Any) -> VectorIndex:
    """A new empty index. ``params`` go to the implementation (for FAISS: ``ef_search``,
    ``ef_construction``, ``nprobe``, ``k_factor``, ``compact_fraction``, ``normalize``).

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
