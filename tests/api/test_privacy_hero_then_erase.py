"""Finding 1 of issue #14, as reported: ``GET /v1/hero?user_id=U`` followed at once by
``DELETE /v1/users/U``, 12 times. Before the tombstone, the background personalization queue
wrote a variant and a job for U after the erasure answered 200 (8 of 12 tries). Now: once the
queue and the worker are idle, nothing of any of the 12 users is left (no row, job or image)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, col, select
from test_erasure_race import (
    BriefColourGenerator,
    _profile,
    _wait_for_worker,
    marked_env,
    rows_mentioning,
)

from data.models import CreativeVariant, Event, EventKind, GenerationJob, TasteProfileRecord, User


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_hero_then_erase_leaves_nothing(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    envs = marked_env(tmp_path, request, backend)
    env = next(envs)
    try:
        users = [f"tryer{i:02d}" for i in range(12)]
        pid = env.world.product_ids[0]

        def shopper(uid: str) -> None:
            """A user with a viewed product (what personalization features) and a profile."""
            with Session(env.comps.engine) as s:
                s.add(User(id=uid))
                s.flush()
                s.add(Event(event_id=f"{uid}-e", user_id=uid, product_id=pid,
                            kind=EventKind.view, ts=datetime(2026, 2, 1, tzinfo=UTC)))  # fmt: skip
                s.add(TasteProfileRecord(user_id=uid, profile_hash=f"h-{uid}",
                                         data=_profile(uid, pid)))  # fmt: skip
                s.commit()

        for uid in users:
            shopper(uid)
        s_key, a_key = env.auth("storefront"), env.auth("admin")
        for uid in users:
            assert env.client.get("/v1/hero", params={"user_id": uid}, headers=s_key).is_success
            r = env.client.delete(f"/v1/users/{uid}", headers=a_key)
            assert r.status_code == 200, r.text
        # Let the personalize queue and the worker finish whatever they still held.
        for _ in range(2):
            env.comps.hero.drain(30)
            _wait_for_worker(env)
        gen = env.generator
        assert isinstance(gen, BriefColourGenerator)
        with Session(env.comps.engine) as s:
            variants = s.exec(
                select(CreativeVariant).where(col(CreativeVariant.user_id).in_(users))
            ).all()
            jobs = s.exec(select(GenerationJob)).all()
        assert variants == []
        assert not [j for j in jobs if any(u in str(j.brief) for u in users)]
        for uid in users:
            assert rows_mentioning(env.comps.engine, uid) == [], uid
        for key, term in getattr(gen, "made", {}).items():
            if term in users:
                assert not env.comps.images.exists(key), (term, key)  # type: ignore[union-attr]
        # A control: the same requests without the erasure do personalize (the race is real).
        shopper("control")
        assert env.client.get("/v1/hero", params={"user_id": "control"}, headers=s_key).is_success
        env.comps.hero.drain(30)
        with Session(env.comps.engine) as s:
            mine = s.exec(select(CreativeVariant).where(CreativeVariant.user_id == "control"))
            assert len(mine.all()) == 1
    finally:
        envs.close()
