"""The demo helpers the lead wires into ``tailorshot demo``."""

from __future__ import annotations

from pathlib import Path

from apitest_helpers import FakeGenerator, make_settings, seed_world
from sqlmodel import Session, select

from api.auth import hash_key
from api.cli.demo_variants import curl_examples, demo_keys, seed_demo_variants
from api.composition import build_components
from data.models import ApiKey, CreativeVariant, VariantChange, VariantStatus


def test_seed_demo_variants_is_idempotent(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    comps = build_components(settings)
    world = seed_world(comps.engine, comps, settings.home)
    gen = FakeGenerator(comps.images)
    # The seeded segment already has 2 approved banner variants; ask for 3.
    out = seed_demo_variants(
        settings, comps.engine, seed=5, per_segment=3, generic=2, generator=gen, progress=False
    )
    assert len(out.created) == 2 and out.skipped_segments == []  # 1 segment + 1 more generic
    with Session(comps.engine) as s:
        approved = s.exec(
            select(CreativeVariant).where(CreativeVariant.status == VariantStatus.approved)
        ).all()
        seg = [v for v in approved if v.segment_id == world.segment_id]
        assert len(seg) == 3 and all(v.image_key for v in approved)
        assert len([v for v in approved if v.segment_id is None]) == 2
        new = s.get(CreativeVariant, out.created[0])
        assert new is not None and [t[0] for t in new.terms] == ["red", "minimal"]
        assert comps.images.exists(new.image_key)  # type: ignore[union-attr, arg-type]
        actions = [
            c.action
            for c in s.exec(select(VariantChange).where(VariantChange.variant_id == new.id))
        ]
        assert actions == ["create", "approve"]
    again = seed_demo_variants(
        settings, comps.engine, seed=5, per_segment=3, generic=2, generator=gen, progress=False
    )
    assert again.created == [] and again.skipped_segments == [world.segment_id]
    assert gen.calls == 2


def test_demo_keys_deterministic_hashed_and_curl(tmp_path: Path) -> None:
    comps = build_components(make_settings(tmp_path / "home"))
    keys = demo_keys(comps.engine, seed=0)
    assert sorted(keys) == ["admin", "analyst", "marketer", "storefront"]
    assert demo_keys(comps.engine, seed=0) == keys
    assert demo_keys(comps.engine, seed=1) != keys
    with Session(comps.engine) as s:
        rows = s.exec(select(ApiKey)).all()
        assert len(rows) == 8
        stored = {r.key_hash: r.role.value for r in rows}
        assert all(stored[hash_key(k)] == role for role, k in keys.items())
        assert not any(k in stored for k in keys.values())
    text = curl_examples(keys, "http://127.0.0.1:8000/")
    assert text.count("curl ") == 15 and all(k in text for k in keys.values())
    assert "http://127.0.0.1:8000/v1/hero?user_id=" in text
    assert "placement=banner" in text and "placement=story" in text  # the demo covers story


def test_a_refused_demo_render_is_tried_again_with_other_seeds(tmp_path: Path) -> None:
    """The image check refuses the first two seeds of both new renders (the segment's third and
    the second generic, seeds 5 and 6): each comes from its seed + the last offset; a render
    that every seed fails stays failed with the checker's reason."""
    from api.cli.demo_variants import SAFETY_RETRY_SEED_OFFSETS
    from genservice.errors import SafetyViolation

    class Picky(FakeGenerator):
        refuse: set[int] = set()

        def generate(self, brief, **kw):  # type: ignore[no-untyped-def]
            if int(brief.seed) in self.refuse:
                self.calls += 1
                raise SafetyViolation("safety checker 'skin-heuristic' flagged image(s) [0]")
            return super().generate(brief, **kw)

    settings = make_settings(tmp_path / "home")
    comps = build_components(settings)
    world = seed_world(comps.engine, comps, settings.home)
    first, last = SAFETY_RETRY_SEED_OFFSETS
    gen = Picky(comps.images)
    gen.refuse = {5, 6, 5 + first, 6 + first}
    out = seed_demo_variants(
        settings, comps.engine, seed=4, per_segment=3, generic=2, generator=gen, progress=False
    )
    assert out.failed == {} and gen.calls == 6  # 2 renders x 3 tries
    with Session(comps.engine) as s:
        new = [s.get(CreativeVariant, v) for v in out.created]
    assert sorted(int(v.brief["seed"]) for v in new if v is not None) == [5 + last, 6 + last]
    assert {v.segment_id for v in new if v is not None} == {world.segment_id, None}
    # Every seed refused: the render stays failed, with the checker's reason.
    gen.refuse = set(range(0, 40_000))
    again = seed_demo_variants(
        settings, comps.engine, seed=100, per_segment=4, generic=0, generator=gen, progress=False
    )
    assert again.created == [] and "skin-heuristic" in again.failed[f"segment {world.segment_id}"]
