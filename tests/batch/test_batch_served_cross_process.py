"""A variant approved through the CLI (``tailorshot batch variants --auto-approve``) is served
by the memory hot path of another process — a real uvicorn server on the same database —
within 1 s of the approval's audit time (#16): the server sees it through the state stamp it
polls, not through a TTL. (The API path: ``tests/api/test_hero_cross_process.py``.)"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from batch_world import AUTO_APPROVE_BANNER_ARGS, build_banner_world
from sqlmodel import Session, select
from typer.testing import CliRunner

from api.auth import create_key
from api.cli import app
from data.models import VariantChange
from genservice.generator import HeroImaging
from tests.genservice.gen_fixtures import stub_imaging
from tests.support.liveserver import (
    free_port,
    spawn_uvicorn,
    storefront_server_env,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parents[2]


def test_variant_approved_by_the_cli_is_served_by_another_process_within_1s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, engine = build_banner_world(tmp_path / "home")
    with Session(engine) as s:
        key = create_key(s, role="storefront", name="test").key
        s.commit()
    port = free_port()
    server_env = storefront_server_env(settings.home)
    proc = spawn_uvicorn(port=port, env=server_env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    served: list[tuple[datetime, int]] = []  # (wall time, variant id) of the first 200
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as c:
            while not stop.is_set():
                r = c.get("/v1/hero", params={"user_id": "u000", "placement": "banner"})
                if r.status_code == 200:
                    served.append((datetime.now(UTC), int(r.json()["variant_id"])))
                    return
                assert r.status_code == 404, r.text  # nothing approved yet
                time.sleep(0.02)

    try:
        wait_healthy(proc, base, timeout_s=60)
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        monkeypatch.setattr(HeroImaging, "default", classmethod(lambda cls: stub_imaging()))
        monkeypatch.setenv("TAILORSHOT_HOME", str(settings.home))
        r = CliRunner().invoke(app, AUTO_APPROVE_BANNER_ARGS)
        assert r.exit_code == 0, r.output
        poller.join(timeout=10)
        stop.set()
        assert served, "the approved banner was not served within 10 s of the CLI's end"
        at, variant_id = served[0]
        with Session(engine) as s:
            [approval] = s.exec(
                select(VariantChange).where(
                    VariantChange.action == "approve", VariantChange.variant_id == variant_id
                )
            )
        assert approval.actor == "batch:variants"  # the CLI's approval
        approved_at = approval.at.replace(tzinfo=UTC) if approval.at.tzinfo is None else approval.at
        elapsed = (at - approved_at).total_seconds()
        assert 0.0 < elapsed <= 1.0, f"served {elapsed:.2f} s after the approval"
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except Exception:
            proc.kill()
            proc.wait()
