"""``/v1/edits``: a marketer's edit is a job on the generation queue (202, idempotent by
content and by Idempotency-Key, progress, cancel); the edited PNG keeps every pixel outside
the product's mask; a succeeded edit is saved as a draft variant, approved like any other."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
from apitest_helpers import Env, build_env
from edit_helpers import BACKDROP, add_subject_product, subject_image, wait_status
from PIL import Image
from sqlmodel import Session, select
from typer.testing import CliRunner

from data.models import CreativeVariant, GenerationJob, JobStatus, VariantChange, VariantStatus
from genservice.edits.metrics import recolor_scores


def test_edit_job_runs_and_saves_a_draft_variant(tmp_path: Path) -> None:
    for env in build_env(tmp_path, worker=True, personalize=False):
        m = env.auth("marketer")
        pid = add_subject_product(env)
        body = {"product_id": pid, "op": "recolor", "params": {"colour": "#1f4fd1"}}
        r = env.client.post("/v1/edits", json=body, headers={**m, "Idempotency-Key": "e-1"})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["ops"] == ["recolor"] and job["params"] == [{"colour": "#1f4fd1"}]
        assert r.headers["location"] == f"/v1/edits/{job['id']}"
        wait_status(env, job["id"], JobStatus.succeeded)
        got = env.client.get(f"/v1/edits/{job['id']}", headers=m).json()
        assert (got["progress_step"], got["progress_total"]) == (1, 1)
        before = Image.open(io.BytesIO(env.client.get(got["source_url"]).content)).convert("RGB")
        after_png = env.client.get(got["image_url"]).content
        after_img = Image.open(io.BytesIO(after_png))
        assert after_img.text["tailorshot:edit_op"] == "recolor"  # type: ignore[attr-defined]
        src = np.asarray(before)
        out = np.asarray(after_img.convert("RGB"))
        assert np.array_equal(src, np.asarray(subject_image()))
        # Away from the product (backdrop over 6 px from its edge) nothing changed, bit-exact.
        yy, xx = np.mgrid[:96, :96]
        far = ((xx - 48) / 30.0) ** 2 + ((yy - 50) / 36.0) ** 2 > 1.0
        assert (src[far] == np.array(BACKDROP)).all()
        assert np.array_equal(out[far], src[far])
        # Inside the ellipse: the mean colour moved to the target (ΔE2000 ≤ 10).
        inner = ((xx - 48) / 20.0) ** 2 + ((yy - 50) / 26.0) ** 2 <= 1.0
        scores = recolor_scores(before, after_img.convert("RGB"), inner.astype(np.float32),
                                (0x1F, 0x4F, 0xD1))  # fmt: skip
        assert scores["delta_e"] <= 10.0, scores

        # Same edit again (no key): the same job, nothing rerun.
        again = env.client.post("/v1/edits", json=body, headers=m)
        assert again.status_code == 202 and again.json()["id"] == job["id"]
        # Same key, another body: 409.
        other = {**body, "params": {"colour": "green"}}
        r409 = env.client.post("/v1/edits", json=other, headers={**m, "Idempotency-Key": "e-1"})
        assert r409.status_code == 409

        saved = env.client.post(f"/v1/edits/{job['id']}/variant", json={}, headers=m)
        assert saved.status_code == 201, saved.text
        v = saved.json()
        assert v["status"] == "draft" and v["product_id"] == pid
        assert v["image_url"] == got["image_url"] and v["user_id"] is None
        assert env.client.post(f"/v1/edits/{job['id']}/variant", headers=m).json()["id"] == v["id"]
        ok = env.client.post(f"/v1/variants/{v['id']}/approve", headers=m)
        assert ok.status_code == 200 and ok.json()["status"] == "approved"
        with Session(env.comps.engine) as s:
            row = s.get(CreativeVariant, v["id"])
            assert row is not None and row.status == VariantStatus.approved
            actions = [c.action for c in s.exec(select(VariantChange).where(
                VariantChange.variant_id == v["id"]))]  # fmt: skip
            assert actions == ["create", "approve"]
            assert len(s.exec(select(GenerationJob)).all()) == 1


def test_edit_validation_unknowns_and_cancel(env: Env) -> None:
    m = env.auth("marketer")
    pid = add_subject_product(env)
    post = env.client.post
    bad_colour = {"product_id": pid, "op": "recolor", "params": {"colour": "not-a-colour"}}
    assert post("/v1/edits", json=bad_colour, headers=m).status_code == 422
    bad_texture = {"product_id": pid, "op": "material", "params": {"texture": "lava"}}
    assert post("/v1/edits", json=bad_texture, headers=m).status_code == 422
    no_colour = {"product_id": pid, "op": "recolor"}
    assert post("/v1/edits", json=no_colour, headers=m).status_code == 422
    unknown_param = {"product_id": pid, "op": "adjust", "params": {"gamma": 2}}
    assert post("/v1/edits", json=unknown_param, headers=m).status_code == 422
    missing = {"product_id": 999999, "op": "adjust", "params": {"brightness": 1.2}}
    assert post("/v1/edits", json=missing, headers=m).status_code == 404
    # Storefront keys may not edit.
    ok_body = {"product_id": pid, "op": "background", "params": {"studio": "white"}}
    assert post("/v1/edits", json=ok_body, headers=env.auth("storefront")).status_code == 403
    r = post("/v1/edits", json=ok_body, headers=m)
    assert r.status_code == 202 and r.json()["status"] == "queued"  # no worker here
    jid = r.json()["id"]
    # Not succeeded: cannot be saved.
    assert post(f"/v1/edits/{jid}/variant", headers=m).status_code == 409
    c = env.client.delete(f"/v1/edits/{jid}", headers=m)
    assert c.status_code == 200 and c.json()["status"] == "cancelled"
    assert env.client.get("/v1/edits/nope", headers=m).status_code == 404
    # A hero generation job is not an edit.
    g = post("/v1/generations", json={"product_id": env.world.product_ids[0]}, headers=m)
    assert env.client.get(f"/v1/edits/{g.json()['id']}", headers=m).status_code == 404


def test_edit_chain_runs_in_order_with_progress_cancel_and_metadata() -> None:
    """genservice.edits.jobs.run_edit: material, recolor and backdrop in one job, one
    progress step each; the product's pixels change, the metadata names the chain; a cancel
    between steps stops it."""
    import pytest

    from genservice.edits.base import parse_colour
    from genservice.edits.jobs import edit_payload, payload_hash, run_edit
    from genservice.errors import JobCancelled

    class Store:
        def __init__(self) -> None:
            self.data: dict[str, bytes] = {}

        def put(self, data: bytes, content_type: str) -> str:
            key = f"{len(self.data):064d}.png"
            self.data[key] = data
            return key

        def get(self, key: str) -> bytes:
            return self.data[key]

    store = Store()
    buf = io.BytesIO()
    subject_image().save(buf, format="PNG")
    src_key = store.put(buf.getvalue(), "image/png")
    steps = [
        {"op": "material", "params": {"texture": "denim", "scale": 1.0, "seed": 0}},
        {"op": "recolor", "params": {"colour": "navy"}},
        {"op": "background", "params": {"studio": "white", "gradient": 0.0, "shadow": 0.0}},
    ]
    payload = edit_payload(source_key=src_key, steps=steps)
    assert payload_hash(payload) == payload_hash(edit_payload(source_key=src_key, steps=steps))
    seen: list[tuple[int, int]] = []
    res = run_edit(payload, store, progress=lambda a, b: seen.append((a, b)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert list(res.timings) == ["edit_1_material_s", "edit_2_recolor_s", "edit_3_background_s"]
    out_img = Image.open(io.BytesIO(store.get(res.result_key)))
    assert out_img.text["tailorshot:edit_op"] == "material+recolor+background"  # type: ignore[attr-defined]
    out = np.asarray(out_img.convert("RGB")).astype(int)
    # Far from the product the backdrop is the studio colour ("white" of the colour vocabulary).
    assert (out[2:10, 2:10] == np.array(parse_colour("white"))).all()
    centre = out[40:60, 40:56].reshape(-1, 3).mean(axis=0)
    assert centre[2] > centre[0]  # navy denim, no longer red
    calls = iter([False, True])
    with pytest.raises(JobCancelled):
        run_edit(payload, store, should_cancel=lambda: next(calls))


def test_tailorshot_worker_runs_edit_jobs(tmp_path: Path, monkeypatch: Any) -> None:
    """``tailorshot worker`` processes (api.composition.build_job_handler) run edit jobs too."""
    import api.composition
    from api.cli import app
    from api.composition import build_image_store
    from api.settings import Settings
    from data.db import init_db, make_engine
    from genservice.edits.jobs import edit_payload, payload_hash
    from genservice.jobs import JobQueue

    monkeypatch.setenv("TAILORSHOT_HOME", str(tmp_path))
    monkeypatch.delenv("TAILORSHOT_DATABASE_URL", raising=False)
    monkeypatch.setattr(api.composition, "load_generator", lambda settings: object())
    engine = make_engine(f"sqlite:///{(tmp_path / 'tailorshot.db').resolve()}")
    init_db(engine)
    store = build_image_store(Settings(home=tmp_path))
    buf = io.BytesIO()
    subject_image().save(buf, format="PNG")
    payload = edit_payload(
        source_key=store.put(buf.getvalue(), "image/png"),
        steps=[{"op": "adjust", "params": {"brightness": 1.2}}],
    )
    job_id = JobQueue(engine).submit(brief_hash=payload_hash(payload), brief=payload).job.id
    gen_logger = logging.getLogger("genservice")
    saved = (list(gen_logger.handlers), gen_logger.propagate, gen_logger.level)
    try:
        result = CliRunner().invoke(app, ["worker", "--once", "--poll-interval", "0.01"])
    finally:
        gen_logger.handlers[:], gen_logger.propagate = saved[0], saved[1]
        gen_logger.setLevel(saved[2])
    assert result.exit_code == 0, result.output
    job = JobQueue(engine).get(job_id)
    assert job is not None and job.status == JobStatus.succeeded and job.result_key
    out = np.asarray(Image.open(io.BytesIO(store.get(job.result_key))).convert("RGB"))
    assert out.astype(int).mean() > np.asarray(subject_image()).astype(int).mean()  # brighter


def test_background_from_a_prompt_or_a_taste_profile_queues_terms_not_users(env: Env) -> None:
    """``op: background`` with ``prompt`` or ``user_id``: the job carries the prompt or the
    user's approved style terms (a profile's unreviewed terms dropped; the segment's when the
    profile has none), never the user id; refusals are 422."""
    import json

    from data.models import TasteProfileRecord

    m = env.auth("marketer")
    pid = add_subject_product(env)
    post = env.client.post
    with Session(env.comps.engine) as s:
        profile = {
            "user_id": "u2", "embedding": [1.0, 0.0], "interests": [], "reference_ids": [],
            "style_terms": [["beach", "setting", 2.0], ["red", "colour", 1.2],
                            ["unreviewed-term", "style", 0.9]],
            "source": "history", "n_events": 3,
        }  # fmt: skip
        s.add(TasteProfileRecord(user_id="u2", profile_hash="h2", data=profile))
        s.commit()
    cases = {
        "u1": ["red", "minimal"],  # unreadable profile: the segment's reviewed terms
        "u2": ["red"],  # the profile's terms, only those a marketer approved
    }
    for user, terms in cases.items():
        body = {"product_id": pid, "op": "background", "params": {"user_id": user, "seed": 4}}
        r = post("/v1/edits", json=body, headers=m)
        assert r.status_code == 202, r.text
        assert r.json()["params"] == [{"terms": terms, "seed": 4, "shadow": 0.35}]
        job = env.comps.jobs.get(r.json()["id"])  # type: ignore[union-attr]
        assert job is not None and user not in json.dumps(job.brief)
    body = {"product_id": pid, "op": "background", "params": {"prompt": "Beach, golden hour"}}
    r = post("/v1/edits", json=body, headers=m)
    assert r.status_code == 202 and r.json()["params"][0]["prompt"] == "beach, golden hour"
    for params, msg in (
        ({"user_id": "u3"}, "no taste profile"),  # no profile, no segment
        ({"prompt": "beach", "studio": "white"}, "exactly one of"),
        ({"prompt": " , , "}, "scene words"),
    ):
        r = post("/v1/edits", json={"product_id": pid, "op": "background", "params": params},
                 headers=m)  # fmt: skip
        assert r.status_code == 422 and msg in r.text, (params, r.text)


def test_mask_part_is_checked_and_recolours_only_the_part(tmp_path: Path) -> None:
    """``mask_part``: a recolour of the highlight (``colour:`` region) changes only it;
    unknown parts and parts of ops that take none are 422."""
    for env in build_env(tmp_path, worker=True, personalize=False):
        m = env.auth("marketer")
        pid = add_subject_product(env)
        post = env.client.post
        params = {"colour": "#1f4fd1", "mask_part": "colour:#e15a5a:12"}
        r = post("/v1/edits", json={"product_id": pid, "op": "recolor", "params": params},
                 headers=m)  # fmt: skip
        assert r.status_code == 202, r.text
        assert r.json()["params"] == [{"colour": "#1f4fd1", "part": "colour:#e15a5a:12"}]
        wait_status(env, r.json()["id"], JobStatus.succeeded)
        got = env.client.get(f"/v1/edits/{r.json()['id']}", headers=m).json()
        out = np.asarray(Image.open(io.BytesIO(env.client.get(got["image_url"]).content)))
        src = np.asarray(subject_image())
        changed = (out[..., :3] != src).any(axis=-1)
        yy, xx = np.mgrid[:96, :96]
        highlight = ((xx - 44) / 9.0) ** 2 + ((yy - 38) / 9.0) ** 2 <= 1.0
        assert changed.any() and not changed[~highlight].any()  # only the highlight
        for bad in (
            {"op": "recolor", "params": {"colour": "red", "mask_part": "middle"}},
            {"op": "adjust", "params": {"brightness": 1.1, "mask_part": "top"}},
            {"op": "recolor", "params": {"colour": "red", "mask_part": "top:2"}},
        ):
            r = post("/v1/edits", json={"product_id": pid, **bad}, headers=m)
            assert r.status_code == 422, (bad, r.text)
