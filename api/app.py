"""FastAPI application factory. Components are built in the lifespan, never at import.

``create_app(settings)`` wires: request ids + JSON access logs + latency metrics (one pure
ASGI middleware), a body-size limit, CORS, error handlers that never leak tracebacks or
paths, the ``/v1`` routers and the ops routes. The lifespan builds the components (or uses
the ``components`` passed in, for tests), loads the index and the generator, starts the
worker, and on shutdown stops the worker gracefully (the job in hand finishes or is handed
back to the queue; nothing is left half-done).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.composition import (
    Components,
    ReportBuilder,
    build_components,
    default_loaders,
    start_components,
    stop_components,
)
from api.logging import configure_logging, get_logger, new_request_id, request_id_var
from api.services.hero import freeze_heap
from api.settings import Settings

log = get_logger("http")

OPENAPI_DESCRIPTION = """Personalized product imagery.

Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`. Roles: **storefront**
(hero, clicks, events), **marketer** (segments, variants, generations), **analyst**
(analytics), **admin** (everything, and erasure). `/healthz`, `/readyz`, `/metrics` and
`/v1/images/{key}` need no key. Errors are `{"detail": ..., "request_id": ...}`.
"""


class RequestContextMiddleware:
    """Request id (``X-Request-ID`` in and out), a JSON access log line, latency metrics and
    the request body size limit (413), as one pure ASGI middleware (no per-request task)."""

    def __init__(self, app: ASGIApp, *, fastapi_app: FastAPI, max_body_bytes: int) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.max_body = max_body_bytes
        self._children: dict[tuple[int, str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = new_request_id(headers.get(b"x-request-id", b"").decode("latin-1") or None)
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        t0 = time.perf_counter()
        status_code = 500
        length = headers.get(b"content-length")
        try:
            if length is not None and length.isdigit() and int(length) > self.max_body:
                status_code = 413
                await _send_json(
                    send, 413, {"detail": "request body too large", "request_id": rid}, rid
                )
                return

            if b"authorization" not in headers and b"x-api-key" not in headers:
                limited = await self._anonymous_limited(scope)
                if limited is not None:
                    status_code = 429
                    await _send_json(
                        send,
                        429,
                        {"detail": "rate limit exceeded for this address", "request_id": rid},
                        rid,
                        extra=[(b"retry-after", limited.encode("latin-1"))],
                    )
                    return

            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body:
                        raise HTTPException(413, "request body too large")
                return message

            async def send_wrapper(message: Message) -> None:
                nonlocal status_code
                if message["type"] == "http.response.start":
                    status_code = int(message["status"])
                    # Exactly one X-Request-ID on every response (error handlers set it too).
                    hdrs = [
                        h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"
                    ]
                    hdrs.append((b"x-request-id", rid.encode("latin-1")))
                    message = {**message, "headers": hdrs}
                await send(message)

            await self.app(scope, limited_receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - t0
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            comps: Components | None = getattr(self.fastapi_app.state, "components", None)
            if comps is not None:
                self._latency(comps, scope["method"], template, status_code).observe(elapsed)
            if template not in ("/healthz", "/metrics") or status_code >= 400:
                log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "route": template,
                        "status": status_code,
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )
            request_id_var.reset(token)

    def _latency(self, comps: Components, method: str, route: str, status_code: int) -> Any:
        """The latency histogram's child for these labels, looked up once per label set
        (``labels()`` costs more than ``observe()``); per components (tests swap them)."""
        key = (id(comps.metrics), method, route, status_code)
        child = self._children.get(key)
        if child is None:
            if len(self._children) > 10_000:  # label sets are bounded; this is a safety net
                self._children.clear()
            metric = comps.metrics.request_latency
            child = self._children[key] = metric.labels(method, route, str(status_code))
        return child

    async def _anonymous_limited(self, scope: Scope) -> str | None:
        """``Retry-After`` when this address spent its ``anonymous`` rate, else None."""
        comps: Components | None = getattr(self.fastapi_app.state, "components", None)
        if comps is None:
            return None
        api = comps.settings.api
        rate = float(api.rate_limits.get("anonymous", 50.0))
        burst = max(1.0, rate * api.rate_burst_factor)
        client = scope.get("client")
        bucket = f"anon:{client[0] if client else 'unknown'}"
        from api.ratelimit import MemoryRateLimiter

        if isinstance(comps.limiter, MemoryRateLimiter):
            decision = comps.limiter.hit(bucket, rate=rate, burst=burst)
        else:
            import anyio

            decision = await anyio.to_thread.run_sync(
                lambda: comps.limiter.hit(bucket, rate=rate, burst=burst)
            )
        if decision.allowed:
            return None
        comps.metrics.rate_limited.labels("anonymous").inc()
        return decision.retry_after_header


async def _send_json(
    send: Send,
    code: int,
    body: dict[str, Any],
    rid: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    import json

    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"x-request-id", rid.encode("latin-1")),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None) or request_id_var.get()


def _install_error_handlers(app: FastAPI) -> None:
    from starlette.exceptions import HTTPException as StarletteHTTPException

    # FastAPI's HTTPException is a Starlette one: one handler answers both (and 404/405).
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        rid = _request_id(request)
        headers = dict(exc.headers or {})
        if rid:
            headers["X-Request-ID"] = rid
        return JSONResponse(
            {"detail": exc.detail, "request_id": rid}, status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Location, message and type only: echoing the input could reflect huge or hostile text.
        errors = [
            {
                "loc": list(e.get("loc", ())),
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ][:50]
        return JSONResponse({"detail": errors, "request_id": _request_id(request)}, status_code=422)

    from sqlalchemy.exc import TimeoutError as PoolTimeout

    @app.exception_handler(PoolTimeout)
    async def saturated(request: Request, exc: PoolTimeout) -> JSONResponse:
        # Every database connection is busy: a clean "try again", never a 500.
        rid = _request_id(request)
        comps = getattr(request.app.state, "components", None)
        retry = str(comps.settings.api.retry_after_s) if comps is not None else "2"
        headers = {"Retry-After": retry}
        if rid:
            headers["X-Request-ID"] = rid
        return JSONResponse(
            {"detail": "the service is busy; retry", "request_id": rid},
            status_code=503,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> JSONResponse:
        rid = _request_id(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        log.error("unhandled error", exc_info=exc, extra={"route": route})
        return JSONResponse(
            {"detail": "internal server error", "request_id": rid},
            status_code=500,
            headers={"X-Request-ID": rid} if rid else None,
        )


def build_engine(settings: Settings) -> Engine:
    """The database engine of a server: the pool holds one connection per route thread
    (``api.worker_threads``) plus a few for background threads (personalizer, worker,
    heartbeats), and a request waits at most ``api.db_pool_timeout_s`` for one (then 503)."""
    from data.db import make_engine

    api = settings.api
    return make_engine(
        settings.data.resolved_database_url(),
        pool_size=api.worker_threads,
        max_overflow=8,
        pool_timeout_s=api.db_pool_timeout_s,
    )


def create_app(
    settings: Settings | None = None,
    *,
    components: Components | None = None,
    report_builder: ReportBuilder | None = None,
) -> FastAPI:
    """Build the app for ``settings`` (default: from the environment). ``components`` (tests,
    built by :func:`api.composition.build_components`) replaces the ones the lifespan would
    build; they are still started and stopped. ``report_builder`` makes the analytics report
    (``tailorshot serve`` passes one with the labelled demo-world fallback)."""
    settings = settings or (components.settings if components is not None else Settings())
    configure_logging(settings.api.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio

        # Route threads and database connections are sized together (one connection each).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api.worker_threads

        def build() -> Components:
            engine = build_engine(settings)
            return build_components(
                settings,
                engine=engine,
                loaders=default_loaders(settings, engine),
                report_builder=report_builder,
            )

        # Loading the index and the generator is slow: off the event loop.
        comps: Components = (
            components if components is not None else await anyio.to_thread.run_sync(build)
        )
        await anyio.to_thread.run_sync(start_components, comps)
        # What start-up loaded is never traversed by the collector again (see freeze_heap).
        freeze_heap()
        app.state.settings = settings
        app.state.engine = comps.engine
        app.state.components = comps
        log.info("started", extra={"ready": comps.readiness.as_dict()})
        try:
            yield
        finally:
            # Stop taking background work, then let the worker finish its job.
            await anyio.to_thread.run_sync(stop_components, comps)
            app.state.components = None
            log.info("stopped")

    app = FastAPI(
        title="tailorshot",
        version="0.1.0",
        description=OPENAPI_DESCRIPTION,
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_credentials=settings.api.cors_allow_credentials,
            allow_methods=["GET", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Content-Type",
                "Idempotency-Key",
                "X-Request-ID",
            ],
            expose_headers=["X-Request-ID", "Retry-After", "ETag", "Location"],
        )
    app.add_middleware(
        RequestContextMiddleware, fastapi_app=app, max_body_bytes=settings.api.max_body_bytes
    )

    from api.routes import (
        analyst,
        creations,
        customize,
        edits,
        events,
        generations,
        images,
        marketer,
        ops,
        privacy,
        storefront,
    )

    routers = (ops, storefront, events, images, marketer, generations, analyst, privacy)
    for module in (*routers, edits, customize, creations):
        app.include_router(module.router)
    storefront.install_fast_routes(app)  # GET /v1/hero matched first, without FastAPI's handling

    from api.web import mount_ui

    mount_ui(app)  # /ui/ pages for marketers and analysts (issue: web pages)
    return app
