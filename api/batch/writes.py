"""Driver-side writes of a batch: idempotent, keyed by brief hash.

Only the driver writes rows (Ray actors only render), and every write is an upsert on the
natural key of a variant (its owner, placement and brief hash), so a chunk that Ray retried,
a killed run that is run again, or a result that arrives twice all leave one row. The result
cache (brief hash → image key) is the source of truth for images: a row takes its image key
from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from api.services.audit import record_change
from data.models import CreativeVariant, VariantStatus, utcnow
from genservice.brief import CreativeBrief
from genservice.cache import ResultCache
from genservice.config import GenerationConfig
from genservice.storage import LocalImageStore


def open_result_cache(config: GenerationConfig, home: Path) -> ResultCache:
    """The generator's result cache (same file and store as ``HeroGenerator.from_config``)."""
    store = LocalImageStore(Path(config.image_store_dir or home / "images"))
    return ResultCache(
        Path(config.result_cache_file or home / "cache" / "results.sqlite"), store=store
    )


@dataclass(frozen=True)
class Owner:
    """Whose variant: a segment's (``segment_id``) or a shopper's (``user_id``)."""

    segment_id: int | None = None
    user_id: str | None = None

    def __post_init__(self) -> None:
        if (self.segment_id is None) == (self.user_id is None):
            raise ValueError(f"owner: expected exactly one of segment_id / user_id, got {self!r}")


def find_variant(
    session: Session, owner: Owner, *, placement: str, brief_hash: str
) -> CreativeVariant | None:
    """The variant of ``owner`` with this brief at ``placement``, if any."""
    q = select(CreativeVariant).where(
        CreativeVariant.brief_hash == brief_hash, CreativeVariant.placement == placement
    )
    if owner.user_id is not None:
        q = q.where(CreativeVariant.user_id == owner.user_id)
    else:
        q = q.where(
            CreativeVariant.segment_id == owner.segment_id, col(CreativeVariant.user_id).is_(None)
        )
    return session.exec(q.order_by(col(CreativeVariant.id))).first()


def upsert_variant(
    session: Session,
    owner: Owner,
    *,
    product_id: int,
    brief: CreativeBrief,
    image_key: str,
    approve: bool,
    actor: str,
    detail: dict[str, Any] | None = None,
    before_commit: Callable[[int], object] | None = None,
) -> tuple[int, bool]:
    """Create or complete the variant of ``owner`` for ``brief`` with ``image_key``;
    ``(variant id, created)``. Commits. An existing row gets its image (when it had none)
    and is approved when ``approve`` (a retired or approved row keeps its status).
    ``before_commit(variant id)`` adds its own writes to the same commit (coverage)."""
    placement = brief.placement.name
    found = find_variant(session, owner, placement=placement, brief_hash=brief.brief_hash)
    table = CreativeVariant.__table__  # type: ignore[attr-defined]
    if found is not None and found.id is not None:
        values: dict[str, Any] = {}
        if not found.image_key:
            values["image_key"] = image_key
        if approve and found.status == VariantStatus.draft:
            values["status"] = VariantStatus.approved
        if values:
            values["updated_at"] = utcnow()
            session.execute(update(table).where(table.c.id == found.id).values(**values))
            if "status" in values:
                record_change(
                    session, variant_id=found.id, actor=actor, action="approve", detail=detail or {}
                )
        if before_commit is not None:
            before_commit(found.id)
        session.commit()
        return found.id, False
    variant = CreativeVariant(
        segment_id=owner.segment_id,
        user_id=owner.user_id,
        product_id=product_id,
        placement=placement,
        brief_hash=brief.brief_hash,
        brief=brief.to_dict(),
        terms=[[t.term, t.weight] for t in brief.style_terms],
        prompt_template=brief.prompt_template,
        image_key=image_key,
        status=VariantStatus.approved if approve else VariantStatus.draft,
        created_by=actor,
    )
    session.add(variant)
    session.flush()
    assert variant.id is not None
    record_change(
        session,
        variant_id=variant.id,
        actor=actor,
        action="create",
        detail={"brief_hash": brief.brief_hash, "seed": brief.seed, **(detail or {})},
    )
    if approve:
        record_change(
            session, variant_id=variant.id, actor=actor, action="approve", detail=detail or {}
        )
    if before_commit is not None:
        before_commit(variant.id)
    session.commit()
    return variant.id, True
