"""The analyst's offline evaluation report (recsys.evaluation.report on the app's database),
computed at most once per ``api.report_ttl_s`` and one computation at a time."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from api.logging import get_logger
from api.ports import Report

if TYPE_CHECKING:
    from api.composition import Components
    from recsys.evaluation.report import ReportOutput

log = get_logger("analyst")


class ReportUnavailable(RuntimeError):
    """The evaluation code could not be loaded (the analytics extras are missing)."""


@dataclass(frozen=True)
class _Cached:
    """A report and when it was made (``time.monotonic()`` seconds)."""

    at: float
    report: Report


#: Impressions the demo-world report simulates (seconds of work, once per ``report_ttl_s``).
DEMO_ROUNDS = 5000


class DemoReportFn(Protocol):
    """Builds the labelled demo-world report (``recsys.evaluation.simulate.build_demo_report``),
    shown before any impression is logged. Injected from the CLI: serving code never imports
    the demo world."""

    def __call__(self, *, random_state: int, n_rounds: int, n_bootstrap: int) -> ReportOutput: ...


def build_report(comps: Components, *, demo_report: DemoReportFn | None = None) -> Report:
    """``recsys.evaluation.report.build_report`` on the app's database (the default
    ``Components.report_builder``). Without impressions: ``demo_report`` when given and
    ``api.report_demo_fallback`` is on, else ``LookupError``."""
    from recsys.evaluation.report import build_report as build

    api = comps.settings.api
    fallback = None
    if demo_report is not None and api.report_demo_fallback:
        fallback = functools.partial(
            demo_report,
            random_state=comps.settings.seed,
            n_rounds=DEMO_ROUNDS,
            n_bootstrap=api.report_bootstrap,
        )
    return build(
        comps.engine,
        demo_report=fallback,
        n_bootstrap=api.report_bootstrap,
        random_state=comps.settings.seed,
    )


def cached_report(comps: Components) -> Report:
    """The evaluation report (``.summary``, ``.html``), cached for ``api.report_ttl_s``
    (bootstraps and plots take seconds). Raises ``LookupError`` when no impressions are
    logged and :class:`ReportUnavailable` when the evaluation code cannot load."""
    with comps.lock:
        cached = comps.cache.get("report")
        if (
            isinstance(cached, _Cached)
            and time.monotonic() - cached.at < comps.settings.api.report_ttl_s
        ):
            return cached.report
        builder = comps.report_builder or build_report
        try:
            report = builder(comps)
        except (ImportError, SyntaxError) as exc:
            log.warning("evaluation report unavailable", exc_info=True)
            raise ReportUnavailable("the evaluation report is not available") from exc
        comps.cache["report"] = _Cached(time.monotonic(), report)
        return report
