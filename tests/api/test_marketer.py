"""Marketer and generation routes: previews become jobs and draft variants; only approved
variants reach the storefront; edits regenerate; every change is audited; generations are
idempotent (brief hash and Idempotency-Key) and cancellable."""

from __future__ import annotations

import time
from pathlib import Path

from apitest_helpers import Env, build_env
from sqlmodel import Session, select

from data.models import CreativeVariant, GenerationJob, JobStatus, VariantStatus


def wait_job(env: Env, job_id: str, status: JobStatus, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = env.comps.jobs.get(job_id)  # type: ignore[union-attr]
        if job is not None and job.status == status:
            return
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not reach {status}")


def test_segments_list_terms_size_examples(env: Env) -> None:
    r = env.client.get("/v1/segments", headers=env.auth("marketer"))
    assert r.status_code == 200
    [seg] = r.json()["data"]
    assert seg["id"] == env.world.segment_id and seg["size"] == 2
    assert seg["terms"] == [["red", 1.5], ["minimal", 0.7]]
    assert seg["example_product_ids"] == env.world.product_ids[:2]


def test_preview_approve_serves_and_history(tmp_path: Path) -> None:
    for env in build_env(tmp_path, worker=True, personalize=False):
        m = env.auth("marketer")
        pid = env.world.product_ids[2]
        url = f"/v1/segments/{env.world.segment_id}/previews"
        r = env.client.post(
            url, json={"product_id": pid, "n": 2, "placement": "square", "seed": 7}, headers=m
        )
        assert r.status_code == 202, r.text
        variants = r.json()["data"]
        assert [v["status"] for v in variants] == ["draft", "draft"]
        assert len({v["brief_hash"] for v in variants}) == 2 and all(v["job_id"] for v in variants)
        # The same request again: the same variants, no new jobs.
        again = env.client.post(
            url, json={"product_id": pid, "n": 2, "placement": "square", "seed": 7}, headers=m
        )
        assert [v["id"] for v in again.json()["data"]] == [v["id"] for v in variants]
        vid = variants[0]["id"]
        # Not approvable before its image exists... (the worker may already be done)
        for v in variants:
            wait_job(env, v["job_id"], JobStatus.succeeded)
        # Drafts never reach the storefront.
        s = env.auth("storefront")
        assert (
            env.client.get(
                "/v1/hero", params={"user_id": "u1", "placement": "square"}, headers=s
            ).status_code
            == 404
        )
        listed = env.client.get(
            "/v1/variants",
            params={"segment_id": env.world.segment_id, "status": "draft"},
            headers=m,
        ).json()
        by_id = {v["id"]: v for v in listed["data"]}
        assert by_id[vid]["image_url"].startswith("/v1/images/")
        r = env.client.post(f"/v1/variants/{vid}/approve", headers=m)
        assert r.status_code == 200 and r.json()["status"] == "approved"
        hero = env.client.get(
            "/v1/hero", params={"user_id": "u1", "placement": "square"}, headers=s
        ).json()
        assert hero["variant_id"] == vid and hero["propensity"] == 1.0
        # Retire: the storefront stops serving it; retired cannot be approved again.
        assert (
            env.client.post(f"/v1/variants/{vid}/retire", headers=m).json()["status"] == "retired"
        )
        assert (
            env.client.get(
                "/v1/hero", params={"user_id": "u1", "placement": "square"}, headers=s
            ).status_code
            == 404
        )
        assert env.client.post(f"/v1/variants/{vid}/approve", headers=m).status_code == 409
        hist = env.client.get(f"/v1/variants/{vid}/history", headers=m).json()["data"]
        assert [h["action"] for h in hist] == ["create", "approve", "retire"]
        assert all(h["actor"] == "marketer:test-marketer" for h in hist)
        # Admin may do marketer things; recorded under the admin's name.
        other = variants[1]["id"]
        assert (
            env.client.post(f"/v1/variants/{other}/approve", headers=env.auth("admin")).status_code
            == 200
        )
        hist = env.client.get(f"/v1/variants/{other}/history", headers=m).json()["data"]
        assert hist[-1]["actor"] == "admin:test-admin"


def test_edit_regenerates_and_returns_to_draft(tmp_path: Path) -> None:
    for env in build_env(tmp_path, worker=True, personalize=False):
        m = env.auth("marketer")
        vid = env.world.segment_variant_ids[0]
        with Session(env.comps.engine) as s:
            before = s.get(CreativeVariant, vid)
            assert before is not None and before.status == VariantStatus.approved
        body = {
            "terms": [{"term": "teal", "weight": 2.0}, {"term": "velvet"}],
            "prompt_template": "{product} in a {terms} room",
        }
        # An unknown placeholder is refused at submit (the worker would fail every retry).
        r = env.client.patch(f"/v1/variants/{vid}", json=body, headers=m)
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "prompt_template"]
        assert "placeholders" in r.json()["detail"][0]["msg"]
        body["prompt_template"] = "{title} in a {terms} room"
        r = env.client.patch(f"/v1/variants/{vid}", json=body, headers=m)
        assert r.status_code == 202, r.text
        out = r.json()
        assert out["status"] == "draft" and out["image_url"] is None
        assert out["terms"] == [["teal", 2.0], ["velvet", 1.0]]
        assert out["prompt_template"] == "{title} in a {terms} room"
        wait_job(env, out["job_id"], JobStatus.succeeded)
        assert env.client.post(f"/v1/variants/{vid}/approve", headers=m).status_code == 200
        hist = env.client.get(f"/v1/variants/{vid}/history", headers=m).json()["data"]
        assert [h["action"] for h in hist] == ["edit", "approve"]
        assert hist[0]["detail"]["before"]["brief_hash"] == "seg0"
        assert hist[0]["detail"]["after"]["terms"] == [["teal", 2.0], ["velvet", 1.0]]
        assert env.client.patch(f"/v1/variants/{vid}", json={}, headers=m).status_code == 422
        assert env.client.patch("/v1/variants/999999", json=body, headers=m).status_code == 404
        bad = {"terms": [{"term": "x" * 65}]}
        assert env.client.patch(f"/v1/variants/{vid}", json=bad, headers=m).status_code == 422


def test_approve_without_image_is_409(env: Env) -> None:
    m = env.auth("marketer")
    r = env.client.post(
        f"/v1/segments/{env.world.segment_id}/previews",
        json={"product_id": env.world.product_ids[0], "n": 1},
        headers=m,
    )
    vid = r.json()["data"][0]["id"]  # no worker runs in this env: the image never comes
    assert env.client.post(f"/v1/variants/{vid}/approve", headers=m).status_code == 409
    assert (
        env.client.post("/v1/segments/999/previews", json={"product_id": 1}, headers=m).status_code
        == 404
    )
    assert (
        env.client.post(
            f"/v1/segments/{env.world.segment_id}/previews",
            json={"product_id": 1, "n": 9},
            headers=m,
        ).status_code
        == 422
    )


def test_generations_idempotency_progress_cancel(env: Env) -> None:
    m = env.auth("marketer")
    body = {
        "product_id": env.world.product_ids[0],
        "terms": [{"term": "neon", "weight": 1.5}],
        "seed": 3,
    }
    r1 = env.client.post("/v1/generations", json=body, headers={**m, "Idempotency-Key": "k-1"})
    assert r1.status_code == 202, r1.text
    job = r1.json()
    assert job["status"] == "queued" and job["progress_total"] == 0
    assert r1.headers["location"] == f"/v1/generations/{job['id']}"
    # Same key, same body: the same job. Same body without a key: the same job (brief hash).
    r2 = env.client.post("/v1/generations", json=body, headers={**m, "Idempotency-Key": "k-1"})
    r3 = env.client.post("/v1/generations", json=body, headers=m)
    assert r2.json()["id"] == r3.json()["id"] == job["id"]
    # Same key, another body: rejected.
    other = {**body, "seed": 4}
    r4 = env.client.post("/v1/generations", json=other, headers={**m, "Idempotency-Key": "k-1"})
    assert r4.status_code == 409
    # Another key with the other body: a new job.
    r5 = env.client.post("/v1/generations", json=other, headers={**m, "Idempotency-Key": "k-2"})
    assert r5.status_code == 202 and r5.json()["id"] != job["id"]
    got = env.client.get(f"/v1/generations/{job['id']}", headers=m).json()
    assert got["id"] == job["id"] and got["status"] == "queued"
    r = env.client.delete(f"/v1/generations/{job['id']}", headers=m)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert env.client.get("/v1/generations/nope", headers=m).status_code == 404
    assert env.client.delete("/v1/generations/nope", headers=m).status_code == 404
    assert (
        env.client.post(
            "/v1/generations", json={**body, "product_id": 424242}, headers=m
        ).status_code
        == 404
    )
    with Session(env.comps.engine) as s:
        assert len(s.exec(select(GenerationJob)).all()) == 2


def test_generation_runs_with_progress_and_image(tmp_path: Path) -> None:
    for env in build_env(tmp_path, worker=True, personalize=False):
        m = env.auth("marketer")
        r = env.client.post(
            "/v1/generations", json={"product_id": env.world.product_ids[1]}, headers=m
        )
        jid = r.json()["id"]
        wait_job(env, jid, JobStatus.succeeded)
        got = env.client.get(f"/v1/generations/{jid}", headers=m).json()
        assert (got["progress_step"], got["progress_total"]) == (4, 4)
        img = env.client.get(got["image_url"])
        assert img.status_code == 200 and img.content[:4] == b"\x89PNG"
        text = env.client.get("/metrics").text
        assert 'tailorshot_generation_job_duration_seconds_count{status="succeeded"} 1.0' in text
