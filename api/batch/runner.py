"""Produce planned heroes: skip what is done, render the rest on an executor, write each
result once. Shared by ``batch variants`` and ``batch personalize``.

A planned item is done when its variant row has an image; it is *cached* when the result
cache already holds its brief hash (written to the database without a diffusion run);
everything else is rendered in chunks (one model and one canvas size per chunk) and written
as results stream back. A rerun after a crash therefore renders only what is missing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session
from tqdm import tqdm

from api.batch.engine import ExecutorConfig, Row, run_chunks
from api.batch.recompose import LazyRecomposer
from api.batch.render import GeneratorSpec, RenderFactory, chunk_items
from api.batch.writes import Owner, find_variant, open_result_cache, upsert_variant
from api.services.recompose import Source, apply_plan, compose_plan, plan_coverage
from data.models import VariantStatus
from genservice.brief import CreativeBrief
from genservice.config import GenerationConfig

#: ``approve(item)`` → None to approve, else why the item stays a draft.
ApproveFn = Callable[["PlannedItem"], str | None]


@dataclass(frozen=True)
class PlannedItem:
    """One hero to produce: its owner, product and brief; ``key`` names it in reports."""

    key: str
    owner: Owner
    product_id: int
    brief: CreativeBrief
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class QualityReport:
    """What every produced image went through and what was refused, with counts."""

    checked: list[str] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    kept_as_draft: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, str]] = field(default_factory=list)


@dataclass
class BatchSummary:
    """The JSON summary of a batch command. Seconds are wall seconds of this run;
    ``cpu_s_per_image`` / ``gpu_s_per_image`` are per freshly rendered image."""

    command: str
    executor: str
    actors: int
    planned: int = 0
    done_before: int = 0
    from_cache: int = 0
    rendered: int = 0
    failed: int = 0
    rows_created: int = 0
    rows_completed: int = 0
    approved: int = 0
    drafts: int = 0
    skipped: int = 0
    #: Variants recomposed for placements the owner had no approved variant at (no
    #: diffusion run; ``api.services.recompose``), and the placements still refused, why.
    recomposed: int = 0
    refused_placements: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    render_seconds: float = 0.0
    items_per_s: float = 0.0
    cpu_s_per_image: float = 0.0
    gpu_s_per_image: float = 0.0
    cache_hit_rate: float = 0.0
    quality: QualityReport = field(default_factory=QualityReport)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The automatic checks every rendered hero passes before it is stored (genservice).
CHECKS = (
    "product fidelity (product pixels unchanged, in memory and after encoding)",
    "safety checker",
)


@dataclass(frozen=True)
class RunOptions:
    """Executor, chunk size (briefs per pipeline call), torch threads per renderer, and
    whether the learned delivery path runs (off: the classic compose path, tiny models)."""

    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    chunk_size: int = 4
    threads: int = 1
    progress: bool = True
    delivery: bool = True


def produce(
    engine: Engine,
    *,
    home: Path,
    generation: GenerationConfig,
    items: Sequence[PlannedItem],
    command: str,
    actor: str,
    options: RunOptions,
    approve: ApproveFn | None = None,
    still_wanted: Callable[[Session, PlannedItem], bool] | None = None,
) -> BatchSummary:
    """Produce ``items`` (see the module docstring); returns the summary. ``still_wanted``
    is asked right before each write (e.g. the shopper was not erased meanwhile)."""
    t0 = time.perf_counter()
    summary = BatchSummary(command, options.executor.executor, options.executor.actors)
    summary.planned = len(items)
    summary.quality.checked = list(CHECKS)
    if approve is not None:
        summary.quality.checked.append("approved vocabulary (auto-approval policy)")
    cache = open_result_cache(generation, home)
    spec = GeneratorSpec.of(generation, home, threads=options.threads, delivery=options.delivery)
    cover = LazyRecomposer(spec) if approve is not None else None
    by_key = {it.key: it for it in items}
    todo: list[PlannedItem] = []
    with Session(engine) as session:
        for it in items:
            row = find_variant(
                session,
                it.owner,
                placement=it.brief.placement.name,
                brief_hash=it.brief.brief_hash,
            )
            if row is not None and row.image_key:
                summary.done_before += 1
                if approve is not None and row.status == VariantStatus.draft:
                    # A rerun under a (new) policy approves the drafts that now pass it.
                    _write(session, it, row.image_key, summary, actor, approve, still_wanted, cover)
                continue
            hit = cache.get(it.brief.brief_hash)
            if hit is not None:
                summary.from_cache += 1
                _write(session, it, hit.image_key, summary, actor, approve, still_wanted, cover)
            else:
                todo.append(it)
    work = [{"key": it.key, "brief": it.brief.to_dict()} for it in todo]
    chunks = chunk_items(work, size=options.chunk_size)
    bar = tqdm(total=len(work), desc=f"{command}", unit="img", disable=not options.progress)
    cpu = gpu = 0.0

    def on_rows(rows: list[Row]) -> None:
        nonlocal cpu, gpu
        with Session(engine) as session:
            for r in rows:
                it = by_key[str(r["key"])]
                if not r["image_key"]:
                    summary.failed += 1
                    reason = str(r["error"]).split(":", 1)[0] or "error"
                    summary.quality.refused[reason] = summary.quality.refused.get(reason, 0) + 1
                    if len(summary.quality.examples) < 10:
                        summary.quality.examples.append({"key": it.key, "error": str(r["error"])})
                    continue
                # The driver's cache write makes this machine's cache authoritative even when
                # the renderer ran elsewhere (idempotent: keyed by brief hash).
                cache.put(str(r["brief_hash"]), str(r["image_key"]), {"batch": command})
                if r["cached"]:
                    summary.from_cache += 1
                else:
                    summary.rendered += 1
                    cpu += float(r["cpu_s"])
                    gpu += float(r["gpu_s"])
                _write(
                    session, it, str(r["image_key"]), summary, actor, approve, still_wanted, cover
                )
        bar.update(len(rows))

    t1 = time.perf_counter()
    try:
        run_chunks(chunks, RenderFactory(spec), options.executor, on_rows=on_rows)
    finally:
        bar.close()
        summary.render_seconds = round(time.perf_counter() - t1, 3) if chunks else 0.0
        summary.seconds = round(time.perf_counter() - t0, 3)
        _finish(summary, cpu, gpu)
        cache.close()
    return summary


def _write(
    session: Session,
    it: PlannedItem,
    image_key: str,
    summary: BatchSummary,
    actor: str,
    approve: ApproveFn | None,
    still_wanted: Callable[[Session, PlannedItem], bool] | None,
    cover: LazyRecomposer | None = None,
) -> None:
    if still_wanted is not None and not still_wanted(session, it):
        summary.skipped += 1
        return
    reason = approve(it) if approve is not None else "no auto-approval policy"
    plan = None
    if reason is None and cover is not None and it.owner.segment_id is not None:
        # Coverage first (reads, then the slow composition), written in the approval's commit.
        found = find_variant(session, it.owner, placement=it.brief.placement.name,
                             brief_hash=it.brief.brief_hash)  # fmt: skip
        source = Source(
            found.id if found is not None else None, it.owner.segment_id, it.product_id,
            it.brief.placement.name, it.brief.brief_hash, it.brief.to_dict(),
            it.brief.prompt_template,
        )  # fmt: skip
        plan = plan_coverage(
            session, segment_id=it.owner.segment_id, recomposer=cover, approving=source
        )
        session.commit()  # end the reads before composing
        compose_plan(plan, cover)
        summary.refused_placements.update(plan.refused)
        summary.recomposed += sum(1 for d in plan.derive if d.image_key)

    def cover_in_commit(vid: int) -> None:
        if plan is not None:
            apply_plan(session, plan, actor=actor, source_id=vid)

    _vid, created = upsert_variant(
        session,
        it.owner,
        product_id=it.product_id,
        brief=it.brief,
        image_key=image_key,
        approve=reason is None,
        actor=actor,
        detail={"batch": summary.command},
        before_commit=cover_in_commit if plan is not None else None,
    )
    summary.rows_created += int(created)
    summary.rows_completed += int(not created)
    if reason is None:
        summary.approved += 1
    else:
        summary.drafts += 1
        if approve is not None:
            kept = summary.quality.kept_as_draft
            label = reason.split(":", 1)[0]
            kept[label] = kept.get(label, 0) + 1


def _finish(summary: BatchSummary, cpu: float, gpu: float) -> None:
    n = summary.rendered
    if summary.render_seconds > 0:
        summary.items_per_s = round(n / summary.render_seconds, 4)
    summary.cpu_s_per_image = round(cpu / n, 4) if n else 0.0
    summary.gpu_s_per_image = round(gpu / n, 4) if n else 0.0
    looked = summary.from_cache + summary.rendered
    summary.cache_hit_rate = round(summary.from_cache / looked, 4) if looked else 0.0


def append_ledger(home: Path, summary: BatchSummary) -> Path:
    """Append the summary as one JSON line to ``<home>/batch/ledger.jsonl`` (the cost
    accounting reads it); returns the path."""
    path = Path(home) / "batch" / "ledger.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"at": time.time(), **summary.as_dict()}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, sort_keys=True, default=str) + "\n")
    return path
