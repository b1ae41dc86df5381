"""``bench_hero.py --wrk`` and ``--kill`` (#16): ``wrk`` against ``tailorshot serve``'s app
and a bare FastAPI endpoint of the same response shape, same uvicorn settings and worker
count; and the hard-kill loss window. Run through ``bench/bench_hero.py`` (see its doc)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.bench_hero import ROOT, _drive, _free_port, build_state
from tests.support.liveserver import spawn_uvicorn, wait_healthy

_SHAPE = {
    "image_url": "/v1/images/0123456789abcdef.png",
    "product_id": 1,
    "variant_id": 1,
    "impression_id": "0123456789abcdef0123456789abcdef",
    "policy": "epsilon_greedy",
    "propensity": 0.9,
    "source": "segment",
}


def bare_app() -> Any:
    """A bare FastAPI app: ``GET /v1/hero`` returns a JSON object of the hero's shape."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/hero")
    async def hero(user_id: str, placement: str = "banner") -> dict[str, Any]:
        return {**_SHAPE, "impression_id": user_id}

    return app


def _state_from_home(src: Path, home: Path, n_users: int) -> tuple[str, list[str]]:
    """Copy a demo-built home; a storefront key and up to ``n_users`` user ids from it."""
    from sqlalchemy import text
    from sqlmodel import Session

    from api.auth import create_key
    from api.cli.common import open_engine
    from api.settings import Settings

    shutil.copytree(src, home, symlinks=True)
    engine = open_engine(Settings(home=home))
    with Session(engine) as s:
        users = [str(u) for (u,) in s.execute(text('SELECT id FROM "user" ORDER BY id'))]
        key = create_key(s, role="storefront", name="bench-wrk").key
        s.commit()
    engine.dispose()
    return key, users[:n_users]


def _server_env(home: Path) -> dict[str, str]:
    limits = dict.fromkeys(
        ("storefront", "marketer", "analyst", "admin", "anonymous"), 1000000000.0
    )
    return {
        **os.environ,
        "TAILORSHOT_HOME": str(home),
        "TAILORSHOT_API__LOAD_GENERATOR": "false",
        "TAILORSHOT_API__RUN_WORKER": "false",
        "TAILORSHOT_API__PERSONALIZE": "false",
        "TAILORSHOT_API__LOG_LEVEL": "WARNING",
        "TAILORSHOT_API__CANDIDATES_TTL_S": "30",
        "TAILORSHOT_API__RATE_LIMITS": json.dumps(limits),
        "HF_HUB_OFFLINE": "1",
    }


def _lua(path: Path, key: str, users: list[str]) -> None:
    """A wrk script: ``GET /v1/hero`` for the users in turn, with the key."""
    names = ",".join(json.dumps(u) for u in users)
    path.write_text(
        f"local users = {{{names}}}\n"
        "local i = 0\n"
        f'local headers = {{["Authorization"] = "Bearer {key}"}}\n'
        "request = function()\n"
        "  i = i + 1\n"
        '  return wrk.format("GET", "/v1/hero?user_id=" .. users[(i % #users) + 1], headers)\n'
        "end\n"
    )


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk(base: str, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    """One wrk run: req/s, p50/p99 (ms), non-2xx and socket errors."""
    threads = min(connections, max(1, os.cpu_count() or 1))
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    out = subprocess.run(
        [*cmd, "-s", str(script), base], capture_output=True, text=True, check=True
    ).stdout
    lat = {
        m.group(1): float(m.group(2)) * _UNITS[m.group(3)]
        for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors:(.*)", out)
    return {
        "requests_per_s": float(rps.group(1)) if rps else 0.0,
        "p50_ms": round(lat.get("50", float("nan")), 3),
        "p99_ms": round(lat.get("99", float("nan")), 3),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sock.group(1).strip() if sock else "",
    }


def _python_load(
    base: str, key: str, users: list[str], connections: int, seconds: float
) -> dict[str, Any]:
    out = asyncio.run(
        _drive(base, key, users, requests=10**9, concurrency=connections, max_seconds=seconds)
    )
    return {k: out[k] for k in ("requests_per_s", "p50_ms", "p99_ms", "errors")}


def _serve(app: str, home: Path, workers: int, extra_env: dict[str, str] | None = None) -> Any:
    port = _free_port()
    args = ["--no-access-log", "--workers", str(workers)]
    env = {**_server_env(home), **(extra_env or {})}
    proc = spawn_uvicorn(port=port, env=env, cwd=ROOT, app=app, extra_args=args, capture=False)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(proc, base, timeout_s=300)
    return proc, base


def _stop(proc: Any) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (the uvicorn supervisor and
    its worker processes), from ``/proc``; 0.0 where ``/proc`` is missing."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu seconds)
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _) in stats.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(stats[p][1] for p in tree if p in stats)


def _warm(base: str, key: str, users: list[str]) -> None:
    import httpx

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as c:
        for u in users[:50]:  # every worker process loads its snapshot
            c.get("/v1/hero", params={"user_id": u})


def run_wrk(args: argparse.Namespace) -> dict[str, Any]:
    """The #16 acceptance run (module docstring); one JSON-able dict."""
    have_wrk = shutil.which("wrk") is not None
    apps = {"hero": "api.cli.core:serve_app", "bare": "bench.hero_wrk:bare_app"}
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_generator": "wrk" if have_wrk else "python (wrk not installed; httpx, a floor)",
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-hero-wrk-") as tmp:
        home = Path(tmp) / "home"
        if args.home is not None:
            key, users = _state_from_home(args.home, home, args.users)
        else:
            key, users, _ = build_state(home, n_users=args.users, seed=args.seed)
        script = Path(tmp) / "hero.lua"
        _lua(script, key, users)
        for workers in [int(w) for w in args.workers.split(",")]:
            runs: dict[str, Any] = {}
            for name, app in apps.items():
                proc, base = _serve(app, home, workers)
                try:
                    _warm(base, key, users)
                    for conns in [int(c) for c in args.connections.split(",")]:
                        load = [round(x, 2) for x in os.getloadavg()]
                        if have_wrk:
                            _wrk(base, script, conns, 2.0)  # warm-up, not measured
                        cpu0, wall0 = _tree_cpu_s(proc.pid), time.perf_counter()
                        if have_wrk:
                            fig = _wrk(base, script, conns, args.duration)
                        else:
                            fig = _python_load(base, key, users, conns, args.duration)
                        cpu, wall = _tree_cpu_s(proc.pid) - cpu0, time.perf_counter() - wall0
                        n = fig["requests_per_s"] * args.duration
                        # CPU per request: what the server spends, whatever share of the
                        # cores the machine's load left it (req/s alone moves with the load).
                        fig["server_cpu_s"] = round(cpu, 2)
                        fig["server_cores"] = round(cpu / wall, 2)
                        fig["server_cpu_us_per_req"] = round(1e6 * cpu / n, 1) if n else None
                        runs.setdefault(f"c{conns}", {})[name] = {**fig, "loadavg_1m": load[0]}
                finally:
                    _stop(proc)
            for fig in runs.values():
                hero, bare = fig["hero"], fig["bare"]
                fig["ratio"] = round(hero["requests_per_s"] / max(bare["requests_per_s"], 1e-9), 3)
                if hero.get("server_cpu_us_per_req") and bare.get("server_cpu_us_per_req"):
                    # The same ratio from CPU per request (steadier on a loaded machine).
                    fig["cpu_ratio"] = round(
                        bare["server_cpu_us_per_req"] / hero["server_cpu_us_per_req"], 3
                    )
            result["runs"][f"workers_{workers}"] = runs
    c16 = [r["c16"] for r in result["runs"].values() if "c16" in r]
    result["goal_c16"] = {
        "ratio_ge_0_6": all(r["ratio"] >= 0.6 for r in c16),
        "hero_p99_le_20ms": all(r["hero"]["p99_ms"] <= 20.0 for r in c16),
    }
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def run_kill(args: argparse.Namespace) -> dict[str, Any]:
    """SIGKILL a 1-worker server under load (``--concurrency``) after ``--duration`` / 2 s;
    the impressions it acknowledged (HTTP 200) but never wrote are the hard-kill loss, and
    ``unpersisted_window_ms`` the time from the newest stored decision to the kill."""
    import httpx
    from sqlalchemy import text

    from data.db import make_engine

    with tempfile.TemporaryDirectory(prefix="bench-hero-kill-") as tmp:
        home = Path(tmp) / "home"
        if args.home is not None:
            key, users = _state_from_home(args.home, home, args.users)
        else:
            key, users, _ = build_state(home, n_users=args.users, seed=args.seed)
        port = _free_port()
        env = _server_env(home)
        proc = spawn_uvicorn(
            port=port, env=env, cwd=ROOT, extra_args=["--no-access-log"], capture=False
        )
        base = f"http://127.0.0.1:{port}"
        wait_healthy(proc, base, timeout_s=300)
        _warm(base, key, users)
        acked: list[tuple[float, str]] = []

        async def drive() -> float:
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=5.0) as c:
                stop = False

                async def one(w: int) -> None:
                    i = w
                    while not stop:
                        try:
                            r = await c.get("/v1/hero", params={"user_id": users[i % len(users)]})
                        except httpx.HTTPError:
                            return
                        if r.status_code == 200:
                            acked.append((time.monotonic(), r.json()["impression_id"]))
                        i += args.concurrency

                tasks = [asyncio.create_task(one(w)) for w in range(args.concurrency)]
                await asyncio.sleep(args.duration / 2)
                killed_at = time.time()
                os.kill(proc.pid, signal.SIGKILL)
                stop = True
                await asyncio.gather(*tasks, return_exceptions=True)
                return killed_at

        killed_at = asyncio.run(drive())
        proc.wait()
        engine = make_engine(f"sqlite:///{(home / 'tailorshot.db').resolve()}")
        with engine.connect() as conn:
            stored = {str(r[0]) for r in conn.execute(text("SELECT id FROM impression"))}
            newest = conn.execute(text("SELECT max(ts) FROM impression")).scalar()
        engine.dispose()
    # The server-side window: decisions after the newest stored one (its ``ts``, UTC, same
    # machine clock) until the kill were not persisted. Client-side ack times come later
    # than the server's decisions under load, so they do not bound it.
    newest_s = datetime.fromisoformat(str(newest)).replace(tzinfo=UTC).timestamp()
    lost = [(t, i) for t, i in acked if i not in stored]
    rate = len(acked) / max(args.duration / 2, 1e-9)
    return {
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "concurrency": args.concurrency,
        "acknowledged": len(acked),
        "stored": len(acked) - len(lost),
        "lost": len(lost),
        "unpersisted_window_ms": round(1000 * (killed_at - newest_s), 1),
        "lost_as_ms_of_traffic": round(1000 * len(lost) / rate, 1) if rate else None,
        "requests_per_s": round(rate, 1),
    }


def run_inprocess(args: argparse.Namespace) -> dict[str, Any]:
    """CPU per request of both apps called in-process (one ASGI call after another on one
    event loop, no network, no load generator): ``--requests`` requests each, after 200
    warm-up ones. Process CPU time (every thread: the impression flusher included) is
    steady on a loaded machine where req/s is not."""
    for name, value in _server_env(Path(".")).items():
        if name.startswith("TAILORSHOT_API__"):
            os.environ[name] = value
    result: dict[str, Any] = {"loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="bench-hero-asgi-") as tmp:
        home = Path(tmp) / "home"
        if args.home is not None:
            key, users = _state_from_home(args.home, home, args.users)
        else:
            key, users, _ = build_state(home, n_users=args.users, seed=args.seed)
        os.environ["TAILORSHOT_HOME"] = str(home)
        from api.cli.core import serve_app

        for name, app in (("hero", serve_app()), ("bare", bare_app())):
            result[name] = asyncio.run(_asgi_loop(app, key, users, args.requests))
    hero, bare = result["hero"], result["bare"]
    result["cpu_ratio"] = round(bare["cpu_us_per_req"] / hero["cpu_us_per_req"], 3)
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


async def _asgi_loop(app: Any, key: str, users: list[str], n: int) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {key}".encode())]
    statuses: dict[int, int] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] = statuses.get(message["status"], 0) + 1

    async def call(i: int) -> None:
        query = f"user_id={users[i % len(users)]}".encode()
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": "/v1/hero", "raw_path": b"/v1/hero",
                 "query_string": query, "root_path": "", "headers": headers,
                 "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "state": {}}  # fmt: skip
        await app(scope, receive, send)

    async with app.router.lifespan_context(app):
        for i in range(200):
            await call(i)
        statuses.clear()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(n):
            await call(i)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "requests": n,
        "statuses": statuses,
        "cpu_us_per_req": round(1e6 * cpu / n, 1),
        "wall_us_per_req": round(1e6 * wall / n, 1),
    }


def run_stamp(args: argparse.Namespace) -> dict[str, Any]:
    """CPU per poll of the hero's state stamp on SQLite with 10k, 100k and 1M memberships:
    the cheap part (every ``POLL_S``) and the membership scan (every ``MEMBERSHIP_POLL_S``)."""
    from sqlalchemy import text

    from api.services.hero_snapshot import membership_stamp, state_version
    from data.db import init_db, make_engine

    out: dict[str, Any] = {"loadavg_start": [round(x, 2) for x in os.getloadavg()], "runs": {}}
    with tempfile.TemporaryDirectory(prefix="bench-hero-stamp-") as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'stamp.db'}")
        init_db(engine)
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO segment (id, label, size, version, terms, example_product_ids, "
                "created_at, updated_at) VALUES (1, 's', 0, 1, '[]', '[]', '2026-01-01', "
                "'2026-01-01')"
            ))  # fmt: skip
        done = 0
        for size in (10_000, 100_000, 1_000_000):
            with engine.begin() as conn:
                raw = conn.connection.driver_connection
                raw.execute("PRAGMA foreign_keys=OFF")  # memberships of users never created
                raw.executemany(
                    "INSERT INTO segmentmembership (user_id, segment_id, score) VALUES (?, 1, 1)",
                    ((f"u{i:07d}",) for i in range(done, size)),
                )
            done = size
            with engine.connect() as conn:
                cached = membership_stamp(conn)

                def cpu_ms(f: Any, conn: Any = conn, reps: int = 5) -> float:
                    f(conn)
                    c0 = time.process_time()
                    for _ in range(reps):
                        f(conn)
                    return round(1000 * (time.process_time() - c0) / reps, 2)

                out["runs"][str(size)] = {
                    "cheap_poll_ms_cpu": cpu_ms(lambda c, m=cached: state_version(c, m)),
                    "membership_scan_ms_cpu": cpu_ms(membership_stamp),
                }
        engine.dispose()
    out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return out
