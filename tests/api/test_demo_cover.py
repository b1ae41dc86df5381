"""``tailorshot demo`` covers its approvals: the banners it approves get their square and story
recomposed from the kept scenes by ``batch cover``'s own code path (no diffusion run), so a
segment shopper is served every placement through ``GET /v1/hero``; a rerun renders and
recomposes nothing. Tiny random diffusion model, classic compose path (the test settings of
the batch tests), real generator, real composition."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest
from apitest_helpers import FakeReport
from fastapi.testclient import TestClient
from PIL import Image
from sqlmodel import Session, col, select

from api.app import build_engine, create_app
from api.batch.cover import COVER_ACTOR
from api.batch.render import load_hero_generator
from api.cli.demo_variants import DEMO_ACTOR, approve_and_cover, demo_keys
from api.composition import Loaders, build_components, images_dir
from api.settings import ApiConfig
from data.models import CreativeVariant, SegmentMembership, VariantStatus
from genservice.backends.diffusers_backend import DiffusersBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "batch"))
from batch_world import build_world

SIZES = {"banner": (1200, 628), "square": (1080, 1080), "story": (1080, 1920)}


def test_demo_serves_banner_square_and_story_to_a_segment_shopper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _ = build_world(tmp_path / "home", n_products=3, n_users=2)
    settings = settings.model_copy(
        update={
            "api": ApiConfig(load_generator=False, run_worker=False, personalize=False,
                             stats_ttl_s=0.0, candidates_ttl_s=0.0, key_cache_ttl_s=0.0)
        }
    )  # fmt: skip
    engine = build_engine(settings)
    with Session(engine) as s:
        s.add(SegmentMembership(user_id="u000", segment_id=1, score=1.0))
        s.commit()
    calls: list[int] = []
    run = DiffusersBackend.generate_batch

    def counted(self: DiffusersBackend, *a: Any, **kw: Any) -> Any:
        calls.append(1)  # every diffusion run, the cover step's generator included
        return run(self, *a, **kw)

    monkeypatch.setattr(DiffusersBackend, "generate_batch", counted)
    gen = load_hero_generator(settings.generation, settings.home, delivery=False)
    made, covered = approve_and_cover(
        settings, engine, seed=0, per_segment=1, generic=1, generator=gen, delivery=False,
        progress=False,
    )  # fmt: skip
    assert len(made.created) == 3  # one banner per segment (2) and one generic
    rendered = len(calls)
    assert rendered >= 1
    assert covered is not None
    assert (covered.owners, covered.recomposed, covered.retired) == (3, 6, 0)
    assert covered.refused == {}
    assert len(calls) == rendered  # the six recompositions ran no diffusion

    with Session(engine) as s:
        rows = list(s.exec(select(CreativeVariant).where(col(CreativeVariant.user_id).is_(None))))
    assert all(r.status == VariantStatus.approved and r.image_key for r in rows)
    banners = {r.segment_id: r for r in rows if r.placement == "banner"}
    assert set(banners) == {1, 2, None} and all(
        r.created_by == DEMO_ACTOR for r in banners.values()
    )
    derived = [r for r in rows if r.derived_from is not None]
    assert sorted((r.segment_id or 0, r.placement) for r in derived) == [
        (k, p) for k in (0, 1, 2) for p in ("square", "story")
    ]
    assert all(r.derived_from == banners[r.segment_id].id for r in derived)
    assert all(r.created_by == COVER_ACTOR for r in derived)

    again, covered_again = approve_and_cover(
        settings, engine, seed=0, per_segment=1, generic=1, generator=gen, delivery=False,
        progress=False,
    )  # fmt: skip
    assert again.created == [] and covered_again is not None
    assert (covered_again.recomposed, covered_again.retired) == (0, 0)
    assert len(calls) == rendered

    keys = demo_keys(engine, seed=0)
    comps = build_components(
        settings,
        engine=engine,
        loaders=Loaders(index=lambda: object(), generator=None),  # type: ignore[arg-type, return-value]
        report_builder=lambda c: FakeReport({"source": "fake"}, "<html></html>"),  # type: ignore[arg-type, return-value]
    )
    auth = {"Authorization": f"Bearer {keys['storefront']}"}
    seg1 = {r.placement: r.id for r in rows if r.segment_id == 1}
    app = create_app(settings, components=comps)
    # Demo keys are honoured on a loopback server only: connect as the demo's own shopper would.
    with TestClient(app, base_url="http://127.0.0.1", client=("127.0.0.1", 50000)) as client:
        for placement, size in SIZES.items():
            r = client.get("/v1/hero", params={"user_id": "u000", "placement": placement},
                           headers=auth)  # fmt: skip
            assert r.status_code == 200, (placement, r.text)
            hero = r.json()
            assert hero["variant_id"] == seg1[placement]  # the segment's own creative
            key = next(v.image_key for v in rows if v.id == hero["variant_id"])
            data = (images_dir(settings) / str(key)[:2] / str(key)).read_bytes()
            assert Image.open(io.BytesIO(data)).size == size
