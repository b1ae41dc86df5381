"""Marketer routes: segments, previews, variant edits, approval and the audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from api.deps import (
    ComponentsDep,
    MarketerKey,
    SessionDep,
    SettingsDep,
    ensure_queue_room,
    generation_orchestrator,
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
from api.services import variants
from api.services.orchestration import OrchestrationError
from api.services.recompose import recomposer_for
from api.settings import Settings
from data.models import CreativeVariant, VariantStatus

router = APIRouter(prefix="/v1", tags=["marketer"])

VariantId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Variant id.")]


def variant_public(
    settings: Settings, v: CreativeVariant, image_key: str | None = None
) -> VariantPublic:
    """``v`` as returned to clients; ``image_key`` when known apart from the row (reads)."""
    data = v.model_dump()
    data["image_url"] = image_url(settings, image_key or v.image_key)
    return VariantPublic.model_validate(data)


def _http_error(exc: Exception) -> HTTPException:
    """The HTTP answer to a variants-service error."""
    if isinstance(exc, variants.VariantConflict):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    if isinstance(exc, variants.NothingToChange):
        return HTTPException(422, str(exc))
    return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))


_ERRORS = (
    variants.VariantNotFound,
    variants.VariantConflict,
    variants.NothingToChange,
    OrchestrationError,
)


@router.get("/segments", response_model=SegmentsPublic)
def list_segments(
    session: SessionDep,
    _key: MarketerKey,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SegmentsPublic:
    """Shopper segments with their style terms (``[[term, score], ...]``), size and example
    products, by id."""
    rows, total = variants.list_segments(session, limit=limit, offset=offset)
    return SegmentsPublic(data=[SegmentPublic.model_validate(s) for s in rows], count=total)


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
    orch = generation_orchestrator(comps)
    terms = [(t.term, t.weight) for t in body.terms] if body.terms is not None else None
    ensure_queue_room(comps)
    try:
        created = variants.create_previews(
            session,
            orch,
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
        raise _http_error(exc) from None
    data = [variant_public(comps.settings, v) for v in created]
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
    rows, keys = variants.list_variants(
        session,
        segment_id=segment_id,
        status=status_,
        product_id=product_id,
        limit=limit,
        offset=offset,
    )
    data = [variant_public(settings, v, keys.get(v.id) if v.id else None) for v in rows]
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
    try:
        v = variants.marketer_variant(session, variant_id)
        variants.check_editable(v, terms=body.terms, prompt_template=body.prompt_template)
    except _ERRORS as exc:
        raise _http_error(exc) from None
    orch = generation_orchestrator(comps)
    terms = [(t.term, t.weight) for t in body.terms] if body.terms is not None else None
    ensure_queue_room(comps)
    try:
        v = variants.edit_variant(
            session,
            orch,
            variant=v,
            actor=key.actor,
            terms=terms,
            prompt_template=body.prompt_template,
            recomposer=recomposer_for(comps.generator),
        )
    except OrchestrationError as exc:
        raise _http_error(exc) from None
    comps.hero.invalidate()
    return variant_public(comps.settings, v)


def _transition(
    comps: ComponentsDep, session: SessionDep, actor: str, variant_id: int, to: VariantStatus
) -> VariantPublic:
    try:
        v, changed = variants.transition(
            session,
            variant_id=variant_id,
            actor=actor,
            to=to,
            recomposer=recomposer_for(comps.generator),
        )
    except _ERRORS as exc:
        raise _http_error(exc) from None
    if changed:
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
    try:
        rows = variants.variant_history(session, variant_id)
    except _ERRORS as exc:
        raise _http_error(exc) from None
    return VariantChangesPublic(
        data=[VariantChangePublic.model_validate(r) for r in rows], count=len(rows)
    )
