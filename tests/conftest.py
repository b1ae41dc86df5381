"""Shared fixtures: offline environment, SQLite and PostgreSQL engines."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two worker processes on the 2 cores: one math thread each (and in what
    # they spawn), else each worker's torch/BLAS pool would fight the other's for the cores.
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

from data.db import drop_all, init_db, make_engine

PG_ADMIN_URL = os.environ.get(
    "TAILORSHOT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _pg_available() -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""
    try:
        eng = make_engine(PG_ADMIN_URL)
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
        eng.dispose()
        return None
    except Exception as exc:  # any connection failure means: skip, visibly
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    reason = _pg_available()
    if reason:
        pytest.skip(reason)
    name = f"tailorshot_test_{uuid.uuid4().hex[:10]}"
    admin = make_engine(PG_ADMIN_URL)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database with every table, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'test.db'}")
    else:
        engine = make_engine(request.getfixturevalue("pg_database_url"))
        drop_all(engine)
    init_db(engine)
    yield engine
    if request.param == "postgres":
        drop_all(engine)
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """An empty SQLite database with every table."""
    engine = make_engine(f"sqlite:///{tmp_path / 'test.db'}")
    init_db(engine)
    yield engine
    engine.dispose()
