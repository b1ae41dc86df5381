"""Impressions logged without a commit per request: a bounded in-process buffer.

The hero path appends the impression row (a dict of ``Impression`` columns) to the buffer; a
background thread writes the buffer as one multi-row insert at least every ``interval_s``
seconds (default 0.05) or as soon as ``max_rows`` (500) rows wait, and :meth:`close` writes
what is left (graceful shutdown). A full buffer (``capacity`` rows) refuses the row
(:meth:`offer` returns False): the caller then writes it synchronously with :meth:`write`
rather than dropping it.

What a hard kill (SIGKILL, power loss) loses: the rows still in the buffer and the batch being
written, i.e. at most the impressions of the last ``interval_s`` seconds plus one batch (the
kill test in ``bench/bench_hero.py --kill`` measures it). Clicks may reference a buffered
impression: :meth:`contains` tells the click route to :meth:`flush` first.

Erasure: :meth:`forget_user` unlinks a user's queued rows (``user_id`` None, as erasure does
to stored impressions); rows of users with a tombstone (erased by any process, before or while
the rows waited) are unlinked right after their commit (the post-check the synchronous path
made, against every tombstone key, read again only when their count changes).

Cost (SQLite, this 2-core machine): one driver-level ``executemany`` (~17 µs a row, about
twice a raw ``sqlite3`` insert into the indexed table) and one ``count(*)`` per batch.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, update
from sqlalchemy import select as sa_select
from sqlalchemy import types as sa_types
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from api.logging import get_logger
from data.models import ErasureRecord, Impression

_IMPRESSIONS = Impression.__table__  # type: ignore[attr-defined]
_TOMBSTONES = ErasureRecord.__table__  # type: ignore[attr-defined]

log = get_logger("impressions")

#: ``user_key(user_id) -> tombstone key`` (``ErasureGuard.key``).
UserKey = Callable[[str], str]


#: Most bound variables one SQLite statement may hold (SQLite >= 3.32; 999 before).
SQLITE_MAX_VARIABLES = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


class _FastInsert:
    """``INSERT INTO impression`` without SQLAlchemy's per-row statement machinery: the
    statement is compiled once per dialect, and each row's values go through the column
    types' own bind processors (JSON text, SQLite's datetime strings: exactly what a Core
    insert stores).

    SQLite: one multi-row ``INSERT … VALUES (…), (…), …`` per batch (up to
    ``SQLITE_MAX_VARIABLES`` values), so the whole batch is one ``sqlite3_step``, run with the
    GIL released. A driver-level ``executemany`` steps once per row and re-takes the GIL after
    each: while the event loop is busy, each re-take waits for the interpreter's switch
    interval (5 ms), so a 200-row batch took up to ~0.5 s of wall time, its rows stayed
    alive (and GC-tracked) that long, and the loop was interrupted 200 times. Other dialects:
    one ``executemany``.

    A JSON column's value may be given already encoded, as the ``str`` that
    :meth:`json_text` returned (the hero path encodes a candidate set's distribution once, and
    a row of atomic values is never tracked by the garbage collector)."""

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect
        compiled = _IMPRESSIONS.insert().compile(
            dialect=dialect, column_keys=[c.key for c in _IMPRESSIONS.columns]
        )
        self.sql = str(compiled)
        self.positional = bool(dialect.positional)
        # Parameter names in statement order (``positiontup``) or by name.
        names = list(compiled.positiontup or []) if self.positional else list(compiled.params)
        keys = {bind.key: bind for bind in compiled.binds.values()}
        self.names = names
        self.columns = [keys[n].key for n in names]
        json_cols = {c.key for c in _IMPRESSIONS.columns if isinstance(c.type, sa_types.JSON)}
        # SQLite's JSON processor returns the serializer's text: encoded text passes as is.
        self._text_is_param = dialect.name == "sqlite"
        self._json_procs: dict[str, Any] = {}
        procs = []
        for n in names:
            proc = keys[n].type._cached_bind_processor(dialect)
            if keys[n].key in json_cols:
                self._json_procs[keys[n].key] = proc
                proc = self._json_param(proc)
            procs.append(proc)
        self.processors = procs
        self.cols = list(zip(self.columns, self.processors, strict=True))
        self.multirow = dialect.name == "sqlite" and self.positional
        head, sep, row_sql = self.sql.rpartition(" VALUES ")
        self._head, self._row_sql = head + sep, row_sql.strip()
        self.chunk = max(1, SQLITE_MAX_VARIABLES // max(1, len(names)))
        self._statements: dict[int, str] = {}

    def _json_param(self, proc: Any) -> Any:
        def process(value: Any) -> Any:
            if type(value) is str:  # encoded by json_text
                return value if self._text_is_param else proc(json.loads(value))
            return proc(value) if proc is not None else value

        return process

    def json_text(self, column: str, value: Any) -> str:
        """``value`` encoded for JSON ``column`` as the insert would store it (SQLite: the
        column processor's own text; elsewhere JSON text the insert decodes and processes)."""
        proc = self._json_procs[column]
        if self._text_is_param and proc is not None:
            return str(proc(value))
        return json.dumps(value)

    def statement(self, n: int) -> str:
        """The ``n``-row ``INSERT … VALUES`` (multi-row dialects)."""
        sql = self._statements.get(n)
        if sql is None:
            sql = self._head + ", ".join([self._row_sql] * n)
            if len(self._statements) < 1024:
                self._statements[n] = sql
        return sql

    def flat(self, rows: list[dict[str, Any]]) -> tuple[Any, ...]:
        """Every row's values, one after another, in statement order (multi-row insert)."""
        out: list[Any] = []
        append = out.append
        cols = self.cols
        for row in rows:
            get = row.get
            for col, proc in cols:
                append(proc(get(col)) if proc is not None else get(col))
        return tuple(out)

    def params(self, rows: list[dict[str, Any]]) -> list[Any]:
        """One parameter set per row (``executemany``)."""
        out: list[Any] = []
        for row in rows:
            get = row.get
            values = [(proc(get(col)) if proc is not None else get(col)) for col, proc in self.cols]
            named = tuple(values) if self.positional else dict(zip(self.names, values, strict=True))
            out.append(named)
        return out

    def execute(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` on ``conn`` (inside the caller's transaction)."""
        if not self.multirow:
            conn.exec_driver_sql(self.sql, self.params(rows))
            return
        for start in range(0, len(rows), self.chunk):
            part = rows[start : start + self.chunk]
            try:
                conn.exec_driver_sql(self.statement(len(part)), self.flat(part))
            except DBAPIError as exc:  # logged by the flusher: not ~50 characters per row
                exc.statement = f"{self._head}{self._row_sql}, ... ({len(part)} rows)"
                raise


_FAST: dict[int, _FastInsert] = {}


def _fast_insert(engine: Engine) -> _FastInsert:
    fast = _FAST.get(id(engine.dialect))
    if fast is None:
        fast = _FAST[id(engine.dialect)] = _FastInsert(engine)
    return fast


def candidates_json(engine: Engine, value: list[list[Any]]) -> str:
    """``value`` encoded for the ``candidates`` column of ``engine``'s impression table, for a
    buffered row (a row holding only atomic values is not tracked by the garbage collector:
    rows waiting in the buffer then add no collector work)."""
    return _fast_insert(engine).json_text("candidates", value)


class _IdSource:
    """Impression ids: 32 hex characters, the time in milliseconds (12) then BLAKE2b-80 of a
    counter keyed by 16 bytes from ``os.urandom`` (new in a forked child; 20). Unique (a
    keyed PRF over distinct inputs) and unguessable (80 random-looking bits per millisecond)
    without a system call per id, and increasing with time: the primary-key index of the
    impression table then grows at its right edge (a flush dirties a few pages of it instead
    of one random page per row). SQLite, 170-row batches into a 200k-row table: 33 instead of
    64 µs of CPU per row, 30% less WAL."""

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._key = os.urandom(16)
        self._counter = itertools.count()

    def __call__(self) -> str:
        n = next(self._counter).to_bytes(8, "little")  # atomic under the GIL
        ms = time.time_ns() // 1_000_000
        return f"{ms:012x}" + hashlib.blake2b(n, key=self._key, digest_size=10).hexdigest()


#: ``new_impression_id() -> str`` (the hero's hot path).
new_impression_id = _IdSource()

_TOMBSTONE_COUNT = sa_select(func.count()).select_from(_TOMBSTONES)
_TOMBSTONE_KEYS = sa_select(_TOMBSTONES.c.user_key)


class TombstoneKeys:
    """Every erasure tombstone's key, read again only when their count changed (tombstones
    are permanent, so an unchanged count is an unchanged set): a written batch is checked
    against erasures with one ``count(*)`` instead of a lookup per batch. Thread-safe."""

    def __init__(self) -> None:
        self.count = -1
        self.keys: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def current(self, conn: Connection) -> frozenset[str]:
        """The keys as of now (``conn``: after the batch committed)."""
        count = int(conn.execute(_TOMBSTONE_COUNT).scalar_one())
        with self._lock:
            if count == self.count:
                return self.keys
        keys = frozenset(str(k) for (k,) in conn.execute(_TOMBSTONE_KEYS))
        with self._lock:
            self.count, self.keys = count, keys
        return keys


def write_impressions(
    engine: Engine,
    rows: list[dict[str, Any]],
    user_key: UserKey,
    tombstones: TombstoneKeys | None = None,
) -> int:
    """Insert ``rows`` in one transaction (one driver-level ``executemany``), then unlink the
    rows of users erased meanwhile (``user_key``: a user id's tombstone key); returns the
    number of rows written.

    The erasure check reads the tombstones after the commit: a tombstone committed later
    belongs to an erasure whose unlinking step runs later still, and finds these rows."""
    if not rows:
        return 0
    fast = _fast_insert(engine)
    tombstones = tombstones if tombstones is not None else TombstoneKeys()
    with engine.connect() as conn:
        with conn.begin():
            fast.execute(conn, rows)
        keys = tombstones.current(conn)
        conn.rollback()  # the read's implicit transaction
    users = {str(r["user_id"]) for r in rows if r.get("user_id")} if keys else set()
    gone = {u for u in users if user_key(u) in keys}
    if gone:
        # Erased while the rows waited or were written: keep the aggregate, not the user.
        ids = [r["id"] for r in rows if r.get("user_id") in gone]
        with engine.begin() as conn:
            conn.execute(
                update(_IMPRESSIONS).where(_IMPRESSIONS.c.id.in_(ids)).values(user_id=None)
            )
    return len(rows)


class ImpressionBuffer:
    """Thread-safe buffer of impression rows, flushed by a background thread (module doc).

    ``on_flush(n)`` is called after each written batch (metrics, click-statistics updates)."""

    def __init__(
        self,
        engine: Engine,
        *,
        user_key: UserKey,
        interval_s: float = 0.05,
        max_rows: int = 500,
        capacity: int = 20_000,
        on_flush: Callable[[int], None] | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s: expected > 0 seconds, got {interval_s}")
        if max_rows < 1 or capacity < max_rows:
            raise ValueError(f"expected 1 <= max_rows <= capacity, got {max_rows}, {capacity}")
        self.engine = engine
        self.interval_s = float(interval_s)
        self.max_rows = int(max_rows)
        self.capacity = int(capacity)
        self._user_key = user_key
        self._tombstones = TombstoneKeys()
        self._on_flush = on_flush
        self._rows: list[dict[str, Any]] = []
        self._ids: set[str] = set()  # queued and in-flight ids (clicks look here)
        self._cond = threading.Condition()
        self._flush_lock = threading.Lock()  # one writer at a time: batches commit in order
        self._thread: threading.Thread | None = None
        self._stop = False
        self.written = 0
        self.failures = 0

    # -- hot path (memory only) -------------------------------------------------------

    def offer(self, row: dict[str, Any]) -> bool:
        """Queue ``row``; False when the buffer is full (write it with :meth:`write`)."""
        with self._cond:
            if len(self._rows) >= self.capacity:
                return False
            self._rows.append(row)
            self._ids.add(row["id"])
            n = len(self._rows)
            if n == 1 or n >= self.max_rows:  # a batch starts (its clock runs) or is full
                self._cond.notify()
        return True

    def contains(self, impression_id: str) -> bool:
        """Whether ``impression_id`` is queued or being written (not yet committed)."""
        return impression_id in self._ids

    @property
    def pending(self) -> int:
        """Rows waiting (not counting a batch being written)."""
        return len(self._rows)

    def forget_user(self, user_id: str) -> int:
        """Unlink ``user_id`` from its queued rows (erasure); returns how many."""
        n = 0
        with self._cond:
            for row in self._rows:
                if row.get("user_id") == user_id:
                    row["user_id"] = None
                    n += 1
        return n

    # -- writes (off the event loop) ----------------------------------------------------

    def write(self, rows: list[dict[str, Any]]) -> int:
        """Write ``rows`` now (the full-buffer path); returns how many."""
        return write_impressions(self.engine, rows, self._user_key, self._tombstones)

    def flush(self) -> int:
        """Write every queued row (batches of ``max_rows``); returns how many. Also waits for
        a batch another thread is writing, so a caller sees its row committed afterwards."""
        total = 0
        with self._flush_lock:
            while True:
                with self._cond:
                    batch = self._rows[: self.max_rows]
                    del self._rows[: self.max_rows]
                if not batch:
                    break
                try:
                    n = self.write(batch)
                except Exception:
                    # Keep the rows for the next try (the database may be restarting); the
                    # capacity bound then makes requests write synchronously (and fail loudly).
                    self.failures += 1
                    with self._cond:
                        self._rows[:0] = batch
                    log.warning("impression flush failed; will retry", exc_info=True)
                    raise
                with self._cond:
                    self._ids.difference_update(r["id"] for r in batch)
                self.written += n
                total += n
                if self._on_flush is not None:
                    self._on_flush(n)
        return total

    # -- background thread --------------------------------------------------------------

    def start(self) -> None:
        """Start the flushing thread (idempotent)."""
        with self._cond:
            if self._thread is not None:
                return
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="impression-flush", daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._rows:
                    self._cond.wait()  # idle: no wake-ups until a row arrives
                # The batch collects rows for interval_s, or until it is full (other
                # notifications, e.g. a new batch after a click's flush, do not cut it short).
                deadline = time.monotonic() + self.interval_s
                while not self._stop and len(self._rows) < self.max_rows:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                stop = self._stop
            try:
                self.flush()
            except Exception:
                time.sleep(min(1.0, 10 * self.interval_s))  # back off while the DB is away
            if stop:
                return

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread and write what is left (graceful shutdown)."""
        with self._cond:
            thread, self._thread = self._thread, None
            self._stop = True
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout)
        self.flush()
