"""Marketer routes: segments, previews, variant edits, approval and the audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlmodel import col, func, select

from api.deps import (
    ComponentsDep,
    MarketerKey,
    SessionDep,
    SettingsDep,
    ensure_queue_room,
    image_url,
)
from api.schemas import (
    DbId,
    PreviewCreate,
    SegmentPublic,
    SegmentsPublic,
    VariantChangePublic,
    VariantChangesPublic,
    VariantPublic,
    VariantsPublic,
    VariantUpdate,
)
from api.services.hero import sync_variant_images
from api.services.orchestration import OrchestrationError, Orchestrator
from api.settings import Settings
from data.models import CreativeVariant, Segment, VariantChange, VariantStatus, utcnow

router = APIRouter(prefix="/v1", tags=["marketer"])

VariantId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Variant id.")]


def variant_public(settings: Settings, v: CreativeVariant) -> VariantPublic:
    data = v.model_dump()
    data["image_url"] = image_url(settings, v.image_key)
    return VariantPublic.model_validate(data)


def _orchestrator(comps: ComponentsDep) -> Orchestrator:
    if comps.orchestrator is None or comps.jobs is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "generation is not available")
    return comps.orchestrator  # type: ignore[no-any-return]


def _variant(session: SessionDep, variant_id: int) -> CreativeVariant:
    v = session.get(CreativeVariant, variant_id)
    if v is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no variant {variant_id}")
    return v


@router.get("/segments", response_model=SegmentsPublic)
def list_segments(
    session: SessionDep,
    _key: MarketerKey,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SegmentsPublic:
    """Shopper segments with their style terms (``[[term, score], ...]``), size and example
    products, by id."""
    rows = session.exec(select(Segment).order_by(col(Segment.id)).offset(offset).limit(limit)).all()
    total = session.exec(select(func.count()).select_from(Segment)).one()
    return SegmentsPublic(data=[SegmentPublic.model_validate(s) for s in rows], count=int(total))


@router.post(
    "/segments/{segment_id}/previews",
    response_model=VariantsPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {"description": "Unknown segment or product"}},
)
def create_previews(
    comps: ComponentsDep,
    session: SessionDep,
    key: MarketerKey,
    segment_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    body: PreviewCreate,
) -> VariantsPublic:
    """Make ``n`` draft variants of a product for the segment (seeds ``seed .. seed+n-1``),
    each rendered by a generation job; poll ``GET /v1/variants`` or the job for progress.
    An identical request returns the same variants (briefs are deduplicated by hash)."""
    orch = _orchestrator(comps)
    terms = [(t.term, t.weight) for t in body.terms] if body.terms is not None else None
    ensure_queue_room(comps)
    try:
        variants = orch.preview_segment(
            session,
            segment_id=segment_id,
            product_id=body.product_id,
            n=body.n,
            placement=body.placement,
            actor=key.actor,
            terms=terms,
            prompt_template=body.prompt_template,
            seed=body.seed,
        )
    except OrchestrationError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    data = [variant_public(comps.settings, v) for v in variants]
    return VariantsPublic(data=data, count=len(data))


@router.get("/variants", response_model=VariantsPublic)
def list_variants(
    settings: SettingsDep,
    session: SessionDep,
    _key: MarketerKey,
    segment_id: Annotated[DbId | None, Query()] = None,
    status_: Annotated[VariantStatus | None, Query(alias="status")] = None,
    product_id: Annotated[DbId | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> VariantsPublic:
    """Segment and generic variants (user-level ones are personal data and not listed),
    newest first, optionally filtered by segment, status and product."""
    q = select(CreativeVariant).where(col(CreativeVariant.user_id).is_(None))
    if segment_id is not None:
        q = q.where(CreativeVariant.segment_id == segment_id)
    if status_ is not None:
        q = q.where(CreativeVariant.status == status_)
    if product_id is not None:
        q = q.where(CreativeVariant.product_id == product_id)
    rows = list(
        session.exec(q.order_by(col(CreativeVariant.id).desc()).offset(offset).limit(limit))
    )
    sync_variant_images(session, rows)
    data = [variant_public(settings, v) for v in rows]
    return VariantsPublic(data=data, count=len(data))


@router.patch(
    "/variants/{variant_id}",
    response_model=VariantPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {"description": "Unknown variant"}, 409: {"description": "Retired"}},
)
def update_variant(
    comps: ComponentsDep,
    session: SessionDep,
    key: MarketerKey,
    variant_id: VariantId,
    body: VariantUpdate,
) -> VariantPublic:
    """Edit a variant's style terms and/or prompt template: it is re-rendered by a new job and
    goes back to draft (approve it again once the image is ready). Recorded in its history."""
    v = _variant(session, variant_id)
    if v.user_id is not None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no variant {variant_id}")
    if v.status == VariantStatus.retired:
        raise HTTPException(status.HTTP_409_CONFLICT, "a retired variant cannot be edited")
    if body.terms is None and body.prompt_template is None:
        raise HTTPException(422, "nothing to change: send terms or prompt_template")
    orch = _orchestrator(comps)
    terms = [(t.term, t.weight) for t in body.terms] if body.terms is not None else None
    ensure_queue_room(comps)
    try:
        v = orch.regenerate(
            session, variant=v, actor=key.actor, terms=terms, prompt_template=body.prompt_template
        )
    except OrchestrationError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    comps.hero.invalidate()
    return variant_public(comps.settings, v)


def _transition(
    comps: ComponentsDep, session: SessionDep, actor: str, variant_id: int, to: VariantStatus
) -> VariantPublic:
    v = _variant(session, variant_id)
    if v.user_id is not None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no variant {variant_id}")
    sync_variant_images(session, [v])
    if to == VariantStatus.approved:
        if v.status == VariantStatus.retired:
            raise HTTPException(status.HTTP_409_CONFLICT, "a retired variant cannot be approved")
        if not v.image_key:
            raise HTTPException(status.HTTP_409_CONFLICT, "the variant's image is not ready yet")
    if v.status != to:
        before = v.status
        v.status = to
        v.updated_at = utcnow()
        session.add(v)
        assert v.id is not None
        session.add(
            VariantChange(
                variant_id=v.id,
                actor=actor,
                action="approve" if to == VariantStatus.approved else "retire",
                detail={
                    "from": str(before.value if hasattr(before, "value") else before),
                    "to": to.value,
                },
            )
        )
        session.commit()
        comps.hero.invalidate()
    return variant_public(comps.settings, v)


@router.post(
    "/variants/{variant_id}/approve",
    response_model=VariantPublic,
    responses={404: {"description": "Unknown variant"}, 409: {"description": "Not approvable"}},
)
def approve_variant(
    comps: ComponentsDep, session: SessionDep, key: MarketerKey, variant_id: VariantId
) -> VariantPublic:
    """Approve a variant whose image is ready: from now on the storefront may serve it.
    Approving an approved variant changes nothing."""
    return _transition(comps, session, key.actor, variant_id, VariantStatus.approved)


@router.post(
    "/variants/{variant_id}/retire",
    response_model=VariantPublic,
    responses={404: {"description": "Unknown variant"}},
)
def retire_variant(
    comps: ComponentsDep, session: SessionDep, key: MarketerKey, variant_id: VariantId
) -> VariantPublic:
    """Retire a variant: the storefront stops serving it (final)."""
    return _transition(comps, session, key.actor, variant_id, VariantStatus.retired)


@router.get(
    "/variants/{variant_id}/history",
    response_model=VariantChangesPublic,
    responses={404: {"description": "Unknown variant"}},
)
def variant_history(
    session: SessionDep, _key: MarketerKey, variant_id: VariantId
) -> VariantChangesPublic:
    """Every change of a variant (create, edit, approve, retire) with who and when, oldest first."""
    v = _variant(session, variant_id)
    if v.user_id is not None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no variant {variant_id}")
    rows = session.exec(
        select(VariantChange)
        .where(VariantChange.variant_id == variant_id)
        .order_by(col(VariantChange.id))
    ).all()
    return VariantChangesPublic(
        data=[VariantChangePublic.model_validate(r) for r in rows], count=len(rows)
    )
