"""Readiness: what the lifespan loaded, with the database checked again on each call."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine

from api.composition import Readiness


def database_error(engine: Engine) -> str | None:
    """None when ``SELECT 1`` answers, else the error's type name (no message: it may hold a
    URL with credentials)."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return type(exc).__name__
    return None


def refresh_database(readiness: Readiness, engine: Engine) -> Readiness:
    """Check the database now and record the answer in ``readiness``; returns it."""
    error = database_error(engine)
    readiness.database = error is None
    if error is not None:
        readiness.errors["database"] = error
    return readiness


def public_errors(readiness: Readiness) -> dict[str, str]:
    """The failed components' error names only: messages may hold paths or URLs that clients
    need not see."""
    checks = readiness.as_dict()
    return {k: v.split(":", 1)[0] for k, v in readiness.errors.items() if not checks.get(k, True)}
