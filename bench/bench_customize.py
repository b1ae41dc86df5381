"""Shopper customisation over HTTP on a demo home: the first answer to a choice (202, the
edit job runs in the server's worker) and the cached answer to the same choice (200).

Run: ``.venv/bin/python bench/bench_customize.py HOME [--sku demo-00000] [--repeats 20]``
(HOME: a FRESH copy of a demo home, e.g. ``cp -a /work/homes/demo0 /work/homes/me``; the run
adds two API keys, customisation options on the product and its jobs, so a second run on the
same copy finds its choices cached: ``first_*_http`` says 200 then). The server is uvicorn with
the app of ``tests/web/live_app.py`` (fake hero generator, real edit jobs). Prints one JSON
object: seconds from POST to a succeeded job per choice (material + colour + backdrop, and
colour only), the median seconds of a cached answer, and the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "web")]


def _key(home: Path, role: str) -> str:
    env = {**os.environ, "TAILORSHOT_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [str(Path(sys.executable).with_name("tailorshot")), "keys", "create", "--role", role,
         "--name", "bench"],
        env=env, cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return next(line for line in out.splitlines() if line.startswith("ts_"))


def main() -> int:
    import httpx
    from webtest_helpers import free_port, live_env

    from tests.support.liveserver import spawn_uvicorn, wait_healthy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("home", type=Path)
    ap.add_argument("--sku", default="demo-00000")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    sf, mk = _key(args.home, "storefront"), _key(args.home, "marketer")
    port = free_port()
    proc = spawn_uvicorn(port=port, env=live_env(args.home), cwd=ROOT, app="live_app:create")
    base = f"http://127.0.0.1:{port}"
    out: dict[str, object] = {"sku": args.sku}
    try:
        wait_healthy(proc, base, timeout_s=120)
        c = httpx.Client(base_url=base, timeout=120)
        pid = c.get("/v1/products", params={"q": args.sku}, headers={"X-API-Key": mk}).json()
        pid = pid["data"][0]["id"]
        opts = {"colour": ["navy"], "material": ["denim"], "background": ["white"]}
        c.put(f"/v1/products/{pid}/customization", json=opts, headers={"X-API-Key": mk})
        choices = {"full": {"colour": "navy", "material": "denim", "background": "white"},
                   "colour": {"colour": "navy"}}  # fmt: skip
        for name, choice in choices.items():
            body = {"user_id": f"bench-{name}", "sku": args.sku, "choices": choice}
            t0 = time.perf_counter()
            r = c.post("/v1/customize", json=body, headers={"X-API-Key": sf})
            out[f"first_{name}_http"] = r.status_code
            job = r.json()
            while job["status"] in ("queued", "running"):
                time.sleep(0.05)
                job = c.get(f"/v1/customize/{job['job_id']}", headers={"X-API-Key": sf}).json()
            out[f"first_{name}_s"] = round(time.perf_counter() - t0, 3)
            out[f"first_{name}_status"] = job["status"]
        cached = []
        for i in range(args.repeats):
            body = {"user_id": f"cached-{i}", "sku": args.sku, "choices": choices["colour"]}
            t0 = time.perf_counter()
            r = c.post("/v1/customize", json=body, headers={"X-API-Key": sf})
            cached.append(time.perf_counter() - t0)
            assert r.status_code == 200 and r.json()["cached"], r.text
        out["cached_median_s"] = round(statistics.median(cached), 4)
        out["repeats"] = args.repeats
        out["loadavg_1m"] = round(os.getloadavg()[0], 2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
