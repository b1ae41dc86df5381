"""Vector index at catalog scale: build time, recall@10 against exact search, and single-query
latency (p50/p99, one FAISS thread) per size, data set and index configuration.

Run: ``.venv/bin/python bench/bench_index.py [--sizes 10000,100000,1000000]
[--data clustered,uniform] [--factories "auto;HNSW32"] [--nprobe 16,32,64]
[--ef-search 64,128,256] [--k-factor 2,4,8]``;
prints one JSON line per measurement, then one JSON object with all of them.

Two query sets per data set: ``--validation-queries`` tune (each setting's recall on them is
reported as ``val_recall_at_10``; the cheapest setting reaching ``--target-recall`` there is
marked ``chosen_on_validation``), and ``--queries`` separate draws measure recall and latency.

Data sets (seeded, L2-normalised, ``--dim`` defaults to the catalog's embedding dimension):

- ``clustered``: CLIP-like vectors drawn from a diagonal Gaussian mixture fitted
  (scikit-learn, ``--gmm-components``) to the product embeddings of a built home
  (``--catalog``, default ``$TAILORSHOT_HOME/index/products.index``, else the demo home);
  queries are fresh draws from the same mixture;
- ``uniform``: uniform random directions (normalised Gaussians), the hard case for any
  partitioning index; queries likewise.

``auto`` is :func:`recsys.index.factory.plan_index` for that size (Flat below 50k, IVF-PQ
fast-scan with exact re-ranking above); IVF indexes are measured at each ``--nprobe`` (times
each ``--k-factor`` for ``,RFlat`` factories) and HNSW at each ``--ef-search`` without
rebuilding. ``--hnsw-max`` caps the HNSW sizes (graph building is the slow part on a shared
CPU); a skipped size is reported as such, never guessed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.index.factory import load_index, make_index, plan_index

DEMO_CATALOG = Path("/work/homes/demo0/index/products.index")
CHUNK = 100_000  # rows per generation / exact-search chunk (keeps temporaries small)


def default_catalog() -> Path:
    home = os.environ.get("TAILORSHOT_HOME")
    if home and (Path(home) / "index" / "products.index").is_file():
        return Path(home) / "index" / "products.index"
    return DEMO_CATALOG


def normalise_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class Mixture:
    """Diagonal Gaussian mixture fitted to catalog embeddings; samples are unit vectors."""

    def __init__(self, catalog: Path, components: int, seed: int) -> None:
        from sklearn.mixture import GaussianMixture

        index = load_index(catalog)
        ids = index.ids() if hasattr(index, "ids") else None
        if ids is None or len(ids) == 0:
            raise SystemExit(f"error: no vectors in catalog index {catalog}")
        x = index.reconstruct(np.sort(ids)).astype(np.float64)
        k = min(components, max(1, x.shape[0] // 10))
        gmm = GaussianMixture(k, covariance_type="diag", reg_covar=1e-5, random_state=seed)
        gmm.fit(x)
        self.n_items, self.dim, self.k = x.shape[0], x.shape[1], k
        self.weights = gmm.weights_ / gmm.weights_.sum()
        self.means = gmm.means_.astype(np.float32)
        self.stds = np.sqrt(gmm.covariances_).astype(np.float32)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        out = np.empty((n, self.dim), dtype=np.float32)
        for s in range(0, n, CHUNK):
            m = min(CHUNK, n - s)
            comp = rng.choice(self.k, size=m, p=self.weights)
            noise = rng.standard_normal((m, self.dim), dtype=np.float32)
            out[s : s + m] = normalise_rows(self.means[comp] + noise * self.stds[comp])
        return out


def uniform(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, CHUNK):
        m = min(CHUNK, n - s)
        out[s : s + m] = normalise_rows(rng.standard_normal((m, dim), dtype=np.float32))
    return out


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-``k`` row indices ``(q, k)`` by inner product, scanning in chunks."""
    best_s = np.full((queries.shape[0], 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((queries.shape[0], 0), dtype=np.int64)
    for s in range(0, vectors.shape[0], CHUNK):
        sims = queries @ vectors[s : s + CHUNK].T
        kk = min(k, sims.shape[1])
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([best_s, np.take_along_axis(sims, part, axis=1)], axis=1)
        cand_i = np.concatenate([best_i, part + s], axis=1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(cand_s, order, axis=1)
        best_i = np.take_along_axis(cand_i, order, axis=1)
    return best_i


def recall(index: Any, queries: np.ndarray, truth: np.ndarray, k: int) -> float:
    _, found = index.search(queries, k)
    hits = [len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True)]
    return round(float(np.mean(hits)) / k, 4)


def latency(index: Any, queries: np.ndarray, k: int) -> dict[str, float]:
    """Wall-clock p50/p99 per single query, and the CPU time of the searching thread per
    query (on a loaded machine wall time includes waiting for a core; CPU time does not)."""
    wall, cpu = [], []
    for q in queries:
        t0, c0 = time.perf_counter(), time.thread_time()
        index.search(q[None, :], k)
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - t0) * 1000)
    return {
        "p50_ms": round(float(np.percentile(wall, 50)), 3),
        "p99_ms": round(float(np.percentile(wall, 99)), 3),
        "cpu_p50_ms": round(float(np.percentile(cpu, 50)), 3),
        "cpu_p99_ms": round(float(np.percentile(cpu, 99)), 3),
    }


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def measure(
    args: argparse.Namespace, data: str, n: int, factory: str, vectors: np.ndarray,
    queries: np.ndarray, truth: np.ndarray, val: tuple[np.ndarray, np.ndarray],
) -> list[dict[str, Any]]:  # fmt: skip
    """Build one index and measure it at each search setting -> one row per setting."""
    dim = vectors.shape[1]
    plan = plan_index(n, dim) if factory == "auto" else None
    name = plan.factory if plan else factory
    base: dict[str, Any] = {"data": data, "n": n, "factory": name, "auto": plan is not None}
    if "HNSW" in name and n > args.hnsw_max:
        return [{**base, "skipped": f"n > --hnsw-max {args.hnsw_max}"}]
    extra = {"ef_construction": args.ef_construction} if "HNSW" in name else {}
    index: Any = (
        make_index(factory, dim, n=n, **extra) if plan else make_index(factory, dim, **extra)
    )
    if extra:
        base.update(extra)
    t0, c0 = time.perf_counter(), time.process_time()
    index.upsert(np.arange(n, dtype=np.int64), vectors)
    base["build_s"] = round(time.perf_counter() - t0, 2)
    base["build_cpu_s"] = round(time.process_time() - c0, 2)
    settings = search_settings(args, name, index)
    default = {knob: getattr(index, knob) for knob in settings[0]}
    rows = []
    for setting in settings:
        row = {**base, **setting, "default_setting": setting == default}
        for knob, v in setting.items():
            setattr(index, knob, v)
        row[f"val_recall_at_{args.k}"] = recall(index, val[0], val[1], args.k)
        row[f"recall_at_{args.k}"] = recall(index, queries, truth, args.k)
        row.update(latency(index, queries, args.k))
        row["peak_rss_mb"] = peak_rss_mb()
        row["loadavg_1m"] = round(os.getloadavg()[0], 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    # The first setting in grid order (fewest lists probed, fewest candidates) reaching the
    # target on the validation queries; the measured queries play no part in the choice.
    ok = [r for r in rows if r[f"val_recall_at_{args.k}"] >= args.target_recall]
    if ok:
        ok[0]["chosen_on_validation"] = True
    return rows


def search_settings(args: argparse.Namespace, name: str, index: Any) -> list[dict[str, int]]:
    """The grid of search-time knobs for one index, cheapest first (the index's own setting
    included)."""
    if "IVF" in name:
        nprobes = sorted({*args.nprobe, index.nprobe})
        if name.endswith(",RFlat"):
            factors = sorted({*args.k_factor, index.k_factor})
            return [{"nprobe": p, "k_factor": f} for p in nprobes for f in factors]
        return [{"nprobe": p} for p in nprobes]
    if "HNSW" in name:
        return [{"ef_search": v} for v in sorted({*args.ef_search, index.ef_search})]
    return [{}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--data", default="clustered,uniform")
    parser.add_argument(
        "--factories", default="auto", help="';'-separated: 'auto' and/or FAISS factory strings"
    )
    parser.add_argument("--nprobe", default="16,32,64", help="IVF settings to measure")
    parser.add_argument("--ef-search", default="64,128,256", help="HNSW settings to measure")
    parser.add_argument("--k-factor", default="2,4,8", help="re-ranking factors (,RFlat)")
    parser.add_argument("--validation-queries", type=int, default=300, help="tuning set")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--dim", type=int, default=None, help="default: the catalog's dim")
    parser.add_argument("--catalog", type=Path, default=None, help="a built products.index")
    parser.add_argument("--gmm-components", type=int, default=16)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--hnsw-max", type=int, default=100_000)
    parser.add_argument("--ef-construction", type=int, default=200, help="HNSW build beam")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="FAISS OpenMP threads")
    args = parser.parse_args()
    args.nprobe = [int(v) for v in args.nprobe.split(",") if v]
    args.ef_search = [int(v) for v in args.ef_search.split(",") if v]
    args.k_factor = [int(v) for v in args.k_factor.split(",") if v]
    from recsys.index.faiss_index import set_num_threads

    set_num_threads(args.threads)
    catalog = args.catalog or default_catalog()
    datasets = [d.strip() for d in args.data.split(",") if d.strip()]
    mixture = Mixture(catalog, args.gmm_components, args.seed) if "clustered" in datasets else None
    dim = args.dim or (mixture.dim if mixture else 128)
    if mixture and dim != mixture.dim:
        raise SystemExit(f"error: --dim {dim} differs from the catalog's dim {mixture.dim}")
    out: dict[str, Any] = {
        "dim": dim, "k": args.k, "faiss_threads": args.threads, "queries": args.queries,
        "validation_queries": args.validation_queries,
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2), "catalog": str(catalog),
        "gmm": {"components": mixture.k, "fitted_on_items": mixture.n_items} if mixture else None,
        "results": [],
    }  # fmt: skip
    for data in datasets:
        if data not in ("clustered", "uniform"):
            raise SystemExit(f"error: --data must name clustered and/or uniform, got {data!r}")
        for n in [int(s) for s in args.sizes.split(",")]:
            rng = np.random.default_rng([args.seed, n, datasets.index(data)])
            nq = args.queries + args.validation_queries
            if mixture and data == "clustered":
                vectors, both = mixture.sample(rng, n), mixture.sample(rng, nq)
            else:
                vectors, both = uniform(rng, n, dim), uniform(rng, nq, dim)
            queries, val_q = both[: args.queries], both[args.queries :]
            truth = exact_top_k(vectors, queries, args.k)
            val = (val_q, exact_top_k(vectors, val_q, args.k))
            for factory in [f.strip() for f in args.factories.split(";") if f.strip()]:
                out["results"].extend(measure(args, data, n, factory, vectors, queries, truth, val))
            del vectors
    out["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
