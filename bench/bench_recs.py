"""Collaborative training time, peak memory and per-shopper query latency at scale.

A synthetic, seeded shopper x product matrix per size (``--sizes 100000x10000,1000000x100000``):
products fall into clusters of about 100, each shopper follows one or two clusters (80% of
their events) and otherwise browses globally popular products (Zipf), with about
``--events`` distinct products per shopper and log-weighted values as in the real matrix.
Each (size, model) runs in its own child process so that its peak resident memory
(``ru_maxrss``) is its own; ``rss_before_fit_mb`` is the child's memory once the matrix is
built, so the fit's own peak is the difference. EASE is only run at or below its
product-count threshold (the hybrid uses ALS above it). ``default`` is what the hybrid ships
(``make_collaborative``): EASE + ALS + item-kNN (200 neighbours) at or below the threshold, ALS
above it.

Query latency: the hybrid recommender's ``recommend`` for ``--queries`` shoppers (their row
folded in, random unit CLIP-like vectors of ``--dim`` for the products, top 10 with MMR),
p50 / p95 in milliseconds (wall, and the process's CPU time, which a shared machine distorts
less). ``cells_ms_p50``: the interest-cell step on top (``adjust_for_cells``: the shopper's
session shares, the next-interest chain's probability and the score shift, :mod:`recsys.cells`) with random colours (11) and
categories (9, in 3 communities) for the products and each shopper's row as a history of
one-hour-apart sessions. Prints one JSON object.

    nice -n 10 .venv/bin/python bench/bench_recs.py --sizes 100000x10000
    nice -n 10 .venv/bin/python bench/bench_recs.py --sizes 1000000x100000 --models als
    nice -n 10 .venv/bin/python bench/bench_recs.py --models default
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import scipy.sparse as sp

# one BLAS thread per process: implicit's ALS parallelises itself and warns otherwise
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def synthetic_matrix(n_users: int, n_items: int, *, events: int, seed: int) -> sp.csr_matrix:
    """float32 CSR ``(n_users, n_items)``: see the module docstring."""
    rng = np.random.default_rng(seed)
    n_clusters = max(1, n_items // 100)
    per_user = 1 + rng.poisson(events - 1, size=n_users)
    rows = np.repeat(np.arange(n_users, dtype=np.int64), per_user)
    n = len(rows)
    home = rng.integers(0, n_clusters, size=(n_users, 2))
    second = rng.random(n_users) < 0.3
    which = np.where(second[rows] & (rng.random(n) < 0.4), 1, 0)
    cluster = home[rows, which]
    # within a cluster, and over the whole catalog, popularity is Zipf-like (u^2 skews low)
    size = int(np.ceil(n_items / n_clusters))
    in_cluster = np.minimum((size * rng.random(n) ** 2).astype(np.int64), size - 1)
    local = np.minimum(cluster * size + in_cluster, n_items - 1)
    globl = np.minimum((n_items * rng.random(n) ** 3).astype(np.int64), n_items - 1)
    cols = np.where(rng.random(n) < 0.8, local, globl)
    kinds = rng.choice([1.0, 2.0, 3.0, 4.0], p=[0.75, 0.17, 0.05, 0.03], size=n)
    m = sp.csr_matrix((kinds.astype(np.float32), (rows, cols)), shape=(n_users, n_items))
    m.sum_duplicates()
    m.data = np.log1p(m.data).astype(np.float32)
    return m


def _rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(size: str, model_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build the matrix, fit one model, time queries; runs in its own process."""
    from recsys.cells import DEFAULT_CELLS, CellTransitions, ProductCells
    from recsys.collaborative import (
        ALSRecommender,
        EASERecommender,
        Interactions,
        make_collaborative,
    )
    from recsys.hybrid import HybridRecommender
    from recsys.profiles import HistoryEvent, Interest, ItemVectors, TasteProfile

    n_users, n_items = (int(v) for v in size.lower().split("x"))
    t0 = time.perf_counter()
    m = synthetic_matrix(n_users, n_items, events=args.events, seed=args.seed)
    gen_s = time.perf_counter() - t0
    before = _rss_mb()
    model: Any
    if model_name == "ease":
        model = EASERecommender(l2=200.0)
    elif model_name == "default":
        model = make_collaborative(n_items, als_factors=args.factors, seed=args.seed)
    else:
        model = ALSRecommender(
            factors=args.factors, iterations=args.iterations, seed=args.seed, num_threads=0
        )
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(m)
    fit_s = time.perf_counter() - t0
    fit_cpu_s = time.process_time() - c0
    peak = _rss_mb()
    # query latency through the hybrid: fold-in + collaborative + content + MMR, top 10
    rng = np.random.default_rng(args.seed + 1)
    x = rng.standard_normal((n_items, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(n_items, dtype=np.int64)
    users = tuple(f"u{i}" for i in range(n_users))
    inter = Interactions(user_ids=users, item_ids=ids, matrix=m, weights={"view": 1.0})
    hybrid = HybridRecommender(
        collaborative=model, interactions=inter, items=ItemVectors(ids=ids, vectors=x)
    )
    colour = {int(i): f"c{v}" for i, v in zip(ids, rng.integers(11, size=n_items), strict=True)}
    category = {int(i): f"k{v}" for i, v in zip(ids, rng.integers(9, size=n_items), strict=True)}
    hybrid.cells = ProductCells(ids, colour, category, {f"k{v}": v // 3 for v in range(9)})
    t0_events = datetime(2026, 1, 1, tzinfo=UTC)

    def history_of(u: int) -> list[HistoryEvent]:
        row = m[u]
        return [
            HistoryEvent(product_id=int(j), kind="view", ts=t0_events + timedelta(hours=h))
            for h, j in enumerate(row.indices)
        ]

    # the next-interest chain, fitted on (up to) 10,000 shoppers' histories
    sample = rng.choice(n_users, size=min(n_users, 10_000), replace=False)
    t0 = time.perf_counter()
    hybrid.transitions = CellTransitions.fit(
        {str(u): history_of(int(u)) for u in sample}, hybrid.cells, DEFAULT_CELLS.min_share
    )
    transitions_fit_s = time.perf_counter() - t0
    lat: list[float] = []
    cpu: list[float] = []  # process CPU time: less distorted than wall time on a shared box
    cells_ms: list[float] = []
    for u in rng.choice(n_users, size=args.queries, replace=False):
        row = m[int(u)]
        c = x[row.indices[:2]] if row.nnz else x[:1]
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
        profile = TasteProfile(
            user_id=users[int(u)],
            embedding=c[0],
            interests=tuple(
                Interest(centroid=v, weight=1.0 / len(c), medoid_id=0, item_ids=(), terms=())
                for v in c
            ),
            style_terms=(),
            reference_ids=(),
            source="history",
            n_events=int(row.nnz),
        )
        t, tc = time.perf_counter(), time.process_time()
        hybrid.recommend(profile, k=10)
        lat.append((time.perf_counter() - t) * 1000.0)
        cpu.append((time.process_time() - tc) * 1000.0)
        history = history_of(int(u))
        rel = rng.standard_normal(n_items)
        t = time.perf_counter()
        hybrid.adjust_for_cells(rel, np.zeros(n_items, dtype=bool), history)
        cells_ms.append((time.perf_counter() - t) * 1000.0)
    return {
        "size": size,
        "model": model_name,
        "n_users": n_users,
        "n_items": n_items,
        "nnz": int(m.nnz),
        "matrix_mb": round((m.data.nbytes + m.indices.nbytes + m.indptr.nbytes) / 2**20, 1),
        "generate_s": round(gen_s, 2),
        "fit_s": round(fit_s, 2),
        "fit_cpu_s": round(fit_cpu_s, 2),
        "rss_before_fit_mb": round(before, 1),
        "peak_rss_mb": round(peak, 1),
        "query_ms_p50": round(float(np.percentile(lat, 50)), 2),
        "query_ms_p95": round(float(np.percentile(lat, 95)), 2),
        "query_cpu_ms_p50": round(float(np.percentile(cpu, 50)), 2),
        "cells_ms_p50": round(float(np.percentile(cells_ms, 50)), 3),
        "transitions_fit_s_per_10k_shoppers": round(transitions_fit_s * 10_000 / len(sample), 2),
        "queries": len(lat),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000x10000,1000000x100000", help="USERSxITEMS,...")
    ap.add_argument(
        "--models", default="ease,als", help="ease, als and/or default (what the hybrid ships)."
    )
    ap.add_argument("--events", type=int, default=20, help="Mean events per shopper.")
    ap.add_argument("--factors", type=int, default=64, help="ALS factors.")
    ap.add_argument("--iterations", type=int, default=10, help="ALS sweeps.")
    ap.add_argument("--dim", type=int, default=128, help="Product vector dimension.")
    ap.add_argument("--queries", type=int, default=200, help="Timed shoppers per run.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", nargs=2, metavar=("SIZE", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args)))
        return
    from tqdm import tqdm

    from recsys.collaborative import EASE_MAX_ITEMS

    runs = []
    for size in args.sizes.split(","):
        n_items = int(size.lower().split("x")[1])
        for model in args.models.split(","):
            if model == "ease" and n_items > EASE_MAX_ITEMS:
                continue  # above the threshold the hybrid uses ALS; EASE would not fit
            runs.append((size, model))
    results = []
    passthrough = [
        f"--events={args.events}",
        f"--factors={args.factors}",
        f"--iterations={args.iterations}",
        f"--dim={args.dim}",
        f"--queries={args.queries}",
        f"--seed={args.seed}",
    ]
    for size, model in tqdm(runs, desc="bench runs", unit="run"):
        res = subprocess.run(
            [sys.executable, __file__, "--child", size, model, *passthrough],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            results.append({"size": size, "model": model, "error": res.stderr[-2000:]})
            continue
        results.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(json.dumps({"ease_max_items": EASE_MAX_ITEMS, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
