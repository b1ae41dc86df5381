"""Finding 7 of issue #14 where it bit: PostgreSQL rejects NUL in text, so a NUL in
``event_id``, ``session`` or ``source`` used to reach the database and answer 500. Now every
text field refuses control characters before any query: on PostgreSQL the answers are item
errors or 422, never 5xx, and nothing is stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from apitest_helpers import build_env, empty_database_url
from sqlmodel import Session, select

from data.models import Event


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_control_characters_never_reach_the_database(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = empty_database_url(backend, request)
    for env in build_env(tmp_path, personalize=False, database_url=url):
        s_key, m_key = env.auth("storefront"), env.auth("marketer")
        with Session(env.comps.engine) as s:
            before = len(s.exec(select(Event)).all())
        base = {"event_id": "ok-1", "user_id": "u1", "sku": "sku-0", "kind": "view",
                "ts": "2026-01-01T00:00:00Z", "session": "s", "source": "web"}  # fmt: skip
        for field in ("event_id", "session", "source", "user_id", "sku"):
            for ch in ("\x00", "\x1b", "\x85"):
                item = {**base, field: f"a{ch}b"}
                r = env.client.post("/v1/events", json={"events": [item]}, headers=s_key)
                assert r.status_code == 200, (field, repr(ch), r.text)
                out = r.json()
                assert out["inserted"] == 0 and field in out["errors"][0]["error"]
        pid = env.world.product_ids[0]
        admin = env.auth("admin")
        responses = [
            env.client.get("/v1/hero", params={"user_id": "u\x001"}, headers=s_key),
            env.client.get("/v1/hero", params={"user_id": "u1", "placement": "b\x00"}, headers=s_key),
            env.client.delete("/v1/users/u%001", headers=admin),
            env.client.post("/v1/generations", headers=m_key, json={"product_id": pid, "headline": "Sale\x00"}),
            env.client.post("/v1/generations", headers={**m_key, "Idempotency-Key": "k\x01"}, json={"product_id": pid}),
        ]  # fmt: skip
        codes = [r.status_code for r in responses]
        assert all(400 <= c < 500 for c in codes), codes
        with Session(env.comps.engine) as s:
            assert len(s.exec(select(Event)).all()) == before
        # The same event without the control character goes in.
        r = env.client.post("/v1/events", json={"events": [base]}, headers=s_key)
        assert r.json()["inserted"] == 1
