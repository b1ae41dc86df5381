"""``batch personalize``: personalized heroes for active shoppers, best expected value first,
within a budget of diffusion runs.

Expected value of personalizing a shopper = activity × predicted lift:

* activity: the shopper's weighted events in the window (view 1, click 2, add to cart 3,
  purchase 4) — a proxy for the hero impressions they will see;
* predicted lift: the personalized hero's prior click-through minus that of the best hero
  they are served today (``api.prior_ctr``: their segment's approved variant, else a generic
  one, else none at all), scaled by how much the profile knows (``min(1, n_events / 20)``
  for a history profile, a quarter of that for a cold-start one).

The window ends at ``as_of`` (default: the latest event, so a replayed or demo event log
counts as recent). A brief whose hash is already in the result cache costs no run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, col, select

from api.batch.runner import PlannedItem
from api.batch.writes import Owner
from api.services.orchestration import Orchestrator
from data.models import CreativeVariant, Event, SegmentMembership, VariantStatus

#: Weight of each event kind in a shopper's activity.
ACTIVITY_WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 3.0, "purchase": 4.0}


@dataclass(frozen=True)
class RankedShopper:
    """A shopper's expected value of a personalized hero and its two factors."""

    user_id: str
    activity: float
    lift: float

    @property
    def expected_value(self) -> float:
        return self.activity * self.lift


def parse_window(spec: str) -> timedelta:
    """``7d`` / ``36h`` / ``90m`` → a timedelta; anything else fails naming the option."""
    m = re.fullmatch(r"\s*(\d+)\s*([dhm])\s*", spec)
    if m is None:
        raise ValueError(f"--active-since: expected a window like 7d, 36h or 90m, got {spec!r}")
    n, unit = int(m.group(1)), m.group(2)
    return {"d": timedelta(days=n), "h": timedelta(hours=n), "m": timedelta(minutes=n)}[unit]


def latest_event(session: Session) -> datetime | None:
    """The time of the newest event, or None without events."""
    return session.exec(select(func.max(Event.ts))).one()


def rank_shoppers(
    session: Session,
    orch: Orchestrator,
    *,
    since: datetime,
    placement: str,
    prior_ctr: dict[str, float],
) -> list[RankedShopper]:
    """Shoppers with events at or after ``since``, by expected value (descending, then id)."""
    rows = session.exec(
        select(Event.user_id, Event.kind, func.count())
        .where(Event.ts >= since)
        .group_by(col(Event.user_id), col(Event.kind))
    ).all()
    activity: dict[str, float] = {}
    for uid, kind, n in rows:
        activity[uid] = activity.get(uid, 0.0) + ACTIVITY_WEIGHTS.get(str(kind), 1.0) * int(n)
    if not activity:
        return []
    served = _served_baseline(session, placement=placement, prior_ctr=prior_ctr)
    p_pers = float(prior_ctr.get("personalized", 0.06))
    out: list[RankedShopper] = []
    for uid, act in activity.items():
        profile = orch.profile_for(session, user_id=uid)
        if profile is None:
            continue  # nothing to personalize from
        know = min(1.0, profile.n_events / 20.0)
        if profile.source != "history":
            know *= 0.25
        seg = session.exec(
            select(SegmentMembership.segment_id).where(SegmentMembership.user_id == uid)
        ).first()
        base = served.get(seg, served.get(None, 0.0))
        lift = max(0.0, p_pers - base) * know
        out.append(RankedShopper(uid, round(act, 6), round(lift, 8)))
    out.sort(key=lambda r: (-r.expected_value, r.user_id))
    return out


def _served_baseline(
    session: Session, *, placement: str, prior_ctr: dict[str, float]
) -> dict[int | None, float]:
    """Prior click-through of the best hero served today per segment id (``None``: shoppers
    of no segment with an approved variant — the generic heroes, or 0 when none exists)."""
    rows = session.exec(
        select(CreativeVariant.segment_id)
        .where(
            col(CreativeVariant.user_id).is_(None),
            CreativeVariant.placement == placement,
            CreativeVariant.status == VariantStatus.approved,
            col(CreativeVariant.image_key).is_not(None),
        )
        .distinct()
    ).all()
    generic = float(prior_ctr.get("generic", 0.02)) if None in rows else 0.0
    out: dict[int | None, float] = {None: generic}
    for sid in rows:
        if sid is not None:
            out[sid] = max(generic, float(prior_ctr.get("segment", 0.04)))
    return out


def plan_personalized(
    session: Session,
    orch: Orchestrator,
    ranked: Sequence[RankedShopper],
    *,
    placements: Sequence[str],
) -> tuple[list[PlannedItem], list[str]]:
    """One item per shopper × placement, in rank order; also the shoppers without a brief
    (no product to feature, no usable terms)."""
    items: list[PlannedItem] = []
    no_brief: list[str] = []
    for rank, shopper in enumerate(ranked):
        for placement in placements:
            built = orch.brief_for_user(session, user_id=shopper.user_id, placement=placement)
            if built is None:
                no_brief.append(shopper.user_id)
                break
            brief, product_id = built
            items.append(
                PlannedItem(
                    key=f"user:{shopper.user_id}:{placement}",
                    owner=Owner(user_id=shopper.user_id),
                    product_id=product_id,
                    brief=brief,
                    info={"rank": rank, "expected_value": shopper.expected_value},
                )
            )
    return items, no_brief


def within_budget(
    items: Sequence[PlannedItem], *, budget: int | None, free: set[str]
) -> tuple[list[PlannedItem], list[PlannedItem]]:
    """``(kept, over budget)``: items in order until ``budget`` diffusion runs are spent;
    items whose brief hash is in ``free`` (done or cached) cost nothing. None = no limit."""
    if budget is None:
        return list(items), []
    kept: list[PlannedItem] = []
    over: list[PlannedItem] = []
    spent = 0
    for it in items:
        cost = 0 if it.brief.brief_hash in free else 1
        if spent + cost > budget:
            over.append(it)
            continue
        spent += cost
        kept.append(it)
    return kept, over
