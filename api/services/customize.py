"""Shopper customisation: a shopper picks a colour, material and/or background for a product
(or a product variant) among the allowed options; the picture is an edit job
(``genservice.edits.jobs``) cached by the choice's hash, so the same choice is rendered once.

Allowed options of a product: the product's own attribute values (``colour``,
``material``), its variants' options, and the marketer-approved lists stored in the
product's ``attributes["customization"]`` (``{"colour": [...], "material": [...],
"background": [...]}``, set with :func:`set_options`). A background is a studio colour, or
a marketer-approved scene prompt ("beach, golden hour": a generated scene, seed 0).

Per shopper, each choice is one row: a :class:`~data.models.CreativeVariant` with the
shopper's ``user_id``, placement ``customized`` and status ``retired`` (so the hero service
never serves it and the marketer never lists it), pointing at the job by its hash. The
erasure of the shopper (``api/services/erasure.py``) therefore deletes these rows, the job
and its image unless another shopper's row still uses the same choice. Each answer logs an
impression with policy and arm ``customized`` and propensity 1 (the shopper chose).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from api.ports import ImageStorePort
from api.schemas_edits import CustomizationOptions, CustomizeChoices
from api.services.edits import EditRejected, ProductMissing, store_source, submit_edit
from api.services.erasure import ErasureGuard
from data.files import under_home
from data.models import (
    CreativeVariant,
    GenerationJob,
    Impression,
    JobStatus,
    Product,
    ProductVariant,
    VariantStatus,
)
from data.repos.catalog import resolve_sku
from genservice.jobs import JobQueue

#: Placement, policy, arm and source of customisation rows and impressions.
CUSTOMIZED = "customized"
#: Where a product keeps its marketer-approved customisation lists.
OPTIONS_KEY = "customization"
FIELDS = ("colour", "material", "background")
#: Per shopper: tokens per second and bucket size of the customisation rate limit.
RATE_PER_S = 0.2
BURST = 5.0
#: Attribute / option names read as the product's own colour or material.
_OWN_KEYS = {"colour": ("colour", "color"), "material": ("material",)}


class ChoiceNotAllowed(ValueError):
    """A choice is not among the product's allowed options (the message lists them)."""


@dataclass(frozen=True)
class CustomizeOutput:
    """The job of the choice, whether its image was ready (``cached``), the product and the
    logged impression."""

    job: GenerationJob
    cached: bool
    product_id: int
    impression_id: str | None


def _norm(values: Iterable[object]) -> list[str]:
    out: list[str] = []
    for v in values:
        s = str(v).strip().lower()
        if s and s not in out:
            out.append(s)
    return out


def approved_options(product: Product) -> CustomizationOptions:
    """The marketer-approved lists of ``product`` (empty lists when none were set)."""
    raw = (product.attributes or {}).get(OPTIONS_KEY) or {}
    return CustomizationOptions(**{f: _norm(raw.get(f) or []) for f in FIELDS})


def allowed_options(session: Session, product: Product) -> CustomizationOptions:
    """Every value a shopper may choose for ``product``: the approved lists, the product's
    own colour and material (when a texture renders it), and its variants' options (lower
    case)."""
    approved = approved_options(product).model_dump()
    attrs = product.attributes or {}
    variants = session.exec(
        select(ProductVariant).where(ProductVariant.product_id == product.id)
    ).all()
    out: dict[str, list[str]] = {}
    from genservice.edits.material import TEXTURE_NAMES

    for f in FIELDS:
        own: list[object] = []
        for k in _OWN_KEYS.get(f, ()):
            if isinstance(attrs.get(k), str):
                own.append(attrs[k])
            own += [v.options.get(k) for v in variants if isinstance(v.options.get(k), str)]
        if f == "material":  # only materials a texture can render (not "cotton")
            own = [m for m in own if str(m).strip().lower() in TEXTURE_NAMES]
        out[f] = _norm([*approved[f], *own])
    return CustomizationOptions(**out)


def is_colour(value: str) -> bool:
    """Whether ``value`` names a colour (hex or name): a studio backdrop, else a scene."""
    from genservice.edits.base import parse_colour

    try:
        parse_colour(value)
    except ValueError:
        return False
    return True


def check_values(options: CustomizationOptions) -> None:
    """:class:`EditRejected` when a colour is not a colour, a backdrop is neither a colour
    nor a usable scene prompt (``genservice.edits.scene.scene_terms``: words left after
    sanitising), or a material is not a texture that can be rendered."""
    from genservice.edits.base import parse_colour
    from genservice.edits.material import TEXTURE_NAMES
    from genservice.edits.scene import scene_terms

    for value in options.colour:
        try:
            parse_colour(value, "colour")
        except ValueError as exc:
            raise EditRejected(str(exc)) from None
    for value in options.background:
        if is_colour(value):
            continue
        try:
            scene_terms(value)
        except ValueError:
            raise EditRejected(
                f"background: expected a colour or a scene prompt, got {value!r}"
            ) from None
    for value in options.material:
        if value not in TEXTURE_NAMES:
            raise EditRejected(f"material: expected one of {list(TEXTURE_NAMES)}, got {value!r}")


def set_options(session: Session, product_id: int, options: CustomizationOptions) -> Product:
    """Store the marketer-approved lists of ``product_id`` (values checked; commits)."""
    product = session.get(Product, product_id)
    if product is None:
        raise ProductMissing(f"product_id: no product {product_id}")
    given = options.model_dump()
    clean = CustomizationOptions(**{f: _norm(given[f]) for f in FIELDS})
    check_values(clean)
    product.attributes = {**(product.attributes or {}), OPTIONS_KEY: clean.model_dump()}
    session.add(product)
    session.commit()
    session.refresh(product)
    return product


def choice_steps(choices: CustomizeChoices, allowed: CustomizationOptions) -> list[dict[str, Any]]:
    """The edit steps of ``choices`` (material, then colour, then background), each checked
    against ``allowed``: :class:`ChoiceNotAllowed` for a value outside it, and
    :class:`EditRejected` for an allowed material that has no texture."""
    from genservice.edits.material import TEXTURE_NAMES

    picked: dict[str, str] = {}
    chosen, offered = choices.model_dump(), allowed.model_dump()
    for f in FIELDS:
        value = chosen[f]
        if value is None:
            continue
        v = value.strip().lower()
        options = offered[f]
        if v not in options:
            raise ChoiceNotAllowed(
                f"{f}: {value!r} is not offered for this product; options: {options}"
            )
        picked[f] = v
    steps: list[dict[str, Any]] = []
    if "material" in picked:
        if picked["material"] not in TEXTURE_NAMES:
            raise EditRejected(f"material: {picked['material']!r} cannot be rendered")
        params: dict[str, Any] = {"texture": picked["material"], "scale": 1.0, "seed": 0}
        steps.append({"op": "material", "params": params})
    if "colour" in picked:
        steps.append({"op": "recolor", "params": {"colour": picked["colour"]}})
    if "background" in picked:
        value = picked["background"]
        backdrop: dict[str, Any] = (
            {"studio": value, "gradient": 0.0, "shadow": 0.35}
            if is_colour(value)
            else {"prompt": value, "seed": 0, "shadow": 0.35}  # a marketer-approved scene
        )
        steps.append({"op": "background", "params": backdrop})
    return steps


def rate_bucket(guard: ErasureGuard, user_id: str) -> str:
    """The rate-limit bucket of a shopper (a keyed hash: no user id in Redis keys)."""
    return f"customize:{guard.key(user_id)[:32]}"


def _remember(
    session: Session, *, user_id: str, product_id: int, job: GenerationJob, image_key: str | None
) -> int:
    """The shopper's row for this choice (created once; ``image_key`` stored once known, so
    the erasure of another shopper with the same choice keeps the shared image); its id."""
    row = session.exec(
        select(CreativeVariant).where(
            CreativeVariant.user_id == user_id,
            CreativeVariant.brief_hash == job.brief_hash,
            CreativeVariant.placement == CUSTOMIZED,
        )
    ).first()
    if row is None:
        row = CreativeVariant(
            user_id=user_id,
            product_id=product_id,
            placement=CUSTOMIZED,
            brief_hash=job.brief_hash,
            brief={"kind": CUSTOMIZED, "steps": job.brief.get("steps", [])},
            terms=[],
            job_id=job.id,
            image_key=image_key,
            status=VariantStatus.retired,
            created_by=CUSTOMIZED,
        )
        session.add(row)
        session.commit()
    elif image_key is not None and row.image_key != image_key:
        row.image_key = image_key
        session.add(row)
        session.commit()
    assert row.id is not None
    return int(row.id)


def customize(
    session: Session,
    *,
    jobs: JobQueue,
    images: ImageStorePort,
    guard: ErasureGuard,
    home: Any,
    user_id: str,
    sku: str,
    choices: CustomizeChoices,
) -> CustomizeOutput:
    """Render (or find) the shopper's choice for the product or variant ``sku``: the job
    (same choice: the same job), the shopper's row and the impression (policy
    ``customized``, propensity 1). An erased shopper gets the picture but no rows."""
    match = resolve_sku(session, sku=sku)
    if match is None:
        raise ProductMissing(f"sku: no product or variant {sku!r}")
    product = match.product
    assert product.id is not None
    product_id = int(product.id)
    steps = choice_steps(choices, allowed_options(session, product))
    if not match.image:
        raise ProductMissing(f"sku {sku!r} has no image")
    source_key = store_source(images, under_home(match.image, home))
    session.commit()  # end the reads: the queue writes through its own connection
    job = submit_edit(jobs, source_key=source_key, steps=steps, product_id=product_id)
    if job.status == JobStatus.succeeded and not (job.result_key and images.exists(job.result_key)):
        # Its image is gone (an erasure deleted the same bytes under another choice): render
        # again. Only a succeeded row is removed; a concurrent request does the same at most.
        with jobs.engine.begin() as conn:
            conn.execute(
                delete(GenerationJob).where(
                    col(GenerationJob.id) == job.id,
                    col(GenerationJob.status) == JobStatus.succeeded,
                )
            )
        job = submit_edit(jobs, source_key=source_key, steps=steps, product_id=product_id)
        session.execute(
            update(CreativeVariant)
            .where(col(CreativeVariant.brief_hash) == job.brief_hash)
            .values(job_id=job.id, image_key=None)
        )
        session.commit()
    cached = (
        job.status == JobStatus.succeeded
        and job.result_key is not None
        and images.exists(job.result_key)
    )
    erased = guard.is_erased(user_id, session)
    key = job.result_key if cached else None
    variant_id = (
        None
        if erased
        else _remember(session, user_id=user_id, product_id=product_id, job=job, image_key=key)
    )
    imp = Impression(
        user_id=None if erased else user_id,
        placement=CUSTOMIZED,
        variant_id=variant_id,
        product_id=product_id,
        arm=CUSTOMIZED,
        policy=CUSTOMIZED,
        propensity=1.0,
        candidates=[[f"edit:{job.brief_hash[:16]}", 1.0]],
    )
    session.add(imp)
    session.commit()
    if not erased and guard.is_erased(user_id, session):
        # Erased while we wrote: undo (the erasure may have looked before our commit).
        session.execute(delete(CreativeVariant).where(col(CreativeVariant.id) == variant_id))
        imp.user_id = None
        session.add(imp)
        session.commit()
    return CustomizeOutput(job=job, cached=cached, product_id=product_id, impression_id=imp.id)


def shopper_job(jobs: JobQueue, job_id: str) -> GenerationJob | None:
    """A customisation job by id (any edit job whose payload came from a choice)."""
    from genservice.edits.jobs import is_edit

    job = jobs.get(job_id)
    return job if job is not None and is_edit(job.brief) else None
