"""New product images (issue 21) through the generation job queue: a request (text, an
optional sketch put into the image store) becomes a creation job (payload ``kind:
"creation"``, hashed: the same request is one job); a succeeded job's candidate can be saved
as a draft :class:`~data.models.ProductImage` (``generated=True``), never replacing a
product's imported photo.

Functions raise :class:`CreationInvalid` (422), :class:`CreationMissing` (404) and
:class:`CreationNotReady` (409); routes map them.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable
from typing import Any

from PIL import Image, UnidentifiedImageError
from sqlmodel import Session, col, select

from api.ports import ImageStorePort
from api.settings import Settings
from data.models import GenerationJob, JobStatus, Product, ProductImage
from genservice.creation.handler import CreationJobHandler
from genservice.creation.pipeline import Creator
from genservice.creation.request import CreationRejected, CreationRequest, is_creation
from genservice.jobs import JobQueue
from genservice.worker import JobHandler

#: A sketch upload: at most this many bytes (decoded) and this many pixels a side.
MAX_SKETCH_BYTES = 4 * 1024 * 1024
MAX_SKETCH_SIDE = 1024


class CreationInvalid(ValueError):
    """The request cannot be created (blocked text, bad sketch, out-of-range value)."""


class CreationMissing(LookupError):
    """No such creation, candidate or product."""


class CreationNotReady(ValueError):
    """The creation job has not succeeded (yet)."""


def store_sketch(images: ImageStorePort, data_b64: str) -> str:
    """Decode a base64 sketch, check it is an image, store it as PNG (longer side at most
    :data:`MAX_SKETCH_SIDE`); its key."""
    try:
        raw = base64.b64decode(data_b64, validate=True)
    except (binascii.Error, ValueError):
        raise CreationInvalid("sketch_png: expected base64 of a PNG or JPEG image") from None
    if len(raw) > MAX_SKETCH_BYTES:
        raise CreationInvalid(f"sketch_png: expected at most {MAX_SKETCH_BYTES} bytes")
    try:
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            img = im.convert("RGBA" if im.mode in ("RGBA", "LA", "PA") else "RGB")
    except (UnidentifiedImageError, OSError):
        raise CreationInvalid("sketch_png: not a readable image") from None
    if min(img.size) < 16:
        raise CreationInvalid(f"sketch_png: expected at least 16 x 16 pixels, got {img.size}")
    if max(img.size) > MAX_SKETCH_SIDE:
        img.thumbnail((MAX_SKETCH_SIDE, MAX_SKETCH_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return images.put(buf.getvalue(), "image/png")


def make_request(**fields: Any) -> CreationRequest:
    """A checked :class:`CreationRequest` (:class:`CreationInvalid` naming the field)."""
    try:
        return CreationRequest(**fields)
    except CreationRejected as exc:
        raise CreationInvalid(str(exc)) from None


def queue_of(jobs: object) -> JobQueue:
    """The job queue, when it is genservice's (creations need its payload-level ``submit``)."""
    if not isinstance(jobs, JobQueue):
        raise LookupError("creations need genservice's job queue")
    return jobs


def submit_creation(jobs: JobQueue, request: CreationRequest) -> GenerationJob:
    """Enqueue ``request`` (idempotent by its hash; a failed or cancelled one is requeued)."""
    return jobs.submit(brief_hash=request.request_hash, brief=request.to_payload()).job


def creation_job(jobs: JobQueue | None, job_id: str) -> GenerationJob | None:
    """The creation job ``job_id`` (None when unknown or not a creation)."""
    job = jobs.get(job_id) if jobs is not None else None
    return job if job is not None and is_creation(job.brief) else None


def candidate_keys(job: GenerationJob) -> list[str]:
    """The stored candidates of a succeeded creation job, in seed order."""
    if job.status != JobStatus.succeeded:
        return []
    keys = (job.timings or {}).get("candidate_keys")
    if isinstance(keys, list) and keys:
        return [str(k) for k in keys]
    return [job.result_key] if job.result_key else []


def save_draft(
    session: Session,
    job: GenerationJob,
    *,
    candidate: int,
    product_id: int | None,
    actor: str,
) -> tuple[ProductImage, bool]:
    """Candidate ``candidate`` of the succeeded ``job`` saved as a draft, generated image of
    ``product_id`` (or of no product yet); ``(row, created)``. The product's own image is
    never changed."""
    if job.status != JobStatus.succeeded:
        raise CreationNotReady(f"the creation is {job.status}; save it once it succeeded")
    keys = candidate_keys(job)
    if not 0 <= candidate < len(keys):
        raise CreationMissing(f"candidate: expected 0..{len(keys) - 1}, got {candidate}")
    if product_id is not None and session.get(Product, product_id) is None:
        raise CreationMissing(f"product_id: no product {product_id}")
    key = keys[candidate]
    q = select(ProductImage).where(ProductImage.image_key == key)
    q = q.where(
        col(ProductImage.product_id).is_(None)
        if product_id is None
        else ProductImage.product_id == product_id
    )
    existing = session.exec(q).first()
    if existing is not None:
        return existing, False
    payload = dict(job.brief)
    ups = (job.timings or {}).get("product_upscale") or []
    row = ProductImage(
        product_id=product_id,
        image_key=key,
        generated=True,
        status="draft",
        source="creation",
        job_id=job.id,
        details={
            "text": str(payload.get("text", ""))[:500],
            "category": payload.get("category"),
            "seed": int(payload.get("seed", 0)) + candidate,
            "size": payload.get("size"),
            "background": payload.get("background"),
            "conditioning": (job.timings or {}).get("source", "text"),
            "product_upscale": ups[candidate] if candidate < len(ups) else None,
        },
        created_by=actor,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return row, True


def list_images(
    session: Session, *, product_id: int | None = None, generated: bool | None = None
) -> list[ProductImage]:
    """Saved product images, newest first (of one product / only generated ones)."""
    q = select(ProductImage)
    if product_id is not None:
        q = q.where(ProductImage.product_id == product_id)
    if generated is not None:
        q = q.where(ProductImage.generated == generated)
    q = q.order_by(col(ProductImage.created_at).desc(), col(ProductImage.id).desc()).limit(500)
    return list(session.exec(q).all())


def creation_handler(
    inner: JobHandler | None,
    settings: Settings,
    images: ImageStorePort,
    *,
    warmup: Callable[[], object] | None = None,
) -> CreationJobHandler:
    """The job handler that runs creation jobs (a :class:`~genservice.creation.pipeline.
    Creator` over ``settings.generation``, built on the first creation job, storing into
    ``images``) and passes every other job to ``inner``."""

    def factory() -> Creator:
        return Creator.from_config(settings.generation, home=settings.home, store=images)

    return CreationJobHandler(inner, factory, images, warmup=warmup)
