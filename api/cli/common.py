"""Helpers shared by CLI modules: settings, engine, JSON output, friendly errors."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from sqlalchemy.engine import Engine

from api.settings import Settings
from data.db import init_db, make_engine


def load_settings() -> Settings:
    """Settings from the environment (``TAILORSHOT_*``)."""
    return Settings()


def open_engine(settings: Settings) -> Engine:
    """Engine for the configured database, tables created if missing."""
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.data.resolved_database_url())
    init_db(engine)
    return engine


def print_json(obj: Any) -> None:
    """One JSON object on stdout."""
    typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    sys.exit(code)
