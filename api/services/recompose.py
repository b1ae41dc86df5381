"""Coverage by recomposition: the storefront never refuses a placement while its owner has an
approved creative in another placement.

An owner (a segment, or no segment: generic) is *covered* at a placement when one of its
variants there is approved. Whenever the approved set of an owner changes (an approval through
the API, a batch auto-approval, a retirement, an edit), :func:`plan_coverage` works out, from
the database and the change about to be written:

- which *derived* variants to retire: those whose source is no longer approved (retired or
  edited back to draft), and those superseded by a rendered variant approved at their
  placement (a newer approval of the placement itself wins);
- which placements are left uncovered, and for each the source to derive from: the approving
  variant first, then the owner's newest approved rendered variant with a kept scene.

:func:`compose_plan` renders the derivations with a :class:`RecomposerPort`
(``genservice.recompose.Recomposer``: the hero generator's composition path on the source's
kept scene; no diffusion run) before anything is written; :func:`apply_plan` then writes the
retirements and the derived variants (approved, ``derived_from`` = source id, audit rows
naming the source, ``source: recomposed``) in the caller's transaction, so that the approval
and its derivations become visible in one commit: there is no moment in which the owner has
an approved creative and a placement is refused. Derived variants are ordinary approved
variants for the storefront (the in-memory snapshot serves them unchanged).

A source rendered before scenes were kept has nothing to recompose from: the placement stays
refused and the plan says why (``refused``). A derived variant retired by a marketer is not
derived again from the same source.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlmodel import Session, col, select

from api.services.audit import record_change
from data.models import CreativeVariant, VariantChange, VariantStatus, utcnow
from genservice.brief import PLACEMENTS, CreativeBrief, Placement
from genservice.recompose import derived_brief, derived_hash

log = logging.getLogger(__name__)

__all__ = [
    "CoveragePlan",
    "Derivation",
    "RecomposerPort",
    "Source",
    "apply_plan",
    "compose_plan",
    "plan_coverage",
    "recomposer_for",
]

#: The placements an owner is covered at.
PLACEMENT_NAMES: tuple[str, ...] = tuple(PLACEMENTS)
#: ``source`` of a derived variant's audit rows.
RECOMPOSED = "recomposed"


class _Hero(Protocol):
    @property
    def image_key(self) -> str: ...


class RecomposerPort(Protocol):
    """What coverage needs of ``genservice.recompose.Recomposer``."""

    def has_scene(self, brief_hash: str) -> bool: ...
    def recompose(self, brief: CreativeBrief, source_hash: str) -> _Hero: ...


@dataclass(frozen=True)
class Source:
    """An approved rendered variant to derive from (``variant_id`` None: being inserted in
    the same transaction; :func:`apply_plan` is told its id)."""

    variant_id: int | None
    segment_id: int | None
    product_id: int
    placement: str
    brief_hash: str
    brief: dict[str, Any]
    prompt_template: str | None = None

    @classmethod
    def of(cls, v: CreativeVariant) -> Source:
        return cls(
            v.id, v.segment_id, v.product_id, v.placement, v.brief_hash, dict(v.brief),
            v.prompt_template,
        )  # fmt: skip


@dataclass
class Derivation:
    """``source`` recomposed at ``placement``; ``key``: the derived variant's brief hash
    (:func:`genservice.recompose.derived_hash`); ``image_key`` once composed."""

    source: Source
    placement: str
    key: str
    image_key: str = ""
    seconds: float = 0.0


@dataclass
class CoveragePlan:
    """What keeps an owner covered: variants to retire ``(id, reason)``, derivations, and the
    placements left refused with the reason."""

    segment_id: int | None
    retire: list[tuple[int, str]] = field(default_factory=list)
    derive: list[Derivation] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.retire and not self.derive

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (audit details, CLI output)."""
        return {
            "derived": {d.placement: d.image_key for d in self.derive if d.image_key},
            "retired": [vid for vid, _ in self.retire],
            "refused": dict(self.refused),
        }


def _owner_query(segment_id: int | None) -> Any:
    q = select(CreativeVariant).where(col(CreativeVariant.user_id).is_(None))
    if segment_id is None:
        return q.where(col(CreativeVariant.segment_id).is_(None))
    return q.where(CreativeVariant.segment_id == segment_id)


def _marketer_retired(session: Session, segment_id: int | None, placement: str, key: str) -> bool:
    """Whether a derivation with ``key`` was retired by a person (its retire row has no
    system ``reason``): it is not derived again."""
    rows = session.exec(
        _owner_query(segment_id).where(
            CreativeVariant.placement == placement,
            CreativeVariant.brief_hash == key,
            CreativeVariant.status == VariantStatus.retired,
        )
    ).all()
    for row in rows:
        last = session.exec(
            select(VariantChange)
            .where(VariantChange.variant_id == row.id, VariantChange.action == "retire")
            .order_by(col(VariantChange.id).desc())
        ).first()
        if last is not None and "reason" not in (last.detail or {}):
            return True
    return False


def plan_coverage(
    session: Session,
    *,
    segment_id: int | None,
    recomposer: RecomposerPort | None,
    approving: Source | None = None,
    removing: int | None = None,
) -> CoveragePlan:
    """The plan that keeps owner ``segment_id`` covered once ``approving`` is approved and/or
    ``removing`` (a variant id) stops being approved (see the module docstring). Reads only;
    ``recomposer`` None: nothing can be derived in this process (the plan says so)."""
    rows = list(session.exec(_owner_query(segment_id).where(
        CreativeVariant.status == VariantStatus.approved)).all())  # fmt: skip
    plan = CoveragePlan(segment_id)
    live = [r for r in rows if r.id != removing]
    rendered = [r for r in live if r.derived_from is None]
    sources = sorted(
        (Source.of(r) for r in rendered if approving is None or r.id != approving.variant_id),
        key=lambda s: -(s.variant_id or 0),
    )
    if approving is not None:
        sources.insert(0, approving)
    source_ids = {s.variant_id for s in sources}
    real_at = {s.placement for s in sources}
    covered = set(real_at)
    for d in (r for r in live if r.derived_from is not None):
        assert d.id is not None
        if d.derived_from not in source_ids:
            plan.retire.append((d.id, f"source variant {d.derived_from} is no longer approved"))
        elif d.placement in real_at:
            plan.retire.append((d.id, f"superseded by an approved {d.placement} variant"))
        else:
            covered.add(d.placement)
    removed_key = next((r.brief_hash for r in rows if r.id == removing), None)
    for placement in PLACEMENT_NAMES:
        if placement in covered or not sources:
            continue  # covered, or nothing approved at all: a refusal is right
        reasons: list[str] = []
        for s in sources:
            if s.placement == placement:
                continue
            key = derived_hash(s.brief_hash, placement)
            if key == removed_key or _marketer_retired(session, segment_id, placement, key):
                reasons.append(f"the recomposition of variant {s.variant_id} was retired")
                continue
            if recomposer is None:
                reasons.append("no hero generator in this process to recompose with")
                break
            if not recomposer.has_scene(s.brief_hash):
                reasons.append(
                    f"variant {s.variant_id} has no kept scene (rendered before scenes were "
                    f"kept): approve a {placement} variant"
                )
                continue
            plan.derive.append(Derivation(s, placement, key))
            break
        else:
            reasons = reasons or ["no approved variant in another placement"]
        if not any(d.placement == placement for d in plan.derive):
            plan.refused[placement] = "; ".join(reasons)
    return plan


def compose_plan(plan: CoveragePlan, recomposer: RecomposerPort | None) -> CoveragePlan:
    """Compose every derivation of ``plan`` (no database access; slow: the composition path
    with restoration). A derivation that fails (fidelity or safety check, missing scene)
    moves to ``refused`` with its reason. Returns ``plan``."""
    import time

    kept: list[Derivation] = []
    for d in plan.derive:
        if recomposer is None:
            plan.refused[d.placement] = "no hero generator in this process to recompose with"
            continue
        t0 = time.perf_counter()
        try:
            brief = derived_brief(
                CreativeBrief.from_dict(d.source.brief), Placement.preset(d.placement)
            )
            d.image_key = recomposer.recompose(brief, d.source.brief_hash).image_key
        except Exception as exc:  # a check refused it: the placement stays refused, say why
            log.warning("recomposition of %s at %s failed: %s", d.source.brief_hash[:12],
                        d.placement, exc)  # fmt: skip
            plan.refused[d.placement] = f"recomposition failed: {type(exc).__name__}: {exc}"[:300]
            continue
        d.seconds = time.perf_counter() - t0
        kept.append(d)
    plan.derive = kept
    return plan


def apply_plan(
    session: Session, plan: CoveragePlan, *, actor: str, source_id: int | None = None
) -> list[int]:
    """Write ``plan`` into ``session`` (the caller commits, with the change that caused it):
    retirements and the composed derivations as approved variants. ``source_id``: the id of
    a source inserted in this transaction (``Source.variant_id`` None). Returns the new ids."""
    now = utcnow()
    for vid, reason in plan.retire:
        row = session.get(CreativeVariant, vid)
        if row is None or row.status == VariantStatus.retired:
            continue
        before = str(row.status)
        row.status = VariantStatus.retired
        row.updated_at = now
        session.add(row)
        detail = {"from": before, "to": "retired", "reason": reason}
        record_change(session, variant_id=vid, actor=actor, action="retire", detail=detail)
    created: list[int] = []
    for d in plan.derive:
        if not d.image_key:
            continue
        src_id = d.source.variant_id if d.source.variant_id is not None else source_id
        if src_id is None:
            raise ValueError("source_id: expected the id of the source inserted with the plan")
        brief = derived_brief(
            CreativeBrief.from_dict(d.source.brief), Placement.preset(d.placement)
        )
        v = CreativeVariant(
            segment_id=d.source.segment_id,
            product_id=d.source.product_id,
            placement=d.placement,
            brief_hash=d.key,
            brief=brief.to_dict(),
            terms=[[t.term, t.weight] for t in brief.style_terms],
            prompt_template=d.source.prompt_template,
            image_key=d.image_key,
            status=VariantStatus.approved,
            created_by=actor,
            derived_from=src_id,
        )
        session.add(v)
        session.flush()
        assert v.id is not None
        origin = {"source": RECOMPOSED, "source_variant_id": src_id,
                  "source_brief_hash": d.source.brief_hash}  # fmt: skip
        record_change(session, variant_id=v.id, actor=actor, action="create",
                      detail={**origin, "image_key": d.image_key,
                              "seconds": round(d.seconds, 3)})  # fmt: skip
        record_change(session, variant_id=v.id, actor=actor, action="approve",
                      detail={"from": "draft", "to": "approved", **origin})  # fmt: skip
        created.append(int(v.id))
    return created


def recomposer_for(generator: object) -> RecomposerPort | None:
    """A recomposer over ``generator`` when it is a hero generator that keeps scenes (the
    server's loaded generator, a worker's, the batch driver's), else None."""
    from genservice.generator import HeroGenerator
    from genservice.recompose import Recomposer

    if isinstance(generator, HeroGenerator) and generator.scenes is not None:
        return Recomposer(generator)
    return None
