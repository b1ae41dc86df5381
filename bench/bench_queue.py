"""Job-queue throughput: submits/s and claim+complete/s on SQLite and PostgreSQL.

    .venv/bin/python bench/bench_queue.py [--jobs 2000] [--workers 1 4] [--processes 4]
        [--backends sqlite postgresql]

Threads share one process (one engine, one pool); ``--processes`` runs that many OS
processes claiming concurrently (the ``tailorshot worker --concurrency`` shape). PostgreSQL is
127.0.0.1:5432 (db ``test``, user postgres); a private database is created and dropped.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.db import init_db, make_engine
from genservice.jobs import JobQueue

PG_ADMIN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"


def _drain(queue: JobQueue, wid: str) -> int:
    n = 0
    while (job := queue.claim(worker_id=wid)) is not None:
        queue.complete(job.id, worker_id=wid, result_key="k", attempt=job.attempts)
        n += 1
    return n


def _proc_main(url: str, k: int, start: Any, out: Any) -> None:
    engine = make_engine(url)
    queue = JobQueue(engine)
    start.wait()
    out.put(_drain(queue, f"p{k}-{os.getpid()}"))
    engine.dispose()


def bench_backend(url: str, *, jobs: int, workers: list[int], processes: int) -> dict[str, Any]:
    engine = make_engine(url)
    init_db(engine)
    queue = JobQueue(engine)
    res: dict[str, Any] = {}
    for w in [*workers, -processes]:
        from sqlalchemy import delete

        from data.models import GenerationJob

        with engine.begin() as conn:
            conn.execute(delete(GenerationJob.__table__))  # type: ignore[attr-defined]
        tag = uuid.uuid4().hex[:6]
        t0 = time.perf_counter()
        for i in range(jobs):
            queue.submit(brief_hash=f"{tag}-{i}", brief={"i": i})
        submit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        if w > 0:
            counts = [0] * w

            def run(k: int) -> None:
                counts[k] = _drain(queue, f"t{k}")  # noqa: B023 - loop-local by design

            threads = [threading.Thread(target=run, args=(k,)) for k in range(w)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            done = sum(counts)
            label = f"threads_{w}"
        else:
            ctx = mp.get_context("spawn")
            start, outq = ctx.Event(), ctx.Queue()
            procs = [ctx.Process(target=_proc_main, args=(url, k, start, outq)) for k in range(-w)]
            for p in procs:
                p.start()
            time.sleep(3.0)  # let the interpreters import and connect
            t0 = time.perf_counter()
            start.set()
            done = sum(outq.get() for _ in procs)
            for p in procs:
                p.join()
            label = f"processes_{-w}"
        claim_s = time.perf_counter() - t0
        assert done == jobs, f"{label}: processed {done} of {jobs}"
        res[label] = {
            "submit_per_s": round(jobs / submit_s, 1),
            "claim_complete_per_s": round(jobs / claim_s, 1),
        }
    engine.dispose()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    args = ap.parse_args()
    out: dict[str, Any] = {"jobs": args.jobs, "cpus": os.cpu_count()}
    if "sqlite" in args.backends:
        with tempfile.TemporaryDirectory() as tmp:
            out["sqlite"] = bench_backend(
                f"sqlite:///{tmp}/bench.db",
                jobs=args.jobs,
                workers=args.workers,
                processes=args.processes,
            )
    if "postgresql" not in args.backends:
        print(json.dumps(out, indent=2))
        return
    try:
        import psycopg

        name = f"tailorshot_bench_queue_{os.getpid()}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            out["postgresql"] = bench_backend(
                f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
                jobs=args.jobs,
                workers=args.workers,
                processes=args.processes,
            )
        finally:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as exc:  # report, don't crash: the SQLite numbers still stand
        out["postgresql"] = f"skipped: {exc!s:.200}"
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
