"""Analyst routes: the offline click-through evaluation of the logged impressions."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import HTMLResponse

from api.deps import AnalystKey, ComponentsDep
from api.logging import get_logger

router = APIRouter(prefix="/v1/analytics", tags=["analyst"])
log = get_logger("analyst")


def build_report(comps: ComponentsDep) -> Any:
    """``recsys.evaluation.report.build_report`` on the app's database (the default
    ``Components.report_builder``)."""
    from recsys.evaluation.report import build_report as build

    api = comps.settings.api
    return build(
        comps.engine,
        demo_fallback=api.report_demo_fallback,
        n_bootstrap=api.report_bootstrap,
        random_state=comps.settings.seed,
        demo_rounds=5000,
    )


def _report(comps: ComponentsDep) -> Any:
    """The evaluation report, computed at most once per ``api.report_ttl_s`` (bootstraps and
    plots take seconds); one computation at a time."""
    with comps.lock:
        cached = comps.cache.get("report")
        if cached is not None and time.monotonic() - cached[0] < comps.settings.api.report_ttl_s:
            return cached[1]
        builder = comps.report_builder or build_report
        try:
            report = builder(comps)
        except LookupError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no impressions logged yet") from None
        except (ImportError, SyntaxError):
            log.warning("evaluation report unavailable", exc_info=True)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, "the evaluation report is not available"
            ) from None
        comps.cache["report"] = (time.monotonic(), report)
        return report


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
