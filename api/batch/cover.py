"""``batch cover``: keep every owner covered from what is already approved.

For each owner with an approved variant (every segment, and the generic pool), the
coverage plan of ``api.services.recompose`` is computed from the database as it is (no change
being approved): placements without an approved variant are recomposed from the newest
approved variant with a kept scene, stale recompositions are retired. One commit per owner.
Useful after variants were approved by a path that does not recompose (the demo build, an
API replica without a generator, variants approved before this existed). Idempotent: a
rerun finds every owner covered, or refused for the same reason.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from tqdm import tqdm

from api.batch.recompose import LazyRecomposer
from api.batch.render import GeneratorSpec
from api.services.recompose import apply_plan, compose_plan, plan_coverage
from api.settings import Settings
from data.models import CreativeVariant, VariantStatus

__all__ = ["CoverSummary", "run_cover"]

#: The audit actor of the recompositions ``batch cover`` writes.
COVER_ACTOR = "system:batch-cover"


@dataclass
class CoverSummary:
    """What ``batch cover`` did: owners looked at, variants recomposed and retired, the
    placements still refused per owner (``"segment 3"`` / ``"generic"``) and why, seconds."""

    owners: int = 0
    recomposed: int = 0
    retired: int = 0
    refused: dict[str, dict[str, str]] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_cover(
    settings: Settings, engine: Engine, *, delivery: bool = True, progress: bool = True
) -> CoverSummary:
    """Recompose what every owner lacks (see the module docstring); the hero generator is
    loaded only when a recomposition is due. ``delivery=False``: the classic compose path
    (tiny test models)."""
    t0 = time.perf_counter()
    spec = GeneratorSpec.of(settings.generation, settings.home, delivery=delivery)
    recomposer = LazyRecomposer(spec)
    out = CoverSummary()
    with Session(engine) as session:
        owners = sorted(
            set(
                session.exec(
                    select(CreativeVariant.segment_id).where(
                        col(CreativeVariant.user_id).is_(None),
                        CreativeVariant.status == VariantStatus.approved,
                    )
                ).all()
            ),
            key=lambda s: -1 if s is None else s,
        )
        out.owners = len(owners)
        for segment_id in tqdm(owners, desc="cover", unit="owner", disable=not progress):
            plan = plan_coverage(session, segment_id=segment_id, recomposer=recomposer)
            session.commit()  # end the reads before composing
            compose_plan(plan, recomposer)
            created = apply_plan(session, plan, actor=COVER_ACTOR)
            session.commit()
            out.recomposed += len(created)
            out.retired += len(plan.retire)
            if plan.refused:
                name = "generic" if segment_id is None else f"segment {segment_id}"
                out.refused[name] = dict(plan.refused)
    out.seconds = round(time.perf_counter() - t0, 3)
    return out
