"""Generation jobs: submit (idempotent), poll progress, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Path, Response, status

from api.deps import (
    ComponentsDep,
    GenerationKey,
    SessionDep,
    check_brief,
    ensure_queue_room,
    generation_orchestrator,
    image_url,
)
from api.schemas import GenerationCreate, GenerationPublic
from api.services import generations
from api.services.orchestration import OrchestrationError
from api.settings import Settings
from data.models import GenerationJob

router = APIRouter(prefix="/v1", tags=["generations"])

JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]


def job_public(settings: Settings, job: GenerationJob) -> GenerationPublic:
    return GenerationPublic(
        id=job.id,
        status=job.status,
        brief_hash=job.brief_hash,
        progress_step=job.progress_step,
        progress_total=job.progress_total,
        attempts=job.attempts,
        # Job errors are our own messages, but keep them short and path-free for clients.
        error=(job.error.splitlines()[0][:200] if job.error else None),
        image_url=image_url(settings, job.result_key),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def _known(settings: Settings, job: GenerationJob | None) -> GenerationPublic:
    """``job`` as returned to clients; 404 when there is none."""
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown job")
    return job_public(settings, job)


@router.post(
    "/generations",
    response_model=GenerationPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        404: {"description": "Unknown product"},
        409: {"description": "Idempotency-Key reused with another body"},
        503: {"description": "Generation is not available"},
    },
)
def create_generation(
    comps: ComponentsDep,
    session: SessionDep,
    key: GenerationKey,
    body: GenerationCreate,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", min_length=1, max_length=128, pattern=r"^[ -~]+$"),
    ] = None,
) -> GenerationPublic:
    """Queue a generation of a product with explicit style terms; answers 202 with the job.

    The same brief always maps to the same job (and result). With an ``Idempotency-Key``
    header, repeating the request with the same body returns the same job, and reusing the key
    with a different body is rejected with 409.
    """
    orch = generation_orchestrator(comps)
    jobs = comps.jobs
    assert jobs is not None  # generation_orchestrator answered 503 otherwise
    request_hash = generations.request_hash(body.model_dump(mode="json"))
    scoped = f"{key.key_id}:{idempotency_key}" if idempotency_key else None
    # One database connection at a time per request: the session's reads end (commit) before
    # the job queue opens its own connection, so a burst cannot exhaust the pool by holding
    # one connection while waiting for another.
    if scoped is not None:
        try:
            prior_id = generations.prior_job_id(session, scoped=scoped, request_hash=request_hash)
        except generations.IdempotencyConflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        job = jobs.get(prior_id) if prior_id is not None else None
        if job is not None:
            response.headers["Location"] = f"/v1/generations/{job.id}"
            return job_public(comps.settings, job)
    try:
        brief = orch.make_brief(
            session,
            product_id=body.product_id,
            placement=body.placement,
            terms=[(t.term, t.weight) for t in body.terms],
            reference_product_ids=list(body.reference_product_ids),
            seed=body.seed,
            prompt_template=body.prompt_template,
            headline=body.headline,
        )
    except OrchestrationError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    finally:
        session.commit()
    check_brief(brief)
    ensure_queue_room(comps)
    job_id = orch.submit(brief)
    if job_id is None:  # no job queue in this deployment
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "generation is not available")
    if scoped is not None:
        try:
            job_id = generations.remember(
                session, scoped=scoped, request_hash=request_hash, job_id=job_id
            )
        except generations.IdempotencyConflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the job vanished; retry",
            headers={"Retry-After": str(comps.settings.api.retry_after_s)},
        )
    response.headers["Location"] = f"/v1/generations/{job.id}"
    return job_public(comps.settings, job)


@router.get(
    "/generations/{job_id}",
    response_model=GenerationPublic,
    responses={404: {"description": "Unknown job"}},
)
def get_generation(comps: ComponentsDep, _key: GenerationKey, job_id: JobId) -> GenerationPublic:
    """A job's status, progress (``progress_step`` of ``progress_total`` diffusion steps) and,
    once it succeeded, its image URL."""
    return _known(comps.settings, comps.jobs.get(job_id) if comps.jobs is not None else None)


@router.delete(
    "/generations/{job_id}",
    response_model=GenerationPublic,
    responses={404: {"description": "Unknown job"}},
)
def cancel_generation(comps: ComponentsDep, _key: GenerationKey, job_id: JobId) -> GenerationPublic:
    """Cancel a job: a queued job is cancelled at once, a running one stops at its next step
    (poll until ``cancelled``); a finished job is left as is."""
    return _known(comps.settings, comps.jobs.cancel(job_id) if comps.jobs is not None else None)
