"""Erasure of one user (``DELETE /v1/users/{id}``): idempotent, one transaction for the rows.

Erased: the user's events, taste profile, segment membership, demo taste, user row, user-level
variants (with their audit rows, their jobs and their image files, unless another variant
still uses the same content-addressed image) and any user vectors in an index. Impressions stay
for aggregate click-through, with their user link set to NULL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from api.logging import get_logger
from data.models import (
    CreativeVariant,
    DemoTaste,
    Event,
    GenerationJob,
    Impression,
    Segment,
    SegmentMembership,
    TasteProfileRecord,
    User,
    VariantChange,
)

log = get_logger("erasure")


@dataclass(frozen=True)
class ErasureOutput:
    """What was erased (counts); all zeros on a second call."""

    user_id: str
    events: int = 0
    profiles: int = 0
    memberships: int = 0
    variants: int = 0
    jobs: int = 0
    images: int = 0
    index_entries: int = 0
    impressions_unlinked: int = 0
    user_rows: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return (
            self.events + self.profiles + self.memberships + self.variants + self.jobs
            + self.images + self.index_entries + self.impressions_unlinked + self.user_rows
        )  # fmt: skip


class ErasureIncomplete(RuntimeError):
    """Some files or index entries could not be erased; the rows were kept for a retry."""

    def __init__(self, user_id: str, errors: list[str]) -> None:
        super().__init__(f"erasure of a user incomplete ({len(errors)} errors); retry")
        self.user_id = user_id
        self.errors = errors


def _rowcount(res: Any) -> int:
    return int(getattr(res, "rowcount", 0) or 0)


def erase_user(
    session: Session,
    *,
    user_id: str,
    images: Any | None = None,
    result_cache: Any | None = None,
    user_indexes: list[Any] | None = None,
) -> ErasureOutput:
    """Erase ``user_id`` (see the module docstring); commits. ``images`` is an image store
    with ``delete(key)``; ``result_cache`` has ``delete(brief_hash)`` (genservice's brief →
    image cache); each of ``user_indexes`` has ``remove_user(user_id) -> int``."""
    if not user_id or len(user_id) > 128:
        raise ValueError(f"user_id: expected 1..128 characters, got {len(user_id)}")
    variants = list(session.exec(select(CreativeVariant).where(CreativeVariant.user_id == user_id)))
    variant_ids = [v.id for v in variants if v.id is not None]
    keys = {v.image_key for v in variants if v.image_key}
    hashes = {v.brief_hash for v in variants}
    job_ids = {v.job_id for v in variants if v.job_id}
    # Jobs rendered the user's brief: their result keys are the user's images too.
    jobs = list(
        session.exec(
            select(GenerationJob).where(
                col(GenerationJob.id).in_(list(job_ids))
                | col(GenerationJob.brief_hash).in_(list(hashes))
            )
        )
    ) if (job_ids or hashes) else []  # fmt: skip
    keys |= {j.result_key for j in jobs if j.result_key}
    # Keep what other (segment or other users') variants still use.
    shared_hashes = set(
        session.exec(
            select(CreativeVariant.brief_hash).where(
                col(CreativeVariant.brief_hash).in_(list(hashes)),
                (col(CreativeVariant.user_id).is_(None)) | (CreativeVariant.user_id != user_id),
            )
        ).all()
    ) if hashes else set()  # fmt: skip
    shared_keys = set(
        session.exec(
            select(CreativeVariant.image_key).where(
                col(CreativeVariant.image_key).in_(list(keys)),
                (col(CreativeVariant.user_id).is_(None)) | (CreativeVariant.user_id != user_id),
            )
        ).all()
    ) if keys else set()  # fmt: skip
    erasable_jobs = [j.id for j in jobs if j.brief_hash not in shared_hashes]
    erasable_keys = sorted(keys - shared_keys)

    # Files and index entries first, rows last: if anything fails midway the rows still
    # point at what is left, so a retry finds and erases it (deleting twice is harmless).
    errors: list[str] = []
    n_images = 0
    if images is not None:
        for key in erasable_keys:
            try:
                if images.delete(key):
                    n_images += 1
            except Exception as exc:
                errors.append(f"image {key[:12]}: {type(exc).__name__}")
    if result_cache is not None:
        for h in sorted(hashes - shared_hashes):
            try:
                result_cache.delete(h)
            except Exception as exc:
                errors.append(f"result cache: {type(exc).__name__}")
    n_index = 0
    for index in user_indexes or []:
        try:
            n_index += int(index.remove_user(user_id) or 0)
        except Exception as exc:
            errors.append(f"index: {type(exc).__name__}")
    if errors:
        # Nothing is deleted from the database: a retry finds the same rows and files.
        raise ErasureIncomplete(user_id, errors)
    membership = session.get(SegmentMembership, user_id)
    if membership is not None:
        seg = session.get(Segment, membership.segment_id)
        if seg is not None and seg.size > 0:
            seg.size -= 1
            session.add(seg)
    counts: dict[str, int] = {}
    counts["events"] = _rowcount(
        session.execute(delete(Event).where(col(Event.user_id) == user_id))
    )
    counts["profiles"] = _rowcount(
        session.execute(
            delete(TasteProfileRecord).where(col(TasteProfileRecord.user_id) == user_id)
        )
    )
    counts["memberships"] = _rowcount(
        session.execute(delete(SegmentMembership).where(col(SegmentMembership.user_id) == user_id))
    )
    session.execute(delete(DemoTaste).where(col(DemoTaste.user_id) == user_id))
    if variant_ids:
        session.execute(delete(VariantChange).where(col(VariantChange.variant_id).in_(variant_ids)))
        counts["variants"] = _rowcount(
            session.execute(delete(CreativeVariant).where(col(CreativeVariant.id).in_(variant_ids)))
        )
    if erasable_jobs:
        counts["jobs"] = _rowcount(
            session.execute(delete(GenerationJob).where(col(GenerationJob.id).in_(erasable_jobs)))
        )
    counts["impressions_unlinked"] = _rowcount(
        session.execute(
            update(Impression).where(col(Impression.user_id) == user_id).values(user_id=None)
        )
    )
    counts["user_rows"] = _rowcount(session.execute(delete(User).where(col(User.id) == user_id)))
    session.commit()

    out = ErasureOutput(
        user_id=user_id, images=n_images, index_entries=n_index, errors=errors, **counts
    )
    log.info("user erased", extra={"erased": out.total, "errors": len(errors)})
    return out
