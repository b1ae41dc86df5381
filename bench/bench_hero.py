"""Hero endpoint throughput and latency on the cache path, against a real uvicorn process.

Builds a temporary state folder (products with images, users with a cached personalized
variant each, segments with approved variants, a storefront key), starts
``uvicorn api.app:create_app --factory`` on a free 127.0.0.1 port, and drives
``GET /v1/hero`` with an asyncio httpx load generator (``--concurrency`` connections,
``--requests`` requests or ``--max-seconds``, whichever ends first), in two scenarios:

* ``idle``: no generator loaded, no worker;
* ``busy``: the configured generator loaded in the server and its worker thread rendering
  queued jobs the whole time (real diffusion on this CPU).

Prints one JSON object: requests/s, p50/p90/p99 latency (ms), errors, per scenario.
The load generator shares the machine's cores with the server: figures are a floor.

    .venv/bin/python bench/bench_hero.py --requests 2000 --concurrency 16

``--wrk`` (#16): ``wrk`` (Debian package; the Python generator above when it is missing)
against ``tailorshot serve``'s app (``api.cli.core:serve_app``, the memory hot path) and, in
the same run, against a bare FastAPI endpoint returning a JSON object of the same shape under
the same uvicorn settings, each with 1 and 2 worker processes, at 16 and 64 connections:
req/s, p50/p99 and the hero/bare ratio, with the load average next to them. ``--home`` copies
a demo-built home (default: the synthetic state above). ``--kill``: the hard-kill loss window
(SIGKILL under load, then count the acknowledged impressions missing from the database).

``--inprocess``: the CPU per request of both apps called in-process (ASGI calls in a loop, no
network): steady where req/s moves with the machine's load. The wrk runs print the servers'
CPU per request too (``cpu_ratio``). Code: ``bench/hero_wrk.py``.

    .venv/bin/python bench/bench_hero.py --wrk --home /work/homes/demo0
    .venv/bin/python bench/bench_hero.py --kill
    .venv/bin/python bench/bench_hero.py --inprocess --requests 5000 --home /work/homes/demo0
    .venv/bin/python bench/bench_hero.py --stamp-cost
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.liveserver import spawn_uvicorn, wait_healthy  # noqa: E402  (repo root)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_state(
    home: Path, *, n_users: int, seed: int
) -> tuple[str, list[str], list[dict[str, Any]]]:
    """Seed ``home``; returns the storefront key, user ids, and briefs for busy jobs."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw
    from sqlmodel import Session

    from api.auth import create_key
    from api.composition import build_components
    from api.settings import Settings
    from data.models import (
        CreativeVariant,
        Product,
        Segment,
        SegmentMembership,
        User,
        VariantStatus,
    )

    rng = np.random.default_rng(seed)
    settings = Settings(home=home)
    comps = build_components(settings)
    assert comps.images is not None
    (home / "catalog").mkdir(parents=True, exist_ok=True)

    def png(color: tuple[int, int, int]) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (96, 64), color).save(buf, format="PNG")
        return buf.getvalue()

    users = [f"u{i:05d}" for i in range(n_users)]
    with Session(comps.engine, expire_on_commit=False) as s:
        products = []
        for i in range(20):
            im = Image.new("RGB", (128, 128), (255, 255, 255))
            color = tuple(int(c) for c in rng.integers(0, 200, 3))
            ImageDraw.Draw(im).rectangle([28, 28, 100, 100], fill=color)
            im.save(home / "catalog" / f"p{i}.png")
            p = Product(
                sku=f"sku-{i}", title=f"Product {i}", category="mug", image=f"catalog/p{i}.png"
            )
            s.add(p)
            products.append(p)
        segs = [
            Segment(label=f"seg{k}", size=0, terms=[["red", 1.0], ["linen", 0.5]]) for k in range(4)
        ]
        for seg in segs:
            s.add(seg)
        for u in users:
            s.add(User(id=u))
        s.flush()
        pids = [int(p.id) for p in products]  # type: ignore[arg-type]
        sids = [int(seg.id) for seg in segs]  # type: ignore[arg-type]
        for k in range(len(segs)):
            for j in range(3):
                key = comps.images.put(png((k * 40, j * 60, 100)), "image/png")  # type: ignore[attr-defined]
                s.add(
                    CreativeVariant(
                        segment_id=sids[k],
                        product_id=pids[j],
                        placement="banner",
                        brief_hash=f"s{k}-{j}",
                        image_key=key,
                        status=VariantStatus.approved,
                    )
                )
        gkey = comps.images.put(png((9, 9, 9)), "image/png")  # type: ignore[attr-defined]
        s.add(
            CreativeVariant(
                product_id=pids[0],
                placement="banner",
                brief_hash="g",
                image_key=gkey,
                status=VariantStatus.approved,
            )
        )
        for i, u in enumerate(users):
            s.add(SegmentMembership(user_id=u, segment_id=sids[i % len(sids)], score=1.0))
            key = comps.images.put(png((i % 256, (i // 256) % 256, 7)), "image/png")  # type: ignore[attr-defined]
            s.add(
                CreativeVariant(
                    user_id=u,
                    product_id=pids[i % 20],
                    placement="banner",
                    brief_hash=f"u{i}",
                    image_key=key,
                    status=VariantStatus.draft,
                )
            )
        key = create_key(s, role="storefront", name="bench").key
        s.commit()
        orch = comps.orchestrator
        briefs = [
            orch.make_brief(
                s,
                product_id=pids[i % 20],
                placement="banner",
                terms=[("teal", 1.0), ("velvet", 0.5)],
                seed=1000 + i,
            ).to_dict()
            for i in range(40)
        ]
    comps.engine.dispose()
    return key, users, briefs


async def _drive(
    base: str, key: str, users: list[str], *, requests: int, concurrency: int, max_seconds: float
) -> dict[str, Any]:
    import httpx
    import numpy as np

    latencies: list[float] = []
    errors: dict[str, int] = {}
    sources: dict[str, int] = {}
    counter = iter(range(requests))
    deadline = time.perf_counter() + max_seconds
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base, headers=headers, limits=limits, timeout=30.0
    ) as client:

        async def one_worker() -> None:
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    r = await client.get("/v1/hero", params={"user_id": users[i % len(users)]})
                    dt = time.perf_counter() - t0
                    if r.status_code == 200:
                        latencies.append(dt)
                        src = r.json()["source"]
                        sources[src] = sources.get(src, 0) + 1
                    else:
                        errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        # warm-up (connections, caches), not measured
        for u in users[:20]:
            await client.get("/v1/hero", params={"user_id": u})
        t_start = time.perf_counter()
        await asyncio.gather(*(one_worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t_start
    lat = np.array(latencies) * 1000.0
    return {
        "requests_ok": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p90_ms": round(float(np.percentile(lat, 90)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
        "sources": sources,
    }


def _job_counts(home: Path) -> dict[str, int]:
    from data.db import make_engine
    from genservice.jobs import JobQueue

    engine = make_engine(f"sqlite:///{(home / 'tailorshot.db').resolve()}")
    try:
        return JobQueue(engine).counts()
    finally:
        engine.dispose()


def run_scenario(
    name: str,
    home: Path,
    key: str,
    users: list[str],
    briefs: list[dict[str, Any]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    import httpx

    busy = name == "busy"
    if busy:
        from data.db import make_engine
        from genservice.brief import CreativeBrief
        from genservice.jobs import JobQueue

        engine = make_engine(f"sqlite:///{(home / 'tailorshot.db').resolve()}")
        queue = JobQueue(engine)
        for b in briefs:
            queue.submit(brief_hash=CreativeBrief.from_dict(b).brief_hash, brief=b)
        engine.dispose()
    port = _free_port()
    env = {
        **os.environ,
        "TAILORSHOT_HOME": str(home),
        "TAILORSHOT_API__LOAD_GENERATOR": "true" if busy else "false",
        "TAILORSHOT_API__RUN_WORKER": "true" if busy else "false",
        "TAILORSHOT_API__PERSONALIZE": "false",
        "TAILORSHOT_API__LOG_LEVEL": "WARNING",
        "TAILORSHOT_API__STATS_TTL_S": "10",
        "HF_HUB_OFFLINE": "1",
    }
    proc = spawn_uvicorn(
        port=port, env=env, cwd=ROOT, extra_args=["--no-access-log"], capture=False
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        wait_healthy(proc, base, timeout_s=300)
        if busy:  # wait until the worker is inside a diffusion run
            while _job_counts(home)["running"] == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker never started a job")
                time.sleep(0.2)
        before = _job_counts(home) if busy else None
        out = asyncio.run(
            _drive(
                base,
                key,
                users,
                requests=args.requests,
                concurrency=args.concurrency,
                max_seconds=args.max_seconds,
            )
        )
        if busy:
            after = _job_counts(home)
            out["worker"] = {
                "running_during": after["running"] >= 1 or after["succeeded"] > before["succeeded"],  # type: ignore[index]
                "jobs_succeeded_during": after["succeeded"] - before["succeeded"],  # type: ignore[index]
                "jobs_queued_after": after["queued"],
            }
            ready = httpx.get(f"{base}/readyz").json()
            out["readyz_generator"] = ready["checks"]["generator"]
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--requests", type=int, default=2000, help="requests per scenario (upper bound)"
    )
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent connections")
    ap.add_argument("--max-seconds", type=float, default=30.0, help="time bound per scenario")
    ap.add_argument(
        "--users", type=int, default=200, help="distinct users (each with a cached hero)"
    )
    ap.add_argument("--scenarios", default="idle,busy", help="comma list of idle, busy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--wrk", action="store_true", help="hero vs bare FastAPI with wrk (#16)")
    ap.add_argument("--kill", action="store_true", help="measure the hard-kill loss window")
    ap.add_argument(
        "--stamp-cost", action="store_true", help="state stamp poll CPU at 10k-1M memberships"
    )
    ap.add_argument(
        "--inprocess",
        action="store_true",
        help="CPU per request of hero vs bare, ASGI calls in-process (--requests each)",
    )
    ap.add_argument("--home", type=Path, default=None, help="demo-built home to copy (--wrk)")
    ap.add_argument("--workers", default="1,2", help="worker counts (--wrk)")
    ap.add_argument("--connections", default="16,64", help="connection counts (--wrk)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    args = ap.parse_args()
    if args.wrk or args.kill or args.inprocess or args.stamp_cost:
        from bench.hero_wrk import run_inprocess, run_kill, run_stamp, run_wrk

        run = run_wrk if args.wrk else (run_kill if args.kill else run_inprocess)
        run = run_stamp if args.stamp_cost else run
        print(json.dumps(run(args), indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="bench-hero-") as tmp:
        home = Path(tmp) / "home"
        key, users, briefs = build_state(home, n_users=args.users, seed=args.seed)
        result: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "params": vars(args),
        }
        for name in args.scenarios.split(","):
            result[name] = run_scenario(name.strip(), home, key, users, briefs, args)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
