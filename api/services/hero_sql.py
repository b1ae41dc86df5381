"""The storefront's per-request SQL helpers: a variant's image (read or synced from its job)
and the candidates of a user at a placement (:func:`load_candidates`). The server's memory
hot path (``hero_snapshot``) makes the same selection from memory; the CLI, the marketer's
views and ``candidates_ttl_s = 0`` use these."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import Session, col, select

from api.services.erasure import rowcount
from api.services.hero_snapshot import Candidate
from data.models import (
    CreativeVariant,
    GenerationJob,
    JobStatus,
    SegmentMembership,
    VariantStatus,
    utcnow,
)


def variant_image_keys(session: Session, variants: list[CreativeVariant]) -> dict[int, str]:
    """``variant id -> image key`` of ``variants`` that have an image, read only.

    The brief hash is the key to an image: a variant rendered by a job shows the result of
    the succeeded job of its brief hash; a variant whose image was stored with it (seeded,
    imported, batch-rendered) shows that. Nothing is written (safe on GET requests)."""
    out = {v.id: v.image_key for v in variants if v.id is not None and v.image_key}
    hashes = {v.brief_hash for v in variants if v.id is not None and v.id not in out}
    if not hashes:
        return out
    results = dict(
        session.exec(
            select(GenerationJob.brief_hash, GenerationJob.result_key).where(
                col(GenerationJob.brief_hash).in_(list(hashes)),
                GenerationJob.status == JobStatus.succeeded,
            )
        ).all()
    )
    for v in variants:
        key = results.get(v.brief_hash)
        if v.id is not None and v.id not in out and key:
            out[v.id] = key
    return out


def sync_variant_images(session: Session, variants: list[CreativeVariant]) -> int:
    """Store finished jobs' result keys on variants that lack an image (write paths only:
    an approval freezes the image a marketer reviewed); returns how many. Reads use
    :func:`variant_image_keys`.

    Variants learn about their images lazily (here) rather than through worker callbacks,
    so genservice stays ignorant of variants.
    """
    pending = {v.job_id: v for v in variants if v.image_key is None and v.job_id}
    if not pending:
        return 0
    rows = session.exec(
        select(GenerationJob.id, GenerationJob.result_key).where(
            col(GenerationJob.id).in_(list(pending)),
            GenerationJob.status == JobStatus.succeeded,
        )
    ).all()
    n = 0
    table = CreativeVariant.__table__  # type: ignore[attr-defined]
    for job_id, key in rows:
        if key:
            v = pending[job_id]
            now = utcnow()
            # A Core UPDATE of the row if it still exists: a variant erased meanwhile stays
            # erased (an ORM flush of a deleted row would fail, or re-create nothing useful).
            n += rowcount(
                session.execute(
                    update(table)
                    .where(table.c.id == v.id, table.c.image_key.is_(None))
                    .values(image_key=key, updated_at=now)
                )
            )
            v.image_key = key
            v.updated_at = now
    session.commit()
    return n


def load_candidates(
    session: Session, *, user_id: str, placement: str, limit: int
) -> list[Candidate]:
    """Servable candidates for ``user_id`` at ``placement`` (see the module docstring)."""
    out: list[Candidate] = []
    personal = list(
        session.exec(
            select(CreativeVariant)
            .where(
                CreativeVariant.user_id == user_id,
                CreativeVariant.placement == placement,
                CreativeVariant.status != VariantStatus.retired,
            )
            .order_by(col(CreativeVariant.updated_at).desc(), col(CreativeVariant.id).desc())
            .limit(4)
        )
    )
    ready = variant_image_keys(session, personal)
    for v in personal:
        if v.id is not None and v.id in ready:
            out.append(Candidate(v.id, v.product_id, ready[v.id], "personalized"))
            break  # the newest personalized image only: older ones are stale taste
    segment_id = session.exec(
        select(SegmentMembership.segment_id).where(SegmentMembership.user_id == user_id)
    ).first()
    shared = select(CreativeVariant).where(
        col(CreativeVariant.user_id).is_(None),
        CreativeVariant.placement == placement,
        CreativeVariant.status == VariantStatus.approved,
        col(CreativeVariant.image_key).is_not(None),
    )
    if segment_id is not None:
        # Leave room for one generic candidate, so its click-through keeps being measured.
        rows = session.exec(
            shared.where(CreativeVariant.segment_id == segment_id)
            .order_by(col(CreativeVariant.id))
            .limit(max(1, limit - len(out) - 1))
        )
        out += [
            Candidate(v.id, v.product_id, v.image_key, "segment")
            for v in rows
            if v.id and v.image_key
        ]
    room = max(1, limit - len(out))
    rows = session.exec(
        shared.where(col(CreativeVariant.segment_id).is_(None))
        .order_by(col(CreativeVariant.id))
        .limit(room)
    )
    out += [
        Candidate(v.id, v.product_id, v.image_key, "generic") for v in rows if v.id and v.image_key
    ]
    return out[:limit]
