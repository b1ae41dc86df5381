"""Product edits (marketer): submit (idempotent, 202 + job), poll progress, cancel, save
as a draft variant of the product."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Path, Response, status

from api.deps import ComponentsDep, MarketerKey, SessionDep, ensure_queue_room, image_url
from api.routes.marketer import variant_public
from api.schemas import VariantPublic
from api.schemas_edits import EditCreate, EditPublic, EditSave
from api.services import edits, generations
from api.settings import Settings
from data.models import GenerationJob
from genservice.jobs import JobQueue

router = APIRouter(prefix="/v1", tags=["edits"])

JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=128, pattern=r"^[ -~]+$")
]


def edit_public(settings: Settings, job: GenerationJob) -> EditPublic:
    """An edit job as returned to clients."""
    steps = list(job.brief.get("steps") or [])
    pid = job.brief.get("product_id")
    return EditPublic(
        id=job.id,
        status=job.status,
        product_id=int(pid) if pid is not None else None,
        ops=[str(s.get("op")) for s in steps],
        params=[dict(s.get("params") or {}) for s in steps],
        progress_step=job.progress_step,
        progress_total=job.progress_total,
        error=(job.error.splitlines()[0][:200] if job.error else None),
        source_url=image_url(settings, job.brief.get("source_key")),
        image_url=image_url(settings, job.result_key),
        created_at=job.created_at,
        finished_at=job.finished_at,
    )


def _queue(comps: ComponentsDep) -> JobQueue:
    try:
        return edits.queue_of(comps.jobs)
    except LookupError:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "edits are not available"
        ) from None


def _known(settings: Settings, job: GenerationJob | None) -> EditPublic:
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown edit")
    return edit_public(settings, job)


@router.post(
    "/edits",
    response_model=EditPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        404: {"description": "Unknown product, or it has no image"},
        409: {"description": "Idempotency-Key reused with another body"},
        422: {
            "description": "Unknown colour, texture or part, a parameter out of range, or a "
            "user without approved style terms"
        },
        503: {"description": "Edits are not available"},
    },
)
def create_edit(
    comps: ComponentsDep,
    session: SessionDep,
    key: MarketerKey,
    body: EditCreate,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> EditPublic:
    """Queue an edit of a product's image (recolor, material, background, restore, adjust,
    remove-background); answers 202 with the job (poll ``GET /v1/edits/{id}``). A background
    is a studio colour (``studio``) or a generated scene from ``prompt`` or from the taste
    profile of ``user_id`` (its approved style terms; the job stores the terms, not the id);
    recolor and material take ``mask_part`` to edit a part of the product. The same
    edit of the same image is always the same job; with an ``Idempotency-Key`` a repeat with
    the same body returns the same job and another body is a 409. Outside the product's mask
    the image does not change (bit-exact)."""
    queue = _queue(comps)
    if comps.images is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "edits are not available")
    request_hash = generations.request_hash({"edit": body.model_dump(mode="json")})
    scoped = f"{key.key_id}:edit:{idempotency_key}" if idempotency_key else None
    if scoped is not None:
        try:
            prior_id = generations.prior_job_id(session, scoped=scoped, request_hash=request_hash)
        except generations.IdempotencyConflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        prior = edits.edit_job(queue, prior_id) if prior_id is not None else None
        if prior is not None:
            response.headers["Location"] = f"/v1/edits/{prior.id}"
            return edit_public(comps.settings, prior)
    try:
        scene_terms = None
        if body.op == "background" and body.params.user_id:
            # The shopper's profile -> approved style terms here; the job carries only terms.
            scene_terms = edits.profile_scene_terms(
                comps.orchestrator, session, body.params.user_id
            )
        step = edits.edit_step(body.op, body.params, scene_terms=scene_terms)
        _, source_key = edits.product_source(
            session, comps.images, comps.settings.home, body.product_id
        )
    except edits.EditRejected as exc:
        raise HTTPException(422, str(exc)) from None
    except edits.ProductMissing as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    finally:
        session.commit()  # end the reads: the queue writes through its own connection
    ensure_queue_room(comps)
    job = edits.submit_edit(queue, source_key=source_key, steps=[step], product_id=body.product_id)
    if scoped is not None:
        try:
            job_id = generations.remember(
                session, scoped=scoped, request_hash=request_hash, job_id=job.id
            )
        except generations.IdempotencyConflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        job = edits.edit_job(queue, job_id) or job
    response.headers["Location"] = f"/v1/edits/{job.id}"
    return edit_public(comps.settings, job)


@router.get(
    "/edits/{job_id}", response_model=EditPublic, responses={404: {"description": "Unknown edit"}}
)
def get_edit(comps: ComponentsDep, _key: MarketerKey, job_id: JobId) -> EditPublic:
    """An edit's status, progress (``progress_step`` of ``progress_total`` steps), its source
    image and, once it succeeded, the edited image."""
    return _known(comps.settings, edits.edit_job(_queue(comps), job_id))


@router.delete(
    "/edits/{job_id}", response_model=EditPublic, responses={404: {"description": "Unknown edit"}}
)
def cancel_edit(comps: ComponentsDep, _key: MarketerKey, job_id: JobId) -> EditPublic:
    """Cancel an edit: queued at once, running at its next step; finished ones stay."""
    queue = _queue(comps)
    if edits.edit_job(queue, job_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown edit")
    return _known(comps.settings, queue.cancel(job_id))


@router.post(
    "/edits/{job_id}/variant",
    response_model=VariantPublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        404: {"description": "Unknown edit, product or segment"},
        409: {"description": "The edit has not succeeded"},
    },
)
def save_edit(
    comps: ComponentsDep,
    session: SessionDep,
    key: MarketerKey,
    job_id: JobId,
    response: Response,
    body: EditSave | None = None,
) -> VariantPublic:
    """Save a succeeded edit as a **draft** variant of its product (generic, or of
    ``segment_id``); approve or retire it with the variant routes. Saving the same edit
    again returns the first variant (200)."""
    body = body or EditSave()
    job = edits.edit_job(_queue(comps), job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown edit")
    try:
        v, created = edits.save_as_variant(
            session, job, placement=body.placement, actor=key.actor, segment_id=body.segment_id
        )
    except edits.EditNotReady as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except edits.ProductMissing as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/variants/{v.id}"
    return variant_public(comps.settings, v)
