"""Import rate and peak memory for N events (default 1,000,000) into a fresh SQLite database.

Usage: .venv/bin/python bench/bench_import.py [--events 1000000] [--format csv|jsonl]
[--database-url URL]. Prints one JSON object: rows/s, seconds, CPU seconds, the re-import
(must write 0), peak RSS of the importing process (MB) and the file size, so memory can be
compared with the data size. On PostgreSQL, pass an empty database (tables are created).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_files(folder: Path, *, n_events: int, fmt: str, seed: int = 0) -> tuple[Path, Path]:
    """A 1,000-product catalog and ``n_events`` events in ``fmt``."""
    rng = random.Random(seed)
    catalog = folder / "catalog.csv"
    with catalog.open("w") as f:
        f.write("sku,title,category,price\n")
        for i in range(1000):
            f.write(f"P{i:05d},Product {i},cat{i % 8},{5 + i % 50}\n")
    events = folder / f"events.{fmt}"
    kinds = ["view"] * 100 + ["click"] * 30 + ["add_to_cart"] * 8 + ["purchase"] * 3
    t0 = 1_767_225_600  # 2026-01-01
    with events.open("w") as f:
        if fmt == "csv":
            f.write("event_id,user_id,sku,kind,ts,session\n")
        for i in range(n_events):
            uid = f"u{rng.randrange(50_000)}"
            row = (
                f"ev{i:09d}",
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


def child(database_url: str, catalog: str, events: str) -> None:
    """Runs in a subprocess so its peak RSS is the import's alone. Imports the file twice:
    the second pass must write nothing (idempotent) and shows the re-import rate."""
    from data.db import init_db, make_engine
    from data.ingest import import_catalog, import_events

    engine = make_engine(database_url)
    init_db(engine)
    import_catalog(engine, path=Path(catalog), progress=False)
    start, cpu = time.perf_counter(), time.process_time()
    report = import_events(engine, path=Path(events), progress=True)
    seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    again = import_events(engine, path=Path(events), progress=False)
    again_s = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "written": report.written,
                "bad": report.bad_count,
                "seconds": seconds,
                # CPU seconds of this process: on a shared machine, rows per CPU-second shows
                # what the importer needs whatever the load (the database server's CPU for
                # PostgreSQL is not included).
                "cpu_seconds": cpu_s,
                "rows_per_cpu_s": report.rows_read / cpu_s if cpu_s else None,
                "reimport_written": again.written,
                "reimport_unchanged": again.unchanged,
                "reimport_rows_per_s": again.rows_read / again_s,
                "peak_rss_mb": peak_mb,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--format", default="csv", choices=["csv", "jsonl"])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        catalog, events = write_files(folder, n_events=args.events, fmt=args.format)
        gen_s = time.perf_counter() - t
        url = args.database_url or f"sqlite:///{folder / 'bench.db'}"
        out = subprocess.run(
            [sys.executable, __file__, "--child", url, str(catalog), str(events)],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result.update(
            {
                "events": args.events,
                "format": args.format,
                "database": url.split(":", 1)[0],
                "file_mb": events.stat().st_size / 1e6,
                "rows_per_s": result["written"] / result["seconds"],
                "file_generation_s": gen_s,
            }
        )
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
