"""The batch commands as functions (the CLI only parses options and prints)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.batch.personalize import (
    latest_event,
    parse_window,
    plan_personalized,
    rank_shoppers,
    within_budget,
)
from api.batch.runner import BatchSummary, PlannedItem, RunOptions, append_ledger, produce
from api.batch.variants import VocabularyPolicy, plan_variants
from api.batch.writes import find_variant, open_result_cache
from api.composition import build_components
from api.settings import Settings
from data.models import utcnow


def run_variants(
    settings: Settings,
    engine: Engine,
    *,
    segment_ids: Sequence[int] | None,
    placements: Sequence[str],
    products: int | None,
    options: RunOptions,
    seed: int | None = None,
    vocabulary: Sequence[str] | None = None,
) -> BatchSummary:
    """Render segment variants (drafts; with ``vocabulary`` auto-approved where every term
    is in it and all checks passed). Resumable."""
    orch = build_components(settings, engine=engine).orchestrator
    use_seed = settings.seed if seed is None else seed
    with Session(engine) as session:
        items = plan_variants(
            session,
            orch,
            segment_ids=segment_ids,
            placements=placements,
            products=products,
            seed=use_seed,
        )
    policy = None
    if vocabulary is not None:
        vocab = {t.strip().lower() for t in [*vocabulary, *settings.api.approved_terms]}
        policy = VocabularyPolicy(frozenset(t for t in vocab if t))
    summary = produce(
        engine,
        home=settings.home,
        generation=settings.generation,
        items=items,
        command="variants",
        actor="batch:variants",
        options=options,
        approve=policy,
    )
    summary.extra.update(
        {"placements": list(placements), "seed": use_seed, "auto_approve": policy is not None}
    )
    append_ledger(settings.home, summary)
    return summary


def run_personalize(
    settings: Settings,
    engine: Engine,
    *,
    active_since: str,
    limit: int | None,
    budget: int | None,
    placements: Sequence[str],
    options: RunOptions,
    as_of: datetime | None = None,
) -> BatchSummary:
    """Personalized heroes for the ``limit`` active shoppers of highest expected value,
    at most ``budget`` diffusion runs (None: no cap). Resumable; erased shoppers skipped."""
    window = parse_window(active_since)
    orch = build_components(settings, engine=engine).orchestrator
    guard = orch.guard
    with Session(engine) as session:
        end = as_of or latest_event(session) or utcnow()
        ranked = rank_shoppers(
            session,
            orch,
            since=end - window,
            placement=placements[0],
            prior_ctr=settings.api.prior_ctr,
        )
        active = len(ranked)
        ranked = [r for r in ranked if r.lift > 0 and not guard.is_erased(r.user_id, session)]
        chosen = ranked if limit is None else ranked[:limit]
        items, no_brief = plan_personalized(session, orch, chosen, placements=placements)
        free = _free_hashes(session, settings, items)
    kept, over = within_budget(items, budget=budget, free=free)

    def still_wanted(session: Session, it: PlannedItem) -> bool:
        return it.owner.user_id is not None and not guard.is_erased(it.owner.user_id, session)

    summary = produce(
        engine,
        home=settings.home,
        generation=settings.generation,
        items=kept,
        command="personalize",
        actor="batch:personalize",
        options=options,
        still_wanted=still_wanted,
    )
    summary.extra.update(
        {
            "as_of": end.isoformat(),
            "window": active_since,
            "active_shoppers": active,
            "chosen_shoppers": len(chosen),
            "shoppers": sorted({str(it.owner.user_id) for it in kept}),
            "no_brief": len(no_brief),
            "over_budget": len(over),
            "budget": budget,
            "placements": list(placements),
            "top_expected_values": [round(r.expected_value, 6) for r in chosen[:5]],
        }
    )
    append_ledger(settings.home, _without_user_ids(summary))
    return summary


def _free_hashes(session: Session, settings: Settings, items: Sequence[PlannedItem]) -> set[str]:
    """Brief hashes that cost no diffusion run: done rows or cached results."""
    cache = open_result_cache(settings.generation, Path(settings.home))
    try:
        free = set()
        for it in items:
            h = it.brief.brief_hash
            done = find_variant(session, it.owner, placement=it.brief.placement.name, brief_hash=h)
            if (done is not None and done.image_key) or cache.get(h) is not None:
                free.add(h)
        return free
    finally:
        cache.close()


def _without_user_ids(summary: BatchSummary) -> BatchSummary:
    """A copy for the ledger file: shopper ids never go to disk outside the database."""
    from dataclasses import replace

    extra = {k: v for k, v in summary.extra.items() if k != "shoppers"}
    return replace(summary, extra=extra)
