"""The coverage plan on its own (no rendering: a recomposer that records what it is asked):
which placements are derived from which source, what is retired and why, and the rules of
the state machine — a newer approval wins, a retired or edited source takes its derivations
with it, a derivation a marketer retired is not made again, legacy variants are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api.services.recompose import apply_plan, compose_plan, plan_coverage
from api.services.variants import transition
from data.db import init_db, make_engine
from data.models import CreativeVariant, Product, Segment, VariantChange, VariantStatus
from genservice.brief import PLACEMENTS, CreativeBrief, ProductRef
from genservice.recompose import derived_hash


class FakeRecomposer:
    """Scenes exist for ``with_scene``; every recomposition returns a fresh fake key."""

    def __init__(self, with_scene: set[str]) -> None:
        self.with_scene = with_scene
        self.calls: list[tuple[str, str]] = []

    def has_scene(self, brief_hash: str) -> bool:
        return brief_hash in self.with_scene

    def recompose(self, brief: CreativeBrief, source_hash: str) -> Any:
        self.calls.append((source_hash, brief.placement.name))
        key = f"{len(self.calls):064x}.png"
        return type("Out", (), {"image_key": key})()


def _engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    init_db(engine)
    with Session(engine) as s:
        s.add(Product(id=1, sku="P1", title="Mug", image="catalog/P1.png"))
        s.add(Segment(id=1, label="one"))
        s.commit()
    return engine


def _variant(engine: Engine, placement: str, seed: int, status: VariantStatus) -> tuple[int, str]:
    brief = CreativeBrief(product=ProductRef(id="1", title="Mug", image="catalog/P1.png"),
                          placement=PLACEMENTS[placement], seed=seed)  # fmt: skip
    with Session(engine) as s:
        v = CreativeVariant(segment_id=1, product_id=1, placement=placement,
                            brief_hash=brief.brief_hash, brief=brief.to_dict(),
                            image_key=f"{seed:064x}.png", status=status)  # fmt: skip
        s.add(v)
        s.commit()
        return int(v.id), brief.brief_hash  # type: ignore[arg-type]


def _live(engine: Engine) -> dict[str, list[tuple[int, int | None]]]:
    """placement -> [(id, derived_from)] of approved variants."""
    out: dict[str, list[tuple[int, int | None]]] = {}
    with Session(engine) as s:
        q = select(CreativeVariant).where(CreativeVariant.status == VariantStatus.approved)
        for r in s.exec(q.order_by(col(CreativeVariant.id))):
            out.setdefault(r.placement, []).append((int(r.id), r.derived_from))  # type: ignore[arg-type]
    return out


def test_coverage_follows_approvals_and_retirements(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    banner, bh = _variant(engine, "banner", 1, VariantStatus.draft)
    square, sh = _variant(engine, "square", 2, VariantStatus.draft)
    rec = FakeRecomposer({bh, sh})
    with Session(engine) as s:
        transition(s, variant_id=banner, actor="m", to=VariantStatus.approved, recomposer=rec)
    live = _live(engine)
    assert rec.calls == [(bh, "square"), (bh, "story")]
    assert live["banner"] == [(banner, None)]
    (d_square, src1), (d_story, src2) = live["square"][0], live["story"][0]
    assert src1 == src2 == banner
    with Session(engine) as s:
        row = s.get(CreativeVariant, d_square)
        assert row is not None and row.brief_hash == derived_hash(bh, "square")
        assert row.brief["placement"]["name"] == "square"

    # Approving the real square retires the derived square, keeps the derived story.
    with Session(engine) as s:
        transition(s, variant_id=square, actor="m", to=VariantStatus.approved, recomposer=rec)
    assert _live(engine) == {"banner": [(banner, None)], "square": [(square, None)],
                             "story": [(d_story, banner)]}  # fmt: skip
    assert len(rec.calls) == 2

    # A marketer retires the derived story: the story is then derived from the square
    # (never again from the banner).
    with Session(engine) as s:
        transition(s, variant_id=d_story, actor="m", to=VariantStatus.retired, recomposer=rec)
    assert rec.calls[2:] == [(sh, "story")]
    story = _live(engine)["story"]
    assert [src for _, src in story] == [square]

    # Retiring the square retires its story; the banner's story was retired by a person:
    # not remade, so story stays refused; square is derived from the banner again.
    with Session(engine) as s:
        transition(s, variant_id=square, actor="m", to=VariantStatus.retired, recomposer=rec)
        audit = s.exec(select(VariantChange).where(VariantChange.variant_id == square)
                       .order_by(col(VariantChange.id).desc())).first()  # fmt: skip
    live = _live(engine)
    assert "story" not in live and [src for _, src in live["square"]] == [banner]
    assert audit is not None and "retired" in audit.detail["coverage"]["refused"]["story"]


def test_without_scene_or_generator_the_plan_says_why(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    banner, bh = _variant(engine, "banner", 1, VariantStatus.approved)
    with Session(engine) as s:
        no_gen = plan_coverage(s, segment_id=1, recomposer=None)
        no_scene = plan_coverage(s, segment_id=1, recomposer=FakeRecomposer(set()))
        generic = plan_coverage(s, segment_id=None, recomposer=FakeRecomposer({bh}))
    assert not no_gen.derive and set(no_gen.refused) == {"square", "story"}
    assert "no hero generator" in no_gen.refused["square"]
    assert f"variant {banner} has no kept scene" in no_scene.refused["story"]
    # Another owner (the generic pool has nothing approved): nothing to do, nothing refused.
    assert generic.empty and not generic.refused
    # Composition failures are refusals too, with the reason.
    with Session(engine) as s:
        plan = plan_coverage(s, segment_id=1, recomposer=FakeRecomposer({bh}))

    class Failing(FakeRecomposer):
        def recompose(self, brief: CreativeBrief, source_hash: str) -> Any:
            raise ValueError("fidelity")

    compose_plan(plan, Failing({bh}))
    assert not plan.derive and plan.refused["square"].startswith("recomposition failed")
    with Session(engine) as s:
        assert apply_plan(s, plan, actor="m") == []
