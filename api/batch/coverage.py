"""Personalized coverage and cost accounting, from the database, the result cache and the
batch ledger.

* ``personalized_coverage``: of the hero impressions of the shoppers ``batch personalize``
  prepared (since their hero was ready), the share served personalized;
* ``diffusion_runs_per_1000_impressions``: diffusion runs (result-cache entries: every
  finished run writes exactly one) per 1,000 hero impressions, over the whole history and in
  the steady state (after the last batch run);
* ``cache_hit_rate``: briefs answered by the result cache without a run, over all briefs
  the batch commands looked up;
* ``cpu_s_per_image`` / ``gpu_s_per_image``: process CPU and GPU diffusion seconds per
  freshly rendered batch image.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import Gauge
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from data.models import CreativeVariant, Impression
from genservice.config import GenerationConfig

#: ``created_by`` of the variants ``batch personalize`` writes.
PERSONALIZE_ACTOR = "batch:personalize"
#: Impression arms that are hero decisions (other logged impressions, e.g. customisations,
#: are not).
HERO_ARMS = ("personalized", "segment", "generic")


@dataclass(frozen=True)
class CoverageOutput:
    """Coverage and cost figures (None where there is nothing to divide by)."""

    personalized_coverage: float | None
    personalized_shoppers: int
    impressions_of_those: int
    personalized_impressions_of_those: int
    hero_impressions: int
    diffusion_runs: int
    diffusion_runs_per_1000_impressions: float | None
    steady_state_impressions: int
    steady_state_diffusion_runs: int
    steady_state_runs_per_1000_impressions: float | None
    cache_hit_rate: float | None
    cpu_s_per_image: float | None
    gpu_s_per_image: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(num: float, den: float, scale: float = 1.0) -> float | None:
    return round(scale * num / den, 4) if den else None


def _cache_times(path: Path) -> list[float]:
    """``created_at`` (unix seconds) of every result-cache entry; [] without a cache file."""
    if not path.is_file():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return [float(r[0]) for r in conn.execute("SELECT created_at FROM results")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def read_ledger(home: Path) -> list[dict[str, Any]]:
    """The batch ledger's summaries, oldest first ([] when no batch ran)."""
    path = Path(home) / "batch" / "ledger.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def coverage_report(engine: Engine, *, home: Path, generation: GenerationConfig) -> CoverageOutput:
    """The figures of the module docstring for the state folder ``home``."""
    ledger = read_ledger(home)
    with Session(engine) as session:
        ready = (
            select(
                CreativeVariant.user_id,
                func.min(CreativeVariant.updated_at).label("ready_at"),
            )
            .where(
                CreativeVariant.created_by == PERSONALIZE_ACTOR,
                col(CreativeVariant.user_id).is_not(None),
                col(CreativeVariant.image_key).is_not(None),
            )
            .group_by(col(CreativeVariant.user_id))
            .subquery()
        )
        shoppers = int(session.exec(select(func.count()).select_from(ready)).one())
        base = (
            select(Impression.arm, func.count())
            .join(ready, ready.c.user_id == col(Impression.user_id))
            .where(col(Impression.ts) >= ready.c.ready_at, col(Impression.arm).in_(HERO_ARMS))
            .group_by(col(Impression.arm))
        )
        by_arm = {str(arm): int(n) for arm, n in session.exec(base).all()}
        heroes = (
            select(func.count()).select_from(Impression).where(col(Impression.arm).in_(HERO_ARMS))
        )
        total_impr = int(session.exec(heroes).one())
        last_batch = max((float(e.get("at", 0.0)) for e in ledger), default=None)
        steady_impr = 0
        if last_batch is not None:
            since = datetime.fromtimestamp(last_batch, tz=UTC)
            steady_impr = int(session.exec(heroes.where(Impression.ts >= since)).one())
    runs = _cache_times(Path(generation.result_cache_file or Path(home) / "cache/results.sqlite"))
    steady_runs = sum(1 for t in runs if last_batch is not None and t > last_batch)
    of_those = sum(by_arm.values())
    pers = by_arm.get("personalized", 0)
    hits = sum(int(e.get("from_cache", 0)) for e in ledger)
    rendered = sum(int(e.get("rendered", 0)) for e in ledger)
    cpu = sum(float(e.get("cpu_s_per_image", 0.0)) * int(e.get("rendered", 0)) for e in ledger)
    gpu = sum(float(e.get("gpu_s_per_image", 0.0)) * int(e.get("rendered", 0)) for e in ledger)
    return CoverageOutput(
        personalized_coverage=_ratio(pers, of_those),
        personalized_shoppers=shoppers,
        impressions_of_those=of_those,
        personalized_impressions_of_those=pers,
        hero_impressions=total_impr,
        diffusion_runs=len(runs),
        diffusion_runs_per_1000_impressions=_ratio(len(runs), total_impr, 1000.0),
        steady_state_impressions=steady_impr,
        steady_state_diffusion_runs=steady_runs,
        steady_state_runs_per_1000_impressions=(
            _ratio(steady_runs, steady_impr, 1000.0) if last_batch is not None else None
        ),
        cache_hit_rate=_ratio(hits, hits + rendered),
        cpu_s_per_image=_ratio(cpu, rendered),
        gpu_s_per_image=_ratio(gpu, rendered),
    )


class CostGauges(Protocol):
    """The Prometheus gauges :func:`publish` sets (``api.metrics.ApiMetrics`` has them)."""

    personalized_coverage: Gauge
    diffusion_runs_per_1000: Gauge
    result_cache_hit_rate: Gauge
    seconds_per_image: Gauge


def publish(gauges: CostGauges, out: CoverageOutput) -> None:
    """Set the cost and coverage gauges from ``out`` (a missing figure is exported as NaN)."""

    def val(x: float | None) -> float:
        return float("nan") if x is None else float(x)

    gauges.personalized_coverage.set(val(out.personalized_coverage))
    gauges.diffusion_runs_per_1000.labels("all").set(val(out.diffusion_runs_per_1000_impressions))
    gauges.diffusion_runs_per_1000.labels("steady_state").set(
        val(out.steady_state_runs_per_1000_impressions)
    )
    gauges.result_cache_hit_rate.set(val(out.cache_hit_rate))
    gauges.seconds_per_image.labels("cpu").set(val(out.cpu_s_per_image))
    gauges.seconds_per_image.labels("gpu").set(val(out.gpu_s_per_image))
