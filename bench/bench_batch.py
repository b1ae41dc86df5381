"""Batch production throughput: the in-process loop vs Ray Data with 1 and 2 CPU actors.

A 100-item ``batch variants`` job (50 products x 2 segments, banner, the tiny random SD
pipeline at 2 steps, classic compose path) runs from scratch (a fresh state folder each
time, nothing cached) on each executor. Reported per run: render wall seconds, items/s,
total seconds (planning, model loads, writes included). Derived: scaling efficiency
(items/s with 2 actors / (2 x items/s with 1 actor)) and Ray's overhead on the whole job
(total seconds with 1 Ray actor minus the in-process loop's; Ray's own start-up reported
apart).

    .venv/bin/python bench/bench_batch.py                 # CPU: local, ray x1, ray x2
    .venv/bin/python bench/bench_batch.py --gpu           # GPU machine: local vs 1 GPU actor
    .venv/bin/python bench/bench_batch.py --items 40 --out /tmp/bench_batch.json

``--gpu`` renders on ``cuda`` (one actor holding one GPU) with ``--steps`` (default 20) and
``--model`` (default: the tiny random pipeline; pass a real checkpoint folder or hub id).
``--gpu --dry-run`` runs that same plan (in-process loop vs one Ray actor, the GPU run's
options and report) on the CPU with no GPU reserved, so the GPU path is checked end to end
on a machine without one:

    .venv/bin/python bench/bench_batch.py --gpu --dry-run --items 8 --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "batch"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _run(work: Path, name: str, executor: str, actors: int, args: Any) -> dict[str, Any]:
    from batch_world import build_world

    from api.batch.engine import ExecutorConfig
    from api.batch.runner import RunOptions
    from api.batch.service import run_variants

    settings, engine = build_world(work / name, n_products=args.items // 2, n_users=4)
    settings.generation.num_inference_steps = args.steps
    if args.gpu and not args.dry_run:
        settings.generation.device = "cuda"
    if args.model:
        settings.generation.model = args.model
    options = RunOptions(
        executor=ExecutorConfig(
            executor=executor,
            num_cpus=args.cpus,
            actors=actors,
            cpus_per_actor=1.0,
            gpus_per_actor=1.0 if (args.gpu and not args.dry_run and executor == "ray") else 0.0,
        ),
        chunk_size=args.chunk,
        threads=args.threads,
        progress=True,
        delivery=False,
    )
    t0 = time.perf_counter()
    out = run_variants(
        settings,
        engine,
        segment_ids=None,
        placements=("banner",),
        products=args.items // 2,
        options=options,
    )
    total = time.perf_counter() - t0
    assert out.failed == 0 and out.rendered == args.items, out
    return {
        "run": name,
        "executor": executor,
        "actors": actors,
        "items": out.rendered,
        "render_seconds": out.render_seconds,
        "items_per_s": out.items_per_s,
        "total_seconds": round(total, 3),
        "cpu_s_per_image": out.cpu_s_per_image,
        "gpu_s_per_image": out.gpu_s_per_image,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--items", type=int, default=100, help="Job size (even).")
    ap.add_argument("--steps", type=int, default=None, help="Denoising steps (CPU 2, GPU 20).")
    ap.add_argument("--chunk", type=int, default=4, help="Briefs per pipeline call.")
    ap.add_argument("--threads", type=int, default=1, help="Torch threads per renderer.")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray.")
    ap.add_argument("--gpu", action="store_true", help="Render on cuda: local vs one GPU actor.")
    ap.add_argument("--model", default=None, help="Model folder or hub id (default: tiny random).")
    ap.add_argument(
        "--dry-run", action="store_true", help="With --gpu: the GPU plan on the CPU (no GPU)."
    )
    ap.add_argument("--out", type=Path, default=None, help="Also write the JSON here.")
    args = ap.parse_args()
    args.steps = args.steps or (20 if args.gpu and not args.dry_run else 2)
    if args.dry_run and not args.gpu:
        raise SystemExit("--dry-run: expected together with --gpu (it checks the GPU plan)")
    if args.items < 2 or args.items % 2:
        raise SystemExit(f"--items: expected an even number >= 2, got {args.items}")
    if args.gpu and not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--gpu: no CUDA device here; use --gpu --dry-run to check the plan")
    import logging

    # The tiny model has no IP-Adapter: one warning per brief would drown the progress bars.
    logging.getLogger("genservice.generator").setLevel(logging.ERROR)
    import ray

    from api.batch.engine import ExecutorConfig, ensure_ray, shutdown_ray

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        runs = [_run(work, "local", "local", 1, args)]
        t0 = time.perf_counter()
        ensure_ray(ExecutorConfig(num_cpus=args.cpus))
        ray_start = time.perf_counter() - t0
        plan = [("ray_x1", 1)] if args.gpu else [("ray_x1", 1), ("ray_x2", 2)]
        for name, n in plan:
            runs.append(_run(work, name, "ray", n, args))
        shutdown_ray()
        by = {r["run"]: r for r in runs}
        result: dict[str, Any] = {
            "machine": {
                "cpus": os.cpu_count(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "ray": ray.__version__,
                "gpu": args.gpu,
                "dry_run": args.dry_run,
            },
            "job": {
                "items": args.items,
                "steps": args.steps,
                "chunk": args.chunk,
                "placement": "banner",
                "model": args.model or "tiny random SD (64 px)",
            },
            "runs": runs,
            "ray_start_seconds": round(ray_start, 3),
            f"ray_overhead_seconds_{args.items}_items": round(
                by["ray_x1"]["total_seconds"] - by["local"]["total_seconds"], 3
            ),
            "ray_x1_vs_local_items_per_s": round(
                by["ray_x1"]["items_per_s"] / by["local"]["items_per_s"], 3
            ),
        }
        if "ray_x2" in by:
            result["scaling_efficiency_2_actors"] = round(
                by["ray_x2"]["items_per_s"] / (2 * by["ray_x1"]["items_per_s"]), 3
            )
        text = json.dumps(result, indent=2)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
