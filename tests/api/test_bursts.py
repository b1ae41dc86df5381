"""Bursts: 100 parallel ``POST /v1/generations`` (shared and distinct Idempotency-Keys) and
50 parallel segment previews on a small connection pool answer no 500; each key maps to one
job; every 503 carries ``Retry-After``. The pool timeout and a full queue give 503, not 500."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from apitest_helpers import Env, build_env, empty_database_url
from sqlmodel import Session, select

from data.models import GenerationJob, IdempotencyRecord


def _burst(env: Env) -> None:
    m_key = env.auth("marketer")
    pid = env.world.product_ids[0]
    start = threading.Barrier(25)

    def generation(i: int) -> tuple[int, str | None, str | None, str]:
        # 50 requests share one key (same body); 50 use 10 keys with 10 bodies (seed).
        if i < 50:
            key, seed = "shared-key", 1
        else:
            key, seed = f"key-{i % 10}", 100 + i % 10
        if i < 25:
            start.wait(timeout=30)
        r = env.client.post(
            "/v1/generations",
            json={"product_id": pid, "terms": [{"term": "red"}], "seed": seed},
            headers={**m_key, "Idempotency-Key": key},
        )
        body = r.json()
        return r.status_code, r.headers.get("retry-after"), body.get("id"), key

    def preview(i: int) -> tuple[int, str | None, str | None, str]:
        r = env.client.post(
            f"/v1/segments/{env.world.segment_id}/previews",
            json={"product_id": pid, "n": 2, "seed": i % 5},
            headers=m_key,
        )
        return r.status_code, r.headers.get("retry-after"), None, "preview"

    with ThreadPoolExecutor(max_workers=40) as pool:
        gens = list(pool.map(generation, range(100)))
        previews = list(pool.map(preview, range(50)))
    for code, retry, _, _ in gens + previews:
        assert code < 500 or code == 503, code
        if code == 503:
            assert retry is not None and int(retry) >= 1
    ok = [(job, key) for code, _, job, key in gens if code == 202]
    assert len(ok) >= 90, [c for c, *_ in gens]
    by_key: dict[str, set[str]] = {}
    for job, key in ok:
        by_key.setdefault(key, set()).add(str(job))
    assert all(len(jobs) == 1 for jobs in by_key.values()), by_key
    assert len({next(iter(j)) for j in by_key.values()}) == 11  # 11 distinct bodies
    assert sum(code == 202 for code, *_ in previews) >= 45
    with Session(env.comps.engine) as s:
        records = s.exec(select(IdempotencyRecord)).all()
        assert len(records) == 11
        hashes = [j.brief_hash for j in s.exec(select(GenerationJob)).all()]
        assert len(hashes) == len(set(hashes))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_bursts_answer_no_500_and_one_job_per_key(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = empty_database_url(backend, request)
    limits = dict.fromkeys(("storefront", "marketer", "analyst", "admin"), 1e6)
    # 40 route threads share a pool of 40 + 8 connections: each request holds at most one.
    for env in build_env(
        tmp_path,
        personalize=False,
        rate_limits=limits,
        worker_threads=40,
        db_pool_timeout_s=20.0,
        database_url=url,
    ):
        _burst(env)


def test_pool_timeout_and_full_queue_answer_503_with_retry_after(tmp_path: Path) -> None:
    limits = dict.fromkeys(("storefront", "marketer", "analyst", "admin"), 1e6)
    for env in build_env(tmp_path, personalize=False, rate_limits=limits, max_queue_depth=1):
        m_key = env.auth("marketer")
        pid = env.world.product_ids[0]
        body = {"product_id": pid, "terms": [{"term": "red"}]}
        assert env.client.post("/v1/generations", json=body, headers=m_key).status_code == 202
        r = env.client.post("/v1/generations", json={**body, "seed": 9}, headers=m_key)
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert r.json()["request_id"] == r.headers["x-request-id"]
        # Hold every pooled connection: the next request waits db_pool_timeout_s, then 503.
        engine = env.comps.engine
        held = []
        pool = engine.pool
        size = pool.size() + pool._max_overflow  # type: ignore[attr-defined]
        try:
            for _ in range(size):
                held.append(engine.connect())
            engine.pool._timeout = 0.2  # type: ignore[attr-defined]
            r = env.client.get(f"/v1/variants?segment_id={env.world.segment_id}", headers=m_key)
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "2" and r.json()["detail"].startswith("the service")
        finally:
            for c in held:
                c.close()
        assert env.client.get("/v1/variants", headers=m_key).status_code == 200
