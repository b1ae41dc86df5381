"""Typed dependencies: components, settings, a database session, the calling key and its
role (with the per-key rate limit), and the services. Routes stay thin."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

import anyio
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from api.auth import Principal, is_demo_key, is_loopback, role_allows
from api.composition import Components
from api.ratelimit import MemoryRateLimiter, RateDecision
from api.services.orchestration import Orchestrator
from api.settings import Settings
from data.models import Role
from genservice.brief import CreativeBrief

# auto_error=False: we answer 401 ourselves, with our error body, for both schemes.
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <key>`")


# The cheap dependencies are ``async``: FastAPI runs sync dependencies in the thread pool,
# which costs more than the work they do on the hot storefront path.


async def get_components(request: Request) -> Components:
    """The app's components (built in the lifespan)."""
    comps: Components | None = getattr(request.app.state, "components", None)
    if comps is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the service is starting")
    return comps


ComponentsDep = Annotated[Components, Depends(get_components)]


async def get_settings(comps: ComponentsDep) -> Settings:
    return comps.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(comps: ComponentsDep) -> Iterator[Session]:
    """A session per request (no autocommit; routes commit what they change)."""
    with Session(comps.engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def client_address(request: Request) -> str:
    """The caller's address (uvicorn resolves trusted proxies' ``X-Forwarded-For``)."""
    return request.client.host if request.client is not None else "unknown"


async def _limit(
    comps: Components, bucket: str, rate: float, burst: float, *, take: bool
) -> RateDecision:
    """Take (``take``) or check a token of ``bucket``; Redis runs off the event loop."""
    limiter = comps.limiter
    call = limiter.hit if take else limiter.peek
    if isinstance(limiter, MemoryRateLimiter):
        return call(bucket, rate=rate, burst=burst)
    return await anyio.to_thread.run_sync(lambda: call(bucket, rate=rate, burst=burst))


def _too_many(decision: RateDecision, what: str) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        f"rate limit exceeded for {what}",
        headers={"Retry-After": decision.retry_after_header},
    )


def request_key(request: Request) -> str | None:
    """The key of ``Authorization: Bearer <key>`` (as ``HTTPBearer`` parses it), else of
    ``X-API-Key``; None when neither carries one."""
    headers = request.headers
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if credentials and scheme.lower() == "bearer":
            return credentials
    return headers.get("x-api-key") or None


async def authenticate(request: Request, comps: Components, key: str | None) -> Principal:
    """The caller of ``key``; 401 when missing or unknown. Also takes one token from the
    key's rate-limit bucket (429 when empty).

    Failed checks (unknown, revoked or misplaced demo keys) take a token from the caller
    address's failure bucket (``api.auth_failure_rate``); once it is empty the caller gets 429
    before any database lookup. Requests without a key are limited per address by the
    ``anonymous`` rate (in the request middleware). Demo keys (derived from a public seed)
    work only on a loopback server called from a loopback address. A plain coroutine (no
    dependency solving): the hero route calls it directly.
    """
    if not key:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    api = comps.settings.api
    known, principal = comps.keys.peek(key)
    if not known:  # a cache miss reads the database: off the event loop, and only if allowed
        fail_bucket = f"authfail:{client_address(request)}"
        gate = await _limit(
            comps, fail_bucket, api.auth_failure_rate, api.auth_failure_burst, take=False
        )
        if not gate.allowed:
            comps.metrics.rate_limited.labels("auth_failure").inc()
            raise _too_many(gate, "failed API key checks from this address")
        principal = await anyio.to_thread.run_sync(comps.keys.verify, key)
    if principal is not None and is_demo_key(key) and not _demo_allowed(request, comps):
        principal = None
    if principal is None:
        fail_bucket = f"authfail:{client_address(request)}"
        await _limit(comps, fail_bucket, api.auth_failure_rate, api.auth_failure_burst, take=True)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked API key (demo keys work only on a loopback server)"
            if is_demo_key(key)
            else "invalid or revoked API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.principal = principal
    rate = float(api.rate_limits.get(principal.role.value, 10.0))
    burst = max(1.0, rate * api.rate_burst_factor)
    decision = await _limit(comps, f"key:{principal.key_id}", rate, burst, take=True)
    if not decision.allowed:
        comps.metrics.rate_limited.labels(principal.role.value).inc()
        raise _too_many(decision, "this API key")
    return principal


async def get_principal(
    request: Request,
    comps: ComponentsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    """The caller from ``Authorization: Bearer`` or ``X-API-Key`` (:func:`authenticate`)."""
    key = bearer.credentials if bearer is not None else header_key
    return await authenticate(request, comps, key)


def check_role(principal: Principal, allowed: tuple[Role, ...]) -> Principal:
    """``principal`` when its role is among ``allowed`` (or admin); 403 otherwise."""
    if not role_allows(principal.role, allowed):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"role {principal.role.value!r} may not call this route; "
            f"allowed: {[r.value for r in allowed] + ['admin']}",
        )
    return principal


async def authorize(request: Request, *roles: Role) -> tuple[Components, Principal]:
    """The components and the caller, admitted for ``roles`` (and admin): what
    ``Depends(require_role(...))`` does, as plain calls for the hot path (503 while starting,
    401, 429, 403 in that order)."""
    comps = await get_components(request)
    principal = await authenticate(request, comps, request_key(request))
    return comps, check_role(principal, roles)


def _demo_allowed(request: Request, comps: Components) -> bool:
    """Demo keys: the configured bind address, the address the connection arrived on and the
    caller must all be loopback (a server reachable from elsewhere refuses them)."""
    server = request.scope.get("server")
    local = server[0] if server else None
    return (
        is_loopback(comps.settings.api.host)
        and is_loopback(local)
        and is_loopback(client_address(request))
    )


def require_role(*roles: Role) -> Callable[..., Any]:
    """A dependency admitting ``roles`` (and admin); 403 for any other valid key."""
    allowed = tuple(roles)

    async def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        return check_role(principal, allowed)

    dependency.__name__ = f"require_{'_'.join(r.value for r in allowed)}"
    return dependency


StorefrontKey = Annotated[Principal, Depends(require_role(Role.storefront))]
MarketerKey = Annotated[Principal, Depends(require_role(Role.marketer))]
AnalystKey = Annotated[Principal, Depends(require_role(Role.analyst))]
AdminKey = Annotated[Principal, Depends(require_role(Role.admin))]
#: Generations are a marketer's tool (the storefront's own generations run in the background).
GenerationKey = Annotated[Principal, Depends(require_role(Role.marketer))]


def image_url(settings: Settings, key: str | None) -> str | None:
    """The URL of an image key (``api.public_base_url`` + ``/v1/images/<key>``)."""
    if not key:
        return None
    return f"{settings.api.public_base_url.rstrip('/')}/v1/images/{key}"


def ensure_queue_room(comps: Components) -> None:
    """503 with ``Retry-After`` when ``api.max_queue_depth`` jobs are already queued."""
    if comps.jobs is not None and comps.jobs.queue_depth() >= comps.settings.api.max_queue_depth:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the generation queue is full; retry later",
            headers={"Retry-After": str(comps.settings.api.retry_after_s)},
        )


def check_brief(brief: CreativeBrief, field: str = "prompt_template") -> None:
    """Validate at submit what the worker would reject (a bad template, text that does not
    fit): 422 naming the field, instead of a job that fails its retries."""
    from genservice.prompts import PromptBuilder

    try:
        PromptBuilder().build(brief)
    except ValueError as exc:
        text = str(exc)
        detail = text if text.startswith(field) else f"{field}: {text}"
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail) from None


def generation_orchestrator(comps: Components) -> Orchestrator:
    """The orchestrator, when generations are available (a job queue): 503 otherwise. Called
    by a route after its own 404/409 checks, not as a dependency, so those answer first."""
    if comps.jobs is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "generation is not available")
    return comps.orchestrator
