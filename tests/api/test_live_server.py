"""The API in a real uvicorn process (``uvicorn api.app:create_app --factory``) on a free
127.0.0.1 port with a temp ``TAILORSHOT_HOME``: health, readiness per component, 401/403 on
every protected route (enumerated from the live OpenAPI schema), the hero and its image, and
a graceful shutdown on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apitest_helpers import ROLES, make_settings, seed_world

from api.composition import build_components
from tests.support.liveserver import spawn_uvicorn, wait_healthy

PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/v1/images/{key}")}
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, str], subprocess.Popen[bytes]]]:
    home = tmp_path_factory.mktemp("live") / "home"
    comps = build_components(make_settings(home))
    world = seed_world(comps.engine, comps, home)
    comps.engine.dispose()
    port = free_port()
    env = {
        **os.environ,
        "TAILORSHOT_HOME": str(home),
        "TAILORSHOT_API__LOAD_GENERATOR": "false",
        "TAILORSHOT_API__RUN_WORKER": "false",
        "TAILORSHOT_API__PERSONALIZE": "false",
        "TAILORSHOT_API__REPORT_DEMO_FALLBACK": "false",
        # The route tour sends every role's key to every route in a burst (analyst: 10/s).
        "TAILORSHOT_API__RATE_LIMITS": json.dumps(dict.fromkeys(ROLES, 1000.0)),
        "HF_HUB_OFFLINE": "1",
    }
    proc = spawn_uvicorn(
        port=port, env=env, cwd=ROOT, extra_args=["--timeout-graceful-shutdown", "10"]
    )
    base = f"http://127.0.0.1:{port}"
    wait_healthy(proc, base, timeout_s=60)
    yield base, world.keys, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_health_and_readiness_per_component(
    live: tuple[str, dict[str, str], subprocess.Popen[bytes]],
) -> None:
    base, _, _ = live
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    r = httpx.get(f"{base}/readyz")
    # No index was built and the generator is off in this process: not ready, and says why.
    assert r.status_code == 503
    assert r.json()["checks"] == {"database": True, "index": False, "generator": False}
    assert len(r.headers["x-request-id"]) == 32


def test_every_protected_route_401_and_403(
    live: tuple[str, dict[str, str], subprocess.Popen[bytes]],
) -> None:
    base, keys, _ = live
    schema = httpx.get(f"{base}/openapi.json").json()
    n = 0
    with httpx.Client(base_url=base, timeout=60.0) as client:
        for path, item in schema["paths"].items():
            for method in item:
                if (method.upper(), path) in PUBLIC:
                    continue
                url = re.sub(r"\{[^}]+\}", "1", path)
                assert client.request(method, url).status_code == 401, (method, path)
                codes = {
                    role: client.request(method, url, headers={"X-API-Key": keys[role]}).status_code
                    for role in ROLES
                }
                assert codes["admin"] not in (401, 403), (method, path, codes)
                assert sum(c == 403 for c in codes.values()) >= 2, (method, path, codes)
                assert all(c != 401 for c in codes.values()), (method, path, codes)
                n += 1
    assert n >= 15


def test_hero_and_image_over_http(
    live: tuple[str, dict[str, str], subprocess.Popen[bytes]],
) -> None:
    base, keys, _ = live
    h = {"Authorization": f"Bearer {keys['storefront']}"}
    r = httpx.get(f"{base}/v1/hero", params={"user_id": "u1"}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] in ("segment", "generic") and 0 < body["propensity"] <= 1
    img = httpx.get(base + body["image_url"])
    assert img.status_code == 200 and img.headers["cache-control"].endswith("immutable")
    assert httpx.get(base + body["image_url"], headers={"Range": "bytes=0-3"}).content == b"\x89PNG"
    metrics = httpx.get(f"{base}/metrics").text
    assert 'tailorshot_impressions_total{policy="epsilon_greedy"}' in metrics


def test_graceful_shutdown_on_sigterm(
    live: tuple[str, dict[str, str], subprocess.Popen[bytes]],
) -> None:
    _, _, proc = live
    proc.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal after its graceful shutdown (exit status -SIGTERM); the
    # lifespan's "stopped" line proves the shutdown ran to the end.
    assert proc.wait(20) in (0, -signal.SIGTERM)
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    assert '"message": "stopped"' in out and "Traceback" not in out
