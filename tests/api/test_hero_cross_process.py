"""A variant approved through the API of one process is served by the memory hot path of
another process (a real uvicorn server on the same database) within 1 s (#16): the other
process sees the change through the state stamp it polls, not through a TTL."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
from apitest_helpers import build_env, png_bytes
from sqlmodel import Session, func, select

from data.models import CreativeVariant, Impression, VariantStatus
from tests.support.liveserver import (
    free_port,
    spawn_uvicorn,
    storefront_server_env,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parents[2]


def test_variant_approved_on_one_process_is_served_by_another_within_1s(
    tmp_path: Path,
) -> None:
    for env in build_env(tmp_path, personalize=False):
        assert env.comps.images is not None
        key = env.comps.images.put(png_bytes((9, 9, 9)), "image/png")  # type: ignore[attr-defined]
        with Session(env.comps.engine, expire_on_commit=False) as s:
            draft = CreativeVariant(
                product_id=env.world.product_ids[0],
                placement="story",
                brief_hash="story-draft",
                image_key=key,
                status=VariantStatus.draft,
            )
            s.add(draft)
            s.commit()
            variant_id = int(draft.id)  # type: ignore[arg-type]
        port = free_port()
        server_env = storefront_server_env(env.home)
        proc = spawn_uvicorn(port=port, env=server_env, cwd=ROOT)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(proc, base, timeout_s=60)
            other = httpx.Client(base_url=base, headers=env.auth("storefront"), timeout=5.0)
            params = {"user_id": "u3", "placement": "story"}
            assert other.get("/v1/hero", params=params).status_code == 404  # nothing yet
            r = env.client.post(f"/v1/variants/{variant_id}/approve", headers=env.auth("marketer"))
            assert r.status_code == 200, r.text
            approved_at = time.monotonic()
            while True:
                hero = other.get("/v1/hero", params=params)
                elapsed = time.monotonic() - approved_at
                if hero.status_code == 200 or elapsed > 5.0:
                    break
                time.sleep(0.02)
            assert hero.status_code == 200 and hero.json()["variant_id"] == variant_id
            assert elapsed <= 1.0, f"served after {elapsed:.2f} s"
            impression_id = hero.json()["impression_id"]
            # Graceful stop of the other process writes its buffered impressions.
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            with Session(env.comps.engine) as s:
                n = s.exec(
                    select(func.count())
                    .select_from(Impression)
                    .where(Impression.id == impression_id)
                ).one()
            assert n == 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
