"""``/v1/creations``: a creation is a job on the generation queue (202, idempotent by body
and by Idempotency-Key, cancel); a succeeded creation's candidate is saved as a draft
product image marked generated (API field and PNG metadata), never replacing the product's
imported photo."""

from __future__ import annotations

import base64
import io

from apitest_helpers import Env
from PIL import Image, ImageDraw
from sqlmodel import Session

from data.models import JobStatus, Product
from genservice.creation.handler import run_creation
from genservice.creation.pipeline import creation_metadata, encode_png, is_generated
from genservice.creation.request import CreationRequest
from genservice.jobs import JobQueue


class FakeCreator:
    """Stores ``n`` flat candidates, marked generated, like the real creator."""

    def __init__(self, images) -> None:  # type: ignore[no-untyped-def]
        self.images = images

    def create(self, request, *, sketch=None, progress=None, should_cancel=None):  # type: ignore[no-untyped-def]
        class Cand:
            def __init__(self, key: str, up: float) -> None:
                self.key, self.product_upscale = key, up

        class Out:
            pass

        out = Out()
        cands = []
        for i in range(request.n):
            im = Image.new("RGB", (request.size, request.size), (255, 255, 255))
            ImageDraw.Draw(im).ellipse((20, 20, 44, 44), fill=(200, 30 + 40 * i, 40))
            meta = creation_metadata(
                model="fake", seed=request.seed + i, prompt=request.prompt, source="text"
            )
            cands.append(Cand(self.images.put(encode_png(im, meta), "image/png"), 1.1))
        out.candidates = cands  # type: ignore[attr-defined]
        out.keys = [c.key for c in cands]  # type: ignore[attr-defined]
        out.timings = {"diffusion_s": 0.0}  # type: ignore[attr-defined]
        out.source = "sketch-img2img" if sketch is not None else "text"  # type: ignore[attr-defined]
        return out


def _run_next(env: Env) -> None:
    """What the worker does with the next queued creation job (with a fake creator)."""
    queue = env.comps.jobs
    assert isinstance(queue, JobQueue) and env.comps.images is not None
    job = queue.claim(worker_id="w")
    assert job is not None
    res = run_creation(job.brief, FakeCreator(env.comps.images), env.comps.images)
    assert queue.complete(
        job.id, worker_id="w", result_key=res.result_key, timings=res.timings, attempt=job.attempts
    )


def _sketch_b64() -> str:
    im = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(im).rectangle((16, 16, 47, 47), outline="black", width=2)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_creation_job_candidates_and_a_generated_draft(env: Env) -> None:
    m = env.auth("marketer")
    body = {"text": "a red leather handbag", "n": 2, "size": 128, "seed": 3}
    r = env.client.post("/v1/creations", json=body, headers={**m, "Idempotency-Key": "c-1"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and job["candidates"] == [] and job["generated"] is True
    assert r.headers["location"] == f"/v1/creations/{job['id']}"
    # Same body: the same job; same key with another body: 409.
    assert env.client.post("/v1/creations", json=body, headers=m).json()["id"] == job["id"]
    other = {**body, "seed": 4}
    bad = env.client.post("/v1/creations", json=other, headers={**m, "Idempotency-Key": "c-1"})
    assert bad.status_code == 409
    # The shape guide is on by default; turning it off is another request.
    on = env.client.post("/v1/creations", json={**body, "shape_guide": True}, headers=m)
    off = env.client.post("/v1/creations", json={**body, "shape_guide": False}, headers=m)
    assert on.json()["id"] == job["id"] and off.status_code == 202 and off.json()["id"] != job["id"]
    # Not done yet: nothing to save.
    early = env.client.post(f"/v1/creations/{job['id']}/drafts", json={"candidate": 0}, headers=m)
    assert early.status_code == 409

    _run_next(env)
    got = env.client.get(f"/v1/creations/{job['id']}", headers=m).json()
    assert got["status"] == "succeeded" and got["conditioning"] == "text"
    assert [c["seed"] for c in got["candidates"]] == [3, 4]
    png = env.client.get(got["candidates"][1]["image_url"]).content
    assert is_generated(png)

    pid = env.world.product_ids[0]
    with Session(env.comps.engine) as s:
        before = s.get(Product, pid)
        assert before is not None and before.image
        photo = before.image
    url = f"/v1/creations/{job['id']}/drafts"
    saved = env.client.post(url, json={"candidate": 1, "product_id": pid}, headers=m)
    assert saved.status_code == 201, saved.text
    row = saved.json()
    assert row["generated"] is True and row["status"] == "draft" and row["product_id"] == pid
    assert row["image_url"] == got["candidates"][1]["image_url"]
    assert row["details"]["seed"] == 4 and row["details"]["product_upscale"] == 1.1
    again = env.client.post(url, json={"candidate": 1, "product_id": pid}, headers=m)
    assert again.status_code == 200 and again.json()["id"] == row["id"]
    assert env.client.post(url, json={"candidate": 5}, headers=m).status_code == 404
    missing = env.client.post(url, json={"candidate": 0, "product_id": 10**9}, headers=m)
    assert missing.status_code == 404
    # The imported photo stays the product's image.
    with Session(env.comps.engine) as s:
        after = s.get(Product, pid)
        assert after is not None and after.image == photo
    listed = env.client.get(f"/v1/product-images?product_id={pid}&generated=true", headers=m)
    assert [i["id"] for i in listed.json()["items"]] == [row["id"]]
    assert env.client.get("/v1/product-images?generated=false", headers=m).json()["items"] == []


def test_creation_validation_sketch_cancel_and_roles(env: Env) -> None:
    m = env.auth("marketer")
    post = env.client.post
    assert post("/v1/creations", json={"text": "free nudes"}, headers=m).status_code == 422
    assert post("/v1/creations", json={"text": "mug", "n": 9}, headers=m).status_code == 422
    assert (
        post("/v1/creations", json={"text": "mug", "background": "pink"}, headers=m).status_code
        == 422
    )
    assert (
        post("/v1/creations", json={"text": "mug", "sketch_png": "%%%"}, headers=m).status_code
        == 422
    )
    notimg = base64.b64encode(b"not an image").decode()
    assert (
        post("/v1/creations", json={"text": "mug", "sketch_png": notimg}, headers=m).status_code
        == 422
    )
    assert (
        post("/v1/creations", json={"text": "mug"}, headers=env.auth("storefront")).status_code
        == 403
    )
    # A sketch is stored and named by the job; the job runs it.
    r = post("/v1/creations", json={"text": "a blue mug", "n": 1, "size": 96,
                                    "sketch_png": _sketch_b64()}, headers=m)  # fmt: skip
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["sketch_url"] and env.client.get(job["sketch_url"]).status_code == 200
    _run_next(env)
    done = env.client.get(f"/v1/creations/{job['id']}", headers=m).json()
    assert done["conditioning"] == "sketch-img2img" and len(done["candidates"]) == 1
    # Cancel a queued one.
    q = post("/v1/creations", json={"text": "a green lamp", "n": 1}, headers=m).json()
    c = env.client.delete(f"/v1/creations/{q['id']}", headers=m)
    assert c.status_code == 200 and c.json()["status"] == JobStatus.cancelled
    assert env.client.get("/v1/creations/nope", headers=m).status_code == 404


def test_payload_is_a_creation_request() -> None:
    req = CreationRequest(text="a mug", n=1)
    assert CreationRequest.from_payload(req.to_payload()).prompt == "a mug, in a photo studio"
