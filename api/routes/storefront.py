"""Storefront routes: the hero decision and click logging."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlmodel import Session

from api.composition import Components
from api.deps import ComponentsDep, StorefrontKey, image_url
from api.schemas import NO_CONTROLS_NONEMPTY, ClickPublic, HeroPublic, PlacementName, UserId
from api.services.clicks import UnknownImpression, record_click
from api.services.hero import HeroDecision, HeroService, NoCreative

router = APIRouter(prefix="/v1", tags=["storefront"])

#: Seconds a click on an unknown impression waits before its one retry: another worker
#: process may still hold the impression in its buffer (flushed every 0.05 s).
CLICK_RETRY_S = 0.2


def _decide_sql(comps: Components, user_id: str, placement: str) -> HeroDecision:
    """The per-request SQL path (``candidates_ttl_s = 0``, or after shutdown began)."""
    with Session(comps.engine, expire_on_commit=False) as session:
        return comps.hero.decide(session, user_id=user_id, placement=placement)


@router.get(
    "/hero", response_model=HeroPublic, responses={404: {"description": "Nothing servable yet"}}
)
async def get_hero(
    comps: ComponentsDep,
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
        if hero.memory_path and not hero.ready():
            # The first request of this process loads the snapshot (off the event loop).
            await anyio.to_thread.run_sync(hero.start)
        if hero.ready():
            # Memory only (no SQL, nothing blocking): the impression goes to the buffer.
            out, overflow = hero.decide_now(user_id=user_id, placement=placement)
            if overflow is not None and hero.impressions is not None:
                await anyio.to_thread.run_sync(hero.impressions.write, [overflow])
        else:
            out = await anyio.to_thread.run_sync(_decide_sql, comps, user_id, placement)
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


def _click(comps: Components, impression_id: str) -> bool:
    with Session(comps.engine, expire_on_commit=False) as session:
        return record_click(session, impression_id=impression_id)


@router.post(
    "/impressions/{impression_id}/click",
    response_model=ClickPublic,
    responses={404: {"description": "Unknown impression"}},
)
async def post_click(
    comps: ComponentsDep,
    _key: StorefrontKey,
    impression_id: Annotated[str, Path(min_length=1, max_length=64, pattern=NO_CONTROLS_NONEMPTY)],
) -> ClickPublic:
    """Record a click on an impression, once: a second call answers 200 with
    ``created: false`` and changes nothing. The impression may still be in a buffer: this
    process's is written first; another worker's is waited for (one flush interval)."""
    buffer = comps.hero.impressions
    if buffer is not None and buffer.contains(impression_id):
        await anyio.to_thread.run_sync(buffer.flush)
    try:
        created = await anyio.to_thread.run_sync(_click, comps, impression_id)
    except UnknownImpression:
        if buffer is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown impression") from None
        await anyio.sleep(CLICK_RETRY_S)  # another worker process may still hold it
        try:
            created = await anyio.to_thread.run_sync(_click, comps, impression_id)
        except UnknownImpression:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown impression") from None
    if created:
        comps.metrics.clicks.inc()
    return ClickPublic(impression_id=impression_id, created=created)
