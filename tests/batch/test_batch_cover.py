"""``batch cover``: variants approved by a path that does not recompose (here: a row updated
in SQL, like the demo build) get their missing placements recomposed from the kept scene;
an owner whose approved variants have no kept scene stays refused, with the reason; a rerun
does nothing."""

from __future__ import annotations

from pathlib import Path

from batch_world import build_world
from sqlalchemy import update
from sqlmodel import Session, col, select

from api.batch.cover import COVER_ACTOR, run_cover
from api.batch.engine import ExecutorConfig
from api.batch.runner import RunOptions
from api.batch.service import run_variants
from data.models import CreativeVariant, VariantStatus


def test_cover_recomposes_what_approved_variants_lack(tmp_path: Path) -> None:
    settings, engine = build_world(tmp_path / "home", n_products=2, n_users=1)
    opts = RunOptions(executor=ExecutorConfig(executor="local"), progress=False, delivery=False)
    out = run_variants(settings, engine, segment_ids=[1], placements=("banner",), products=1,
                       options=opts)  # fmt: skip
    assert out.rendered == 1 and out.drafts == 1
    table = CreativeVariant.__table__  # type: ignore[attr-defined]
    with Session(engine) as s:
        s.execute(update(table).values(status=VariantStatus.approved))
        s.add(CreativeVariant(segment_id=2, product_id=2, placement="square", brief_hash="f" * 64,
                              image_key="e" * 64 + ".png", status=VariantStatus.approved))  # fmt: skip
        s.commit()
    first = run_cover(settings, engine, delivery=False, progress=False)
    assert (first.owners, first.recomposed, first.retired) == (2, 2, 0)
    assert set(first.refused) == {"segment 2"}
    assert set(first.refused["segment 2"]) == {"banner", "story"}
    assert "no kept scene" in first.refused["segment 2"]["banner"]
    with Session(engine) as s:
        rows = list(s.exec(select(CreativeVariant).order_by(col(CreativeVariant.id))))
    source = rows[0]
    derived = [r for r in rows if r.derived_from is not None]
    assert sorted(r.placement for r in derived) == ["square", "story"]
    assert all(r.derived_from == source.id and r.segment_id == 1 for r in derived)
    assert all(r.status == VariantStatus.approved and r.created_by == COVER_ACTOR for r in derived)
    again = run_cover(settings, engine, delivery=False, progress=False)
    assert (again.recomposed, again.retired) == (0, 0) and again.refused == first.refused
