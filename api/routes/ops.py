"""Operations: liveness, readiness and Prometheus metrics (no API key)."""

from __future__ import annotations

import sqlite3

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError

from api.batch.coverage import coverage_report, publish
from api.schemas import ReadinessPublic
from api.services.readiness import public_errors, refresh_database

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers (no dependency is checked)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadinessPublic,
    responses={503: {"model": ReadinessPublic, "description": "A component is missing"}},
)
def readyz(request: Request) -> Response:
    """Readiness, per component: the database answers, the product index and the generator
    are loaded. 200 when all are, else 503 with the same body (``ready: false``)."""
    comps = getattr(request.app.state, "components", None)
    if comps is None:
        body = ReadinessPublic(
            ready=False, checks={"database": False, "index": False, "generator": False}
        )
        return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    r = refresh_database(comps.readiness, comps.engine)
    body = ReadinessPublic(ready=r.ready, checks=r.as_dict(), errors=public_errors(r))
    code = status.HTTP_200_OK if r.ready else status.HTTP_503_SERVICE_UNAVAILABLE
    return JSONResponse(body.model_dump(), status_code=code)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request) -> Response:
    """Prometheus metrics (text format): request latency, hero cache hit rate, generation
    queue depth and job durations, impressions and clicks, personalized coverage and cost
    (diffusion runs per 1,000 impressions, result cache hit rate, CPU/GPU s per image)."""
    comps = getattr(request.app.state, "components", None)
    if comps is None:
        return PlainTextResponse("", status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    if comps.jobs is not None:
        try:
            comps.metrics.queue_depth.set(comps.jobs.queue_depth())
        except Exception:
            pass
    settings = comps.settings
    try:
        report = coverage_report(comps.engine, home=settings.home, generation=settings.generation)
        publish(comps.metrics, report)
    except (SQLAlchemyError, sqlite3.Error, OSError, ValueError):
        pass  # /metrics answers even when the database or the ledger cannot be read now
    return Response(comps.metrics.render(), media_type=CONTENT_TYPE_LATEST)
