"""``tailorshot batch variants --placements banner --auto-approve``: the approved banner
covers square and story at once, recomposed by the driver from the banner's kept scene on
the delivery path (cut-out, scene restoration, light match), with no diffusion run beyond
the banner's; the storefront's in-memory snapshot serves them. The learned image parts are
the fast stand-ins of ``gen_fixtures.stub_imaging`` (they have their own tests; here the
coverage mechanics are under test)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from batch_world import AUTO_APPROVE_BANNER_ARGS, build_banner_world, product_image
from PIL import Image
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from api.cli import app
from api.services.hero_snapshot import load_snapshot
from data.models import CreativeVariant, VariantChange, VariantStatus
from genservice.backends.diffusers_backend import DiffusersBackend
from genservice.generator import HeroImaging
from genservice.metadata import parse_box, read_metadata
from tests.genservice.gen_fixtures import stub_imaging

SIZES = {"banner": (1200, 628), "square": (1080, 1080), "story": (1080, 1920)}


def test_batch_auto_approved_banner_covers_square_and_story(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, engine = build_banner_world(tmp_path / "home")
    calls: list[int] = []
    real = DiffusersBackend.generate_batch

    def counted(self: DiffusersBackend, requests: Any, **kw: Any) -> Any:
        calls.append(len(requests))
        return real(self, requests, **kw)

    monkeypatch.setattr(DiffusersBackend, "generate_batch", counted)
    monkeypatch.setattr(HeroImaging, "default", classmethod(lambda cls: stub_imaging()))
    monkeypatch.setenv("TAILORSHOT_HOME", str(settings.home))
    args = AUTO_APPROVE_BANNER_ARGS
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("{") :])
    assert (out["rendered"], out["approved"], out["recomposed"]) == (1, 1, 2), out
    assert calls == [1]  # one diffusion run: the banner's

    with Session(engine) as s:
        rows = list(s.exec(select(CreativeVariant).order_by(col(CreativeVariant.id))))
        audit = list(s.exec(select(VariantChange).order_by(col(VariantChange.id))))
    banner = rows[0]
    assert banner.placement == "banner" and banner.status == VariantStatus.approved
    derived = {r.placement: r for r in rows[1:]}
    assert set(derived) == {"square", "story"} and len(rows) == 3
    with engine.connect() as conn:
        snap = load_snapshot(conn)
    product = np.asarray(product_image(banner.product_id), np.float32)
    body = product[40:60, 30:60].reshape(-1, 3).mean(axis=0)  # the mug's flat colour
    for placement, row in derived.items():
        assert row.status == VariantStatus.approved and row.derived_from == banner.id
        assert row.brief["placement"]["name"] == placement
        served = snap.candidates("u000", placement, 4)
        assert [c.variant_id for c in served] == [row.id]
        data = (settings.home / "images" / str(row.image_key)[:2] / str(row.image_key)).read_bytes()
        hero = Image.open(io.BytesIO(data)).convert("RGB")
        assert hero.size == SIZES[placement]
        x, y, w, h = parse_box(read_metadata(data)["product_box"])
        assert x >= 0 and x + w <= hero.width and y >= 0 and y + h <= hero.height
        # The product stands in its box: the mug's colour fills the box's body (light match
        # scales each channel by at most 15 %).
        arr = np.asarray(hero, np.float32)[y : y + h, x : x + w].reshape(-1, 3)
        near = np.abs(arr / np.maximum(body, 1.0) - 1.0).max(axis=1) < 0.2
        assert near.mean() > 0.2, near.mean()
        sources = [a.detail.get("source") for a in audit if a.variant_id == row.id]
        assert sources == ["recomposed", "recomposed"]

    # A rerun renders nothing and derives nothing more (exactly once).
    r = CliRunner().invoke(app, args)
    out = json.loads(r.output[r.output.index("{") :])
    assert (out["rendered"], out["recomposed"]) == (0, 0) and calls == [1]
    with Session(engine) as s:
        assert len(list(s.exec(select(CreativeVariant)))) == 3
