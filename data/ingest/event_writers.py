"""Event writers: one transaction per chunk through each database's bulk path (SQLite
multi-row ``INSERT OR IGNORE``; PostgreSQL ``COPY`` into a staging table, then ``INSERT ...
ON CONFLICT DO NOTHING``). See :mod:`data.ingest.events` for durability."""

from __future__ import annotations

import io
from typing import Any, Protocol, cast

import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import Enum as SAEnum
from sqlalchemy.engine import Engine

from data.ingest.event_rows import _Columns
from data.models import Event, User, utcnow

#: Rows per multi-row SQLite INSERT (7 parameters each, far below SQLite's 32,766 limit).
_SQLITE_ROWS_PER_STATEMENT = 100

# ---------------------------------------------------------------------------- writing


class _EventWriter(Protocol):
    def write(self, rows: _Columns, users: set[str]) -> tuple[int, int]: ...

    def close(self) -> None: ...


class _SqliteEventWriter:
    """Multi-row ``INSERT OR IGNORE`` through the DB-API; one transaction per ``write``."""

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

    def write(self, rows: _Columns, users: set[str]) -> tuple[int, int]:
        """Insert ``users`` and ``rows``; returns ``(events inserted, users created)``."""
        try:
            cur = self._conn.cursor()
            result = self._insert(cur, rows, users)
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise
        return result

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
    """``COPY`` (CSV written by pyarrow) into a temporary staging table, then
    ``INSERT ... ON CONFLICT DO NOTHING``; one transaction per ``write``."""

    _STAGE = "tailorshot_event_stage"
    _SCHEMA = pa.schema(
        [("event_id", pa.string()), ("user_id", pa.string()), ("product_id", pa.int64()),
         ("kind", pa.string()), ("ts", pa.string()), ("session", pa.string()),
         ("source", pa.string())]
    )  # fmt: skip

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
            "FROM STDIN (FORMAT csv)"
        )
        self._user_sql = (
            f'INSERT INTO "{user}" (id, created_at) SELECT unnest(%s::text[]), %s::timestamp '
            "ON CONFLICT (id) DO NOTHING"
        )
        self._event_sql = (
            f'INSERT INTO "{event}" (event_id, user_id, product_id, kind, ts, session, source) '
            f"SELECT event_id, user_id, product_id, kind{kind_cast}, ts, session, source "
            f"FROM {self._STAGE} ON CONFLICT (event_id) DO NOTHING"
        )

    def write(self, rows: _Columns, users: set[str]) -> tuple[int, int]:
        """Insert ``users`` and stage and insert ``rows``; one transaction."""
        try:
            with self._conn.cursor() as cur:
                result = self._insert(cur, rows, users)
            self._conn.commit()  # the staging rows go with the commit (ON COMMIT DELETE ROWS)
        except BaseException:
            self._conn.rollback()
            raise
        return result

    def _insert(self, cur: Any, rows: _Columns, users: set[str]) -> tuple[int, int]:
        cur.execute("SET LOCAL synchronous_commit TO OFF")
        table = pa.Table.from_arrays(
            [pa.array(c, type=f.type) for c, f in zip(rows.cols, self._SCHEMA, strict=True)],
            schema=self._SCHEMA,
        )
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
        cur.execute(self._event_sql)
        return max(cur.rowcount, 0), created

    def close(self) -> None:
        self._proxy.close()


def _writer_for(engine: Engine) -> _EventWriter:
    name = engine.dialect.name
    if name == "sqlite":
        return _SqliteEventWriter(engine)
    if name == "postgresql":
        return _PostgresEventWriter(engine)
    raise ValueError(f"unsupported database dialect {name!r}; expected sqlite or postgresql")
