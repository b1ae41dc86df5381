"""Start the app under a real uvicorn process and wait until it answers (tests, benches,
smoke checks). Binds 127.0.0.1 only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def spawn_uvicorn(
    *,
    port: int,
    env: Mapping[str, str],
    cwd: Path,
    app: str = "api.app:create_app",
    extra_args: Sequence[str] = (),
    capture: bool = True,
) -> subprocess.Popen[bytes]:
    """``uvicorn APP --factory`` on 127.0.0.1:``port``; output piped when ``capture``."""
    cmd = [sys.executable, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--log-level", "warning", *extra_args]
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    err = subprocess.STDOUT if capture else subprocess.DEVNULL
    return subprocess.Popen(cmd, cwd=cwd, env=dict(env), stdout=out, stderr=err)


def wait_healthy(proc: subprocess.Popen[bytes], base: str, *, timeout_s: float) -> None:
    """Poll ``base/healthz`` every 0.2 s until it answers 200; if the process exits or
    ``timeout_s`` passes, kill it and raise ``RuntimeError`` with the end of its output."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.communicate()[0]
            text = out.decode(errors="replace") if out else ""
            raise RuntimeError(f"uvicorn did not start (rc={proc.returncode}):\n{text[-4000:]}")
        time.sleep(0.2)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def storefront_server_env(home: Path) -> dict[str, str]:
    """The environment of a storefront-only server on ``home``: no generator, no worker, no
    personalization, a 60 s candidates TTL (so only the state stamp can make it see a change)."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TAILORSHOT_HOME": str(home),
        "TAILORSHOT_API__LOAD_GENERATOR": "false",
        "TAILORSHOT_API__RUN_WORKER": "false",
        "TAILORSHOT_API__PERSONALIZE": "false",
        "TAILORSHOT_API__CANDIDATES_TTL_S": "60",
    }
