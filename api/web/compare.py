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

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, RedirectResponse, Response
from pydantic import BaseModel

from api.auth import Principal
from api.deps import AnalystKey, MarketerKey, SessionDep, SettingsDep, get_principal, image_url
from api.services.catalog_views import (
    IMAGE_TYPES,
    HeroPick,
    VariantCtrRow,
    catalog_image,
    hero_picks,
    products_in_order,
    variant_ctr_rows,
)
from data.models import Role

compare_router = APIRouter(include_in_schema=False)

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


class VariantCtrs(BaseModel):
    data: list[VariantCtrRow]
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
    picks, segment_id = hero_picks(session, user_id=user_id, placement=placement)

    def preview(pick: HeroPick | None) -> HeroPreview | None:
        if pick is None:
            return None
        return HeroPreview(
            variant_id=pick.variant_id,
            product_id=pick.product_id,
            product_title=pick.product_title,
            image_url=image_url(settings, pick.image_key),
        )

    return ComparePublic(
        user_id=user_id,
        placement=placement,
        segment_id=segment_id,
        personalized=preview(picks.get("personalized")),
        segment=preview(picks.get("segment")),
    )


@compare_router.get("/ui/api/products", response_model=list[ProductCard])
def product_cards(
    _: MarketerKey,
    session: SessionDep,
    ids: str = Query(..., max_length=2000, pattern=r"^\d{1,18}(,\d{1,18})*$", description="1,2,3"),
) -> list[ProductCard]:
    """Title, category and image URL of the given products (at most 50, in the given order)."""
    wanted = list(dict.fromkeys(int(x) for x in ids.split(",")))[:50]
    return [
        ProductCard(
            id=p.id,
            title=p.title,
            category=p.category,
            image_url=f"/ui/products/{p.id}/image" if p.image else None,
        )
        for p in products_in_order(session, wanted)
        if p.id is not None
    ]


@compare_router.get("/ui/api/variant-ctr", response_model=VariantCtrs)
def variant_ctr(
    _: AnalystKey,
    session: SessionDep,
    limit: int = Query(20, ge=1, le=200),
    placement: str | None = Query(None, pattern="^(banner|square|story)$"),
) -> VariantCtrs:
    """On-policy click-through of each logged variant (most shown first, at most ``limit``
    rows) with 95% Wilson intervals. Personalized variants are pooled into one row."""
    alpha = 0.05
    rows = variant_ctr_rows(session, limit=limit, placement=placement, alpha=alpha)
    return VariantCtrs(data=rows, count=len(rows), alpha=alpha)


@compare_router.get("/ui/products/{product_id}/image")
def product_image(product_id: int, session: SessionDep, settings: SettingsDep) -> Response:
    """A catalog image (public, like the storefront's own product photos). Paths come from
    the catalog import (an operator's files); only image files are served."""
    if not 1 <= product_id <= 2**63 - 1:
        raise HTTPException(404, "no image for this product")
    found = catalog_image(session, settings.home, product_id)
    if found is None:
        raise HTTPException(404, "no image for this product")
    if isinstance(found, str):
        return RedirectResponse(found, status_code=307)
    return FileResponse(
        found,
        media_type=IMAGE_TYPES[found.suffix.lower()],
        headers={"Cache-Control": "public, max-age=3600"},
    )
