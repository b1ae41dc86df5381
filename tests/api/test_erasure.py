"""DELETE /v1/users/{id}: after erasure no database row, index id or image file of the user
remains; aggregate impressions stay (unlinked); a second call is harmless."""

from __future__ import annotations

import time
from pathlib import Path

from apitest_helpers import build_env, png_bytes
from sqlalchemy import inspect, text
from sqlmodel import Session, select

from api.composition import images_dir
from data.models import Click, CreativeVariant, Impression, JobStatus, Segment


class FakeUserIndex:
    """A vector index with per-user entries (ids -> user)."""

    def __init__(self) -> None:
        self.owner = {1: "u1", 2: "u1", 3: "u2"}

    def remove_user(self, user_id: str) -> int:
        gone = [i for i, u in self.owner.items() if u == user_id]
        for i in gone:
            del self.owner[i]
        return len(gone)


def rows_mentioning(engine, needle: str) -> list[str]:  # type: ignore[no-untyped-def]
    """``table.column`` of every stored value equal to ``needle`` or containing it in JSON."""
    hits = []
    insp = inspect(engine)
    with engine.connect() as conn:
        for table in insp.get_table_names():
            cols = [c["name"] for c in insp.get_columns(table)]
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                for col, value in zip(cols, row, strict=True):
                    if value == needle or (isinstance(value, str) and f'"{needle}"' in value):
                        hits.append(f"{table}.{col}")
    return hits


def test_erasure_leaves_nothing_of_the_user(tmp_path: Path) -> None:
    for env in build_env(tmp_path, worker=True):
        index = FakeUserIndex()
        env.comps.user_indexes.append(index)
        s_key = env.auth("storefront")
        first = env.client.get("/v1/hero", params={"user_id": "u1"}, headers=s_key).json()
        env.client.post(f"/v1/impressions/{first['impression_id']}/click", headers=s_key)
        env.comps.hero.drain()
        with Session(env.comps.engine) as s:
            [v] = s.exec(select(CreativeVariant).where(CreativeVariant.user_id == "u1")).all()
        deadline = time.monotonic() + 10
        while env.comps.jobs.get(v.job_id).status != JobStatus.succeeded:  # type: ignore[union-attr, arg-type]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        served = env.client.get("/v1/hero", params={"user_id": "u1"}, headers=s_key).json()
        assert served["source"] in ("personalized", "segment", "generic")
        job = env.comps.jobs.get(v.job_id)  # type: ignore[union-attr, arg-type]
        personal_key = job.result_key  # type: ignore[union-attr]
        assert personal_key and env.comps.images.exists(personal_key)  # type: ignore[union-attr]
        files_before = {p.name for p in images_dir(env.comps.settings).rglob("*.png")}
        assert personal_key in files_before
        assert rows_mentioning(env.comps.engine, "u1")  # the user is there before

        r = env.client.delete("/v1/users/u1", headers=env.auth("admin"))
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["events"] == 6 and out["profiles"] == 1 and out["memberships"] == 1
        assert out["variants"] == 1 and out["jobs"] == 1 and out["images"] == 1
        assert out["index_entries"] == 2 and out["user_rows"] == 1
        assert out["impressions_unlinked"] == 2

        assert rows_mentioning(env.comps.engine, "u1") == []
        assert not env.comps.images.exists(personal_key)  # type: ignore[union-attr]
        files_after = {p.name for p in images_dir(env.comps.settings).rglob("*.png")}
        assert files_after == files_before - {personal_key}
        assert env.client.get(f"/v1/images/{personal_key}").status_code == 404
        assert index.owner == {3: "u2"}
        with Session(env.comps.engine) as s:
            imps = s.exec(select(Impression)).all()
            assert len(imps) == 2 and all(i.user_id is None for i in imps)
            assert len(s.exec(select(Click)).all()) == 1  # aggregate CTR keeps its click
            seg = s.get(Segment, env.world.segment_id)
            assert seg is not None and seg.size == 1
        # Other users are untouched.
        assert "event.user_id" in rows_mentioning(env.comps.engine, "u2")

        again = env.client.delete("/v1/users/u1", headers=env.auth("admin")).json()
        assert {k: v for k, v in again.items() if k != "user_id"} == dict.fromkeys(
            ["events", "profiles", "memberships", "variants", "jobs", "images", "index_entries",
             "impressions_unlinked", "user_rows"], 0)  # fmt: skip
        # The user may come back later as a fresh shopper.
        assert (
            env.client.get("/v1/hero", params={"user_id": "u1"}, headers=s_key).status_code == 200
        )


def test_erasure_failure_keeps_rows_for_a_retry(tmp_path: Path) -> None:
    for env in build_env(tmp_path, personalize=False):

        class Broken:
            def remove_user(self, user_id: str) -> int:
                raise OSError("/secret/index/path")

        env.comps.user_indexes.append(Broken())
        r = env.client.delete("/v1/users/u2", headers=env.auth("admin"))
        assert r.status_code == 503 and "secret" not in r.text
        assert rows_mentioning(env.comps.engine, "u2")
        env.comps.user_indexes.clear()
        r = env.client.delete("/v1/users/u2", headers=env.auth("admin"))
        assert r.status_code == 200 and r.json()["events"] == 1
        assert rows_mentioning(env.comps.engine, "u2") == []


def test_sweep_erases_rows_written_after_an_erasure(tmp_path: Path) -> None:
    """A profile build that read the user list before an erasure writes a row afterwards: the
    sweep finds the tombstoned user and erases it again; other users are untouched."""
    from typer.testing import CliRunner

    from api.cli import app
    from data.models import TasteProfileRecord

    for env in build_env(tmp_path, personalize=False):
        assert env.client.delete("/v1/users/u2", headers=env.auth("admin")).status_code == 200
        with Session(env.comps.engine) as s:
            s.add(TasteProfileRecord(user_id="u2", profile_hash="late", data={"late": True}))
            s.commit()
        assert rows_mentioning(env.comps.engine, "u2") == ["tasteprofilerecord.user_id"]
        env.comps.settings.api.user_hash_secret = None
        import os

        os.environ["TAILORSHOT_HOME"] = str(env.home)
        try:
            out = CliRunner().invoke(app, ["erasure-sweep", "--json"])
        finally:
            del os.environ["TAILORSHOT_HOME"]
        assert out.exit_code == 0, out.output
        assert '"profiles": 1' in out.stdout
        assert rows_mentioning(env.comps.engine, "u2") == []
        assert "event.user_id" in rows_mentioning(env.comps.engine, "u1")


def test_a_live_job_keeps_its_row_until_it_stops(tmp_path: Path) -> None:
    """Step 4 never deletes the row of a queued or running job of the user (a worker that
    then completes it would leave its image behind, referenced by nothing): the erasure
    answers 503 and keeps everything; once the job has finished, a retry erases the job, its
    image and the rest."""
    import pytest

    from api.services.erasure import JobsStillLive, erase_user
    from data.models import GenerationJob
    from genservice.jobs import JobQueue

    for env in build_env(tmp_path, personalize=False, erasure_job_wait_s=0.0):
        engine, images = env.comps.engine, env.comps.images
        assert images is not None
        with Session(engine) as s:
            s.add(GenerationJob(id="job-live", brief_hash="h-live", brief={"user": "u2"},
                                status=JobStatus.running, worker_id="w1", attempts=1))  # fmt: skip
            s.add(CreativeVariant(user_id="u2", product_id=env.world.product_ids[0],
                                  placement="banner", brief_hash="h-live", job_id="job-live"))  # fmt: skip
            s.commit()
        with Session(engine) as s, pytest.raises(JobsStillLive):
            erase_user(s, user_id="u2", images=images)
        assert "event.user_id" in rows_mentioning(engine, "u2")
        r = env.client.delete("/v1/users/u2", headers=env.auth("admin"))
        assert r.status_code == 503 and r.headers["retry-after"]
        # The worker finishes: its image is stored and the job succeeds with it.
        key = images.put(png_bytes((9, 9, 9)), "image/png")
        assert JobQueue(engine).complete("job-live", worker_id="w1", result_key=key, attempt=1)
        r = env.client.delete("/v1/users/u2", headers=env.auth("admin"))
        assert r.status_code == 200, r.text
        assert r.json()["jobs"] == 1 and r.json()["images"] == 1
        assert not images.exists(key) and rows_mentioning(engine, "u2") == []


def test_import_refuses_events_of_an_erased_shopper(tmp_path: Path) -> None:
    """``tailorshot import events`` after an erasure: the erased shopper's rows are reported as
    bad (without the id) and neither the user nor an event comes back; others load."""
    import json
    import os

    from typer.testing import CliRunner

    from api.cli import app
    from data.ingest.events import ERASED_USER_REASON
    from data.models import Event, Product, User

    for env in build_env(tmp_path, personalize=False):
        assert env.client.delete("/v1/users/u2", headers=env.auth("admin")).status_code == 200
        with Session(env.comps.engine) as s:
            sku = s.exec(select(Product.sku)).first()
            u1_before = len(s.exec(select(Event).where(Event.user_id == "u1")).all())
        export = tmp_path / "events.csv"
        export.write_text(
            "event_id,user_id,sku,kind,ts\n"
            f"late-1,u2,{sku},view,2026-03-01T10:00:00Z\n"
            f"late-2,u1,{sku},view,2026-03-01T10:01:00Z\n"
            f"late-3,u2,{sku},purchase,2026-03-01T10:02:00Z\n"
        )
        env.comps.settings.api.user_hash_secret = None
        os.environ["TAILORSHOT_HOME"] = str(env.home)
        try:
            out = CliRunner().invoke(app, ["import", "events", str(export), "--json"])
        finally:
            del os.environ["TAILORSHOT_HOME"]
        assert out.exit_code == 0, out.output
        report = json.loads(out.stdout[out.stdout.index("{") :])
        assert report["written"] == 1 and report["bad"] == 2, report
        assert [(b["row"], b["reason"]) for b in report["bad_rows"]] == [
            (2, ERASED_USER_REASON),
            (4, ERASED_USER_REASON),
        ]
        assert "u2" not in out.stdout
        assert rows_mentioning(env.comps.engine, "u2") == []
        with Session(env.comps.engine) as s:
            assert s.get(User, "u2") is None
            u1_after = len(s.exec(select(Event).where(Event.user_id == "u1")).all())
        assert u1_after == u1_before + 1
