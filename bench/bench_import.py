"""Event import rate and peak memory for N events (default 1,000,000) on SQLite and PostgreSQL.

Usage: .venv/bin/python bench/bench_import.py [--events 1000000] [--format csv|jsonl]
[--backends sqlite,postgresql] [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
[--preload N]

Prints one JSON object with, per backend: rows/s (wall clock), the importing process's CPU
seconds and peak RSS (MB), for PostgreSQL the server backends' CPU seconds (read from /proc
when the server runs on this machine), rows per CPU-second of client + server (what the
import costs whatever else loads the machine), and a re-import of the same file (must write
0). Each import runs in its own process into a fresh database: SQLite in a temporary folder,
PostgreSQL in a database created for the run on the ``--pg-url`` server and dropped after.
An empty event table is SQLite's initial load (one transaction, indexes built at the end);
``--preload N`` first imports N other events, so the measured import adds to a non-empty
table (one transaction per chunk, every index updated row by row).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_files(
    folder: Path, *, n_events: int, fmt: str, seed: int = 0, prefix: str = "ev"
) -> tuple[Path, Path]:
    """A 1,000-product catalog and ``n_events`` events in ``fmt`` (50,000 users, 6 weeks);
    event ids are ``prefix`` and a number."""
    rng = random.Random(seed)
    catalog = folder / "catalog.csv"
    with catalog.open("w") as f:
        f.write("sku,title,category,price\n")
        for i in range(1000):
            f.write(f"P{i:05d},Product {i},cat{i % 8},{5 + i % 50}\n")
    events = folder / f"{prefix}_events.{fmt}"
    kinds = ["view"] * 100 + ["click"] * 30 + ["add_to_cart"] * 8 + ["purchase"] * 3
    t0 = 1_767_225_600  # 2026-01-01
    with events.open("w") as f:
        if fmt == "csv":
            f.write("event_id,user_id,sku,kind,ts,session\n")
        for i in range(n_events):
            uid = f"u{rng.randrange(50_000)}"
            row = (
                f"{prefix}{i:09d}",
                uid,
                f"P{rng.randrange(1000):05d}",
                rng.choice(kinds),
                t0 + rng.randrange(42 * 86400),
                f"s{i // 20}",
            )
            if fmt == "csv":
                f.write(",".join(map(str, row)) + "\n")
            else:
                keys = ("event_id", "user_id", "sku", "kind", "ts", "session")
                f.write(json.dumps(dict(zip(keys, row, strict=True))) + "\n")
    return catalog, events


def _proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a local process (None when it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cpu(engine: Any) -> dict[int, float | None]:
    """CPU seconds so far of every server backend connected to this (run-only) database."""
    if engine.dialect.name != "postgresql":
        return {}
    from sqlalchemy import text

    with engine.connect() as conn:
        pids = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        return {int(p): _proc_cpu_s(int(p)) for p in pids}


def _server_cpu_delta(before: dict[int, float | None], after: dict[int, float | None]) -> Any:
    if not after or any(v is None for v in after.values()):
        return None
    return sum(v - (before.get(p) or 0.0) for p, v in after.items() if v is not None)


def child(database_url: str, catalog: str, events: str, preload: str = "") -> None:
    """Runs in a subprocess so its peak RSS is the import's alone. Imports the file twice:
    the second pass must write nothing (idempotent) and shows the re-import rate. With
    ``preload``, that file is imported first (not measured): the measured import then adds
    to a table holding events already (no initial load)."""
    from data.db import init_db, make_engine
    from data.ingest import import_catalog, import_events

    engine = make_engine(database_url)
    init_db(engine)
    import_catalog(engine, path=Path(catalog), progress=False)
    if preload:
        import_events(engine, path=Path(preload), progress=False)
    server_before = _server_cpu(engine)
    start, cpu = time.perf_counter(), time.process_time()
    report = import_events(engine, path=Path(events), progress=True)
    seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    server_s = _server_cpu_delta(server_before, _server_cpu(engine))
    start = time.perf_counter()
    again = import_events(engine, path=Path(events), progress=False)
    again_s = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total_cpu = cpu_s + (server_s or 0.0)
    print(
        json.dumps(
            {
                "written": report.written,
                "bad": report.bad_count,
                "seconds": round(seconds, 2),
                "rows_per_s": round(report.written / seconds),
                # CPU seconds of this process (SQLite works inside it) and of the PostgreSQL
                # backends: rows per CPU-second is what the import needs whatever the load.
                "client_cpu_s": round(cpu_s, 2),
                "server_cpu_s": None if server_s is None else round(server_s, 2),
                "rows_per_cpu_s": round(report.rows_read / total_cpu) if total_cpu else None,
                "reimport_written": again.written,
                "reimport_unchanged": again.unchanged,
                "reimport_rows_per_s": round(again.rows_read / again_s),
                "peak_rss_mb": round(peak_mb, 1),
            }
        )
    )


def _fresh_pg_database(pg_url: str) -> tuple[str, Any]:
    """Create a database for this run on ``pg_url``'s server -> ``(its URL, drop())``."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"tailorshot_bench_import_{os.getpid()}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()

    url = make_url(pg_url).set(database=name)
    return url.render_as_string(hide_password=False), drop


def run_backend(
    backend: str, args: argparse.Namespace, folder: Path, files: tuple[Path, Path], preload: str
) -> Any:
    drop = None
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'bench.db'}"
    elif backend == "postgresql":
        try:
            url, drop = _fresh_pg_database(args.pg_url)
        except Exception as exc:  # reported; the other backend still runs
            return {"error": f"cannot create a database on {args.pg_url}: {exc}".splitlines()[0]}
    else:
        raise SystemExit(f"error: --backends: expected sqlite and/or postgresql, got {backend!r}")
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", url, str(files[0]), str(files[1]), preload],
            check=False, capture_output=True, text=True,
        )  # fmt: skip
        if out.returncode != 0:
            return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if drop is not None:
            drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--format", default="csv", choices=["csv", "jsonl"])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server where this user may create a database",
    )  # fmt: skip
    parser.add_argument(
        "--preload", type=int, default=0,
        help="import this many other events first (not measured): the measured import then "
        "adds to a non-empty event table",
    )  # fmt: skip
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        files = write_files(folder, n_events=args.events, fmt=args.format)
        preload = ""
        if args.preload:
            preload = str(write_files(folder, n_events=args.preload, fmt=args.format,
                                      seed=1, prefix="old")[1])  # fmt: skip
        result: dict[str, Any] = {
            "events": args.events,
            "preloaded_events": args.preload,
            "format": args.format,
            "file_mb": round(files[1].stat().st_size / 1e6, 1),
            "file_generation_s": round(time.perf_counter() - t, 1),
            "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
        }
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            result[backend] = run_backend(backend, args, folder, files, preload)
        result["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
