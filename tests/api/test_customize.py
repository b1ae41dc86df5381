"""``/v1/customize``: a shopper's choice among the product's allowed options is rendered
once (cached by the choice's hash), a choice outside them is 422, each answer is an
impression with policy ``customized`` and propensity 1, the shopper is rate-limited, and
erasure removes the shopper's customised images and rows."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from apitest_helpers import Env, build_env
from edit_helpers import add_subject_product, wait_status
from PIL import Image
from sqlmodel import Session, col, select

from data.models import CreativeVariant, GenerationJob, Impression, JobStatus


def _options(env: Env, pid: int, **lists: list[str]) -> dict[str, object]:
    r = env.client.put(
        f"/v1/products/{pid}/customization", json=lists, headers=env.auth("marketer")
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_same_choice_runs_one_job_and_is_cached(tmp_path: Path) -> None:
    for env in build_env(tmp_path, worker=True, personalize=False):
        pid = add_subject_product(env, sku="pouch", colour="red")
        opts = _options(env, pid, colour=["navy", "#1F4FD1"], background=["white"])
        assert opts["allowed"]["colour"] == ["navy", "#1f4fd1", "red"]  # type: ignore[index]
        sf = env.auth("storefront")
        body = {"user_id": "u1", "sku": "pouch", "choices": {"colour": "Navy"}}
        first = env.client.post("/v1/customize", json=body, headers=sf)
        assert first.status_code == 202, first.text
        job_id = first.json()["job_id"]
        assert first.headers["location"] == f"/v1/customize/{job_id}"
        wait_status(env, job_id, JobStatus.succeeded)
        polled = env.client.get(f"/v1/customize/{job_id}", headers=sf).json()
        assert polled["status"] == "succeeded" and polled["image_url"]
        # The same choice again (by the same and by another shopper): cached, no new job.
        again = env.client.post("/v1/customize", json=body, headers=sf)
        other = env.client.post("/v1/customize", json={**body, "user_id": "u2"}, headers=sf)
        for r in (again, other):
            assert r.status_code == 200, r.text
            got = r.json()
            assert got["cached"] and got["job_id"] == job_id
            assert got["image_url"] == polled["image_url"]
        img = Image.open(io.BytesIO(env.client.get(polled["image_url"]).content)).convert("RGB")
        # The image vanished (an erasure of the same bytes elsewhere): the choice renders again.
        key = polled["image_url"].rsplit("/", 1)[1]
        assert env.comps.images is not None and env.comps.images.delete(key)
        redo = env.client.post("/v1/customize", json=body, headers=sf)
        assert redo.status_code == 202, redo.text
        job_id = redo.json()["job_id"]
        wait_status(env, job_id, JobStatus.succeeded)
        assert env.comps.images.exists(key)  # the same bytes again
        centre = np.asarray(img)[40:60, 40:56].reshape(-1, 3).mean(axis=0)
        assert centre[2] > centre[0]  # navy now, not red
        with Session(env.comps.engine) as s:
            assert len(s.exec(select(GenerationJob)).all()) == 1
            rows = list(
                s.exec(select(CreativeVariant).where(CreativeVariant.placement == "customized"))
            )
            assert sorted(str(v.user_id) for v in rows) == ["u1", "u2"]
            imps = s.exec(select(Impression).where(Impression.policy == "customized")).all()
            assert len(imps) == 4
            assert {(i.arm, i.propensity, i.product_id) for i in imps} == {("customized", 1.0, pid)}
            assert sorted(str(i.user_id) for i in imps) == ["u1", "u1", "u1", "u2"]
        # A customised row is never a hero candidate.
        hero = env.client.get("/v1/hero", params={"user_id": "u1"}, headers=sf).json()
        assert len(rows) == 2 and hero["variant_id"] not in {v.id for v in rows}


def test_choice_outside_the_options_is_422(env: Env) -> None:
    pid = add_subject_product(env, sku="pouch", colour="red", material="wool")
    _options(env, pid, colour=["navy"], material=["denim"])
    sf = env.auth("storefront")

    n = iter(range(100))

    def post(choices: dict[str, str], sku: str = "pouch") -> int:
        # One shopper per request: every request takes a token of its shopper's rate limit.
        body = {"user_id": f"shopper-{next(n)}", "sku": sku, "choices": choices}
        return env.client.post("/v1/customize", json=body, headers=sf).status_code

    assert post({"colour": "purple"}) == 422
    assert post({"background": "white"}) == 422  # no backdrops offered
    assert post({"material": "wool"}) == 422  # the product's own, but no texture renders it
    assert post({}) == 422
    assert post({"colour": "navy"}, sku="no-such-sku") == 404
    assert post({"colour": "red"}) == 202  # the product's own colour
    assert post({"colour": "navy", "material": "denim"}) == 202
    m = env.auth("marketer")
    bad = env.client.put(f"/v1/products/{pid}/customization", json={"material": ["lava"]},
                         headers=m)  # fmt: skip
    assert bad.status_code == 422
    assert (
        env.client.put(
            f"/v1/products/{pid}/customization", json={"colour": ["nope-colour"]}, headers=m
        ).status_code
        == 422
    )
    body = {"user_id": "u1", "sku": "pouch", "choices": {"colour": "navy"}}
    assert env.client.post("/v1/customize", json=body, headers=m).status_code == 403


def test_rate_limited_per_shopper(env: Env) -> None:
    pid = add_subject_product(env, sku="pouch", colour="red")
    _options(env, pid, colour=["navy"])
    sf = env.auth("storefront")
    body = {"user_id": "u3", "sku": "pouch", "choices": {"colour": "navy"}}
    codes = [env.client.post("/v1/customize", json=body, headers=sf).status_code for _ in range(6)]
    assert codes == [202] * 5 + [429]
    other = env.client.post("/v1/customize", json={**body, "user_id": "u2"}, headers=sf)
    assert other.status_code == 202


def test_erasure_removes_customised_images(tmp_path: Path) -> None:
    for env in build_env(tmp_path, worker=True, personalize=False):
        pid = add_subject_product(env, sku="pouch", colour="red")
        _options(env, pid, colour=["navy", "teal"], background=["white"])
        sf = env.auth("storefront")
        mine = {
            "user_id": "u1",
            "sku": "pouch",
            "choices": {"colour": "teal", "background": "white"},
        }
        shared = {"user_id": "u1", "sku": "pouch", "choices": {"colour": "navy"}}
        j1 = env.client.post("/v1/customize", json=mine, headers=sf).json()["job_id"]
        j2 = env.client.post("/v1/customize", json=shared, headers=sf).json()["job_id"]
        env.client.post("/v1/customize", json={**shared, "user_id": "u2"}, headers=sf)
        wait_status(env, j1, JobStatus.succeeded)
        wait_status(env, j2, JobStatus.succeeded)
        # u2 sees the shared picture (cached): u2's row now names the image.
        assert env.client.post(
            "/v1/customize", json={**shared, "user_id": "u2"}, headers=sf
        ).json()["cached"]
        jobs = env.comps.jobs
        assert jobs is not None and env.comps.images is not None
        k1, k2 = jobs.get(j1).result_key, jobs.get(j2).result_key  # type: ignore[union-attr]
        assert k1 and k2 and env.comps.images.exists(k1) and env.comps.images.exists(k2)
        r = env.client.delete("/v1/users/u1", headers=env.auth("admin"))
        assert r.status_code == 200, r.text
        # u1's own choice: image, job and row gone; the choice u2 shares stays for u2.
        assert not env.comps.images.exists(k1)
        assert jobs.get(j1) is None
        assert env.comps.images.exists(k2) and jobs.get(j2) is not None
        with Session(env.comps.engine) as s:
            assert not s.exec(select(CreativeVariant).where(CreativeVariant.user_id == "u1")).all()
            assert not s.exec(select(Impression).where(Impression.user_id == "u1")).all()
            n_u2 = s.exec(select(CreativeVariant).where(col(CreativeVariant.user_id) == "u2")).all()
            assert len(n_u2) == 1


def test_background_scene_from_a_marketer_approved_prompt(env: Env) -> None:
    """A store may offer scene prompts as backgrounds: the choice becomes a generated-scene
    step (prompt, seed 0); a prompt nobody approved is 422, as is an unusable one."""
    pid = add_subject_product(env, sku="pouch", colour="red")
    opts = _options(env, pid, background=["white", "Beach, golden hour"])
    assert opts["allowed"]["background"] == ["white", "beach, golden hour"]  # type: ignore[index]
    sf = env.auth("storefront")
    body = {"user_id": "u2", "sku": "pouch", "choices": {"background": "beach, golden hour"}}
    r = env.client.post("/v1/customize", json=body, headers=sf)
    assert r.status_code == 202, r.text
    job = env.comps.jobs.get(r.json()["job_id"])  # type: ignore[union-attr]
    assert job is not None and job.brief["steps"] == [
        {"op": "background", "params": {"prompt": "beach, golden hour", "seed": 0, "shadow": 0.35}}
    ]
    other = {**body, "user_id": "u3", "choices": {"background": "forest, night"}}
    assert env.client.post("/v1/customize", json=other, headers=sf).status_code == 422
    bad = env.client.put(f"/v1/products/{pid}/customization", json={"background": [" , "]},
                         headers=env.auth("marketer"))  # fmt: skip
    assert bad.status_code == 422
