"""Event import at store scale: validated row by row, written in chunks through the database's
bulk path, idempotent by event id.

Per row the work is a handful of C-level string operations: CSV rows stay lists (a column
plan picks each field once per file instead of building a dict per row), fields are cleaned
with ``str.strip``/``str.isprintable`` (the control-character regex runs only on rows that
need it), and timestamps leave as the text the column stores. Per chunk, one transaction:

- SQLite: ``INSERT OR IGNORE`` through the DB-API ``executemany`` (no ORM, no per-row SQL
  compilation) with a 64 MB page cache for the duration of the import;
- PostgreSQL: ``COPY`` into a temporary staging table (rows vanish at commit), then one
  ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` for users and one for events.

Memory is bounded by a chunk, the sku -> product id cache (at most the catalog), the user ids
known to exist (both capped) and 8 bytes per event id (a 64-bit hash in a sorted numpy block,
to report duplicates inside the file): 8 MB per million events.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol, TextIO, cast

import numpy as np
from sqlalchemy import Enum as SAEnum
from sqlalchemy.engine import Engine
from sqlmodel import Session
from tqdm import tqdm

from data.ingest.importer import (
    _CONTROL,
    _KIND_ALIASES,
    MAX_ID_LEN,
    BadRow,
    ImportReport,
    RowError,
    _bad_writer,
    _check_file,
    _chunked,
    _progress,
    parse_timestamp,
)
from data.ingest.readers import csv_rows, detect_format, read_jsonl, read_parquet
from data.models import Event, EventKind, User, utcnow
from data.repos.catalog import product_ids_by_sku

#: Our event fields, in the order the validated tuple and the writers use.
_FIELDS = ("event_id", "user_id", "sku", "product_sku", "kind", "ts", "session", "source")
_KINDS = [k.value for k in EventKind]
#: Caches are cleared when they reach this many entries (memory stays bounded).
_CACHE_LIMIT = 2_000_000

#: ``(event_id, user_id, product_id, kind name, ts as stored text, session, source)``.
EventRow = tuple[str, str, int, str, str, str | None, str | None]


def _clean(value: Any, key: str, max_len: int, required: bool) -> str:
    """``importer._text`` for one value: control characters removed, stripped, bounded."""
    if type(value) is str:
        text = value.strip()
        if not text.isprintable():  # rare: only then pay for the regex
            text = _CONTROL.sub("", text).strip()
    elif value is None or (isinstance(value, float) and math.isnan(value)):
        if required:
            raise RowError(f"missing {key!r}")
        return ""
    elif isinstance(value, (dict, list, bool)):
        raise RowError(f"{key!r}: expected text, got {type(value).__name__}")
    else:
        text = _CONTROL.sub("", str(value)).strip()
    if required and not text:
        raise RowError(f"missing {key!r}")
    if len(text) > max_len:
        raise RowError(f"{key!r} too long: {len(text)} characters (at most {max_len})")
    return text


def _ts_text(value: Any) -> str:
    """A timestamp (see ``parse_timestamp``) as the naive-UTC text both databases store."""
    if type(value) is str and value.isdigit():
        value = int(value)  # epoch seconds/ms: skip the float() probe of the general parser
    ts: datetime = parse_timestamp(value)
    return ts.replace(tzinfo=None).isoformat(" ", "microseconds")


# Epoch seconds of 1990-01-01 and 2101-01-01: inside, the year check of ``parse_timestamp``
# passes, so the fast path below needs no datetime arithmetic beyond formatting.
_EPOCH_MIN, _EPOCH_END = 631_152_000, 4_133_980_800
_KIND_NAMES = {raw: kind.name for raw, kind in _KIND_ALIASES.items()}


def _fast_ts(value: Any) -> str | None:
    """``_ts_text`` for epoch seconds/ms given as digits or an int, else None (slow path)."""
    if type(value) is str:
        if not value.isdigit():
            return _fast_iso(value)
        num: float = int(value)
    elif type(value) is int:
        num = value
    else:
        return None
    if num > 1e11:  # milliseconds since the epoch
        num /= 1000.0
    if not (_EPOCH_MIN <= num < _EPOCH_END):
        return None
    return _from_ts(num, UTC).isoformat(" ", "microseconds")[:-6]  # drop "+00:00"


_from_ts = datetime.fromtimestamp


def _fast_iso(value: str) -> str | None:
    """``_ts_text`` for an ISO 8601 string, or None when ``parse_timestamp`` must decide."""
    try:
        ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None  # a number in another form, or not a timestamp: the full parser reports
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    if not (1990 <= ts.year <= 2100):
        return None
    return ts.isoformat(" ", "microseconds")


def _fast_event(values: Sequence[Any]) -> tuple[str, str, str, str, str, Any, Any] | None:
    """The validated tuple for a clean row (text fields, a known kind as written, epoch or ISO
    time), or None when any field needs the full checks (which then give the reason)."""
    event_id, user_id, sku, _product_sku, kind, ts, session, source = values
    if type(event_id) is not str or type(user_id) is not str or type(sku) is not str:
        return None
    kind_name = _KIND_NAMES.get(kind) if type(kind) is str else None
    if kind_name is None:
        return None
    event_id, user_id, sku = event_id.strip(), user_id.strip(), sku.strip()
    if not event_id or not user_id or not sku:
        return None
    if len(event_id) > MAX_ID_LEN or len(user_id) > MAX_ID_LEN or len(sku) > MAX_ID_LEN:
        return None
    if session is not None:
        if type(session) is not str:
            return None
        session = session.strip() or None
    if source is not None:
        if type(source) is not str:
            return None
        source = source.strip() or None
    rest = (session or "") + (source or "")
    if len(rest) > MAX_ID_LEN or not (event_id + user_id + sku + rest).isprintable():
        return None  # control characters, or session/source possibly too long: full checks
    ts_text = _fast_ts(ts)
    if ts_text is None:
        return None
    return event_id, user_id, sku, kind_name, ts_text, session, source


def validate_event_values(values: Sequence[Any]) -> tuple[str, str, str, str, str, Any, Any]:
    """Values of ``_FIELDS`` -> ``(event_id, user_id, sku, kind, ts_text, session, source)``;
    the same checks, reasons and order as ``importer.validate_event`` (raises ``RowError``)."""
    fast = _fast_event(values)
    if fast is not None:
        return fast
    event_id, user_id, sku, product_sku, kind, ts, session, source = values
    sku_t = _clean(sku, "sku", MAX_ID_LEN, False) or _clean(
        product_sku, "product_sku", MAX_ID_LEN, True
    )
    kind_raw = _clean(kind, "kind", 64, True).lower().replace("-", "_").replace(" ", "_")
    kind_v = _KIND_ALIASES.get(kind_raw)
    if kind_v is None:
        raise RowError(f"'kind': expected one of {_KINDS}, got {kind_raw[:40]!r}")
    return (
        _clean(event_id, "event_id", MAX_ID_LEN, True),
        _clean(user_id, "user_id", MAX_ID_LEN, True),
        sku_t,
        kind_v.name,
        _ts_text(ts),
        _clean(session, "session", MAX_ID_LEN, False) or None,
        _clean(source, "source", MAX_ID_LEN, False) or None,
    )


def _values_rows(
    path: Path, fmt: str, mapping: Mapping[str, str], bar: tqdm | None
) -> Iterator[tuple[int, Sequence[Any] | str]]:
    """``(line, values of _FIELDS | error)``; ``mapping`` is our field <- the file's column."""
    on_read = bar.update if bar is not None else None
    if fmt == "csv":
        with path.open("rb") as raw:
            header, rows = csv_rows(raw, on_read=on_read)
            where = {name: i for i, name in enumerate(header)}  # the last of equal names wins
            absent = len(header)  # rows get one trailing None that absent fields read
            plan: list[int] = []
            for f in _FIELDS:
                theirs = mapping.get(f)
                i = where[theirs] if theirs in where else where.get(f)
                plan.append(absent if i is None else i)
            pick_row = itemgetter(*plan)
            for line, row in rows:
                if isinstance(row, str):
                    yield line, row
                else:
                    cast(list[Any], row).append(None)
                    yield line, pick_row(row)
        return

    keys = [(mapping.get(f), f) for f in _FIELDS]

    def pick(rec: Mapping[str, Any]) -> list[Any]:
        return [rec[t] if t is not None and t in rec else rec.get(f) for t, f in keys]

    if fmt == "parquet":
        for line, item in read_parquet(path, on_rows=bar.update if bar is not None else None):
            yield line, item if isinstance(item, str) else pick(item)
        return
    with path.open("rb") as raw:
        for line, item in read_jsonl(raw, on_read=on_read):
            yield line, item if isinstance(item, str) else pick(item)


class _EventWriter(Protocol):
    def write(self, rows: list[EventRow], users: set[str]) -> tuple[int, int]: ...

    def close(self) -> None: ...


class _SqliteEventWriter:
    """``INSERT OR IGNORE`` through the DB-API; one transaction per ``write``."""

    def __init__(self, engine: Engine) -> None:
        self._proxy = engine.raw_connection()
        self._conn: Any = cast(Any, self._proxy.driver_connection)
        self._conn.execute("PRAGMA cache_size=-65536")  # 64 MB: index pages stay in memory
        user, event = User.__table__.name, Event.__table__.name  # type: ignore[attr-defined]
        self._user_sql = f'INSERT OR IGNORE INTO "{user}" (id, created_at) VALUES (?, ?)'
        self._event_sql = (
            f'INSERT OR IGNORE INTO "{event}" '
            "(event_id, user_id, product_id, kind, ts, session, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)"
        )

    def write(self, rows: list[EventRow], users: set[str]) -> tuple[int, int]:
        """Insert ``users`` and ``rows``; returns ``(events inserted, users created)``."""
        try:
            cur = self._conn.cursor()
            result = self._insert(cur, rows, users)
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise
        return result

    def _insert(self, cur: Any, rows: list[EventRow], users: set[str]) -> tuple[int, int]:
        created = 0
        if users:
            now = utcnow().replace(tzinfo=None).isoformat(" ", "microseconds")
            cur.executemany(self._user_sql, [(u, now) for u in sorted(users)])
            created = max(cur.rowcount, 0)
        cur.executemany(self._event_sql, rows)
        return max(cur.rowcount, 0), created

    def close(self) -> None:
        self._conn.execute("PRAGMA cache_size=-2000")  # back to the default for the pool
        self._proxy.close()


class _PostgresEventWriter:
    """``COPY`` into a temporary staging table, then ``INSERT ... ON CONFLICT DO NOTHING``."""

    _STAGE = "tailorshot_event_stage"

    def __init__(self, engine: Engine) -> None:
        self._proxy = engine.raw_connection()
        self._conn: Any = cast(Any, self._proxy.driver_connection)
        user, event = User.__table__.name, Event.__table__.name  # type: ignore[attr-defined]
        kind_type = Event.__table__.c.kind.type  # type: ignore[attr-defined]
        kind_cast = (
            f"::{kind_type.name}"
            if isinstance(kind_type, SAEnum) and kind_type.native_enum and kind_type.name
            else ""
        )
        with self._conn.cursor() as cur:
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {self._STAGE} (event_id text, user_id text, "
                "product_id integer, kind text, ts timestamp, session text, source text) "
                "ON COMMIT DELETE ROWS"
            )
        self._conn.commit()
        self._copy_sql = (
            f"COPY {self._STAGE} (event_id, user_id, product_id, kind, ts, session, source) "
            "FROM STDIN"
        )
        self._user_sql = (
            f'INSERT INTO "{user}" (id, created_at) SELECT DISTINCT user_id, %s::timestamp '
            f"FROM {self._STAGE} ON CONFLICT (id) DO NOTHING"
        )
        self._event_sql = (
            f'INSERT INTO "{event}" (event_id, user_id, product_id, kind, ts, session, source) '
            f"SELECT event_id, user_id, product_id, kind{kind_cast}, ts, session, source "
            f"FROM {self._STAGE} ON CONFLICT (event_id) DO NOTHING"
        )

    def write(self, rows: list[EventRow], users: set[str]) -> tuple[int, int]:
        """Stage ``rows`` and insert them (users from the rows); one transaction."""
        try:
            with self._conn.cursor() as cur:
                result = self._insert(cur, rows, users)
            self._conn.commit()  # the staging rows go with the commit (ON COMMIT DELETE ROWS)
        except BaseException:
            self._conn.rollback()
            raise
        return result

    def _insert(self, cur: Any, rows: list[EventRow], users: set[str]) -> tuple[int, int]:
        with cur.copy(self._copy_sql) as copy:
            for row in rows:
                copy.write_row(row)
        now = utcnow().replace(tzinfo=None).isoformat(" ", "microseconds")
        cur.execute(self._user_sql, (now,))
        created = max(cur.rowcount, 0)
        cur.execute(self._event_sql)
        return max(cur.rowcount, 0), created

    def close(self) -> None:
        self._proxy.close()


class _SeenIds:
    """The event ids seen so far in a file, as 64-bit hashes (8 bytes per id) in sorted numpy
    blocks whose sizes follow a binary counter, so there are O(log n) blocks and each id is
    merged O(log n) times. A false duplicate needs a hash collision: ~3e-8 at 1M ids."""

    def __init__(self) -> None:
        self._levels: list[np.ndarray] = []

    def first_seen(self, hashes: np.ndarray) -> np.ndarray:
        """Boolean mask over ``hashes`` (int64, in file order): True where the hash appears
        neither earlier in ``hashes`` nor in an earlier call. Remembers the new ones."""
        fresh = np.zeros(len(hashes), dtype=bool)
        if not len(hashes):
            return fresh
        _, first = np.unique(hashes, return_index=True)
        fresh[first] = True
        for level in self._levels:
            pos = np.minimum(np.searchsorted(level, hashes), len(level) - 1)
            fresh &= level[pos] != hashes
        new = np.sort(hashes[fresh])
        if not len(new):
            return fresh
        self._levels.append(new)
        while len(self._levels) > 1 and len(self._levels[-2]) <= len(self._levels[-1]):
            top = self._levels.pop()
            self._levels[-1] = np.sort(np.concatenate([self._levels[-1], top]))
        return fresh

    @property
    def nbytes(self) -> int:
        """Memory held by the hashes, in bytes."""
        return sum(level.nbytes for level in self._levels)


def _writer_for(engine: Engine) -> _EventWriter:
    name = engine.dialect.name
    if name == "sqlite":
        return _SqliteEventWriter(engine)
    if name == "postgresql":
        return _PostgresEventWriter(engine)
    raise ValueError(f"unsupported database dialect {name!r}; expected sqlite or postgresql")


def import_events(
    engine: Engine,
    *,
    path: Path,
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    chunk_size: int = 20_000,
    progress: bool = True,
    errors_out: TextIO | None = None,
) -> ImportReport:
    """Insert events from ``path``, idempotent by event id; users are created as needed.

    Columns: ``event_id, user_id, sku`` (or ``product_sku``; a product's or a variant's),
    ``kind, ts`` and optionally ``session, source``; ``mapping`` is our field <- file column.
    Each chunk of ``chunk_size`` rows is one transaction. Bad rows are reported with their
    line number and reason; good rows always load.
    """
    _check_file(path)
    fmt = detect_format(path, fmt)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive row count, got {chunk_size}")
    report = ImportReport(file=str(path), kind="events")
    add_bad = _bad_writer(errors_out, report)
    file = str(path)
    seen_ids = _SeenIds()
    sku_ids: dict[str, int | None] = {}
    known_users: set[str] = set()
    bar = _progress(path, fmt, progress, f"events {path.name}")
    writer = _writer_for(engine)
    try:
        rows = _values_rows(path, fmt, mapping or {}, bar)
        for chunk in _chunked(rows, chunk_size):
            report.rows_read += len(chunk)
            valid: list[tuple[int, tuple[str, str, str, str, str, Any, Any]]] = []
            for line, values in chunk:
                if isinstance(values, str):
                    add_bad(BadRow(file, line, values))
                    continue
                try:
                    ev = validate_event_values(values)
                except RowError as exc:
                    add_bad(BadRow(file, line, str(exc)))
                    continue
                valid.append((line, ev))
            fresh = seen_ids.first_seen(
                np.fromiter((hash(ev[0]) for _, ev in valid), dtype=np.int64, count=len(valid))
            ).tolist()
            if not all(fresh):
                for (line, ev), ok in zip(valid, fresh, strict=True):
                    if not ok:
                        add_bad(BadRow(file, line, f"duplicate event_id {ev[0]!r} in file"))
                valid = [item for item, ok in zip(valid, fresh, strict=True) if ok]
            missing = {ev[2] for _, ev in valid if ev[2] not in sku_ids}
            if missing:
                if len(sku_ids) + len(missing) > _CACHE_LIMIT:
                    sku_ids.clear()
                with Session(engine) as session:
                    found = product_ids_by_sku(session, skus=missing)
                sku_ids.update({s: found.get(s) for s in missing})
            good: list[EventRow] = []
            new_users: set[str] = set()
            for line, ev in valid:
                pid = sku_ids.get(ev[2])
                if pid is None:
                    add_bad(BadRow(file, line, f"unknown product sku {ev[2]!r}"))
                    continue
                good.append((ev[0], ev[1], pid, ev[3], ev[4], ev[5], ev[6]))
                if ev[1] not in known_users:
                    new_users.add(ev[1])
            if not good:
                continue
            inserted, created = writer.write(good, new_users)
            if len(known_users) + len(new_users) > _CACHE_LIMIT:
                known_users.clear()
            known_users |= new_users
            report.users_created += created
            report.written += inserted
            report.unchanged += len(good) - inserted
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    return report
