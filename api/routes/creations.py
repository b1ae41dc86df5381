"""New product images (marketer): submit a description and/or a sketch (idempotent, 202 +
job), poll progress and candidates, cancel, save a candidate as a draft generated product
image; list saved product images (``generated`` says which a model made)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, Field

from api.deps import ComponentsDep, MarketerKey, SessionDep, ensure_queue_room, image_url
from api.schemas import NO_CONTROLS, NO_CONTROLS_NONEMPTY
from api.services import creations, generations
from api.settings import Settings
from data.models import GenerationJob, JobStatus, ProductImage
from genservice.jobs import JobQueue

router = APIRouter(prefix="/v1", tags=["creations"])

JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=128, pattern=r"^[ -~]+$")
]


class CreationCreate(BaseModel):
    """A creation request: a description, optionally a sketch (base64 PNG/JPEG)."""

    text: str = Field(min_length=1, max_length=1000, pattern=NO_CONTROLS_NONEMPTY)
    category: str | None = Field(default=None, max_length=64, pattern=NO_CONTROLS)
    n: int = Field(default=4, ge=1, le=8)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    size: int = Field(default=1080, ge=64, le=2048)
    background: str = Field(default="white", max_length=16, pattern=NO_CONTROLS)
    #: Base64 (standard alphabet, no line breaks) of a PNG or JPEG.
    sketch_png: str | None = Field(default=None, max_length=6_000_000, pattern=r"^[A-Za-z0-9+/=]*$")
    sketch_mode: str = Field(default="auto", pattern=r"^(auto|controlnet|img2img)$")
    #: Without a sketch: start from the category's shape guide when the category is known
    #: (given or named in the text) and the creator has guides; false: from noise.
    shape_guide: bool = True


class CandidatePublic(BaseModel):
    index: int
    image_url: str | None
    seed: int
    product_upscale: float | None = None


class CreationPublic(BaseModel):
    id: str
    status: JobStatus
    text: str
    category: str | None
    n: int
    size: int
    background: str
    sketch_url: str | None
    conditioning: str | None
    progress_step: int
    progress_total: int
    error: str | None
    candidates: list[CandidatePublic]
    generated: bool = True
    created_at: datetime
    finished_at: datetime | None


class DraftCreate(BaseModel):
    candidate: int = Field(ge=0, le=7)
    product_id: int | None = Field(default=None, ge=1, le=2**63 - 1)


class ProductImagePublic(BaseModel):
    id: int
    product_id: int | None
    image_url: str | None
    generated: bool
    status: str
    source: str
    job_id: str | None
    details: dict[str, object]
    created_at: datetime


class ProductImagesPublic(BaseModel):
    items: list[ProductImagePublic]


def creation_public(settings: Settings, job: GenerationJob) -> CreationPublic:
    """A creation job as returned to clients."""
    b = job.brief
    ups = (job.timings or {}).get("product_upscale") or []
    keys = creations.candidate_keys(job)
    return CreationPublic(
        id=job.id,
        status=job.status,
        text=str(b.get("text", "")),
        category=b.get("category"),
        n=int(b.get("n", 1)),
        size=int(b.get("size", 0)),
        background=str(b.get("background", "white")),
        sketch_url=image_url(settings, b.get("sketch_key")),
        conditioning=(job.timings or {}).get("source"),
        progress_step=job.progress_step,
        progress_total=job.progress_total,
        error=(job.error.splitlines()[0][:200] if job.error else None),
        candidates=[
            CandidatePublic(
                index=i,
                image_url=image_url(settings, k),
                seed=int(b.get("seed", 0)) + i,
                product_upscale=ups[i] if i < len(ups) else None,
            )
            for i, k in enumerate(keys)
        ],
        created_at=job.created_at,
        finished_at=job.finished_at,
    )


def image_public(settings: Settings, row: ProductImage) -> ProductImagePublic:
    assert row.id is not None
    return ProductImagePublic(
        id=row.id,
        product_id=row.product_id,
        image_url=image_url(settings, row.image_key),
        generated=row.generated,
        status=row.status,
        source=row.source,
        job_id=row.job_id,
        details=dict(row.details or {}),
        created_at=row.created_at,
    )


def _queue(comps: ComponentsDep) -> JobQueue:
    try:
        return creations.queue_of(comps.jobs)
    except LookupError:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "creations are not available"
        ) from None


def _known(comps: ComponentsDep, job_id: str) -> GenerationJob:
    job = creations.creation_job(_queue(comps), job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown creation")
    return job


@router.post(
    "/creations",
    response_model=CreationPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        409: {"description": "Idempotency-Key reused with another body"},
        422: {"description": "Blocked text, a bad sketch or a value out of range"},
        503: {"description": "Creations are not available, or the queue is full"},
    },
)
def create_creation(
    comps: ComponentsDep,
    session: SessionDep,
    key: MarketerKey,
    body: CreationCreate,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> CreationPublic:
    """Queue a creation of ``n`` candidate detail-page images; answers 202 with the job.
    The same request is the same job (and images). With an ``Idempotency-Key``, a repeat
    with the same body returns the same job; the key with another body is a 409."""
    queue = _queue(comps)
    request_hash = generations.request_hash(body.model_dump(mode="json"))
    scoped = f"{key.key_id}:creation:{idempotency_key}" if idempotency_key else None
    if scoped is not None:
        try:
            prior = generations.prior_job_id(session, scoped=scoped, request_hash=request_hash)
        except generations.IdempotencyConflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        job = queue.get(prior) if prior is not None else None
        if job is not None:
            response.headers["Location"] = f"/v1/creations/{job.id}"
            return creation_public(comps.settings, job)
    images = comps.images
    if body.sketch_png is not None and images is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "creations are not available")
    try:
        sketch_key = (
            creations.store_sketch(images, body.sketch_png)
            if body.sketch_png is not None and images is not None
            else None
        )
        req = creations.make_request(
            text=body.text,
            category=body.category,
            n=body.n,
            seed=body.seed,
            size=body.size,
            background=body.background,
            sketch_key=sketch_key,
            sketch_mode=body.sketch_mode,
            shape_guide=body.shape_guide,
        )
    except creations.CreationInvalid as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None
    ensure_queue_room(comps)
    job = creations.submit_creation(queue, req)
    if scoped is not None:
        try:
            job_id = generations.remember(
                session, scoped=scoped, request_hash=request_hash, job_id=job.id
            )
        except generations.IdempotencyConflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        if job_id != job.id:
            job = _known(comps, job_id)
    response.headers["Location"] = f"/v1/creations/{job.id}"
    return creation_public(comps.settings, job)


@router.get(
    "/creations/{job_id}",
    response_model=CreationPublic,
    responses={404: {"description": "Unknown creation"}},
)
def get_creation(comps: ComponentsDep, _key: MarketerKey, job_id: JobId) -> CreationPublic:
    """A creation's status, progress and, once it succeeded, its candidates."""
    return creation_public(comps.settings, _known(comps, job_id))


@router.delete(
    "/creations/{job_id}",
    response_model=CreationPublic,
    responses={404: {"description": "Unknown creation"}},
)
def cancel_creation(comps: ComponentsDep, _key: MarketerKey, job_id: JobId) -> CreationPublic:
    """Cancel a creation: queued at once, running at its next step; finished ones stay."""
    _known(comps, job_id)
    job = _queue(comps).cancel(job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown creation")
    return creation_public(comps.settings, job)


@router.post(
    "/creations/{job_id}/drafts",
    response_model=ProductImagePublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        404: {"description": "Unknown creation, candidate or product"},
        409: {"description": "The creation has not succeeded"},
    },
)
def save_creation_draft(
    comps: ComponentsDep,
    session: SessionDep,
    key: MarketerKey,
    job_id: JobId,
    body: DraftCreate,
    response: Response,
) -> ProductImagePublic:
    """Save one candidate as a draft generated image of a product (or of no product yet).
    The product's own (imported) image is never replaced. Saving it again returns the row
    (200)."""
    job = _known(comps, job_id)
    try:
        row, created = creations.save_draft(
            session,
            job,
            candidate=body.candidate,
            product_id=body.product_id,
            actor=f"key:{key.key_id}",
        )
    except creations.CreationNotReady as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except creations.CreationMissing as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    if not created:
        response.status_code = status.HTTP_200_OK
    return image_public(comps.settings, row)


@router.get("/product-images", response_model=ProductImagesPublic)
def list_product_images(
    comps: ComponentsDep,
    session: SessionDep,
    _key: MarketerKey,
    product_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    generated: bool | None = None,
) -> ProductImagesPublic:
    """Saved product images, newest first; ``generated=true`` lists only created ones."""
    rows = creations.list_images(session, product_id=product_id, generated=generated)
    return ProductImagesPublic(items=[image_public(comps.settings, r) for r in rows])
