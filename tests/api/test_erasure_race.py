"""Erasure that holds under concurrency: hero requests (which enqueue personalization),
event ingest, the generation worker completing jobs and erasures of half the users run
interleaved on threads (seeded order); afterwards no table row, job or image file of an erased
user is left, on SQLite and on PostgreSQL, while the other users keep their data."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apitest_helpers import (
    Env,
    FakeGenerator,
    FakeOutput,
    build_env,
    empty_database_url,
    png_bytes,
)
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api.services.erasure import guard_for
from data.models import (
    CreativeVariant,
    ErasureRecord,
    Event,
    EventKind,
    GenerationJob,
    JobStatus,
    TasteProfileRecord,
    User,
)

N_USERS = 100
SEED = 7


class BriefColourGenerator(FakeGenerator):
    """Renders one colour per brief (so each user's image is a file of its own) and records
    which user's term each image carries."""

    made: dict[str, str]

    def generate(self, brief: Any, *, progress: Any = None, should_cancel: Any = None) -> Any:
        if not hasattr(self, "made"):
            self.made = {}
        digest = hashlib.sha256(brief.brief_hash.encode()).digest()
        key = self.images.put(png_bytes((digest[0], digest[1], digest[2])), "image/png")
        for term in brief.style_terms:
            self.made[key] = term.term
        if progress is not None:
            progress(1, 1)
        return FakeOutput(key, {})


def _profile(uid: str, product_id: int) -> dict[str, Any]:
    """A stored taste profile whose only style term is the user's id (so every brief, job and
    variant of the user mentions it)."""
    return {
        "user_id": uid,
        "version": 1,
        "profile_hash": f"h-{uid}",
        "source": "history",
        "n_events": 2,
        "segment_id": None,
        "embedding": [1.0, 0.0, 0.0, 0.0],
        "interests": [],
        "style_terms": [[uid, "tone", 2.0]],
        "reference_ids": [product_id],
    }


def _seed_users(env: Env) -> list[str]:
    users = [f"s{i:03d}" for i in range(N_USERS)]
    pids = env.world.product_ids
    t0 = datetime(2026, 2, 1, tzinfo=UTC)
    with Session(env.comps.engine) as s:
        for i, uid in enumerate(users):
            s.add(User(id=uid))
            s.flush()
            for j in range(2):
                s.add(Event(event_id=f"{uid}-e{j}", user_id=uid, product_id=pids[(i + j) % 3],
                            kind=EventKind.view, ts=t0 + timedelta(minutes=j)))  # fmt: skip
            s.add(TasteProfileRecord(user_id=uid, profile_hash=f"h-{uid}",
                                     data=_profile(uid, pids[i % 3])))  # fmt: skip
        s.commit()
    return users


def rows_mentioning(engine: Engine, needle: str) -> list[str]:
    """``table.column`` of every stored value equal to ``needle`` or holding it as a JSON
    string (JSON columns come back as text on SQLite and as objects on PostgreSQL)."""
    hits = []
    insp = inspect(engine)
    quoted = json.dumps(needle)
    with engine.connect() as conn:
        for table in insp.get_table_names():
            cols = [c["name"] for c in insp.get_columns(table)]
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                for name, value in zip(cols, row, strict=True):
                    if isinstance(value, dict | list):
                        value = json.dumps(value)
                    if value == needle or (isinstance(value, str) and quoted in value):
                        hits.append(f"{table}.{name}")
    return hits


def _wait_for_worker(env: Env, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Session(env.comps.engine) as s:
            busy = s.exec(
                select(GenerationJob.id).where(
                    col(GenerationJob.status).in_([JobStatus.queued, JobStatus.running])
                )
            ).first()
        if busy is None:
            return
        time.sleep(0.05)
    raise AssertionError("the worker did not finish the queued jobs")


def _run(env: Env) -> None:
    gen = env.generator
    assert isinstance(gen, BriefColourGenerator)
    users = _seed_users(env)
    rng = random.Random(SEED)
    erased = sorted(rng.sample(users, N_USERS // 2))
    ops: list[tuple[str, str]] = []
    for uid in users:
        ops += [("hero", uid), ("hero", uid), ("events", uid)]
        if uid in erased:
            ops.append(("erase", uid))
    rng.shuffle(ops)
    s_key, a_key = env.auth("storefront"), env.auth("admin")
    counter = iter(range(10**9))

    def op(item: tuple[str, str]) -> int:
        kind, uid = item
        c = env.client
        if kind == "hero":
            return c.get("/v1/hero", params={"user_id": uid}, headers=s_key).status_code
        if kind == "events":
            n = next(counter)
            body = {"events": [{"event_id": f"{uid}-x{n}", "user_id": uid, "sku": "sku-1",
                                "kind": "view", "ts": "2026-03-01T00:00:00Z"}]}  # fmt: skip
            return c.post("/v1/events", json=body, headers=s_key).status_code
        for _ in range(20):  # 503 means "a job is still stopping: retry"
            code = c.delete(f"/v1/users/{uid}", headers=a_key).status_code
            if code != 503:
                return code
            time.sleep(0.1)
        return code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(op, ops))
    assert all(code < 500 for code in codes), sorted(set(codes))
    assert codes.count(200) >= len(ops) - 5  # events, heroes (segment/generic) and erasures
    env.comps.hero.drain(30)
    _wait_for_worker(env)
    env.comps.hero.drain(30)
    _wait_for_worker(env)

    engine = env.comps.engine
    for uid in erased:
        assert rows_mentioning(engine, uid) == [], uid
    # Every image of an erased user is gone from the store; the kept users still have theirs.
    made = dict(gen.made)
    assert made, "the worker rendered nothing: the test would prove nothing"
    for key, term in made.items():
        exists = env.comps.images.exists(key)  # type: ignore[union-attr]
        if term in erased:
            assert not exists, (term, key)
    kept = sorted(set(users) - set(erased))
    with Session(engine) as s:
        tombs = len(s.exec(select(ErasureRecord)).all())
        kept_events = s.exec(select(Event.user_id).where(col(Event.user_id).in_(kept))).all()
        personal = s.exec(
            select(CreativeVariant.user_id).where(col(CreativeVariant.user_id).in_(kept))
        ).all()
    assert tombs == len(erased)
    assert set(kept_events) == set(kept)  # control: the others keep every event
    assert len(set(personal)) >= 10  # and personalization really ran concurrently
    guard = guard_for(env.comps)
    assert all(guard.is_erased(u) for u in erased) and not any(guard.is_erased(u) for u in kept)
    # The tombstone holds: a late event of an erased user is refused, nothing is stored.
    late = {"events": [{"event_id": "late-1", "user_id": erased[0], "sku": "sku-0",
                        "kind": "view", "ts": "2026-03-02T00:00:00Z"}]}  # fmt: skip
    out = env.client.post("/v1/events", json=late, headers=s_key).json()
    assert out["inserted"] == 0 and out["errors"][0]["error"] == "user erased"
    assert rows_mentioning(engine, erased[0]) == []


def marked_env(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, **api: Any
) -> Generator[Env, None, None]:
    """An app on an empty ``backend`` database with the real worker and
    :class:`BriefColourGenerator`; approved-terms filtering off, so each user's own style term
    marks every row, job and image of theirs (see test_vocabulary for the filter)."""
    return build_env(
        tmp_path,
        worker=True,
        database_url=empty_database_url(backend, request),
        generator_class=BriefColourGenerator,
        approved_terms_only=False,
        **api,
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_interleaved_erasure_leaves_nothing(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    envs = marked_env(tmp_path, request, backend, personalize_queue=1000, erasure_job_wait_s=5.0)
    env = next(envs)
    try:
        _run(env)
    finally:
        envs.close()
