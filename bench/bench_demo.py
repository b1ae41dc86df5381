"""Demo build time: the full default demo world into a fresh temporary state folder.

Run: ``.venv/bin/python bench/bench_demo.py [--seed 0] [--image-size 256]``; prints one JSON
object with the seconds per phase (world simulation, image rendering, database insert), the
total, the time of an idempotent second run, and the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from data.db import init_db, make_engine
from data.demo import build as demo_build
from data.demo.world import build_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--database-url", default=None, help="default: SQLite in the temp folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tailorshot_bench_demo_") as tmp:
        home = Path(tmp)
        engine = make_engine(args.database_url or f"sqlite:///{home / 'tailorshot.db'}")
        init_db(engine)
        t0, c0 = time.perf_counter(), time.process_time()
        out = demo_build.build_demo_world(
            engine, home=home, seed=args.seed, image_size=args.image_size, progress=False
        )
        total, cpu_total = time.perf_counter() - t0, time.process_time() - c0
        t1 = time.perf_counter()
        again = demo_build.build_demo_world(
            engine, home=home, seed=args.seed, image_size=args.image_size, progress=False
        )
        second = time.perf_counter() - t1
        # Phase split, measured separately on the same machine.
        t2 = time.perf_counter()
        world = build_world(seed=args.seed)
        t_world = time.perf_counter() - t2
        phase_home = home / "phase"
        t3 = time.perf_counter()
        demo_build._write_images(world, phase_home, image_size=args.image_size, progress=False)
        t_images = time.perf_counter() - t3
        engine.dispose()
    print(
        json.dumps(
            {
                "seconds_total": round(total, 3),
                # CPU seconds of this process: what the build costs on an idle machine.
                "cpu_seconds_total": round(cpu_total, 3),
                "seconds_second_run": round(second, 4),
                "second_run_skipped": again.skipped,
                "seconds_world_simulation": round(t_world, 3),
                "seconds_render_and_save_images": round(t_images, 3),
                "images_per_second": round(len(world.products) / t_images, 1),
                "image_size": args.image_size,
                "products": out.products,
                "users": out.users,
                "events": out.events,
                "cpu_count": os.cpu_count(),
                "load_average_1m": os.getloadavg()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
