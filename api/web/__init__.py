"""Server-rendered pages for marketers and analysts under ``/ui/``.

The pages are shells (Jinja2 templates, one CSS file, one small script, all served by the
app); their data comes from the JSON API with the key the person logged in with, so the
pages never see more than that key's role may.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

_HERE = Path(__file__).parent
STATIC_URL = "/ui/static"
templates = Jinja2Templates(directory=str(_HERE / "templates"))
router = APIRouter(prefix="/ui", include_in_schema=False)

# Pages are public shells; a strict CSP keeps them to their own assets (no inline script or
# style, no eval). Images may also come from ``api.public_base_url`` when that is another
# origin (a CDN in front of /v1/images).
_CSP = (
    "default-src 'self'; img-src 'self' data: blob:{extra}; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)


def content_security_policy(public_base_url: str = "") -> str:
    """The pages' CSP; ``public_base_url``'s origin is allowed for images."""
    parts = urlsplit(public_base_url)
    extra = f" {parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") else ""
    return _CSP.format(extra=extra)


def _page(request: Request, name: str, active: str) -> HTMLResponse:
    ctx: dict[str, Any] = {"static_url": STATIC_URL, "active": active}
    response = templates.TemplateResponse(request, name, ctx)
    settings = getattr(request.app.state, "settings", None)
    base = settings.api.public_base_url if settings is not None else ""
    response.headers["Content-Security-Policy"] = content_security_policy(base)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("", response_class=HTMLResponse)
def ui_root_redirect() -> RedirectResponse:
    """``/ui`` → ``/ui/``."""
    return RedirectResponse("/ui/", status_code=307)


@router.get("/", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    """Log in with an API key."""
    return _page(request, "login.html", "login")


@router.get("/marketer", response_class=HTMLResponse)
def marketer_page(request: Request) -> HTMLResponse:
    """Segments, variants (approve / retire / regenerate), side-by-side heroes."""
    return _page(request, "marketer.html", "marketer")


@router.get("/analyst", response_class=HTMLResponse)
def analyst_page(request: Request) -> HTMLResponse:
    """Click-through per policy with intervals, estimators, lift, effective sample size."""
    return _page(request, "analyst.html", "analyst")


def mount_ui(app: FastAPI) -> None:
    """Add the pages and their static assets to ``app``."""
    from api.web.compare import compare_router

    app.include_router(router)
    app.include_router(compare_router)
    app.mount(STATIC_URL, StaticFiles(directory=str(_HERE / "static")), name="ui-static")
