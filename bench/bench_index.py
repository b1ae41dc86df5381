"""Vector index build time and single-query latency (p50/p99), Flat vs HNSW, plus HNSW
recall@10 against exact search (100k random vectors by default).

Run: ``.venv/bin/python bench/bench_index.py [--sizes 10000,100000,1000000] [--dim 128]
[--factories Flat,HNSW32] [--recall-max 100000] [--hnsw-max 100000]``; prints one JSON line
per measurement, then one JSON object with all of them.
Vectors are random unit vectors (seeded). ``--hnsw-max`` caps the HNSW sizes (graph building
is the slow part on a shared 2-core CPU); a skipped size is reported as such, never guessed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from recsys.index.factory import make_index


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):  # chunks keep the float64 temporaries small
        x = rng.standard_normal((min(100_000, n - s), dim)).astype(np.float32)
        out[s : s + x.shape[0]] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def latency(index: Any, queries: np.ndarray, k: int) -> dict[str, float]:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q[None, :], k)
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--factories", default="Flat,HNSW32")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--recall-max", type=int, default=100_000, help="recall@k for HNSW at n <= this"
    )
    parser.add_argument("--hnsw-max", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="FAISS OpenMP threads")
    args = parser.parse_args()
    from recsys.index.faiss_index import set_num_threads

    set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    out: dict[str, Any] = {"dim": args.dim, "k": args.k, "faiss_threads": args.threads, "loadavg_1m_at_start":
                           round(os.getloadavg()[0], 2), "results": []}  # fmt: skip
    queries = unit(rng, args.queries, args.dim)
    for n in [int(s) for s in args.sizes.split(",")]:
        vectors = unit(rng, n, args.dim)
        ids = np.arange(n, dtype=np.int64)
        for factory in args.factories.split(","):
            row: dict[str, Any] = {"n": n, "factory": factory}
            if "HNSW" in factory and n > args.hnsw_max:
                row["skipped"] = f"n > --hnsw-max {args.hnsw_max}"
                out["results"].append(row)
                continue
            index = make_index(factory, args.dim)
            t0 = time.perf_counter()
            index.upsert(ids, vectors)
            row["build_s"] = round(time.perf_counter() - t0, 2)
            row.update(latency(index, queries, args.k))
            if "HNSW" in factory and n <= args.recall_max:
                truth = np.argsort(-(queries @ vectors.T), axis=1)[:, : args.k]
                _, found = index.search(queries, args.k)
                hits = [len(set(f) & set(t)) for f, t in zip(found, truth, strict=True)]
                row[f"recall_at_{args.k}"] = round(float(np.mean(hits)) / args.k, 4)
                row["ef_search"] = getattr(index, "ef_search", None)
            out["results"].append(row)
            print(json.dumps(row), flush=True)
            del index
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
