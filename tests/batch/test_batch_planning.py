"""Planning of the batch commands, without rendering: chunks, budgets, windows, ranking by
expected value, the auto-approval policy, coverage figures. Known answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from batch_world import build_world
from sqlmodel import Session, select

from api.batch.coverage import coverage_report
from api.batch.engine import ExecutorConfig
from api.batch.personalize import parse_window, rank_shoppers, within_budget
from api.batch.render import chunk_items
from api.batch.runner import BatchSummary, PlannedItem, RunOptions, produce
from api.batch.variants import VocabularyPolicy, parse_ids, top_products
from api.batch.writes import Owner, upsert_variant
from data.models import (
    CreativeVariant,
    Impression,
    Segment,
    SegmentMembership,
    VariantChange,
    VariantStatus,
)
from genservice.brief import PLACEMENTS, CreativeBrief, ProductRef, StyleTerm


def _brief(
    seed: int, placement: str = "banner", terms: tuple[str, ...] = ("beach",)
) -> CreativeBrief:
    return CreativeBrief(
        product=ProductRef(id="1", title="Mug", image="catalog/P001.png"),
        placement=PLACEMENTS[placement],
        style_terms=tuple(StyleTerm(t, 1.0) for t in terms),
        seed=seed,
    )


def _item(seed: int, placement: str = "banner", terms: tuple[str, ...] = ("beach",)) -> PlannedItem:
    return PlannedItem(
        f"k{seed}{placement}", Owner(segment_id=1), 1, _brief(seed, placement, terms)
    )


def test_chunks_never_mix_canvas_sizes_and_keep_order() -> None:
    items = [
        {"key": str(i), "brief": _brief(i, ("banner", "square")[i % 2]).to_dict()} for i in range(7)
    ]
    chunks = chunk_items(items, size=2)
    sizes = [{it["brief"]["placement"]["name"] for it in c["items"]} for c in chunks]
    assert all(len(s) == 1 for s in sizes)
    assert [[it["key"] for it in c["items"]] for c in chunks] == [
        ["0", "2"],
        ["4", "6"],
        ["1", "3"],
        ["5"],
    ]
    with pytest.raises(ValueError, match="size"):
        chunk_items(items, size=0)


def test_budget_counts_only_runs_that_would_happen() -> None:
    items = [_item(i) for i in range(5)]
    free = {items[1].brief.brief_hash, items[3].brief.brief_hash}
    kept, over = within_budget(items, budget=2, free=free)
    # items 0 and 2 cost one run each; 1 and 3 are free; 4 is over the budget.
    assert [it.key for it in kept] == ["k0banner", "k1banner", "k2banner", "k3banner"]
    assert [it.key for it in over] == ["k4banner"]
    assert within_budget(items, budget=None, free=set()) == (items, [])


def test_window_and_id_parsing() -> None:
    assert parse_window("7d") == timedelta(days=7)
    assert parse_window(" 36h") == timedelta(hours=36)
    assert parse_window("90m") == timedelta(minutes=90)
    with pytest.raises(ValueError, match="--active-since"):
        parse_window("a week")
    assert parse_ids("all", name="--segments") is None
    assert parse_ids("3, 1", name="--segments") == [3, 1]
    with pytest.raises(ValueError, match="--segments"):
        parse_ids("x", name="--segments")


def test_auto_approval_only_inside_the_vocabulary() -> None:
    policy = VocabularyPolicy(frozenset({"beach", "golden hour"}))
    assert policy(_item(0, terms=("Beach", "golden hour"))) is None
    reason = policy(_item(0, terms=("beach", "neon")))
    assert reason == "terms outside the approved vocabulary: neon"


@dataclass
class _Profile:
    n_events: int
    source: str = "history"


class _Orch:
    """Only what ranking reads: stored profiles."""

    def __init__(self, profiles: dict[str, _Profile]) -> None:
        self.profiles = profiles

    def profile_for(self, session: Session, *, user_id: str) -> _Profile | None:
        return self.profiles.get(user_id)


def test_shoppers_ranked_by_activity_times_lift(tmp_path: Path) -> None:
    _settings, engine = build_world(tmp_path / "home", n_users=6)
    # u00k has k+1 view events, one per hour from 2026-01-01 12:00 + 10k hours.
    with Session(engine) as s:
        s.add(SegmentMembership(user_id="u005", segment_id=1))
        seg = s.get(Segment, 1)
        assert seg is not None
        s.commit()
        upsert_variant(
            s,
            Owner(segment_id=1),
            product_id=1,
            brief=_brief(0),
            image_key="a" * 64 + ".png",
            approve=True,
            actor="t",
        )
        orch = _Orch({f"u00{k}": _Profile(n_events=20) for k in range(6)} | {"u004": _Profile(10)})
        since = datetime(2026, 1, 2, 0, 0, tzinfo=UTC)  # u000 (12:00 Jan 1) is not active
        ranked = rank_shoppers(
            s,
            orch,
            since=since,
            placement="banner",  # type: ignore[arg-type]
            prior_ctr={"personalized": 0.06, "segment": 0.04, "generic": 0.02},
        )
    got = {r.user_id: (r.activity, round(r.lift, 6)) for r in ranked}
    # u001: 2 events, but only the one at 23:00... both are on Jan 1 (22:00, 23:00): inactive.
    assert set(got) == {"u002", "u003", "u004", "u005"}
    # No generic hero exists, so shoppers outside segment 1 gain the whole 0.06; u005's
    # segment already serves an approved hero (0.04): lift 0.02. u004 knows half as much.
    assert got["u002"] == (3.0, 0.06) and got["u003"] == (4.0, 0.06)
    assert got["u004"] == (5.0, 0.03) and got["u005"] == (6.0, 0.02)
    assert [r.user_id for r in ranked] == ["u003", "u002", "u004", "u005"]


def test_coverage_counts_impressions_after_the_hero_was_ready(tmp_path: Path) -> None:
    settings, engine = build_world(tmp_path / "home")
    with Session(engine) as s:
        vid, created = upsert_variant(
            s,
            Owner(user_id="u001"),
            product_id=1,
            brief=_brief(0),
            image_key="b" * 64 + ".png",
            approve=False,
            actor="batch:personalize",
        )
        assert created
        v = s.get(CreativeVariant, vid)
        assert v is not None and v.status == VariantStatus.draft
        ready = v.updated_at
        for i, arm in enumerate(
            ["segment", "personalized", "personalized", "personalized", "generic"]
        ):
            s.add(
                Impression(
                    user_id="u001",
                    placement="banner",
                    arm=arm,
                    policy="p",
                    propensity=0.9,
                    ts=ready + timedelta(seconds=i - 0.5 if i == 0 else i),
                )
            )
        s.add(
            Impression(
                user_id="u002", placement="banner", arm="segment", policy="p", propensity=0.9
            )
        )
        s.commit()
    out = coverage_report(engine, home=settings.home, generation=settings.generation)
    # The first impression came before the hero was ready: 3 of the 4 after it.
    assert out.personalized_shoppers == 1
    assert (out.impressions_of_those, out.personalized_impressions_of_those) == (4, 3)
    assert out.personalized_coverage == 0.75 and out.hero_impressions == 6
    assert out.diffusion_runs == 0 and out.cache_hit_rate is None


def test_top_products_by_engagement(tmp_path: Path) -> None:
    _settings, engine = build_world(tmp_path / "home", n_products=8, n_users=4)
    with Session(engine) as s:
        # Views: u0 -> 1; u1 -> 2,3; u2 -> 3,4,5; u3 -> 4,5,6,7: 3,4,5 twice, then 1,2,6,7 once.
        assert top_products(s, k=5) == [3, 4, 5, 1, 2]
        assert len(top_products(s, k=None)) == 8


def test_a_rerun_under_a_policy_approves_existing_drafts_without_rendering(tmp_path: Path) -> None:
    settings, engine = build_world(tmp_path / "home")
    it = _item(0, terms=("beach", "neon"))
    with Session(engine) as s:
        upsert_variant(
            s,
            it.owner,
            product_id=1,
            brief=it.brief,
            image_key="c" * 64 + ".png",
            approve=False,
            actor="t",
        )
    opts = RunOptions(executor=ExecutorConfig(executor="local"), progress=False)

    def run(vocab: set[str]) -> BatchSummary:
        return produce(
            engine,
            home=settings.home,
            generation=settings.generation,
            items=[it],
            command="variants",
            actor="t",
            options=opts,
            approve=VocabularyPolicy(frozenset(vocab)),
        )

    strict = run({"beach"})
    assert (strict.done_before, strict.rendered, strict.approved, strict.drafts) == (1, 0, 0, 1)
    assert strict.quality.kept_as_draft == {"terms outside the approved vocabulary": 1}
    wide = run({"beach", "neon"})
    assert (wide.done_before, wide.rendered, wide.approved) == (1, 0, 1)
    with Session(engine) as s:
        rows = list(s.exec(select(CreativeVariant)))
        approvals = list(s.exec(select(VariantChange).where(VariantChange.action == "approve")))
    assert [r.status for r in rows] == [VariantStatus.approved] and len(approvals) == 1
