"""Shopper customisation (storefront) and the options a store allows per product
(marketer)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from sqlmodel import col, or_, select

from api.deps import ComponentsDep, MarketerKey, SessionDep, StorefrontKey, image_url
from api.routes.edits import JobId
from api.schemas_edits import (
    CustomizationOptions,
    CustomizationOptionsPublic,
    CustomizeCreate,
    CustomizePublic,
    ProductsPublic,
    ProductSummary,
)
from api.services import customize as svc
from api.services.edits import EditRejected, ProductMissing, queue_of
from data.models import JobStatus, Product
from genservice.jobs import JobQueue

router = APIRouter(prefix="/v1", tags=["customize"])

ProductId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Product id.")]


def _queue(comps: ComponentsDep) -> JobQueue:
    try:
        return queue_of(comps.jobs)
    except LookupError:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "customisation is not available"
        ) from None


@router.post(
    "/customize",
    response_model=CustomizePublic,
    responses={
        202: {"description": "Rendering: poll GET /v1/customize/{job_id}"},
        404: {"description": "Unknown SKU, or it has no image"},
        422: {"description": "A choice outside the product's allowed options"},
        429: {"description": "Too many customisations by this shopper"},
        503: {"description": "Customisation is not available"},
    },
)
def post_customize(
    comps: ComponentsDep,
    session: SessionDep,
    _key: StorefrontKey,
    body: CustomizeCreate,
    response: Response,
) -> CustomizePublic:
    """The product (or variant) in the shopper's colour, material and/or background, chosen
    among the product's allowed options (422 otherwise). 200 with ``image_url`` when this
    choice was rendered before (by anyone: cached by the choice's hash), else 202 and the
    job to poll; the same choice never runs twice. Rate-limited per shopper; each answer is
    logged as an impression with policy ``customized`` and propensity 1; the shopper's
    customised images are erased with the shopper."""
    queue = _queue(comps)
    if comps.images is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "customisation is not available")
    decision = comps.limiter.hit(
        svc.rate_bucket(comps.guard, body.user_id), rate=svc.RATE_PER_S, burst=svc.BURST
    )
    if not decision.allowed:
        comps.metrics.rate_limited.labels("customize").inc()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "rate limit exceeded for this shopper's customisations",
            headers={"Retry-After": decision.retry_after_header},
        )
    try:
        out = svc.customize(
            session,
            jobs=queue,
            images=comps.images,
            guard=comps.guard,
            home=comps.settings.home,
            user_id=body.user_id,
            sku=body.sku,
            choices=body.choices,
        )
    except (svc.ChoiceNotAllowed, EditRejected) as exc:
        raise HTTPException(422, str(exc)) from None
    except ProductMissing as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    if not out.cached:
        response.status_code = status.HTTP_202_ACCEPTED
        response.headers["Location"] = f"/v1/customize/{out.job.id}"
    return CustomizePublic(
        job_id=out.job.id,
        status=JobStatus.succeeded if out.cached else out.job.status,
        image_url=image_url(comps.settings, out.job.result_key) if out.cached else None,
        product_id=out.product_id,
        impression_id=out.impression_id,
        cached=out.cached,
    )


@router.get(
    "/customize/{job_id}",
    response_model=CustomizePublic,
    responses={404: {"description": "Unknown job"}},
)
def get_customize(comps: ComponentsDep, _key: StorefrontKey, job_id: JobId) -> CustomizePublic:
    """A customisation job's status and, once it succeeded, its image URL."""
    job = svc.shopper_job(_queue(comps), job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown job")
    return CustomizePublic(
        job_id=job.id,
        status=job.status,
        image_url=image_url(comps.settings, job.result_key),
        product_id=int(job.brief.get("product_id") or 0),
    )


def _options_public(session: SessionDep, product: Product) -> CustomizationOptionsPublic:
    assert product.id is not None
    return CustomizationOptionsPublic(
        product_id=int(product.id),
        approved=svc.approved_options(product),
        allowed=svc.allowed_options(session, product),
    )


@router.get(
    "/products/{product_id}/customization",
    response_model=CustomizationOptionsPublic,
    responses={404: {"description": "Unknown product"}},
)
def get_options(
    session: SessionDep, _key: MarketerKey, product_id: ProductId
) -> CustomizationOptionsPublic:
    """The customisation options of a product: the marketer-approved lists and every value
    shoppers may choose (those plus the product's own colour, material and variant options)."""
    product = session.get(Product, product_id)
    if product is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no product {product_id}")
    return _options_public(session, product)


@router.put(
    "/products/{product_id}/customization",
    response_model=CustomizationOptionsPublic,
    responses={
        404: {"description": "Unknown product"},
        422: {"description": "A value that is not a colour or a known material"},
    },
)
def put_options(
    session: SessionDep, _key: MarketerKey, product_id: ProductId, body: CustomizationOptions
) -> CustomizationOptionsPublic:
    """Replace the marketer-approved customisation lists of a product (colours and
    backdrops: hex or colour names; materials: texture names)."""
    try:
        product = svc.set_options(session, product_id, body)
    except ProductMissing as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except EditRejected as exc:
        raise HTTPException(422, str(exc)) from None
    return _options_public(session, product)


@router.get("/products", response_model=ProductsPublic)
def list_products(
    session: SessionDep,
    _key: MarketerKey,
    q: Annotated[str, Query(max_length=64, pattern=r"^[^\x00-\x1f\x7f-\x9f%_\\]*$")] = "",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ProductsPublic:
    """Catalog products with an image (for the editing panel), by id; ``q`` matches the title
    or SKU (case-insensitive substring)."""
    stmt = select(Product).where(col(Product.image).is_not(None))
    if q:
        like = f"%{q.lower()}%"
        stmt = stmt.where(
            or_(col(Product.title).ilike(like), col(Product.sku).ilike(like))  # type: ignore[arg-type]
        )
    rows = session.exec(stmt.order_by(col(Product.id)).limit(limit)).all()
    data = [
        ProductSummary(id=int(p.id), sku=p.sku, title=p.title, category=p.category)
        for p in rows
        if p.id is not None
    ]
    return ProductsPublic(data=data, count=len(data))
