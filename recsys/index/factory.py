"""Build a :class:`~recsys.index.base.VectorIndex` from a factory string, or load a saved one.

``"numpy"`` gives the brute-force reference; ``"auto"`` picks a FAISS index by collection size
(:func:`plan_index`: exact Flat below 50k vectors, IVF-PQ fast-scan of residuals with exact
re-ranking above); anything else is a FAISS factory string (``"Flat"``, ``"HNSW32"``,
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

#: Above ``FLAT_MAX`` (``family="ivf"``): ``"IVF{nlist},PQ{dim}x4fsr,RFlat"``. ``nlist`` is
#: the power of two nearest ``sqrt(n)`` (1024 at 1M), capped so every list gets at least
#: ``MIN_POINTS_PER_LIST`` training points. Each vector's residual from its list's centroid
#: (``fsr``) is kept as a 4-bit code per dimension, scanned with FAISS's SIMD fast-scan, and
#: the ``k * k_factor`` best candidates are re-ranked by exact inner product with the float32
#: vectors (kept beside the codes). Residual codes rank the candidates almost as exact search
#: does, so few are re-ranked: recall is then bounded by the lists probed (IVF1024,Flat at
#: nprobe 56: 0.97 on the 1M clustered set).
MIN_POINTS_PER_LIST = 39

#: Share of the lists probed per query (56 of 1024 at 1M) and the re-ranking factor, tuned on
#: 300 validation queries of the clustered CLIP-like 1M set of ``bench/bench_index.py``
#: (128-d, 1 thread; the measured queries are other draws): the cheapest setting with a
#: validation recall@10 >= 0.96 (a 0.01 margin over the 0.95 goal). Validation / measured
#: recall and p50 per query (load ~5-8, each setting's 300 queries in turn, 3 rounds):
#: nprobe 56, k_factor 6: 0.969 / 0.963 at 0.45 ms (0.39 ms with the single-query fast-scan
#: implementation, ``faiss_index.SINGLE_QUERY_IMPLEM``); k_factor 4: 0.961 / 0.955;
#: nprobe 52, k_factor 8: 0.960 / 0.955. The previous plan (non-residual ``PQ128x4fs``,
#: nprobe 52, k_factor 16): 0.955 / 0.953 at 0.48 ms in the same run. The time is mostly the
#: scan of ~55k codes of 64 bytes (3.5 MB from memory per query): on a loaded machine the
#: neighbours' memory traffic moves it by up to 2x (0.93 and 1.21 ms were measured before).
#: Not better: IVF4096 (nprobe 192, same share scanned: 0.964 at 0.8 ms), ``PQ64x4fsr``
#: (half the bytes, but recall 0.96 needs k_factor 64: 0.58 ms).
NPROBE_FRACTION = 7 / 128
MIN_NPROBE = 16
K_FACTOR = 6

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

    - ``"ivf"`` (default): ``"IVF{nlist},PQ{dim}x4fsr,RFlat"`` with ``nprobe = max(16,
      7 * nlist / 128)`` and ``k_factor`` 6: 4-bit fast-scan codes of the residuals, exact
      re-ranking; add and remove without a rebuild (removal by tombstones, compacted past
      ``compact_fraction``);
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
    return IndexPlan(f"IVF{nlist},PQ{dim}x4fsr,RFlat", {"nprobe": nprobe, "k_factor": K_FACTOR})


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
