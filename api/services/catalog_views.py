"""Read-only views for the marketer and analyst pages: product cards, a shopper's
personalized vs segment hero, and logged click-through per variant."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func
from sqlmodel import Session, col, select

from api.services.hero import load_candidates
from data.models import Click, CreativeVariant, Impression, Product, SegmentMembership

#: Catalog image types served to the pages, by suffix.
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}


@dataclass(frozen=True)
class HeroPick:
    """A servable variant of one source (``personalized`` or ``segment``)."""

    variant_id: int
    product_id: int
    product_title: str | None
    image_key: str


@dataclass(frozen=True)
class VariantCtrRow:
    """Logged impressions and clicks of one variant (or of all personalized ones), with a
    Wilson interval of the click-through."""

    label: str
    arm: str
    variant_id: int | None
    product_id: int | None
    impressions: int
    clicks: int
    ctr: float
    ci_low: float
    ci_high: float


def product_titles(session: Session, ids: set[int]) -> dict[int, str]:
    """``{product id: title}`` of the known ``ids``."""
    if not ids:
        return {}
    rows = session.exec(select(Product.id, Product.title).where(col(Product.id).in_(ids))).all()
    return {int(i): str(t) for i, t in rows if i is not None}


def products_in_order(session: Session, ids: list[int]) -> list[Product]:
    """The known products among ``ids``, in the order given."""
    rows = session.exec(select(Product).where(col(Product.id).in_(ids))).all()
    by_id = {p.id: p for p in rows}
    return [p for i in ids if (p := by_id.get(i)) is not None]


def catalog_image(session: Session, home: Path, product_id: int) -> str | Path | None:
    """A product's catalog image: an ``http(s)`` URL, a local image file (relative paths are
    under ``home``), or None when it has none or the path is not an image file (a mistyped or
    hostile catalog path must not turn the pages into a file server)."""
    product = session.get(Product, product_id)
    if product is None or not product.image:
        return None
    if product.image.startswith(("http://", "https://")):
        return product.image
    path = Path(product.image)
    if not path.is_absolute():
        path = home / path
    if path.suffix.lower() not in IMAGE_TYPES or not path.is_file():
        return None
    return path


def hero_picks(
    session: Session, *, user_id: str, placement: str
) -> tuple[dict[str, HeroPick], int | None]:
    """The shopper's newest personalized hero and their segment's first approved hero, by
    source, and their segment id (nothing is logged)."""
    found: dict[str, tuple[int, int, str]] = {}
    for c in load_candidates(session, user_id=user_id, placement=placement, limit=8):
        if c.source in ("personalized", "segment") and c.source not in found:
            found[c.source] = (c.variant_id, c.product_id, c.image_key)
    titles = product_titles(session, {pid for _, pid, _ in found.values()})
    segment_id = session.exec(
        select(SegmentMembership.segment_id).where(SegmentMembership.user_id == user_id)
    ).first()
    picks = {
        source: HeroPick(vid, pid, titles.get(pid), key)
        for source, (vid, pid, key) in found.items()
    }
    return picks, segment_id


def _arm(v: CreativeVariant | None) -> str:
    if v is None:
        return "unknown"
    if v.user_id is not None:
        return "personalized"
    return "segment" if v.segment_id is not None else "generic"


def variant_ctr_rows(
    session: Session, *, limit: int, placement: str | None, alpha: float = 0.05
) -> list[VariantCtrRow]:
    """On-policy click-through of each logged variant (most shown first, at most ``limit``
    rows) with ``1 - alpha`` Wilson intervals. Personalized variants are pooled into one row:
    no per-user numbers."""
    from recsys.evaluation.arms import wilson_interval

    views_q = select(Impression.variant_id, func.count()).where(
        col(Impression.variant_id).is_not(None)
    )
    clicks_q = select(Impression.variant_id, func.count()).join(
        Click, col(Click.impression_id) == col(Impression.id)
    )
    if placement is not None:
        views_q = views_q.where(Impression.placement == placement)
        clicks_q = clicks_q.where(Impression.placement == placement)
    views = {
        int(v): int(n)
        for v, n in session.exec(views_q.group_by(col(Impression.variant_id)))
        if v is not None
    }
    clicks = {
        int(v): int(n)
        for v, n in session.exec(clicks_q.group_by(col(Impression.variant_id)))
        if v is not None
    }
    variants = {
        int(v.id): v  # type: ignore[arg-type]
        for v in session.exec(
            select(CreativeVariant).where(col(CreativeVariant.id).in_(list(views)))
        )
    }
    titles = product_titles(session, {v.product_id for v in variants.values()})
    rows: list[VariantCtrRow] = []
    pooled = [0, 0, 0]  # impressions, clicks, variants
    for vid, n in views.items():
        v = variants.get(vid)
        arm = _arm(v)
        c = clicks.get(vid, 0)
        if arm == "personalized":
            pooled[0] += n
            pooled[1] += c
            pooled[2] += 1
            continue
        lo, hi = wilson_interval(c, n, alpha)
        title = titles.get(v.product_id) if v is not None else None
        rows.append(
            VariantCtrRow(
                label=f"#{vid} {arm}" + (f" · {title}" if title else ""),
                arm=arm,
                variant_id=vid,
                product_id=v.product_id if v else None,
                impressions=n,
                clicks=c,
                ctr=c / n,
                ci_low=lo,
                ci_high=hi,
            )
        )
    if pooled[0]:
        lo, hi = wilson_interval(pooled[1], pooled[0], alpha)
        rows.append(
            VariantCtrRow(
                label=f"personalized ({pooled[2]} variants, pooled)",
                arm="personalized",
                variant_id=None,
                product_id=None,
                impressions=pooled[0],
                clicks=pooled[1],
                ctr=pooled[1] / pooled[0],
                ci_low=lo,
                ci_high=hi,
            )
        )
    rows.sort(key=lambda r: (-r.impressions, r.label))
    return rows[:limit]
