"""Analyst routes: the offline click-through evaluation of the logged impressions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import HTMLResponse

from api.batch.coverage import coverage_report
from api.deps import AnalystKey, ComponentsDep
from api.ports import Report
from api.services.analytics import ReportUnavailable, cached_report

router = APIRouter(prefix="/v1/analytics", tags=["analyst"])


def _report(comps: ComponentsDep) -> Report:
    """The cached evaluation report; 404 before any impression, 503 when unavailable."""
    try:
        return cached_report(comps)
    except LookupError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no impressions logged yet") from None
    except ReportUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None


@router.get("/ctr", responses={404: {"description": "No impressions logged yet"}})
def analytics_ctr(comps: ComponentsDep, _key: AnalystKey) -> dict[str, Any]:
    """Click-through per logging policy (with Wilson intervals) and off-policy estimates per
    arm (personalized, segment, generic: IPS, SNIPS, DM, DR... with bootstrap intervals and
    effective sample sizes) from the logged impressions. ``source`` says whether the numbers
    come from real impressions or, before any were logged, from a labelled demo simulation."""
    return dict(_report(comps).summary)


@router.get(
    "/report",
    response_class=HTMLResponse,
    responses={404: {"description": "No impressions logged yet"}},
)
def analytics_report(comps: ComponentsDep, _key: AnalystKey) -> HTMLResponse:
    """The evaluation report as a self-contained HTML page with plots (CTR per policy with
    intervals, estimator comparison, importance weights and effective sample size, lift vs
    control)."""
    return HTMLResponse(_report(comps).html)


@router.get("/coverage")
def analytics_coverage(comps: ComponentsDep, _key: AnalystKey) -> dict[str, Any]:
    """Personalized coverage and cost: the share of hero impressions of the shoppers
    ``tailorshot batch personalize`` prepared that were served personalized, diffusion runs
    per 1,000 hero impressions (all history and steady state), the result cache hit rate of
    batch lookups, and CPU/GPU seconds per rendered image (None: nothing to divide by)."""
    s = comps.settings
    return coverage_report(comps.engine, home=s.home, generation=s.generation).as_dict()
