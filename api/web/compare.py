"""Small JSON helpers for the pages (not part of the public API schema):

- ``GET /ui/api/whoami`` (any valid key): the key's role and the pages it may open;
- ``GET /ui/api/compare?user_id=`` (marketer): a shopper's personalized vs segment hero, as a
  preview (no impression is logged);
- ``GET /ui/api/products?ids=`` (marketer): product cards (title, category, image URL);
- ``GET /ui/api/variant-ctr`` (analyst): logged click-through per variant with Wilson
  intervals (user-level variants pooled into one "personalized" row: no per-user numbers);
- ``GET /ui/products/{id}/image`` (public, like the storefront's own catalog photos).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, RedirectResponse, Response
from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import col, select

from api.auth import Principal
from api.deps import AnalystKey, MarketerKey, SessionDep, SettingsDep, get_principal, image_url
from api.services.hero import load_candidates
from data.models import Click, CreativeVariant, Impression, Product, Role

compare_router = APIRouter(include_in_schema=False)

IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}

#: Pages each role may open (admin: all).
PAGES: dict[Role, list[str]] = {
    Role.marketer: ["/ui/marketer"],
    Role.analyst: ["/ui/analyst"],
    Role.admin: ["/ui/marketer", "/ui/analyst"],
    Role.storefront: [],
}


class WhoAmI(BaseModel):
    role: str
    name: str
    prefix: str
    pages: list[str]


class HeroPreview(BaseModel):
    variant_id: int
    product_id: int
    product_title: str | None
    image_url: str | None


class ComparePublic(BaseModel):
    user_id: str
    placement: str
    segment_id: int | None
    personalized: HeroPreview | None
    segment: HeroPreview | None


class ProductCard(BaseModel):
    id: int
    title: str
    category: str
    image_url: str | None


class VariantCtr(BaseModel):
    """Logged impressions and clicks of one variant (or of all personalized ones)."""

    label: str
    arm: str
    variant_id: int | None
    product_id: int | None
    impressions: int
    clicks: int
    ctr: float
    ci_low: float
    ci_high: float


class VariantCtrs(BaseModel):
    data: list[VariantCtr]
    count: int
    alpha: float


@compare_router.get("/ui/api/whoami", response_model=WhoAmI)
def whoami(principal: Annotated[Principal, Depends(get_principal)]) -> WhoAmI:
    """The calling key's role and the pages it may open (any valid key; 401 otherwise)."""
    return WhoAmI(
        role=principal.role.value,
        name=principal.name,
        prefix=principal.prefix,
        pages=PAGES.get(principal.role, []),
    )


def _titles(session: SessionDep, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = session.exec(select(Product.id, Product.title).where(col(Product.id).in_(ids))).all()
    return {int(i): str(t) for i, t in rows if i is not None}


@compare_router.get("/ui/api/compare", response_model=ComparePublic)
def compare_heroes(
    _: MarketerKey,
    session: SessionDep,
    settings: SettingsDep,
    user_id: str = Query(..., min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$"),
    placement: str = Query("banner", pattern="^(banner|square|story)$"),
) -> ComparePublic:
    """The shopper's newest personalized hero and their segment's first approved hero (what
    the storefront would choose between), without logging an impression."""
    from data.models import SegmentMembership

    found: dict[str, tuple[int, int, str]] = {}
    for c in load_candidates(session, user_id=user_id, placement=placement, limit=8):
        if c.source in ("personalized", "segment") and c.source not in found:
            found[c.source] = (c.variant_id, c.product_id, c.image_key)
    titles = _titles(session, {pid for _, pid, _ in found.values()})
    segment_id = session.exec(
        select(SegmentMembership.segment_id).where(SegmentMembership.user_id == user_id)
    ).first()

    def preview(source: str) -> HeroPreview | None:
        if source not in found:
            return None
        vid, pid, key = found[source]
        return HeroPreview(
            variant_id=vid,
            product_id=pid,
            product_title=titles.get(pid),
            image_url=image_url(settings, key),
        )

    return ComparePublic(
        user_id=user_id,
        placement=placement,
        segment_id=segment_id,
        personalized=preview("personalized"),
        segment=preview("segment"),
    )


@compare_router.get("/ui/api/products", response_model=list[ProductCard])
def product_cards(
    _: MarketerKey,
    session: SessionDep,
    ids: str = Query(..., max_length=2000, pattern=r"^\d{1,18}(,\d{1,18})*$", description="1,2,3"),
) -> list[ProductCard]:
    """Title, category and image URL of the given products (at most 50, in the given order)."""
    wanted = list(dict.fromkeys(int(x) for x in ids.split(",")))[:50]
    rows = session.exec(select(Product).where(col(Product.id).in_(wanted))).all()
    by_id = {p.id: p for p in rows}
    return [
        ProductCard(
            id=i,
            title=p.title,
            category=p.category,
            image_url=f"/ui/products/{i}/image" if p.image else None,
        )
        for i in wanted
        if (p := by_id.get(i)) is not None
    ]


def _arm(v: CreativeVariant | None) -> str:
    if v is None:
        return "unknown"
    if v.user_id is not None:
        return "personalized"
    return "segment" if v.segment_id is not None else "generic"


@compare_router.get("/ui/api/variant-ctr", response_model=VariantCtrs)
def variant_ctr(
    _: AnalystKey,
    session: SessionDep,
    limit: int = Query(20, ge=1, le=200),
    placement: str | None = Query(None, pattern="^(banner|square|story)$"),
) -> VariantCtrs:
    """On-policy click-through of each logged variant (most shown first, at most ``limit``
    rows) with 95% Wilson intervals. Personalized variants are pooled into one row."""
    from recsys.evaluation.arms import wilson_interval

    alpha = 0.05
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
    titles = _titles(session, {v.product_id for v in variants.values()})
    rows: list[VariantCtr] = []
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
            VariantCtr(
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
            VariantCtr(
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
    rows = rows[:limit]
    return VariantCtrs(data=rows, count=len(rows), alpha=alpha)


@compare_router.get("/ui/products/{product_id}/image")
def product_image(product_id: int, session: SessionDep, settings: SettingsDep) -> Response:
    """A catalog image (public, like the storefront's own product photos). Paths come from
    the catalog import (an operator's files); only image files are served."""
    if not 1 <= product_id <= 2**63 - 1:
        raise HTTPException(404, "no image for this product")
    product = session.get(Product, product_id)
    if product is None or not product.image:
        raise HTTPException(404, "no image for this product")
    if product.image.startswith(("http://", "https://")):
        return RedirectResponse(product.image, status_code=307)
    path = Path(product.image)
    if not path.is_absolute():
        path = settings.home / path
    # A mistyped or hostile catalog path must not turn this into a file server.
    if path.suffix.lower() not in IMAGE_TYPES or not path.is_file():
        raise HTTPException(404, "no image for this product")
    return FileResponse(
        path,
        media_type=IMAGE_TYPES[path.suffix.lower()],
        headers={"Cache-Control": "public, max-age=3600"},
    )
