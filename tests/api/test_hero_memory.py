"""The storefront's memory hot path (#16): candidates from the in-memory snapshot, buffered
impressions written at graceful shutdown, clicks on buffered impressions, and the same OPE
report as synchronous logging for the same seeded traffic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from apitest_helpers import Env, build_env
from sqlmodel import Session, func, select

import api.services.hero as hero_module
from api.services.hero import load_candidates
from data.models import Click, Impression
from recsys.evaluation.report import build_report

MEMORY = {"candidates_ttl_s": 30.0, "stats_ttl_s": 3600.0}


def count(engine, model) -> int:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(model)).one())


@pytest.fixture
def slow_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """No timed flush during the test: only shutdown, a click or a full batch write."""
    monkeypatch.setattr(hero_module, "FLUSH_S", 3600.0)


def test_buffered_impressions_are_all_written_at_graceful_shutdown(
    tmp_path: Path, slow_flush: None
) -> None:
    n = 137
    ids: list[str] = []
    for env in build_env(tmp_path, personalize=False, **MEMORY):
        engine = env.comps.engine
        for i in range(n):
            r = env.client.get(
                "/v1/hero", params={"user_id": f"u{1 + i % 3}"}, headers=env.auth("storefront")
            )
            assert r.status_code == 200
            ids.append(r.json()["impression_id"])
        buffer = env.comps.hero.impressions
        assert buffer is not None and buffer.pending == n
        assert count(engine, Impression) == 0  # nothing committed per request
    with Session(engine) as s:
        stored = set(s.exec(select(Impression.id)))
    assert len(ids) == len(set(ids)) == n and stored == set(ids)


def test_click_on_a_buffered_impression_is_recorded_once(tmp_path: Path, slow_flush: None) -> None:
    for env in build_env(tmp_path, personalize=False, **MEMORY):
        s_key = env.auth("storefront")
        imp = env.client.get("/v1/hero", params={"user_id": "u1"}, headers=s_key).json()
        assert env.comps.hero.impressions is not None
        assert env.comps.hero.impressions.contains(imp["impression_id"])
        url = f"/v1/impressions/{imp['impression_id']}/click"
        r1 = env.client.post(url, headers=s_key)
        r2 = env.client.post(url, headers=s_key)
        assert (r1.status_code, r1.json()["created"]) == (200, True)
        assert (r2.status_code, r2.json()["created"]) == (200, False)
        assert count(env.comps.engine, Click) == 1
        assert env.client.post("/v1/impressions/nope/click", headers=s_key).status_code == 404


def test_snapshot_candidates_equal_the_sql_path(tmp_path: Path) -> None:
    for env in build_env(tmp_path, personalize=False, **MEMORY):
        hero = env.comps.hero
        hero.start()
        snap = hero._snapshot
        assert snap is not None
        with Session(env.comps.engine) as s:
            for user in ("u1", "u2", "u3", "unknown"):
                for placement in ("banner", "story"):
                    for limit in (1, 2, 8):
                        want = load_candidates(s, user_id=user, placement=placement, limit=limit)
                        assert snap.candidates(user, placement, limit) == want


def _seeded_traffic(tmp_path: Path, *, buffered: bool, n: int = 300) -> dict[str, object]:
    """``n`` seeded decisions and clicks (click-through by variant), logged synchronously
    (:meth:`HeroService.decide`) or through the buffer (:meth:`HeroService.decide_now`); the
    analyst report's summary."""
    api = {"personalize": False, "stats_ttl_s": 3600.0, "candidates_ttl_s": 30.0}
    for env in build_env(tmp_path, **api):
        hero, engine = env.comps.hero, env.comps.engine
        rng = np.random.default_rng(7)
        shown: list[tuple[str, int]] = []
        with Session(engine) as s:
            if buffered:
                hero.start()
            for i in range(n):
                user = ("u1", "u2", "u3")[i % 3]
                if buffered:
                    out, overflow = hero.decide_now(user_id=user, placement="banner")
                    assert overflow is None
                else:
                    out = hero.decide(s, user_id=user, placement="banner")
                shown.append((out.impression_id, out.variant_id))
        hero.flush_impressions()
        ctr = {v: 0.05 + 0.1 * (v % 3) for _, v in shown}
        with Session(engine) as s:
            for imp_id, variant in shown:
                if rng.random() < ctr[variant]:
                    s.add(Click(impression_id=imp_id))
            s.commit()
        assert count(engine, Impression) == n
        assert 0 < count(engine, Click) < n
        summary = dict(build_report(engine, n_bootstrap=50, random_state=0).summary)
        summary.pop("generated_at")  # the clock, not the traffic
        return summary
    raise AssertionError("no env")


def test_ope_report_from_buffered_impressions_equals_synchronous_logging(
    tmp_path: Path,
) -> None:
    sync = _seeded_traffic(tmp_path / "sync", buffered=False)
    buffered = _seeded_traffic(tmp_path / "buffered", buffered=True)
    assert sync["source"] == "impressions"
    assert buffered == sync


def test_erasure_unlinks_buffered_impressions_and_drops_memory_candidates(
    tmp_path: Path, slow_flush: None
) -> None:
    for env in build_env(tmp_path, personalize=False, **MEMORY):
        hero, engine = env.comps.hero, env.comps.engine
        s_key = env.auth("storefront")
        ids = [
            env.client.get("/v1/hero", params={"user_id": u}, headers=s_key).json()["impression_id"]
            for u in ("u1", "u2", "u1")
        ]
        snap = hero._snapshot
        assert snap is not None and "u1" in snap.segment_of
        r = env.client.delete("/v1/users/u1", headers=env.auth("admin"))
        assert r.status_code == 200, r.text
        assert "u1" not in snap.segment_of and "u1" not in hero._snapshot.segment_of  # type: ignore[union-attr]
        hero.flush_impressions()
        with Session(engine) as s:
            users = dict(s.exec(select(Impression.id, Impression.user_id)).all())
        assert users == {ids[0]: None, ids[1]: "u2", ids[2]: None}


def test_rows_of_a_user_erased_by_another_process_are_unlinked_after_their_write(
    tmp_path: Path, slow_flush: None
) -> None:
    """A tombstone written by another process (not known to this one's memory) while the
    rows waited: the flush reads the tombstone keys (their count changed) and unlinks."""
    from data.models import ErasureRecord

    for env in build_env(tmp_path, personalize=False, **MEMORY):
        hero, engine = env.comps.hero, env.comps.engine
        s_key = env.auth("storefront")

        def show(user: str, env: Env = env, s_key: dict[str, str] = s_key) -> str:
            r = env.client.get("/v1/hero", params={"user_id": user}, headers=s_key)
            return str(r.json()["impression_id"])

        first = [show("u1"), show("u2")]
        assert hero.flush_impressions() == 2
        later = [show("u2"), show("u3")]
        with Session(engine) as s:  # "another process": straight to the database
            s.add(ErasureRecord(user_key=env.comps.guard.key("u2")))
            s.commit()
        assert not env.comps.guard.known_erased("u2")
        assert hero.flush_impressions() == 2
        again = show("u3")
        assert hero.flush_impressions() == 1  # count unchanged: the keys are not read again
        with Session(engine) as s:
            users = dict(s.exec(select(Impression.id, Impression.user_id)).all())
        # The row written before the tombstone keeps its user (erasure's own unlinking step
        # handles stored rows); the rows written after it do not.
        assert users == {first[0]: "u1", first[1]: "u2", later[0]: None, later[1]: "u3",
                         again: "u3"}  # fmt: skip


def test_buffered_rows_are_stored_as_a_core_insert_stores_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver-level multi-row insert goes through the column types' bind processors: the
    stored values (JSON text, datetime strings, NULLs) are byte-identical to a Core insert's,
    whether the candidates come as a list or as the text ``candidates_json`` encoded, and
    whatever the chunking of a batch into statements."""
    from sqlalchemy import text

    import api.services.impressions as imp
    from data.models import utcnow

    table = Impression.__table__  # type: ignore[attr-defined]
    for env in build_env(tmp_path, personalize=False, **MEMORY):
        engine = env.comps.engine
        now = utcnow()
        cands = [["3", 0.85], ["9", 0.15]]
        base = {"placement": "banner", "variant_id": 3, "product_id": 4, "arm": "segment",
                "policy": "epsilon_greedy", "propensity": 0.85, "position": 0, "ts": now,
                "candidates": cands, "user_id": "u1"}  # fmt: skip
        core = [
            {**base, "id": f"core{i}", "user_id": None if i == 2 else f"u{i}"} for i in range(5)
        ]
        with engine.begin() as conn:
            conn.execute(table.insert(), core)
        fast = imp._fast_insert(engine)
        assert fast.multirow  # SQLite: one INSERT ... VALUES (...), (...) per chunk
        monkeypatch.setattr(fast, "chunk", 2)  # 5 rows -> statements of 2, 2 and 1 rows
        encoded = imp.candidates_json(engine, cands)
        assert isinstance(encoded, str)
        rows = [
            {**r, "id": r["id"].replace("core", "fast"), "candidates": encoded if i % 2 else cands}
            for i, r in enumerate(core)
        ]
        assert imp.write_impressions(engine, rows, env.comps.guard.key) == 5
        with engine.connect() as conn:
            raw = {r[0]: tuple(r[1:]) for r in conn.execute(text("SELECT * FROM impression"))}
        assert len(raw) == 10
        for i in range(5):
            assert raw[f"fast{i}"] == raw[f"core{i}"]
        assert raw["fast2"][0] is None and raw["fast1"][0] == "u1"
        with Session(engine) as s:
            got = s.get(Impression, "fast1")
            assert got is not None and got.candidates == cands
            assert got.ts.replace(tzinfo=None) == now.replace(tzinfo=None)


def test_buffered_rows_are_not_tracked_by_the_garbage_collector(
    tmp_path: Path, slow_flush: None
) -> None:
    """A buffered row holds only atomic values (the candidates as encoded JSON text), so the
    collector never visits rows waiting in the buffer; the snapshot load froze the heap
    (``gc.freeze``) and shutdown unfreezes it."""
    import gc

    for env in build_env(tmp_path, personalize=False, **MEMORY):
        for u in ("u1", "u2", "u1"):
            r = env.client.get("/v1/hero", params={"user_id": u}, headers=env.auth("storefront"))
            assert r.status_code == 200
        buffer = env.comps.hero.impressions
        assert buffer is not None and buffer.pending == 3
        rows = list(buffer._rows)
        assert [r["user_id"] for r in rows] == ["u1", "u2", "u1"]
        assert not any(gc.is_tracked(r) for r in rows)
        assert all(isinstance(r["candidates"], str) for r in rows)
        assert rows[0]["candidates"] is rows[2]["candidates"]  # encoded once per candidate set
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    with Session(engine := env.comps.engine) as s:
        stored = s.exec(select(Impression)).all()
    assert len(stored) == 3 and all(isinstance(i.candidates, list) for i in stored)
    assert count(engine, Impression) == 3


def test_a_rebuild_or_an_erasure_is_seen_without_the_membership_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refresher reads the membership stamp (a full scan) rarely; a segment rebuild
    (memberships replaced, segments' ``updated_at`` stamped) changes the cheap part of the
    stamp, so the new membership is served within a poll or two."""
    import time

    from sqlalchemy import update

    from api.services.hero_snapshot import membership_stamp, state_version
    from data.models import Segment, SegmentMembership, utcnow

    monkeypatch.setattr(hero_module, "MEMBERSHIP_POLL_S", 3600.0)
    for env in build_env(tmp_path, personalize=False, **MEMORY):
        hero, engine = env.comps.hero, env.comps.engine
        hero.start()
        snap = hero._snapshot
        assert snap is not None and "u3" not in snap.segment_of
        with engine.connect() as conn:
            assert state_version(conn, membership_stamp(conn)) == state_version(conn)
        seg_id = snap.segment_of["u1"]
        with Session(engine) as s:  # what a rebuild writes, from "another process"
            s.add(SegmentMembership(user_id="u3", segment_id=seg_id, score=0.5))
            s.execute(update(Segment).where(Segment.id == seg_id).values(updated_at=utcnow()))  # type: ignore[arg-type]
            s.commit()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and "u3" not in hero._snapshot.segment_of:  # type: ignore[union-attr]
            time.sleep(0.05)
        assert hero._snapshot.segment_of.get("u3") == seg_id  # type: ignore[union-attr]


def test_impression_ids_are_unique_hex_and_ordered_by_time() -> None:
    """Ids: 12 hex of the time in ms, then 20 of a keyed hash of a counter; ordered by their
    time part, so the primary-key index grows at its end."""
    import re
    import time

    from api.services.impressions import new_impression_id

    before = time.time_ns() // 1_000_000
    ids = [new_impression_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 2000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    stamps = [int(i[:12], 16) for i in ids]
    assert stamps == sorted(stamps) and before <= stamps[0] <= stamps[-1] <= after
    assert len({i[12:] for i in ids}) == 2000  # the hashed part alone is unique too


def test_hero_body_bytes_are_the_compact_json_of_the_decision(tmp_path: Path) -> None:
    """The route keeps the response bytes around the impression id per candidate: each body
    is still exactly the compact JSON of its own decision, in the schema's field order."""
    import json

    from api.routes.storefront import hero_body
    from api.services.hero import HeroDecision

    for env in build_env(tmp_path, personalize=False, **MEMORY):
        key = env.auth("storefront")
        bodies = [
            env.client.get("/v1/hero", params={"user_id": "u1"}, headers=key) for _ in range(3)
        ]
        docs = [r.json() for r in bodies]
        for r, doc in zip(bodies, docs, strict=True):
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            assert r.content == json.dumps(doc, separators=(",", ":")).encode()
            assert list(doc) == ["image_url", "product_id", "variant_id", "impression_id",
                                 "policy", "propensity", "source"]  # fmt: skip
        assert len({d["impression_id"] for d in docs}) == 3
        assert env.comps.hero.body_parts  # kept
        # An id that is not plain alphanumerics is JSON-escaped, not pasted.
        odd = HeroDecision('a"b', 1, 2, "k.png", "generic", "uniform", 0.5, [])
        assert json.loads(hero_body(env.comps, odd))["impression_id"] == 'a"b'


def test_a_failed_multi_row_insert_reports_a_short_statement(tmp_path: Path) -> None:
    """A refused batch (here: rows missing NOT NULL columns) raises the driver's error with
    the statement shortened to one row's placeholders and the row count (the flusher logs it
    on every retry)."""
    from sqlalchemy.exc import IntegrityError

    from api.services.impressions import write_impressions

    for env in build_env(tmp_path, personalize=False, **MEMORY):
        rows = [{"id": f"r{i}", "user_id": "u1"} for i in range(300)]
        with pytest.raises(IntegrityError) as err:
            write_impressions(env.comps.engine, rows, env.comps.guard.key)
        assert err.value.statement is not None
        assert err.value.statement.endswith("... (300 rows)") and len(err.value.statement) < 300
        assert count(env.comps.engine, Impression) == 0  # the transaction rolled back
