"""``batch variants``: every segment × product × placement, as drafts or auto-approved.

Briefs are the marketer preview's briefs (segment terms, the segment's example products as
references, one seed), so a batch variant and a preview of the same segment, product,
placement and seed are the same brief and the same image.

Auto-approval is a marketer-set policy: a variant is approved only when every style term
of its brief is in the approved vocabulary and the image passed every automatic check (a
refused image is never stored, so it never reaches this point); otherwise it stays a draft
and the quality report says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import Session, col, select

from api.batch.runner import PlannedItem
from api.batch.writes import Owner
from api.services.orchestration import Orchestrator, terms_of
from data.models import Event, Product, Segment


@dataclass(frozen=True)
class VocabularyPolicy:
    """Approve a variant when all its brief's style terms (lower case) are in ``vocabulary``."""

    vocabulary: frozenset[str]

    def __call__(self, item: PlannedItem) -> str | None:
        outside = sorted({t.term.strip().lower() for t in item.brief.style_terms} - self.vocabulary)
        if outside:
            return "terms outside the approved vocabulary: " + ", ".join(outside)
        return None


def parse_ids(spec: str, *, name: str) -> list[int] | None:
    """``all`` → None; ``1,2,5`` → ``[1, 2, 5]``; anything else fails naming ``name``."""
    if spec.strip().lower() == "all":
        return None
    try:
        ids = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"{name}: expected 'all' or comma-separated ids, got {spec!r}") from None
    if not ids:
        raise ValueError(f"{name}: expected 'all' or comma-separated ids, got {spec!r}")
    return ids


def top_products(session: Session, *, k: int | None) -> list[int]:
    """Products with an image, most engaged first (event count, then id); ``k`` None = all."""
    counts = dict(
        session.exec(select(Event.product_id, func.count()).group_by(col(Event.product_id))).all()
    )
    ids = [
        int(pid)
        for pid in session.exec(
            select(Product.id).where(col(Product.image).is_not(None), Product.image != "")
        ).all()
        if pid is not None
    ]
    ids.sort(key=lambda pid: (-int(counts.get(pid, 0)), pid))
    return ids if k is None else ids[:k]


def plan_variants(
    session: Session,
    orch: Orchestrator,
    *,
    segment_ids: Sequence[int] | None,
    placements: Sequence[str],
    products: int | None,
    seed: int,
) -> list[PlannedItem]:
    """One item per segment × product × placement (``segment_ids`` None = all segments,
    ``products`` None = every product with an image, else the top ``products``). Grouped by
    placement so chunks share a canvas size."""
    if segment_ids is None:
        segments = list(session.exec(select(Segment).order_by(col(Segment.id))))
    else:
        segments = []
        for sid in segment_ids:
            seg = session.get(Segment, sid)
            if seg is None:
                raise ValueError(f"--segments: no segment {sid}")
            segments.append(seg)
    product_ids = top_products(session, k=products)
    items: list[PlannedItem] = []
    for placement in placements:
        for seg in segments:
            assert seg.id is not None
            terms = terms_of(seg.terms)
            for pid in product_ids:
                brief = orch.make_brief(
                    session,
                    product_id=pid,
                    placement=placement,
                    terms=terms,
                    reference_product_ids=list(seg.example_product_ids),
                    seed=seed,
                )
                items.append(
                    PlannedItem(
                        key=f"segment{seg.id}:product{pid}:{placement}:seed{seed}",
                        owner=Owner(segment_id=seg.id),
                        product_id=pid,
                        brief=brief,
                    )
                )
    return items
