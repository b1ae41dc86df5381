"""An erased user leaves no trace outside the tables either: the user id is never written to
the logs in the clear (app logs, the JSON access log, uvicorn's access log), and after the
erasure the SQLite file and its WAL no longer hold the id's bytes (``secure_delete`` and a
checkpoint)."""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

from apitest_helpers import build_env
from sqlmodel import Session, select

from api.logging import AccessLogScrubber, JsonFormatter
from api.services.erasure import guard_for
from data.models import CreativeVariant, JobStatus, TasteProfileRecord, User

#: A user id that no hash, key or timestamp can contain by chance.
MARKER = "shopper-QXJZ-marker"


def _activity(env, uid: str) -> None:  # type: ignore[no-untyped-def]
    """Events, a stored profile, a hero (personalization: a variant, a job, an image) and a
    click for ``uid``."""
    s_key = env.auth("storefront")
    body = {"events": [{"event_id": f"{uid}-{j}", "user_id": uid, "sku": f"sku-{j % 2}",
                        "kind": "view", "ts": f"2026-03-01T00:0{j}:00Z", "session": uid}
                       for j in range(6)]}  # fmt: skip
    assert env.client.post("/v1/events", json=body, headers=s_key).json()["inserted"] == 6
    with Session(env.comps.engine) as s:
        pid = env.world.product_ids[0]
        data = {"user_id": uid, "version": 1, "profile_hash": f"h-{uid}", "source": "history",
                "n_events": 6, "segment_id": None, "embedding": [1.0, 0.0, 0.0, 0.0],
                "interests": [], "style_terms": [["teal", "colour", 2.0]],
                "reference_ids": [pid]}  # fmt: skip
        s.add(TasteProfileRecord(user_id=uid, profile_hash=f"h-{uid}", data=data))
        s.commit()
    first = env.client.get("/v1/hero", params={"user_id": uid}, headers=s_key)
    assert first.status_code == 200
    env.client.post(f"/v1/impressions/{first.json()['impression_id']}/click", headers=s_key)
    env.comps.hero.drain()
    deadline = time.monotonic() + 10
    while True:
        with Session(env.comps.engine) as s:
            v = s.exec(select(CreativeVariant).where(CreativeVariant.user_id == uid)).first()
        job = env.comps.jobs.get(v.job_id) if v is not None and v.job_id else None
        if job is not None and job.status == JobStatus.succeeded:
            break
        assert time.monotonic() < deadline, "personalization did not finish"
        time.sleep(0.02)
    assert env.client.get("/v1/hero", params={"user_id": uid}, headers=s_key).status_code == 200


def test_user_ids_never_reach_the_logs_in_the_clear(tmp_path: Path) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    logger = logging.getLogger("tailorshot")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        for env in build_env(tmp_path, worker=True, approved_terms_only=False):
            _activity(env, MARKER)
            r = env.client.delete(f"/v1/users/{MARKER}", headers=env.auth("admin"))
            assert r.status_code == 200 and r.json()["events"] == 6
            late = {"events": [{"event_id": "late", "user_id": MARKER, "sku": "sku-0",
                                "kind": "view", "ts": "2026-03-02T00:00:00Z"}]}  # fmt: skip
            env.client.post("/v1/events", json=late, headers=env.auth("storefront"))
            env.client.get("/v1/hero", params={"user_id": MARKER}, headers=env.auth("storefront"))
            ref = guard_for(env.comps).ref(MARKER)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    text = out.getvalue()
    assert text.count("\n") >= 10, "nothing was logged: the test would prove nothing"
    assert '"route": "/v1/users/{user_id}"' in text  # the access log line of the erasure
    assert ref is not None and ref in text  # logs name the user by the keyed hash
    assert MARKER not in text


def test_uvicorn_access_log_lines_are_scrubbed() -> None:
    scrub = AccessLogScrubber()
    for path, logged in [
        (f"/v1/hero?user_id={MARKER}&placement=banner", "/v1/hero"),
        (f"/v1/users/{MARKER}", "/v1/users/{user_id}"),
        ("/v1/variants", "/v1/variants"),
    ]:
        record = logging.LogRecord(
            "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5000", "GET", path, "1.1", 200), None,
        )  # fmt: skip
        assert scrub.filter(record)
        assert record.getMessage() == f'127.0.0.1:5000 - "GET {logged} HTTP/1.1" 200'


def test_erased_bytes_leave_the_sqlite_file_and_wal(tmp_path: Path) -> None:
    for env in build_env(tmp_path, worker=True, approved_terms_only=False):
        engine = env.comps.engine
        db = Path(str(engine.url.database))
        files = [db, db.with_name(db.name + "-wal")]

        def on_disk(files: list[Path] = files) -> bool:
            return any(f.is_file() and MARKER.encode() in f.read_bytes() for f in files)

        _activity(env, MARKER)
        _activity(env, "kept-user")
        assert on_disk(), "the marker never reached the disk: the test would prove nothing"
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
        r = env.client.delete(f"/v1/users/{MARKER}", headers=env.auth("admin"))
        assert r.status_code == 200, r.text
        assert not on_disk()
        with Session(engine) as s:
            assert s.get(User, "kept-user") is not None  # the other user's rows stay
