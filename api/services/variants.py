"""Creative variants: the marketer's state machine and its audit trail.

A segment or generic variant is created as a ``draft`` with a generation job
(:func:`create_previews`), may be edited (:func:`edit_variant`: a new brief and job, back to
``draft``), ``approved`` once its image is ready (:func:`transition`) and ``retired`` (final).
Every change writes one :class:`~data.models.VariantChange` row through :func:`record_change`,
the only writer of audit rows. User-level (personalized) variants are personal data: they are
neither listed nor changed here (:func:`marketer_variant` treats them as unknown).

Functions take the request's session and the collaborators they use; they raise
:class:`VariantNotFound` / :class:`VariantConflict` / :class:`NothingToChange`, and
``OrchestrationError`` when a brief cannot be built. Routes map those to HTTP answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from api.services.audit import record_change
from api.services.hero import sync_variant_images, variant_image_keys
from api.services.orchestration import OrchestrationError, Orchestrator, terms_of
from api.services.recompose import (
    CoveragePlan,
    RecomposerPort,
    Source,
    apply_plan,
    compose_plan,
    plan_coverage,
)
from data.models import (
    CreativeVariant,
    Segment,
    VariantChange,
    VariantStatus,
    utcnow,
)

if TYPE_CHECKING:
    from genservice.brief import CreativeBrief

__all__ = [
    "NothingToChange",
    "VariantConflict",
    "VariantNotFound",
    "check_editable",
    "create_previews",
    "edit_variant",
    "list_segments",
    "list_variants",
    "marketer_variant",
    "record_change",
    "transition",
    "variant_from_brief",
    "variant_history",
]


class VariantNotFound(LookupError):
    """No marketer-visible variant has this id (the message names it)."""


class VariantConflict(ValueError):
    """The variant's state forbids the change (retired, or its image is not ready)."""


class NothingToChange(ValueError):
    """An edit named neither terms nor a prompt template."""


def variant_from_brief(
    brief: CreativeBrief,
    *,
    product_id: int,
    placement: str,
    created_by: str,
    segment_id: int | None = None,
    user_id: str | None = None,
    prompt_template: str | None = None,
    job_id: str | None = None,
    image_key: str | None = None,
    status: VariantStatus = VariantStatus.draft,
) -> CreativeVariant:
    """A new (unsaved) variant rendering ``brief``: its hash, payload and style terms
    (``[[term, weight], ...]``) as stored."""
    return CreativeVariant(
        segment_id=segment_id,
        user_id=user_id,
        product_id=product_id,
        placement=placement,
        brief_hash=brief.brief_hash,
        brief=brief.to_dict(),
        terms=[[t.term, t.weight] for t in brief.style_terms],
        prompt_template=prompt_template,
        job_id=job_id,
        image_key=image_key,
        status=status,
        created_by=created_by,
    )


def list_segments(session: Session, *, limit: int, offset: int) -> tuple[list[Segment], int]:
    """``(segments by id, total count)``."""
    rows = session.exec(select(Segment).order_by(col(Segment.id)).offset(offset).limit(limit)).all()
    total = session.exec(select(func.count()).select_from(Segment)).one()
    return list(rows), int(total)


def list_variants(
    session: Session,
    *,
    segment_id: int | None,
    status: VariantStatus | None,
    product_id: int | None,
    limit: int,
    offset: int,
) -> tuple[list[CreativeVariant], dict[int, str]]:
    """Segment and generic variants, newest first, and ``variant id -> image key`` of those
    with an image (a finished job's result included; read only: nothing is written)."""
    q = select(CreativeVariant).where(col(CreativeVariant.user_id).is_(None))
    if segment_id is not None:
        q = q.where(CreativeVariant.segment_id == segment_id)
    if status is not None:
        q = q.where(CreativeVariant.status == status)
    if product_id is not None:
        q = q.where(CreativeVariant.product_id == product_id)
    rows = list(
        session.exec(q.order_by(col(CreativeVariant.id).desc()).offset(offset).limit(limit))
    )
    return rows, variant_image_keys(session, rows)


def marketer_variant(session: Session, variant_id: int) -> CreativeVariant:
    """The segment or generic variant ``variant_id``; :class:`VariantNotFound` otherwise
    (user-level variants read as unknown)."""
    v = session.get(CreativeVariant, variant_id)
    if v is None or v.user_id is not None:
        raise VariantNotFound(f"no variant {variant_id}")
    return v


def check_editable(
    variant: CreativeVariant, *, terms: object | None, prompt_template: str | None
) -> None:
    """Raise when ``variant`` cannot be edited, or the edit changes nothing."""
    if variant.status == VariantStatus.retired:
        raise VariantConflict("a retired variant cannot be edited")
    if terms is None and prompt_template is None:
        raise NothingToChange("nothing to change: send terms or prompt_template")


def create_previews(
    session: Session,
    orchestrator: Orchestrator,
    *,
    segment_id: int,
    product_id: int,
    n: int,
    placement: str,
    actor: str,
    terms: list[tuple[str, float]] | None = None,
    prompt_template: str | None = None,
    seed: int = 0,
) -> list[CreativeVariant]:
    """``n`` draft variants (seeds ``seed .. seed+n-1``) of ``product_id`` for the segment,
    each with a job; an identical existing variant is reused, not duplicated."""
    seg = session.get(Segment, segment_id)
    if seg is None:
        raise OrchestrationError(f"segment_id: no segment {segment_id}")
    use_terms = terms if terms is not None else terms_of(seg.terms)
    # Reads and job submissions first, writes last: on SQLite the job queue writes through
    # its own connection and must not wait on a write transaction held by this session.
    plan = []
    for i in range(n):
        brief = orchestrator.make_brief(
            session,
            product_id=product_id,
            placement=placement,
            terms=use_terms,
            reference_product_ids=list(seg.example_product_ids),
            seed=seed + i,
            prompt_template=prompt_template,
        )
        existing = session.exec(
            select(CreativeVariant).where(
                CreativeVariant.segment_id == segment_id,
                CreativeVariant.brief_hash == brief.brief_hash,
                col(CreativeVariant.user_id).is_(None),
            )
        ).first()
        plan.append((brief, existing, seed + i))
    session.commit()  # end the reads: one connection at a time (the queue uses its own)
    job_ids = [orchestrator.submit(b) if e is None else e.job_id for b, e, _ in plan]
    out: list[CreativeVariant] = []
    for (brief, existing, s_i), job_id in zip(plan, job_ids, strict=True):
        if existing is not None:
            out.append(existing)
            continue
        v = variant_from_brief(
            brief,
            segment_id=segment_id,
            product_id=product_id,
            placement=placement,
            prompt_template=prompt_template,
            job_id=job_id,
            created_by=actor,
        )
        try:
            # A concurrent identical request may insert the same live variant between our
            # read and this write; the unique key refuses it and we answer with that row.
            with session.begin_nested():
                session.add(v)
        except IntegrityError:
            raced = session.exec(
                select(CreativeVariant).where(
                    CreativeVariant.segment_id == segment_id,
                    CreativeVariant.brief_hash == brief.brief_hash,
                    col(CreativeVariant.user_id).is_(None),
                    CreativeVariant.placement == placement,
                    CreativeVariant.status != VariantStatus.retired,
                )
            ).first()
            if raced is None:
                raise
            out.append(raced)
            continue
        assert v.id is not None
        detail = {"brief_hash": brief.brief_hash, "job_id": job_id, "seed": s_i}
        record_change(session, variant_id=v.id, actor=actor, action="create", detail=detail)
        out.append(v)
    session.commit()
    return out


def edit_variant(
    session: Session,
    orchestrator: Orchestrator,
    *,
    variant: CreativeVariant,
    actor: str,
    terms: list[tuple[str, float]] | None,
    prompt_template: str | None,
    recomposer: RecomposerPort | None = None,
) -> CreativeVariant:
    """Re-render ``variant`` with edited ``terms`` and/or ``prompt_template``: a new brief,
    a new job; the variant goes back to draft until approved again (its recompositions are
    retired with it; a placement left uncovered is recomposed from another approved variant
    by ``recomposer``, see :func:`transition`)."""
    old_brief = dict(variant.brief or {})
    use_terms = terms if terms is not None else terms_of(variant.terms)
    template = prompt_template if prompt_template is not None else variant.prompt_template
    refs: list[int] = []
    if variant.segment_id is not None:
        seg = session.get(Segment, variant.segment_id)
        refs = list(seg.example_product_ids) if seg else []
    brief = orchestrator.make_brief(
        session,
        product_id=variant.product_id,
        placement=variant.placement,
        terms=use_terms,
        reference_product_ids=refs,
        seed=int(old_brief.get("seed", 0)),
        prompt_template=template,
    )
    before = {"terms": variant.terms, "prompt_template": variant.prompt_template,
              "brief_hash": variant.brief_hash, "status": str(variant.status)}  # fmt: skip
    plan = None
    if variant.status == VariantStatus.approved:
        plan = plan_coverage(
            session, segment_id=variant.segment_id, recomposer=recomposer, removing=variant.id
        )
    session.commit()  # end the reads: one connection at a time (the queue uses its own)
    if plan is not None:
        compose_plan(plan, recomposer)
    job_id = orchestrator.submit(brief)
    variant.brief_hash = brief.brief_hash
    variant.brief = brief.to_dict()
    variant.terms = [[t.term, t.weight] for t in brief.style_terms]
    variant.prompt_template = template
    variant.job_id = job_id
    variant.image_key = None
    variant.status = VariantStatus.draft
    variant.derived_from = None  # re-rendered: its own creative now, no longer a recomposition
    variant.updated_at = utcnow()
    session.add(variant)
    assert variant.id is not None
    after = {
        "terms": variant.terms,
        "prompt_template": template,
        "brief_hash": brief.brief_hash,
        "job_id": job_id,
    }
    record_change(
        session,
        variant_id=variant.id,
        actor=actor,
        action="edit",
        detail={"before": before, "after": after, **(_coverage_detail(plan) if plan else {})},
    )
    if plan is not None:
        apply_plan(session, plan, actor=actor)
    session.commit()
    return variant


def _coverage_detail(plan: CoveragePlan) -> dict[str, Any]:
    """The audit detail of a change's coverage: what was recomposed or retired, and which
    placements stay refused and why (nothing when coverage did not change)."""
    summary = plan.summary()
    return {"coverage": summary} if any(summary.values()) else {}


def transition(
    session: Session,
    *,
    variant_id: int,
    actor: str,
    to: VariantStatus,
    recomposer: RecomposerPort | None = None,
) -> tuple[CreativeVariant, bool]:
    """Approve or retire a variant: ``(variant, changed)``; ``changed`` is False when it was
    already in state ``to``. Approving needs a ready image and a variant not retired.

    Coverage (``api.services.recompose``) is kept in the same commit: the placements of the
    owner left without an approved variant are recomposed from this one (or another approved
    one) by ``recomposer`` first, derived variants it supersedes or that derive from a
    retired source are retired."""
    v = marketer_variant(session, variant_id)
    if sync_variant_images(session, [v]):
        session.commit()  # the image is the variant's either way; no write lock while composing
    if to == VariantStatus.approved:
        if v.status == VariantStatus.retired:
            raise VariantConflict("a retired variant cannot be approved")
        if not v.image_key:
            raise VariantConflict("the variant's image is not ready yet")
    if v.status == to:
        return v, False
    approving = Source.of(v) if to == VariantStatus.approved and v.derived_from is None else None
    plan = plan_coverage(
        session,
        segment_id=v.segment_id,
        recomposer=recomposer,
        approving=approving,
        removing=v.id if v.status == VariantStatus.approved else None,
    )
    compose_plan(plan, recomposer)  # slow, before any write: nothing is locked meanwhile
    before = VariantStatus(v.status)
    v.status = to
    v.updated_at = utcnow()
    session.add(v)
    assert v.id is not None
    record_change(
        session,
        variant_id=v.id,
        actor=actor,
        action="approve" if to == VariantStatus.approved else "retire",
        detail={"from": before.value, "to": to.value, **_coverage_detail(plan)},
    )
    apply_plan(session, plan, actor=actor)
    session.commit()
    return v, True


def variant_history(session: Session, variant_id: int) -> Sequence[VariantChange]:
    """Every change of a marketer-visible variant, oldest first."""
    marketer_variant(session, variant_id)
    return session.exec(
        select(VariantChange)
        .where(VariantChange.variant_id == variant_id)
        .order_by(col(VariantChange.id))
    ).all()
