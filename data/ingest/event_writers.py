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
from operator import itemgetter
from typing import Any, Generic, Protocol, TypeVar, cast

import psycopg
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

    def finish(self) -> None: ...

    def close(self) -> None: ...


class _SqliteEventWriter:
    """Multi-row ``INSERT OR IGNORE`` through the DB-API; one transaction per ``write``.
    The event table's foreign keys are checked by SQLite itself (a B-tree probe per row).

    *Initial load*: when the event table is empty at the first ``write``, the whole import is
    one transaction instead (``BEGIN IMMEDIATE`` ... ``finish``): the table's indexes are
    dropped, the rows appended, and the indexes built again by one sort each before the
    commit (~40 % less CPU per million events than inserting into four B-trees row by row).
    Readers meanwhile see the table as it was (empty, with its indexes); other writers wait
    for the commit (``busy_timeout``); an error or a crash rolls it all back (a re-import
    loads it again). The unique index on ``event_id`` is rebuilt too: the import drops
    duplicate ids in the file itself and no other writer can add rows meanwhile, so it
    cannot fail.
    """

    #: Bulk-load settings for this connection, and the values ``close`` restores.
    _PRAGMAS = {"cache_size": (-262_144, -2000), "wal_autocheckpoint": (16_384, 1000)}
    #: False: never the initial-load transaction (one transaction per chunk always).
    initial_load = True

    def __init__(self, engine: Engine) -> None:
        self._proxy = engine.raw_connection()
        self._conn: Any = cast(Any, self._proxy.driver_connection)
        for name, (bulk, _) in self._PRAGMAS.items():
            self._conn.execute(f"PRAGMA {name}={bulk}")
        user, event = User.__table__.name, Event.__table__.name  # type: ignore[attr-defined]
        self._event_table = event
        self._user_sql = f'INSERT OR IGNORE INTO "{user}" (id, created_at) VALUES (?, ?)'
        head = (
            f'INSERT OR IGNORE INTO "{event}" '
            "(event_id, user_id, product_id, kind, ts, session, source) VALUES "
        )
        self._event_sql = head + "(?, ?, ?, ?, ?, ?, ?)"
        self._event_sql_many = head + ", ".join(
            ["(?, ?, ?, ?, ?, ?, ?)"] * _SQLITE_ROWS_PER_STATEMENT
        )
        self._started = False
        #: ``CREATE INDEX`` statements to run at ``finish`` (initial load), else None.
        self._rebuild: list[str] | None = None

    def _start(self) -> None:
        """At the first write: the initial-load transaction when the event table is empty."""
        self._started = True
        if not self.initial_load:
            return
        conn = self._conn
        conn.commit()  # no transaction of the driver's own may be open
        conn.execute("BEGIN IMMEDIATE")  # the write lock: nobody adds events meanwhile
        try:
            if conn.execute(f'SELECT 1 FROM "{self._event_table}" LIMIT 1').fetchone():
                conn.rollback()
                return
            indexes = conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                "AND sql IS NOT NULL ORDER BY name",
                (self._event_table,),
            ).fetchall()
            for name, _ in indexes:
                conn.execute(f'DROP INDEX "{name}"')
        except BaseException:
            conn.rollback()
            raise
        self._rebuild = [sql for _, sql in indexes]

    def write(self, rows: _Columns, users: set[str]) -> _Written:
        """Insert ``users`` and ``rows``; one transaction (initial load: part of one)."""
        if not self._started:
            self._start()
        try:
            cur = self._conn.cursor()
            inserted, created = self._insert(cur, rows, users)
            if self._rebuild is None:
                self._conn.commit()
        except BaseException:
            self._conn.rollback()
            self._rebuild = None
            raise
        return _Written(inserted, created)

    def finish(self) -> None:
        """Initial load: build the indexes again and commit. Otherwise nothing to do."""
        if self._rebuild is None:
            return
        statements, self._rebuild = self._rebuild, None
        try:
            for sql in statements:
                self._conn.execute(sql)
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise

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
        """Roll back what ``finish`` did not commit, restore the pool's settings."""
        try:
            if self._conn.in_transaction:
                self._conn.rollback()
            self._rebuild = None
            for name, (_, default) in self._PRAGMAS.items():
                self._conn.execute(f"PRAGMA {name}={default}")  # back to the pool's defaults
        finally:
            self._proxy.close()


class _PostgresEventWriter:
    """One transaction per ``write``, through one of two paths:

    - *direct* (the default): one query probes, by index, which of the chunk's products and
      users do not exist; the other rows go with one ``COPY`` (CSV written by pyarrow)
      straight into the event table. ``COPY`` inserts in batches; an ``INSERT ... SELECT ...
      ON CONFLICT`` inserts row by row and speculatively (measured: ~25 % less server CPU per
      million events than the staged way). Event ids are not probed at first (an import of new
      events, the common case, would find none): when ``COPY`` meets a stored id (a re-import,
      an overlapping export, another writer) it fails on the unique index, the transaction is
      rolled back and the chunk goes the staged way; from then on this connection also probes
      the chunk's event ids, and sends only the new ones (a re-import then costs one probe per
      row).
    - *staged*: ``COPY`` into a temporary staging table, the references checked there by one
      anti-join, then one ``INSERT ... SELECT ... ON CONFLICT (event_id) DO NOTHING``.

    Either way a row whose user or product does not exist is refused, not inserted. The event
    table has no foreign keys on PostgreSQL (``data.models.Event``). Each chunk's transaction
    first takes ``EVENT_IMPORT_LOCK`` shared; erasure takes it exclusive
    (``data.db.exclude_event_imports``), so an erasure waits for this chunk's commit before it
    deletes the user's events, and a chunk starting during an erasure waits for its commit and
    then finds the user gone: no event outlives its user. (Locking each referenced user row
    ``FOR KEY SHARE``, as a foreign key does, cost 1.5 s of server CPU per million events;
    this lock costs one call per chunk.)
    """

    _STAGE = "tailorshot_event_stage"
    _SCHEMA = pa.schema(
        [("pos", pa.int32()), ("event_id", pa.string()), ("user_id", pa.string()),
         ("product_id", pa.int64()), ("kind", pa.string()), ("ts", pa.string()),
         ("session", pa.string()), ("source", pa.string())]
    )  # fmt: skip

    #: True: the direct path first (see the class); False: always staged.
    direct = True

    def __init__(self, engine: Engine) -> None:
        self.fallbacks = 0  #: chunks the direct path handed to the staged one
        #: Probe the stored event ids before ``COPY``: from the first conflict on.
        self.probe_ids = False
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
        # One round trip: the probes below must be index lookups whatever the planner
        # estimates (a hash or merge join would read the whole event table once per chunk).
        self._begin_sql = (
            "SET LOCAL synchronous_commit TO OFF; SET LOCAL enable_hashjoin TO OFF; "
            "SET LOCAL enable_mergejoin TO OFF; "
            f"SELECT pg_advisory_xact_lock_shared({int(EVENT_IMPORT_LOCK)})"
        )
        self._user_sql = (
            f'INSERT INTO "{user}" (id, created_at) SELECT unnest(%s::text[]), %s::timestamp '
            "ON CONFLICT (id) DO NOTHING"
        )
        # Direct path: (0, product id) not found, (1, user id) not found, (2, position from 1)
        # of an event id stored already (when ``probe_ids``).
        self._probe_sql = (
            "SELECT 0, t.id::text FROM unnest(%s::integer[]) AS t(id) "
            f'WHERE NOT EXISTS (SELECT 1 FROM "{product}" p WHERE p.id = t.id) UNION ALL '
            "SELECT 1, t.id FROM unnest(%s::text[]) AS t(id) "
            f'WHERE NOT EXISTS (SELECT 1 FROM "{user}" u WHERE u.id = t.id) UNION ALL '
            "SELECT 2, t.n::text FROM unnest(%s::text[]) WITH ORDINALITY AS t(event_id, n) "
            f'JOIN "{event}" e ON e.event_id = t.event_id'
        )
        self._copy_event_sql = (
            f'COPY "{event}" (event_id, user_id, product_id, kind, ts, session, source) '
            "FROM STDIN (FORMAT csv)"
        )
        # Staged path.
        self._copy_sql = (
            f"COPY {stage} (pos, event_id, user_id, product_id, kind, ts, session, source) "
            "FROM STDIN (FORMAT csv)"
        )
        self._check_sql = (  # rows whose product or user does not exist; normally none
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
        """Insert ``users``, then those of ``rows`` whose references exist and whose ids are
        new; one transaction."""
        try:
            with self._conn.cursor() as cur:
                result = self._insert(cur, rows, users)
            self._conn.commit()  # the staging rows go with the commit (ON COMMIT DELETE ROWS)
        except BaseException:
            self._conn.rollback()
            raise
        return result

    def _begin(self, cur: Any, users: set[str]) -> int:
        """Transaction settings, the import lock, and ``users`` inserted: how many were new."""
        cur.execute(self._begin_sql)
        if not users:  # only ids not seen earlier in this import (the rest exist already)
            return 0
        now = utcnow().replace(tzinfo=None).isoformat(" ", "microseconds")
        cur.execute(self._user_sql, (_text_array(sorted(users)), now))
        return max(cur.rowcount, 0)

    def _insert(self, cur: Any, rows: _Columns, users: set[str]) -> _Written:
        created = self._begin(cur, users)
        if not self.direct:
            return self._insert_staged(cur, rows, created)
        event_ids, user_ids, product_ids = rows.cols[0], rows.cols[1], rows.cols[2]
        probed = _text_array(event_ids if self.probe_ids else [])
        cur.execute(
            self._probe_sql,
            (sorted(set(product_ids)), _text_array(sorted(set(user_ids))), probed),
        )
        no_product: set[int] = set()
        no_user: set[str] = set()
        stored: set[int] = set()  # positions in the chunk
        for what, value in cur.fetchall():
            if what == 2:
                stored.add(int(value) - 1)
            elif what == 1:
                no_user.add(value)
            else:
                no_product.add(int(value))
        refused: list[tuple[int, str]] = []
        if no_product or no_user:
            refused = [(i, "product" if pid in no_product else "user")
                       for i, (pid, uid) in enumerate(zip(product_ids, user_ids, strict=True))
                       if pid in no_product or uid in no_user]  # fmt: skip
        skip = stored.union(i for i, _ in refused)
        pos = [i for i in range(len(rows)) if i not in skip] if skip else None
        if pos is not None and not pos:
            return _Written(0, created, refused)
        try:
            self._copy(cur, self._copy_event_sql, self._table(rows, pos, with_pos=False))
        except psycopg.errors.UniqueViolation:
            # An id stored already (not probed), or stored by another transaction after the
            # probe: start over, staged (ON CONFLICT DO NOTHING); probe from now on.
            self._conn.rollback()
            self.fallbacks += 1
            self.probe_ids = True
            return self._insert_staged(cur, rows, self._begin(cur, users))
        return _Written(len(rows) if pos is None else len(pos), created, refused)

    def _table(self, rows: _Columns, pos: list[int] | None, *, with_pos: bool) -> pa.Table:
        """``rows`` (or those at positions ``pos``) as an Arrow table of ``_SCHEMA``
        (without its first column unless ``with_pos``)."""
        cols = rows.cols
        if pos is not None:
            pick = itemgetter(*pos) if len(pos) > 1 else (lambda seq: (seq[pos[0]],))
            cols = [list(pick(c)) for c in cols]
        fields = list(self._SCHEMA)
        arrays = [pa.array(c, type=f.type) for c, f in zip(cols, fields[1:], strict=True)]
        if with_pos:
            n = len(rows) if pos is None else len(pos)
            arrays.insert(0, pa.array(range(n) if pos is None else pos, type=pa.int32()))
        else:
            fields = fields[1:]
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

    @staticmethod
    def _copy(cur: Any, sql: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        # Strings are quoted, None is an unquoted empty field: NULL in PostgreSQL's CSV.
        pa_csv.write_csv(table, buf, pa_csv.WriteOptions(include_header=False))
        with cur.copy(sql) as copy:
            copy.write(buf.getbuffer())

    def _insert_staged(self, cur: Any, rows: _Columns, created: int) -> _Written:
        """``COPY`` into the staging table, refuse rows whose references are gone, then one
        ``INSERT ... ON CONFLICT DO NOTHING`` (``created``: users inserted already)."""
        self._copy(cur, self._copy_sql, self._table(rows, None, with_pos=True))
        cur.execute(self._check_sql)
        refused = sorted((int(pos), "product" if no_product else "user")
                         for pos, no_product in cur.fetchall())  # fmt: skip
        if refused:
            cur.execute(self._drop_sql, ([pos for pos, _ in refused],))
        cur.execute(self._event_sql)
        return _Written(max(cur.rowcount, 0), created, refused)

    def finish(self) -> None:
        """Each chunk commits itself: nothing to do."""

    def close(self) -> None:
        self._proxy.close()


def _text_array(values: list[str]) -> str:
    """A PostgreSQL text array literal of ``values`` (non-null strings): each element quoted,
    backslash and double quote escaped. Two joins when none needs escaping: psycopg adapts a
    list element by element (~30 ms of this process's CPU per 50,000 ids; this takes ~1 ms)."""
    plain = "".join(values)
    if "\\" in plain or '"' in plain:
        values = [v.replace("\\", "\\\\").replace('"', '\\"') for v in values]
    return '{"' + '","'.join(values) + '"}' if values else "{}"


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

    def finish(self) -> None:
        """After ``drain``: what each connection still has to do before its last commit."""
        for writer in self._all:
            writer.finish()

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
