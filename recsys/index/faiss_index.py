"""FAISS-backed :class:`~recsys.index.base.VectorIndex` (the only module importing ``faiss``).

Inner product on (by default) L2-normalised vectors, stable int64 ids, add/update/remove
without a rebuild, and atomic save/load. How ids and removal work depends on the index
family built from the factory string:

- **flat codes** (``"Flat"``, ``"PQ16"``, ``"SQ8"``, ...): wrapped in ``IndexIDMap2``;
  removal compacts the codes (O(n) per call, fine for catalogs).
- **IVF** (``"IVF256,Flat"``, ``"IVF256,PQ16"``, ...): ids live in the inverted lists
  (``add_with_ids``); removal is native; a hashtable direct map gives ``reconstruct``. The
  quantizer is trained on the first upsert (or an explicit :meth:`FaissIndex.train`), which
  therefore needs enough vectors (see :meth:`FaissIndex.min_train_size`).
- **HNSW** (``"HNSW32"``, ...), which cannot delete, and **IVF fast-scan**
  (``"IVF4096,PQ32x4fs"``, whose block lists cannot delete by id): a removed or replaced
  vector is *tombstoned* (its slot's id becomes -1) and excluded during search with an
  ``IDSelector``; when tombstones exceed ``compact_fraction`` of the slots the index is
  rebuilt from the live vectors (an IVF keeps its trained quantizers).

A trailing ``",RFlat"`` (FAISS's refine-by-exact-distance suffix) keeps the float32 vectors
too: the base index proposes ``k * k_factor`` candidates, which are re-ranked by their exact
inner product (and ``reconstruct`` is lossless). It implies tombstone mode (slots index the
exact vectors). ``"IVF4096,PQ32x4fs,RFlat"`` is what :func:`~recsys.index.factory.plan_index`
picks at catalog scale.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import faiss as _faiss
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

#: faiss's bundled stubs lag its SWIG API (DirectMap, SearchParametersHNSW, ...): use it untyped.
faiss: Any = _faiss

_MODES = ("idmap", "ivf", "tombstone")

#: IVF k-means sample size per list (see ``_configure``).
TRAIN_POINTS_PER_LIST = 64

#: FAISS's IVF fast-scan search implementation for a single query (``implem`` 10: one query,
#: a heap over the probed lists); batches keep FAISS's own choice (0). On the 1M clustered
#: set of ``bench/bench_index.py`` (IVF1024,PQ128x4fsr, nprobe 56, 60 candidates, one
#: thread): p50 0.325 vs 0.359 ms per query, same recall@10 (0.963); on a 300-query batch
#: 87 vs 68 ms, hence per call. The candidates can differ in near ties of the 4-bit scores
#: (99.3% of the 60 identical), which the exact re-ranking then orders.
SINGLE_QUERY_IMPLEM = 10


def set_num_threads(n: int) -> None:
    """FAISS's OpenMP thread count for this process. One thread gives the lowest and most
    stable single-query latency on a shared CPU (idle OpenMP workers spin and wait)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    faiss.omp_set_num_threads(n)


def _make_inner(dim: int, factory: str) -> Any:
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ValueError(f"factory {factory!r} is not a valid FAISS factory string: {e}") from e


def _split_refine(factory: str) -> tuple[str, bool]:
    """``"IVF…,PQ…,RFlat"`` -> ``("IVF…,PQ…", True)``; other strings unchanged, False."""
    head, _, last = factory.rpartition(",")
    if head and last.strip() == "RFlat":
        return head.strip(), True
    return factory, False


def _mode_of(inner: Any, rerank: bool) -> str:
    if rerank or isinstance(faiss.downcast_index(inner), faiss.IndexIVFFastScan):
        return "tombstone"
    if faiss.try_extract_index_ivf(inner) is not None:
        return "ivf"
    if isinstance(inner, faiss.IndexFlatCodes):
        return "idmap"
    return "tombstone"


def _selector(ids: np.ndarray) -> Any:
    """An ``IDSelectorArray`` over ``ids`` (the selector IVF's hashtable direct map accepts)."""
    arr = np.ascontiguousarray(ids, dtype=np.int64)
    sel = faiss.IDSelectorArray(arr.size, faiss.swig_ptr(arr))
    sel._keepalive = arr  # the selector points into this buffer
    return sel


class FaissIndex:
    """Inner-product FAISS index with stable ids (see the module docstring for the families).

    ``factory``: FAISS factory string, e.g. ``"Flat"``, ``"HNSW32"``, ``"IVF256,PQ16"``.
    ``ef_search`` / ``ef_construction``: HNSW beam widths; ``nprobe``: IVF lists probed;
    ``compact_fraction``: tombstone share that triggers a rebuild, in (0, 1].
    ``k_factor``: candidates per result re-ranked exactly (``",RFlat"`` factories only).
    ``normalize``: L2-normalise vectors and queries (scores are cosines).
    Thread-safe: one lock guards every call.
    """

    kind = "faiss"

    def __init__(
        self,
        dim: int,
        factory: str = "Flat",
        *,
        normalize: bool = True,
        ef_search: int = 512,
        ef_construction: int = 200,
        nprobe: int = 16,
        compact_fraction: float = 0.25,
        k_factor: int = 4,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an int >= 1, got {dim!r}")
        if not isinstance(factory, str) or not factory.strip():
            raise ValueError(f"factory must be a non-empty FAISS factory string, got {factory!r}")
        for name, value in (("ef_search", ef_search), ("ef_construction", ef_construction),
                            ("nprobe", nprobe), ("k_factor", k_factor)):  # fmt: skip
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 < compact_fraction <= 1.0:
            raise ValueError(f"compact_fraction must be in (0, 1], got {compact_fraction}")
        self._dim = dim
        self.factory = factory.strip()
        self.normalize = normalize
        self.ef_search = ef_search
        self.ef_construction = ef_construction
        self.nprobe = nprobe
        self.compact_fraction = compact_fraction
        self.k_factor = k_factor
        self._base_factory, self._rerank = _split_refine(self.factory)
        self._lock = threading.RLock()
        self._init_empty()

    def _init_empty(self) -> None:
        inner = _make_inner(self._dim, self._base_factory)
        self._mode = _mode_of(inner, self._rerank)
        if self._mode == "idmap":
            self._index = faiss.IndexIDMap2(inner)
            self._inner = inner  # keep a Python reference: IndexIDMap2 does not own it
        else:
            self._index = inner
        self._configure()
        # id -> slot (tombstone mode) or id -> 0 (membership only, other modes)
        self._slot: dict[int, int] = {}
        # tombstone mode: slot -> id, -1 for dead slots
        self._labels = np.zeros(0, dtype=np.int64)
        self._dead = 0
        # ",RFlat": slot -> the vector as added, float32 (rows past len(_labels) are spare)
        self._exact = np.zeros((0, self._dim), dtype=np.float32)
        # search parameters of the last (nprobe, ef_search), valid while no slot is dead
        self._params_key: tuple[int, int] | None = None
        self._params: Any = None

    def _configure(self) -> None:
        ivf = faiss.try_extract_index_ivf(self._index)
        if ivf is not None:
            ivf.nprobe = self.nprobe
            # k-means on at most 64 points per list (FAISS samples them, seeded; its default
            # is 256): at 1M vectors and 4096 lists a 262k sample instead of all 1M, so the
            # training takes about a quarter of the time. Recall was not compared with 256.
            ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
            # id -> list position for ``reconstruct``: tombstone mode adds slots 0, 1, ...
            # in order, so a plain array serves; ids in "ivf" mode are anyone's.
            kind = faiss.DirectMap.Array if self._mode == "tombstone" else faiss.DirectMap.Hashtable
            if ivf.direct_map.type != kind:
                ivf.set_direct_map_type(kind)
        hnsw = getattr(faiss.downcast_index(self._index), "hnsw", None)
        if hnsw is not None:
            hnsw.efConstruction = self.ef_construction
            hnsw.efSearch = self.ef_search
        # IVF fast-scan: the implementation is chosen per search (see SINGLE_QUERY_IMPLEM).
        base = faiss.downcast_index(ivf) if ivf is not None else None
        self._fastscan = base if isinstance(base, faiss.IndexIVFFastScan) else None

    # ------------------------------------------------------------------ protocol
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def mode(self) -> str:
        """``"idmap"``, ``"ivf"`` or ``"tombstone"`` (how ids and removal are handled)."""
        return self._mode

    @property
    def n_tombstones(self) -> int:
        """Dead HNSW slots awaiting compaction (always 0 outside tombstone mode)."""
        return self._dead

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, item: object) -> bool:
        return isinstance(item, (int, np.integer)) and int(item) in self._slot

    def ids(self) -> np.ndarray:
        """All live ids, int64 ``(n,)`` (no particular order)."""
        return np.fromiter(self._slot.keys(), dtype=np.int64, count=len(self._slot))

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    def min_train_size(self) -> int:
        """Vectors needed to train this index (0 when no training is needed)."""
        if self._index.is_trained:
            return 0
        ivf = faiss.try_extract_index_ivf(self._index)
        need = int(ivf.nlist) if ivf is not None else 1
        if "PQ" in self.factory or "SQ" in self.factory:
            need = max(need, 256)  # 8-bit codebooks have 256 centroids each
        return need

    def train(self, vectors: np.ndarray) -> None:
        """Train the quantizers (IVF/PQ) on ``vectors`` (n, dim); no-op if already trained."""
        vec = check_vectors(vectors, self._dim)
        with self._lock:
            if self._index.is_trained:
                return
            need = self.min_train_size()
            if vec.shape[0] < need:
                raise ValueError(
                    f"factory {self.factory!r} needs at least {need} training vectors, "
                    f"got {vec.shape[0]}"
                )
            vec = normalise(vec) if self.normalize else vec
            ivf = faiss.try_extract_index_ivf(self._index)
            most = max(need, TRAIN_POINTS_PER_LIST * int(ivf.nlist)) if ivf is not None else 0
            if most and vec.shape[0] > most:
                # k-means samples this many anyway; the encoder (PQ/SQ) needs far fewer, and
                # training on all of a million vectors assigned each one to every list.
                rows = np.random.default_rng(0).choice(vec.shape[0], most, replace=False)
                vec = vec[np.sort(rows)]
            self._index.train(vec)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add ``vectors`` (n, dim) under ``ids`` (n,); an existing id's vector is replaced."""
        ids_arr, vec = check_upsert(ids, vectors, self._dim)
        if self.normalize:
            vec = normalise(vec)
        if ids_arr.size == 0:
            return
        with self._lock:
            if not self._index.is_trained:
                self.train(vec)
            slot = self._slot
            existing = np.array([i for i in ids_arr.tolist() if i in slot], dtype=np.int64)
            if self._mode == "tombstone":
                self._kill(existing)
                start = int(self._index.ntotal)
                self._index.add(vec)
                if self._rerank:
                    self._keep_exact(start, vec)
                self._labels = np.concatenate([self._labels, ids_arr])
                for j, i in enumerate(ids_arr.tolist()):
                    self._slot[i] = start + j
                self._maybe_compact()
            else:
                if existing.size:
                    self._index.remove_ids(_selector(existing))
                self._index.add_with_ids(vec, ids_arr)
                self._slot.update(dict.fromkeys(ids_arr.tolist(), 0))

    def remove(self, ids: np.ndarray) -> int:
        """Delete ``ids`` (unknown ids are ignored); returns how many were removed."""
        ids_arr = check_ids(ids)
        with self._lock:
            present = np.array(
                sorted({i for i in ids_arr.tolist() if i in self._slot}), dtype=np.int64
            )
            if present.size == 0:
                return 0
            if self._mode == "tombstone":
                self._kill(present)
                for i in present.tolist():
                    del self._slot[i]
                self._maybe_compact()
            else:
                removed = int(self._index.remove_ids(_selector(present)))
                if removed != present.size:  # pragma: no cover - would be a FAISS bug
                    raise RuntimeError(f"FAISS removed {removed} of {present.size} ids")
                for i in present.tolist():
                    del self._slot[i]
            return int(present.size)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (q, k) float32, ids (q, k) int64)``, best first; padded with -inf / -1
        when fewer than ``k`` vectors exist."""
        k = check_k(k)
        q = check_vectors(queries, self._dim, name="queries")
        if self.normalize:
            q = normalise(q)
        with self._lock:
            if len(self._slot) == 0:
                return pad_results(
                    np.full((q.shape[0], k), -np.inf, np.float32),
                    np.full((q.shape[0], k), -1, np.int64),
                )
            params = self._search_params()
            kk = k * self.k_factor if self._rerank else k
            if self._fastscan is not None:
                self._fastscan.implem = SINGLE_QUERY_IMPLEM if q.shape[0] == 1 else 0
            if params is None:
                scores, found = self._index.search(q, kk)
            else:
                scores, found = self._index.search(q, kk, params=params)
            if self._rerank:
                scores, found = self._rerank_exact(q, found, k)
            if self._mode == "tombstone":
                found = np.where(found >= 0, self._labels[np.maximum(found, 0)], -1)
        return pad_results(scores, found)

    # ------------------------------------------------------------------ exact re-ranking
    def _keep_exact(self, start: int, vec: np.ndarray) -> None:
        """Store ``vec`` at slots ``start…``; capacity doubles, so n adds copy O(n) rows."""
        end = start + vec.shape[0]
        if end > self._exact.shape[0]:
            grown = np.zeros((max(end, 2 * self._exact.shape[0]), self._dim), np.float32)
            grown[:start] = self._exact[:start]
            self._exact = grown
        self._exact[start:end] = vec

    def _rerank_exact(
        self, q: np.ndarray, cand: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidate slots ``cand (nq, k')`` -> the ``k`` best by exact inner product with
        ``q (nq, dim)``: ``(scores (nq, k), slots (nq, k))``, -inf / -1 where fewer. One
        query at a time: a gather of k' rows and a matrix-vector product (~60 x 128 at 1M),
        cheaper than the batched fancy indexing for the usual single query."""
        scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
        slots = np.full((q.shape[0], k), -1, dtype=np.int64)
        for i in range(q.shape[0]):
            c = cand[i]
            if c.min() < 0:  # -1: fewer candidates were found
                c = c[c >= 0]
                if not c.size:
                    continue
            exact = np.take(self._exact, c, axis=0) @ q[i]
            m = min(k, c.size)
            top = np.argsort(-exact, kind="stable")[:m]
            scores[i, :m] = exact[top]
            slots[i, :m] = c[top]
        return scores, slots

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of ``ids`` as float32 ``(n, dim)`` (lossy for PQ/SQ codes);
        unknown ids raise ``KeyError``."""
        ids_arr = check_ids(ids)
        with self._lock:
            missing = [i for i in ids_arr.tolist() if i not in self._slot]
            if missing:
                raise KeyError(f"ids not in index: {missing[:10]}")
            if self._rerank:
                return self._exact[[self._slot[i] for i in ids_arr.tolist()]].copy()
            out = np.zeros((ids_arr.size, self._dim), dtype=np.float32)
            for row, i in enumerate(ids_arr.tolist()):
                key = self._slot[i] if self._mode == "tombstone" else i
                out[row] = self._index.reconstruct(int(key))
            return out

    # ------------------------------------------------------------------ tombstones
    def _kill(self, ids: np.ndarray) -> None:
        for i in ids.tolist():
            slot = self._slot[i]
            self._labels[slot] = -1
            self._dead += 1

    def _search_params(self) -> Any:
        """FAISS search parameters; without tombstones they are built once per setting (a
        fresh object and the type probes took ~40 us of a ~1 ms query)."""
        key = (self.nprobe, self.ef_search)
        if not self._dead and self._params_key == key:
            return self._params
        params = self._build_search_params()
        if not self._dead:
            self._params_key, self._params = key, params
        return params

    def _build_search_params(self) -> Any:
        hnsw = getattr(faiss.downcast_index(self._index), "hnsw", None)
        sel = None
        if self._mode == "tombstone" and self._dead:
            dead = np.flatnonzero(self._labels < 0).astype(np.int64)
            sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(dead))
            self._sel_keepalive = sel  # the C++ selector must outlive the search call
        if hnsw is not None:
            params = faiss.SearchParametersHNSW()
            params.efSearch = self.ef_search
        elif faiss.try_extract_index_ivf(self._index) is not None:
            params = faiss.SearchParametersIVF()
            params.nprobe = self.nprobe
        elif sel is None:
            return None
        else:
            params = faiss.SearchParameters()
        if sel is not None:
            params.sel = sel
        return params

    def _maybe_compact(self) -> None:
        if self._dead and self._dead >= self.compact_fraction * max(1, self._labels.size):
            self.compact()

    def compact(self) -> None:
        """Rebuild a tombstoned index from its live vectors (no-op in other modes). An IVF
        keeps its trained quantizers; with ``",RFlat"`` the exact vectors are re-added."""
        with self._lock:
            if self._mode != "tombstone" or self._dead == 0:
                return
            live_slots = np.flatnonzero(self._labels >= 0)
            if self._rerank:
                vectors = self._exact[live_slots]
            elif live_slots.size:
                vectors = self._index.reconstruct_batch(live_slots.astype(np.int64))
            else:
                vectors = np.zeros((0, self._dim), np.float32)
            labels = self._labels[live_slots]
            if faiss.try_extract_index_ivf(self._index) is not None:
                self._index.reset()  # empties the lists, keeps the training
                self._labels, self._dead = np.zeros(0, dtype=np.int64), 0
                self._exact = np.zeros((0, self._dim), dtype=np.float32)
            else:
                self._init_empty()
            if labels.size:
                vectors = np.ascontiguousarray(vectors, dtype=np.float32)
                self._index.add(vectors)
                if self._rerank:
                    self._keep_exact(0, vectors)
            self._labels = labels.copy()
            self._slot = {int(i): s for s, i in enumerate(labels.tolist())}

    # ------------------------------------------------------------------ persistence
    def _meta(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dim": self._dim,
            "factory": self.factory,
            "normalize": self.normalize,
            "ef_search": self.ef_search,
            "ef_construction": self.ef_construction,
            "nprobe": self.nprobe,
            "compact_fraction": self.compact_fraction,
            "k_factor": self.k_factor,
            "mode": self._mode,
            "dead": self._dead,
        }

    def save(self, path: Path) -> None:
        """Write index + id map to ``path`` as one file, atomically (temp file, fsync,
        ``os.replace``): a crash mid-save leaves the previous file intact."""
        with self._lock:
            blob = faiss.serialize_index(self._index)
            ids = self.ids() if self._mode != "tombstone" else self._labels.copy()
            arrays = {"faiss": blob, "ids": ids}
            if self._rerank:
                arrays["exact"] = self._exact[: ids.size].copy()
            meta = self._meta()
        atomic_save_arrays(Path(path), meta, arrays)

    @classmethod
    def load(cls, path: Path) -> FaissIndex:
        """Read an index written by :meth:`save`."""
        meta, arrays = load_arrays_of_kind(Path(path), cls.kind)
        return cls.from_arrays(meta, arrays)

    @classmethod
    def from_arrays(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> FaissIndex:
        index = cls(
            int(meta["dim"]),
            str(meta["factory"]),
            normalize=bool(meta["normalize"]),
            ef_search=int(meta["ef_search"]),
            ef_construction=int(meta["ef_construction"]),
            nprobe=int(meta["nprobe"]),
            compact_fraction=float(meta["compact_fraction"]),
            k_factor=int(meta.get("k_factor", 4)),  # files written before re-ranking existed
        )
        index._index = faiss.deserialize_index(np.ascontiguousarray(arrays["faiss"]))
        index._params_key = None
        index._inner = None
        index._mode = str(meta["mode"])
        if index._mode not in _MODES:
            raise ValueError(f"index file has unknown mode {index._mode!r}")
        index._configure()
        ids = arrays["ids"].astype(np.int64)
        if index._rerank:
            exact = arrays.get("exact")
            if exact is None or exact.shape != (ids.size, index._dim):
                raise ValueError("index file is inconsistent: exact vectors missing or mis-sized")
            index._exact = np.ascontiguousarray(exact, dtype=np.float32)
        if index._mode == "tombstone":
            index._labels = ids
            index._slot = {int(i): s for s, i in enumerate(ids.tolist()) if i >= 0}
            index._dead = int((ids < 0).sum())
        else:
            index._slot = dict.fromkeys(ids.tolist(), 0)
        if len(index._slot) != (index._index.ntotal - index._dead):
            raise ValueError(
                f"index file is inconsistent: {len(index._slot)} ids for "
                f"{index._index.ntotal - index._dead} live vectors"
            )
        return index
