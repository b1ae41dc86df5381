"""Engine and session helpers shared by every repository."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine

from data import models as _models  # noqa: F401  (registers the tables on SQLModel.metadata)
from data.variant_schema import migrate_variants


def make_engine(
    url: str,
    *,
    echo: bool = False,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    pool_timeout_s: float | None = None,
) -> Engine:
    """Create an engine for ``url``; SQLite gets WAL and a busy timeout so that
    several worker processes can share one file.

    ``pool_size`` / ``max_overflow`` / ``pool_timeout_s`` (seconds) size the connection pool
    (None: SQLAlchemy's defaults, 5 + 10 and 30 s). A server sizes it to its worker threads so
    that a request waiting for a connection fails fast instead of outliving its client.

    SQLite durability: WAL with ``synchronous=NORMAL`` means an acknowledged (committed) write
    survives a crash of the process, but the last transactions before a power loss or OS crash
    may roll back (the database itself stays consistent). ``secure_delete`` overwrites deleted
    content with zeros, so an erased user's bytes do not linger in free pages.
    """
    kwargs: dict[str, Any] = {"echo": echo}
    for name, value in (("pool_size", pool_size), ("max_overflow", max_overflow)):
        if value is not None:
            if value < 0:
                raise ValueError(f"{name}: expected >= 0, got {value}")
            kwargs[name] = int(value)
    if pool_timeout_s is not None:
        if not pool_timeout_s > 0:
            raise ValueError(f"pool_timeout_s: expected > 0 seconds, got {pool_timeout_s}")
        kwargs["pool_timeout"] = float(pool_timeout_s)
    if url.startswith("sqlite"):
        if url == "sqlite:///:memory:" or url == "sqlite://":
            # One in-memory database per connection: pool arguments do not apply.
            for name in ("pool_size", "max_overflow", "pool_timeout"):
                kwargs.pop(name, None)
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA secure_delete=ON")
            cur.close()

    return engine


def checkpoint(engine: Engine) -> None:
    """SQLite: copy the WAL into the main file and truncate it (with ``secure_delete`` on,
    deleted rows are then gone from both files). Other backends: nothing to do."""
    if engine.dialect.name != "sqlite":
        return
    from sqlalchemy import text

    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA secure_delete=ON")
        conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        conn.commit()


def init_db(engine: Engine) -> None:
    """Create every table that does not exist yet, then migrate older schemas (idempotent)."""
    SQLModel.metadata.create_all(engine)
    _drop_event_foreign_keys(engine)
    migrate_variants(engine)


#: PostgreSQL advisory lock that orders bulk event imports (held shared by each chunk's
#: transaction) against erasure (held exclusive while it deletes a user's rows): the ``event``
#: table has no foreign keys there (``data.models.Event``), so this is what keeps a chunk from
#: committing events of a user whose erasure did not see them.
EVENT_IMPORT_LOCK = 0x7461_696C_6576  # any fixed bigint; "tailev"


def exclude_event_imports(session: Session) -> None:
    """Erasure, before deleting a user's events: wait until the bulk event imports' open
    chunks have committed, and hold new chunks back until this transaction ends (they then
    find the user gone and refuse its rows). PostgreSQL only; SQLite has one writer at a time
    and keeps the event table's foreign keys."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return
    from sqlalchemy import text

    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENT_IMPORT_LOCK})


def _drop_event_foreign_keys(engine: Engine) -> None:
    """PostgreSQL: drop the foreign keys of the ``event`` table that databases created before
    they became SQLite-only still carry (``data.models.Event`` says why). One catalog query
    when there is nothing to drop."""
    if engine.dialect.name != "postgresql":
        return
    from sqlalchemy import text

    with engine.connect() as conn:
        names = conn.execute(
            text(
                "SELECT conname FROM pg_constraint "
                "WHERE conrelid = to_regclass('event') AND contype = 'f'"
            )
        ).scalars().all()  # fmt: skip
        for name in names:
            conn.execute(text(f'ALTER TABLE event DROP CONSTRAINT IF EXISTS "{name}"'))
        conn.commit()


def drop_all(engine: Engine) -> None:
    """Drop every tailorshot table (tests only)."""
    SQLModel.metadata.drop_all(engine)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
