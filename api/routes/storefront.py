"""Storefront routes: the hero decision and click logging."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, FastAPI, HTTPException, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from sqlmodel import Session
from starlette.routing import Match, Route, get_route_path
from starlette.types import Scope

from api.composition import Components
from api.deps import ComponentsDep, StorefrontKey, authorize, image_url
from api.schemas import NO_CONTROLS_NONEMPTY, ClickPublic, HeroPublic, PlacementName, UserId
from api.services.clicks import UnknownImpression, record_click
from api.services.hero import HeroDecision, HeroService, NoCreative
from data.models import Role

router = APIRouter(prefix="/v1", tags=["storefront"])

#: Seconds a click on an unknown impression waits before its one retry: another worker
#: process may still hold the impression in its buffer (flushed every 0.05 s).
CLICK_RETRY_S = 0.2


def _decide_sql(comps: Components, user_id: str, placement: str) -> HeroDecision:
    """The per-request SQL path (``candidates_ttl_s = 0``, or after shutdown began)."""
    with Session(comps.engine, expire_on_commit=False) as session:
        return comps.hero.decide(session, user_id=user_id, placement=placement)


_USER_ID: TypeAdapter[str] = TypeAdapter(UserId)
_PLACEMENT: TypeAdapter[str] = TypeAdapter(PlacementName)


def _query_schema(adapter: TypeAdapter[Any], description: str, **extra: Any) -> dict[str, Any]:
    return {**adapter.json_schema(), "description": description, **extra}


#: ``GET /v1/hero``'s parameters, security and 422 as FastAPI would document them from a
#: signature with dependencies: the route takes ``Request`` only (no dependency solving on
#: the hot path), so the operation is described here.
HERO_OPENAPI: dict[str, Any] = {
    "security": [{"HTTPBearer": []}, {"APIKeyHeader": []}],
    "parameters": [
        {
            "name": "user_id",
            "in": "query",
            "required": True,
            "schema": _query_schema(_USER_ID, "The store's user id.", title="User Id"),
            "description": "The store's user id.",
        },
        {
            "name": "placement",
            "in": "query",
            "required": False,
            "schema": _query_schema(
                _PLACEMENT, "Where the hero is shown.", default="banner", title="Placement"
            ),
            "description": "Where the hero is shown.",
        },
    ],
    "responses": {
        "422": {
            "description": "Validation Error",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
            },
        }
    },
}


def _query(request: Request, name: str, adapter: TypeAdapter[Any], default: str | None) -> str:
    """Query parameter ``name`` validated by ``adapter`` (422 as FastAPI words it)."""
    raw = request.query_params.get(name, default)
    if raw is None:
        errors = [{"loc": ("query", name), "msg": "Field required", "type": "missing"}]
        raise RequestValidationError(errors)
    try:
        return str(adapter.validate_python(raw))
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("query", name, *e["loc"])} for e in exc.errors()]
        ) from None


def _hero_json(comps: Components, out: HeroDecision, impression_id: str) -> str:
    return json.dumps(
        {
            "image_url": image_url(comps.settings, out.image_key) or "",
            "product_id": out.product_id,
            "variant_id": out.variant_id,
            "impression_id": impression_id,
            "policy": out.policy,
            "propensity": out.propensity,
            "source": out.source,
        },
        separators=(",", ":"),
    )


#: Cached bodies (around the impression id) per HeroService; cleared past this many.
MAX_BODY_PARTS = 10_000
_MARK = "\x00impression\x00"


def hero_body(comps: Components, out: HeroDecision) -> bytes:
    """The :class:`HeroPublic` JSON of ``out``, serialised directly (its fields are built
    here from typed values: no model validation per request). Only the impression id differs
    between the decisions of one candidate, chosen with one propensity: the bytes around it
    are encoded once (per :class:`HeroService`, whose settings give the image URL) and kept."""
    iid = out.impression_id
    if not iid.isalnum() or not iid.isascii():  # not a plain id: encode it all
        return _hero_json(comps, out, iid).encode()
    cache: dict[tuple[Any, ...], tuple[bytes, bytes]] = comps.hero.body_parts
    key = (out.image_key, out.product_id, out.variant_id, out.policy, out.propensity, out.source)
    parts = cache.get(key)
    if parts is None:
        head, _, tail = _hero_json(comps, out, _MARK).partition(json.dumps(_MARK))
        if len(cache) >= MAX_BODY_PARTS:
            cache.clear()
        parts = cache[key] = (head.encode() + b'"', b'"' + tail.encode())
    return b"".join((parts[0], iid.encode(), parts[1]))


@router.get(
    "/hero",
    response_model=HeroPublic,
    responses={404: {"description": "Nothing servable yet"}},
    openapi_extra=HERO_OPENAPI,
)
async def get_hero(request: Request) -> Response:
    """The hero image for a user and a placement, chosen in milliseconds from ready images.

    Candidates: the user's newest personalized image (if one is cached), approved variants of
    the user's segment, and generic approved variants. The configured exploration policy
    chooses; the impression is logged with the propensity of that choice and the whole
    distribution. When the user has no personalized image yet, one is enqueued in the
    background (rate-limited per user, deduplicated by brief hash). Never waits on a diffusion
    run: a busy or broken generator only delays personalization.
    """
    # Plain calls against memory: key check, rate limit, role (401/429/403 before 422).
    comps, _key = await authorize(request, Role.storefront)
    user_id = _query(request, "user_id", _USER_ID, None)
    placement = _query(request, "placement", _PLACEMENT, "banner")
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
    return Response(hero_body(comps, out), media_type="application/json")


class FastGetRoute(Route):
    """``GET path`` answered by ``endpoint(request) -> Response`` as a plain Starlette route,
    matched by an exact path comparison. :func:`install_fast_routes` puts it first in the
    app's routes, so the hot path skips FastAPI's route matching over every router and its
    request handling (dependency solving, response validation); the exception handlers, the
    middleware and the documented ``APIRoute`` (OpenAPI; HEAD and other methods, which this
    route does not match) stay as they are."""

    def __init__(self, path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        super().__init__(path, endpoint=endpoint, methods=["GET"], include_in_schema=False)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and get_route_path(scope) == self.path
        ):
            return Match.FULL, {"endpoint": self.endpoint, "path_params": {}, "route": self}
        return Match.NONE, {}


def install_fast_routes(app: FastAPI) -> None:
    """Serve ``GET /v1/hero`` by :class:`FastGetRoute` (the same :func:`get_hero`)."""
    app.router.routes.insert(0, FastGetRoute(router.prefix + "/hero", get_hero))


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
