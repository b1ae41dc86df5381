"""Event writers: one transaction per chunk through each database's bulk path (SQLite
multi-row ``INSERT OR IGNORE``; PostgreSQL ``COPY`` into a staging table, references checked
in bulk, then ``INSERT ... ON CONFLICT DO NOTHING``). See :mod:`data.ingest.events` for
durability."""

from __future__ import annotations

import io
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, cast

import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import Enum as SAEnum
from sqlalchemy.engine import Engine

from data.db import EVENT_IMPORT_LOCK
from data.ingest.event_rows import _Columns
from data.models import Event, Product, User, utcnow

#: Rows per multi-row SQLite INSERT (7 parameters each, far below SQLite's 32,766 limit).
_SQLITE_ROWS_PER_STATEMENT = 100

# ---------------------------------------------------------------------------- writing


@dataclass
class _Written:
    """What one ``write`` did: events inserted, users created, and the rows refused because
    a reference is gone, as ``(row position in the chunk, "product" | "user")``."""

    inserted: int
    created: int
    refused: list[tuple[int, str]] = field(default_factory=list)


class _EventWriter(Protocol):
    def write(self, rows: _Columns, users: set[str]) -> _Written: ...

    def close(self) -> None: ...


class _SqliteEventWriter:
    """Multi-row ``INSERT OR IGNORE`` through the DB-API; one transaction per ``write``.
    The event table's foreign keys are checked by SQLite itself (a B-tree probe per row)."""

    #: Bulk-load settings for this connection, and the values ``close`` restores.
    _PRAGMAS = {"cache_size": (-262_144, -2000), "temp_store": (2, 0),
                "wal_autocheckpoint": (16_384, 1000)}  # fmt: skip

    def __init__(self, engine: Engine) -> None:
        self._proxy = engine.raw_connection()
        self._conn: Any = cast(Any, self._proxy.driver_connection)
        for name, (bulk, _) in self._PRAGMAS.items():
            self._conn.execute(f"PRAGMA {name}={bulk}")
        user, event = User.__table__.name, Event.__table__.name  # type: ignore[attr-defined]
        self._user_sql = f'INSERT OR IGNORE INTO "{user}" (id, created_at) VALUES (?, ?)'
        head = (
            f'INSERT OR IGNORE INTO "{event}" '
            "(event_id, user_id, product_id, kind, ts, session, source) VALUES "
        )
        self._event_sql = head + "(?, ?, ?, ?, ?, ?, ?)"
        self._event_sql_many = head + ", ".join(
            ["(?, ?, ?, ?, ?, ?, ?)"] * _SQLITE_ROWS_PER_STATEMENT
        )

    def write(self, rows: _Columns, users: set[str]) -> _Written:
        """Insert ``users`` and ``rows``; one transaction."""
        try:
            cur = self._conn.cursor()
            inserted, created = self._insert(cur, rows, users)
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise
        return _Written(inserted, created)

    def _insert(self, cur: Any, rows: _Columns, users: set[str]) -> tuple[int, int]:
        created = 0
        if users:
            now = utcnow().replace(tzinfo=None).isoformat(" ", "microseconds")
            cur.executemany(self._user_sql, [(u, now) for u in sorted(users)])
            created = max(cur.rowcount, 0)
        n, width, per = len(rows), len(rows.cols), _SQLITE_ROWS_PER_STATEMENT
        flat: list[Any] = [None] * (n * width)
        for j, col in enumerate(rows.cols):
            flat[j::width] = col  # row-major parameters, interleaved in C
        full = n // per
        step = per * width
        inserted = 0
        if full:
            cur.executemany(self._event_sql_many, (flat[i * step : (i + 1) * step]
                                                    for i in range(full)))  # fmt: skip
            inserted += max(cur.rowcount, 0)
        if n > full * per:
            rest = flat[full * step :]
            cur.executemany(self._event_sql, (rest[i : i + width]
                                              for i in range(0, len(rest), width)))  # fmt: skip
            inserted += max(cur.rowcount, 0)
        return inserted, created

    def close(self) -> None:
        try:
            for name, (_, default) in self._PRAGMAS.items():
                self._conn.execute(f"PRAGMA {name}={default}")  # back to the pool's defaults
        finally:
            self._proxy.close()


class _PostgresEventWriter:
    """``COPY`` (CSV written by pyarrow) into a temporary staging table, the references checked
    there in bulk, then ``INSERT ... ON CONFLICT DO NOTHING``; one transaction per ``write``.

    The event table has no foreign keys on PostgreSQL (``data.models.Event``): instead one
    anti-join per chunk finds the staged rows whose user or product does not exist, and they
    are refused, not inserted. Each chunk's transaction first takes ``EVENT_IMPORT_LOCK``
    shared; erasure takes it exclusive (``data.db.exclude_event_imports``), so an erasure waits
    for this chunk's commit before it deletes the user's events, and a chunk starting during
    an erasure waits for its commit and then finds the user gone: no event outlives its user.
    (Locking each referenced user row ``FOR KEY SHARE``, as a foreign key does, cost 1.5 s of
    server CPU per million events; this lock costs one call per chunk.)
    """

    _STAGE = "tailorshot_event_stage"
    _SCHEMA = pa.schema(
        [("pos", pa.int32()), ("event_id", pa.string()), ("user_id", pa.string()),
         ("product_id", pa.int64()), ("kind", pa.string()), ("ts", pa.string()),
         ("session", pa.string()), ("source", pa.string())]
    )  # fmt: skip

    def __init__(self, engine: Engine) -> None:
        self._proxy = engine.raw_connection()
        self._conn: Any = cast(Any, self._proxy.driver_connection)
        user, event = User.__table__.name, Event.__table__.name  # type: ignore[attr-defined]
        product = Product.__table__.name  # type: ignore[attr-defined]
        kind_type = Event.__table__.c.kind.type  # type: ignore[attr-defined]
        kind_cast = (
            f"::{kind_type.name}"
            if isinstance(kind_type, SAEnum) and kind_type.native_enum and kind_type.name
            else ""
        )
        stage = self._STAGE
        with self._conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {stage}")  # an older layout in this session
            cur.execute(
                f"CREATE TEMP TABLE {stage} (pos integer, event_id text, user_id text, "
                "product_id integer, kind text, ts timestamp, session text, source text) "
                "ON COMMIT DELETE ROWS"
            )
        self._conn.commit()
        self._copy_sql = (
            f"COPY {stage} (pos, event_id, user_id, product_id, kind, ts, session, source) "
            "FROM STDIN (FORMAT csv)"
        )
        self._user_sql = (
            f'INSERT INTO "{user}" (id, created_at) SELECT unnest(%s::text[]), %s::timestamp '
            "ON CONFLICT (id) DO NOTHING"
        )
        # Rows whose product or user does not exist; normally none.
        self._check_sql = (
            f'SELECT s.pos, p.id IS NULL FROM {stage} s LEFT JOIN "{product}" p '
            "ON p.id = s.product_id WHERE p.id IS NULL "
            f'OR NOT EXISTS (SELECT 1 FROM "{user}" u WHERE u.id = s.user_id)'
        )
        self._drop_sql = f"DELETE FROM {stage} WHERE pos = ANY(%s)"
        self._event_sql = (
            f'INSERT INTO "{event}" (event_id, user_id, product_id, kind, ts, session, source) '
            f"SELECT event_id, user_id, product_id, kind{kind_cast}, ts, session, source "
            f"FROM {stage} ON CONFLICT (event_id) DO NOTHING"
        )

    def write(self, rows: _Columns, users: set[str]) -> _Written:
        """Insert ``users``, stage ``rows``, refuse those whose references are gone, insert
        the rest; one transaction."""
        try:
            with self._conn.cursor() as cur:
                result = self._insert(cur, rows, users)
            self._conn.commit()  # the staging rows go with the commit (ON COMMIT DELETE ROWS)
        except BaseException:
            self._conn.rollback()
            raise
        return result

    def _insert(self, cur: Any, rows: _Columns, users: set[str]) -> _Written:
        cur.execute("SET LOCAL synchronous_commit TO OFF")
        cur.execute("SELECT pg_advisory_xact_lock_shared(%s)", (EVENT_IMPORT_LOCK,))
        arrays = [pa.array(range(len(rows)), type=pa.int32())]
        fields = list(self._SCHEMA)[1:]
        arrays += [pa.array(c, type=f.type) for c, f in zip(rows.cols, fields, strict=True)]
        table = pa.Table.from_arrays(arrays, schema=self._SCHEMA)
        buf = io.BytesIO()
        # Strings are quoted, None is an unquoted empty field: NULL in PostgreSQL's CSV.
        pa_csv.write_csv(table, buf, pa_csv.WriteOptions(include_header=False))
        with cur.copy(self._copy_sql) as copy:
            copy.write(buf.getbuffer())
        created = 0
        if users:  # only ids not seen earlier in this import (the rest exist already)
            now = utcnow().replace(tzinfo=None).isoformat(" ", "microseconds")
            cur.execute(self._user_sql, (sorted(users), now))
            created = max(cur.rowcount, 0)
        cur.execute(self._check_sql)
        refused = sorted((int(pos), "product" if no_product else "user")
                         for pos, no_product in cur.fetchall())  # fmt: skip
        if refused:
            cur.execute(self._drop_sql, ([pos for pos, _ in refused],))
        cur.execute(self._event_sql)
        return _Written(max(cur.rowcount, 0), created, refused)

    def close(self) -> None:
        self._proxy.close()


#: PostgreSQL: chunks written at once, each on its own connection. The server's share of an
#: import is ~80 % of its CPU, so two connections keep both cores of a small machine busy
#: while this process reads and checks the next chunk. SQLite has one writer at a time.
PG_WRITERS = 2

_Tag = TypeVar("_Tag")


class _ChunkWriters(Generic[_Tag]):
    """Writes chunks on up to ``threads`` connections at once (1: in the calling thread).

    :meth:`submit` hands one chunk over and returns the chunks finished meanwhile, oldest
    first, with the ``tag`` given for each; it blocks while ``threads`` chunks are in flight,
    so at most ``threads`` chunks (plus the one being read) are held. Chunks may commit out of
    order; each is still one transaction. An error in a chunk is raised by a later
    ``submit``/``drain``; :meth:`close` waits for the chunks in flight, then closes the
    connections.
    """

    def __init__(self, make: Callable[[], _EventWriter], threads: int) -> None:
        if threads < 1:
            raise ValueError(f"threads: expected >= 1, got {threads}")
        self._make = make
        self._threads = threads
        self._free: queue.SimpleQueue[_EventWriter] = queue.SimpleQueue()
        self._all: list[_EventWriter] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads, "event-writer") if threads > 1 else None
        self._pending: deque[tuple[Future[_Written], _Tag]] = deque()

    def _write(self, rows: _Columns, users: set[str]) -> _Written:
        try:
            writer = self._free.get_nowait()
        except queue.Empty:
            writer = self._make()
            with self._lock:
                self._all.append(writer)
        try:
            return writer.write(rows, users)
        finally:
            self._free.put(writer)

    def submit(self, rows: _Columns, users: set[str], tag: _Tag) -> list[tuple[_Written, _Tag]]:
        if self._pool is None:
            return [(self._write(rows, users), tag)]
        self._pending.append((self._pool.submit(self._write, rows, users), tag))
        done = []
        while len(self._pending) >= self._threads:
            future, old = self._pending.popleft()
            done.append((future.result(), old))
        return done

    def drain(self) -> list[tuple[_Written, _Tag]]:
        """Wait for every chunk in flight; their results, oldest first."""
        done = []
        while self._pending:
            future, old = self._pending.popleft()
            done.append((future.result(), old))
        return done

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for writer in self._all:
            writer.close()


def _writers_for(engine: Engine, threads: int | None = None) -> _ChunkWriters[Any]:
    """Chunk writers for ``engine``: ``threads`` connections (default: ``PG_WRITERS`` on
    PostgreSQL, 1 on SQLite, which is also the only value SQLite takes)."""
    name = engine.dialect.name
    if name not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database dialect {name!r}; expected sqlite or postgresql")
    if threads is None:
        threads = PG_WRITERS if name == "postgresql" else 1
    return _ChunkWriters(lambda: _writer_for(engine), 1 if name == "sqlite" else threads)


def _writer_for(engine: Engine) -> _EventWriter:
    name = engine.dialect.name
    if name == "sqlite":
        return _SqliteEventWriter(engine)
    if name == "postgresql":
        return _PostgresEventWriter(engine)
    raise ValueError(f"unsupported database dialect {name!r}; expected sqlite or postgresql")
