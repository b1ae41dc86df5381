"""Coverage by recomposition through the API: approving only a banner makes the square and
story placements servable at once, recomposed from the banner's kept scene by the hero
generator's composition path (the diffusion backend is not called again); a newer approval
of a placement wins over its recomposition; retiring a source retires its recompositions
(re-derived from another approved variant with a scene, else refused with the reason in the
audit trail). Real tiny diffusion model, real worker, real composition."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apitest_helpers import FakeReport, seed_world
from fastapi.testclient import TestClient
from PIL import Image
from sqlmodel import Session, col, select

from api.app import build_engine, create_app
from api.composition import Loaders, build_components, images_dir
from api.settings import ApiConfig, Settings
from data.models import CreativeVariant, GenerationJob, JobStatus, VariantChange, VariantStatus
from genservice.cache import ResultCache
from genservice.compose import cut_out, parse_gain, place_cutout
from genservice.config import GenerationConfig
from genservice.generator import HeroGenerator
from genservice.metadata import parse_box, read_metadata
from genservice.safety import SkinToneHeuristicChecker
from genservice.scenes import SceneStore
from genservice.storage import LocalImageStore
from genservice.worker import JobHandler, Worker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "batch"))
from batch_world import product_image, tiny_model_dir

SIZES = {"banner": (1200, 628), "square": (1080, 1080), "story": (1080, 1920)}


class Counted:
    """Counts the diffusion backend's pipeline calls (every other attribute passes through)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.calls = 0

    def generate_batch(self, requests: Any, **kw: Any) -> Any:
        self.calls += 1
        return self._backend.generate_batch(requests, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def _generator(settings: Settings) -> tuple[HeroGenerator, Counted]:
    from genservice.backends.diffusers_backend import DiffusersBackend

    backend = Counted(DiffusersBackend(settings.generation, home=settings.home))
    gen = HeroGenerator(
        backend=backend,  # type: ignore[arg-type]
        store=LocalImageStore(images_dir(settings)),
        cache=ResultCache(":memory:"),
        safety=SkinToneHeuristicChecker(),
        config=settings.generation,
        home=settings.home,
        scenes=SceneStore(settings.home / "scenes"),
    )
    return gen, backend


@pytest.fixture
def app(tmp_path: Path) -> Iterator[dict[str, Any]]:
    home = tmp_path / "home"
    settings = Settings(
        home=home,
        generation=GenerationConfig(
            model=str(tiny_model_dir()), device="cpu", num_inference_steps=2,
            safety_checker="heuristic",
        ),
        api=ApiConfig(load_generator=False, run_worker=False, personalize=False,
                      stats_ttl_s=0.0, candidates_ttl_s=0.0, key_cache_ttl_s=0.0),
    )  # fmt: skip
    gen, backend = _generator(settings)

    def make_worker(queue: Any, handler: JobHandler) -> Worker:
        return Worker(queue, handler, poll_interval=0.02, heartbeat_interval=0.2,
                      stale_after=30.0, cancel_check_interval=0.05, progress_interval=0.0,
                      maintenance_interval=0.0)  # fmt: skip

    comps = build_components(
        settings,
        engine=build_engine(settings),
        loaders=Loaders(index=lambda: object(), generator=lambda: gen),  # type: ignore[arg-type, return-value]
        make_worker=make_worker,
        report_builder=lambda c: FakeReport({"source": "fake"}, "<html></html>"),  # type: ignore[arg-type, return-value]
    )
    world = seed_world(comps.engine, comps, home)
    for i in range(3):  # studio shots the cut-out can separate from their backdrop
        product_image(i + 1).save(home / "catalog" / f"p{i}.png")
    with TestClient(create_app(settings, components=comps), raise_server_exceptions=False) as c:
        yield {"client": c, "comps": comps, "world": world, "backend": backend, "home": home,
               "auth": lambda role: {"Authorization": f"Bearer {world.keys[role]}"}}  # fmt: skip


def _render(env: dict[str, Any], placement: str, seed: int) -> int:
    """A marketer preview of product 0 at ``placement``, rendered by the worker: its id."""
    w = env["world"]
    r = env["client"].post(
        f"/v1/segments/{w.segment_id}/previews",
        json={"product_id": w.product_ids[0], "n": 1, "placement": placement, "seed": seed},
        headers=env["auth"]("marketer"),
    )
    assert r.status_code == 202, r.text
    vid = int(r.json()["data"][0]["id"])
    deadline = time.monotonic() + 300
    with Session(env["comps"].engine) as s:
        job_id = s.get(CreativeVariant, vid).job_id  # type: ignore[union-attr]
        while time.monotonic() < deadline:
            s.expire_all()
            job = s.get(GenerationJob, job_id)
            if job is not None and job.status in (JobStatus.succeeded, JobStatus.failed):
                assert job.status == JobStatus.succeeded, job.error
                return vid
            time.sleep(0.1)
    raise AssertionError("the preview job did not finish")


def _post(env: dict[str, Any], vid: int, action: str) -> None:
    r = env["client"].post(f"/v1/variants/{vid}/{action}", headers=env["auth"]("marketer"))
    assert r.status_code == 200, r.text


def _hero(env: dict[str, Any], placement: str) -> tuple[int, dict[str, Any]]:
    r = env["client"].get(
        "/v1/hero", params={"user_id": "u1", "placement": placement},
        headers=env["auth"]("storefront"),
    )  # fmt: skip
    return r.status_code, (r.json() if r.status_code == 200 else {"detail": r.text})


def _rows(env: dict[str, Any]) -> dict[int, CreativeVariant]:
    with Session(env["comps"].engine) as s:
        rows = s.exec(select(CreativeVariant).where(col(CreativeVariant.user_id).is_(None)))
        return {int(r.id): r for r in rows}  # type: ignore[arg-type]


def _changes(env: dict[str, Any], vid: int) -> list[VariantChange]:
    with Session(env["comps"].engine) as s:
        q = select(VariantChange).where(VariantChange.variant_id == vid)
        return list(s.exec(q.order_by(col(VariantChange.id))))


def _check_product_pixels(env: dict[str, Any], image_key: str, placement: str) -> None:
    """The hero has the placement's size and the catalog product's pixels exactly where its
    metadata says (cut out of the studio shot, resized to the box, light gain applied)."""
    data = (images_dir(env["comps"].settings) / image_key[:2] / image_key).read_bytes()
    hero = Image.open(io.BytesIO(data))
    assert hero.size == SIZES[placement]
    meta = read_metadata(data)
    box = parse_box(meta["product_box"])
    product = Image.open(env["home"] / "catalog" / "p0.png").convert("RGB")
    placed = place_cutout(cut_out(product), box)
    if "product_gain" in meta:
        placed = placed.with_gain(parse_gain(meta["product_gain"]))
    from genservice.compose import check_fidelity

    assert check_fidelity(hero, placed) > 500  # every product pixel, exactly


def test_approving_a_banner_covers_square_and_story_without_diffusion(app: dict[str, Any]) -> None:
    env = app
    # The seeded world has approved banners without kept scenes: square is refused.
    code, body = _hero(env, "square")
    assert code == 404 and "square" in body["detail"]
    banner = _render(env, "banner", seed=3)
    runs = env["backend"].calls
    assert runs == 1
    _post(env, banner, "approve")
    assert env["backend"].calls == runs  # no diffusion run for the two recompositions
    rows = _rows(env)
    derived = {r.placement: r for r in rows.values() if r.derived_from == banner}
    assert set(derived) == {"square", "story"}
    for placement, row in derived.items():
        assert row.status == VariantStatus.approved and row.image_key
        code, hero = _hero(env, placement)
        assert code == 200 and hero["variant_id"] == row.id, hero
        _check_product_pixels(env, str(row.image_key), placement)
        create, approve = _changes(env, int(row.id))  # type: ignore[arg-type]
        assert create.detail["source"] == "recomposed"
        assert create.detail["source_variant_id"] == banner
        assert approve.action == "approve" and approve.detail["source_variant_id"] == banner
    listed = env["client"].get("/v1/variants", params={"status": "approved"},
                               headers=env["auth"]("marketer")).json()["data"]  # fmt: skip
    assert {v["placement"] for v in listed if v["derived_from"] == banner} == {"square", "story"}
    audit = _changes(env, banner)[-1]
    assert audit.action == "approve" and set(audit.detail["coverage"]["derived"]) == {
        "square",
        "story",
    }

    # A newer approval of the placement itself wins over the recomposition.
    square = _render(env, "square", seed=4)
    assert env["backend"].calls == runs + 1
    _post(env, square, "approve")
    rows = _rows(env)
    old_square = rows[int(derived["square"].id)]  # type: ignore[arg-type]
    assert old_square.status == VariantStatus.retired
    assert "superseded" in _changes(env, int(old_square.id))[-1].detail["reason"]  # type: ignore[arg-type]
    code, hero = _hero(env, "square")
    assert code == 200 and hero["variant_id"] == square
    assert rows[int(derived["story"].id)].status == VariantStatus.approved  # type: ignore[arg-type]

    # Retiring the banner retires its story: the story is recomposed from the square.
    _post(env, banner, "retire")
    rows = _rows(env)
    assert rows[int(derived["story"].id)].status == VariantStatus.retired  # type: ignore[arg-type]
    stories = [r for r in rows.values() if r.placement == "story" and r.status == "approved"]
    assert [r.derived_from for r in stories] == [square]
    code, hero = _hero(env, "story")
    assert code == 200 and hero["variant_id"] == stories[0].id
    _check_product_pixels(env, str(stories[0].image_key), "story")

    # Retiring the square too leaves only banners rendered before scenes were kept: square
    # and story are refused again, and the audit trail says why.
    _post(env, square, "retire")
    assert _hero(env, "square")[0] == 404 and _hero(env, "story")[0] == 404
    refused = _changes(env, square)[-1].detail["coverage"]["refused"]
    assert set(refused) == {"square", "story"} and "no kept scene" in refused["story"]
    assert _hero(env, "banner")[0] == 200
    assert env["backend"].calls == runs + 1
