"""Storefront routes: the hero decision and click logging."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from api.deps import ComponentsDep, SessionDep, StorefrontKey, image_url
from api.schemas import NO_CONTROLS_NONEMPTY, ClickPublic, HeroPublic, PlacementName, UserId
from api.services.clicks import UnknownImpression, record_click
from api.services.hero import HeroService, NoCreative

router = APIRouter(prefix="/v1", tags=["storefront"])


@router.get(
    "/hero", response_model=HeroPublic, responses={404: {"description": "Nothing servable yet"}}
)
def get_hero(
    comps: ComponentsDep,
    session: SessionDep,
    _key: StorefrontKey,
    user_id: Annotated[UserId, Query(description="The store's user id.")],
    placement: Annotated[PlacementName, Query(description="Where the hero is shown.")] = "banner",
) -> HeroPublic:
    """The hero image for a user and a placement, chosen in milliseconds from ready images.

    Candidates: the user's newest personalized image (if one is cached), approved variants of
    the user's segment, and generic approved variants. The configured exploration policy
    chooses; the impression is logged with the propensity of that choice and the whole
    distribution. When the user has no personalized image yet, one is enqueued in the
    background (rate-limited per user, deduplicated by brief hash). Never waits on a diffusion
    run: a busy or broken generator only delays personalization.
    """
    hero: HeroService = comps.hero
    try:
        out = hero.decide(session, user_id=user_id, placement=placement)
    except NoCreative as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return HeroPublic(
        image_url=image_url(comps.settings, out.image_key) or "",
        product_id=out.product_id,
        variant_id=out.variant_id,
        impression_id=out.impression_id,
        policy=out.policy,
        propensity=out.propensity,
        source=out.source,  # type: ignore[arg-type]
    )


@router.post(
    "/impressions/{impression_id}/click",
    response_model=ClickPublic,
    responses={404: {"description": "Unknown impression"}},
)
def post_click(
    comps: ComponentsDep,
    session: SessionDep,
    _key: StorefrontKey,
    impression_id: Annotated[str, Path(min_length=1, max_length=64, pattern=NO_CONTROLS_NONEMPTY)],
) -> ClickPublic:
    """Record a click on an impression, once: a second call answers 200 with
    ``created: false`` and changes nothing."""
    try:
        created = record_click(session, impression_id=impression_id)
    except UnknownImpression:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown impression") from None
    if created:
        comps.metrics.clicks.inc()
    return ClickPublic(impression_id=impression_id, created=created)
