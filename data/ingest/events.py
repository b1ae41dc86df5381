"""Event import at store scale: validated in columns, written in chunks through the database's
bulk path, idempotent by event id, with every bad row reported at its file line.

Reading and checking (the CPU-bound part) is vectorised where the input allows it:

- CSV: the file is cut into byte blocks at line ends; a block without quotes, blank lines or
  lone carriage returns has exactly one record per line, so pyarrow parses it (C++) and row
  ``i`` is line ``first + i``. A block pyarrow rejects (wrong column count, invalid UTF-8) is
  read again by the row reader, which names each bad line; from the first block holding a
  quote on, the row reader reads the rest of the file (a quoted field may span lines).
- Parquet batches whose columns are text go the same columnar way; JSONL, and the rest, row
  by row (``validate_event_values``).
- A row is *clean* when its ids are printable ASCII without surrounding blanks (at most 128
  characters), its kind is one we know as written and its time is epoch seconds or
  milliseconds in range: checked with pyarrow compute over the whole chunk. Clean rows are
  exactly those the row validator would accept unchanged; every other row goes through that
  validator, so reasons and results are identical on both paths.

Per chunk of ``chunk_size`` input rows, one transaction:

- SQLite: ``INSERT OR IGNORE`` with 100 rows per prepared statement through the DB-API
  ``executemany``; for the import the connection gets a 256 MB page cache, temp tables in
  memory and a WAL checkpoint every 64 MB instead of 4 MB (fewer rewrites of the same index
  pages). Durability is the database's own: WAL with ``synchronous=NORMAL`` (a committed chunk
  survives a crash of the process; a power cut may lose the last chunks, never corrupts the
  file, and a re-import restores them). Foreign keys stay checked.
- PostgreSQL: the chunk is written as CSV by pyarrow and sent with one ``COPY`` into a
  temporary staging table (rows vanish at commit), then one ``INSERT ... SELECT ... ON CONFLICT
  DO NOTHING`` for users and one for events. The transaction commits with
  ``synchronous_commit=off``: a server crash may lose the last chunks committed in the
  previous ~0.6 s (never a half chunk, never corruption; a re-import restores them).

Memory is bounded by a chunk and a byte block (8 MB), the sku -> product id cache (at most the
catalog), the user ids known to exist (both capped) and 8 bytes per event id (a 64-bit hash in
a sorted numpy block, to report duplicates inside the file): 8 MB per million events.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import compress
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TextIO, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
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
from data.ingest.readers import csv_rows, detect_format, read_jsonl
from data.models import Event, EventKind, User, utcnow
from data.repos.catalog import product_ids_by_sku

#: Our event fields, in the order the validated tuple and the writers use.
_FIELDS = ("event_id", "user_id", "sku", "product_sku", "kind", "ts", "session", "source")
_KINDS = [k.value for k in EventKind]
#: Caches are cleared when they reach this many entries (memory stays bounded).
_CACHE_LIMIT = 2_000_000
#: Bytes per CSV block handed to pyarrow (cut at a line end).
_BLOCK_BYTES = 8 << 20
#: Rows per multi-row SQLite INSERT (7 parameters each, far below SQLite's 32,766 limit).
_SQLITE_ROWS_PER_STATEMENT = 100
#: Columnar checks on (tests switch this off to compare with the row-by-row path).
_COLUMNAR = True

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


# ---------------------------------------------------------------------------- reading


@dataclass
class _RowsChunk:
    """Input rows to validate one by one: ``(line, values of _FIELDS | error)``."""

    items: list[tuple[int, Sequence[Any] | str]]


@dataclass
class _TableChunk:
    """Input rows as text columns (one per ``_FIELDS`` entry, None when the file lacks it);
    row ``i`` is file line ``lines[i]``."""

    columns: list[pa.Array | None]
    lines: np.ndarray

    def values(self, rows: np.ndarray) -> list[tuple[int, Sequence[Any]]]:
        """``(line, values)`` of the given row positions, for the row validator."""
        take = pa.array(rows, type=pa.int64())
        cols = [
            c.take(take).to_pylist() if c is not None else [None] * len(rows) for c in self.columns
        ]
        return list(zip(self.lines[rows].tolist(), zip(*cols, strict=True), strict=True))


def _column_plan(header: Sequence[str], mapping: Mapping[str, str]) -> list[int | None]:
    """Index of the file column feeding each of ``_FIELDS`` (None: absent). The last of equal
    names wins; ``mapping`` is our field <- the file's column."""
    where = {name: i for i, name in enumerate(header)}
    plan: list[int | None] = []
    for f in _FIELDS:
        theirs = mapping.get(f)
        plan.append(where[theirs] if theirs in where else where.get(f))
    return plan


def _row_chunks(
    rows: Iterator[tuple[int, list[str] | str]], plan: list[int | None], width: int,
    chunk_size: int, line_offset: int = 0,
) -> Iterator[_RowsChunk]:  # fmt: skip
    """CSV rows (from ``csv_rows``, ``width`` values each) as chunks of picked values."""
    pick_row = itemgetter(*[width if i is None else i for i in plan])

    def picked() -> Iterator[tuple[int, Sequence[Any] | str]]:
        for line, row in rows:
            if isinstance(row, str):
                yield line + line_offset, row
            else:
                cast(list[Any], row).append(None)  # the value absent fields read
                yield line + line_offset, pick_row(row)

    for chunk in _chunked(picked(), chunk_size):
        yield _RowsChunk(chunk)


def _plain_lines(block: bytes) -> bool:
    """True when every line of ``block`` is one record: no quotes, no blank lines, and line
    ends are ``\\n`` or ``\\r\\n`` only (as the ``csv`` module would split it)."""
    if b'"' in block or block.startswith((b"\n", b"\r\n")) or b"\n\n" in block:
        return False
    cr = block.count(b"\r")
    return cr == 0 or (cr == block.count(b"\r\n") and b"\n\r\n" not in block)


def _csv_chunks(
    path: Path, mapping: Mapping[str, str], bar: tqdm | None, chunk_size: int
) -> Iterator[_RowsChunk | _TableChunk]:
    """A CSV file as chunks: plain blocks parsed by pyarrow, the rest by ``csv_rows``."""
    with path.open("rb") as raw:
        head = raw.readline()
        if bar is not None:
            bar.update(len(head))
        header, _ = csv_rows(io.BytesIO(head))
        plan = _column_plan(header, mapping)
        delimiter = "\t" if head.count(b"\t") > head.count(b",") else ","
        width = len(header)
        names = [f"c{i}" for i in range(width)]
        read_opts = pa_csv.ReadOptions(column_names=names, use_threads=False)
        parse_opts = pa_csv.ParseOptions(
            delimiter=delimiter, quote_char=False, double_quote=False, escape_char=False,
            newlines_in_values=False, ignore_empty_lines=False,
        )  # fmt: skip
        convert_opts = pa_csv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
        )
        line = 2  # the first data line
        carry = b""
        use_arrow = _COLUMNAR and b'"' not in head
        while True:
            data = raw.read(_BLOCK_BYTES)
            if bar is not None:
                bar.update(len(data))
            block = carry + data
            if data:
                cut = block.rfind(b"\n") + 1
                if cut == 0:
                    carry = block
                    continue
                block, carry = block[:cut], block[cut:]
            else:
                carry = b""
            if not block:
                return
            n_lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
            if use_arrow and _plain_lines(block):
                try:
                    table = pa_csv.read_csv(
                        io.BytesIO(block), read_options=read_opts, parse_options=parse_opts,
                        convert_options=convert_opts,
                    )  # fmt: skip
                except (pa.ArrowInvalid, UnicodeDecodeError):
                    table = None
                if table is not None and table.num_rows == n_lines:
                    cols = [table.column(i).combine_chunks() if i is not None else None
                            for i in plan]  # fmt: skip
                    for s in range(0, table.num_rows, chunk_size):
                        m = min(chunk_size, table.num_rows - s)
                        yield _TableChunk(
                            [c.slice(s, m) if c is not None else None for c in cols],
                            np.arange(line + s, line + s + m, dtype=np.int64),
                        )
                    line += n_lines
                    continue
                # pyarrow refused the block: the row reader names each bad line in it (a
                # quote-free block is self-contained).
                _, rows = csv_rows(io.BytesIO(head + block))
                yield from _row_chunks(rows, plan, width, chunk_size, line - 2)
                line += n_lines
                continue
            # A quote (or an odd line end): from here on the row reader reads the stream.
            _, rows = csv_rows(cast(BinaryIO, _Chain(head + block + carry, raw, bar)))
            yield from _row_chunks(rows, plan, width, chunk_size, line - 2)
            return


class _Chain(io.RawIOBase):
    """``prefix`` then the rest of ``raw``, as one binary stream (reports reads to ``bar``)."""

    def __init__(self, prefix: bytes, raw: BinaryIO, bar: tqdm | None) -> None:
        self._prefix = io.BytesIO(prefix)
        self._raw = raw
        self._bar = bar

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._prefix.readinto(b)
        if n:
            return n
        data = self._raw.read(len(b))
        b[: len(data)] = data
        if self._bar is not None and data:
            self._bar.update(len(data))
        return len(data)


def _parquet_chunks(
    path: Path, mapping: Mapping[str, str], bar: tqdm | None, chunk_size: int
) -> Iterator[_RowsChunk | _TableChunk]:
    """Parquet batches: text columns go columnar; other types row by row (row index = line)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    plan = _column_plan(pf.schema_arrow.names, mapping)
    first = 1
    for batch in pf.iter_batches(batch_size=chunk_size):
        cols = [batch.column(i) if i is not None else None for i in plan]
        lines = np.arange(first, first + batch.num_rows, dtype=np.int64)
        first += batch.num_rows
        if bar is not None:
            bar.update(batch.num_rows)
        chunk = _TableChunk(cols, lines)
        if _COLUMNAR and all(c is None or pa.types.is_string(c.type) for c in cols):
            yield chunk
        else:
            yield _RowsChunk(list(chunk.values(np.arange(batch.num_rows))))


def _jsonl_chunks(
    path: Path, mapping: Mapping[str, str], bar: tqdm | None, chunk_size: int
) -> Iterator[_RowsChunk | _TableChunk]:
    keys = [(mapping.get(f), f) for f in _FIELDS]

    def pick(rec: Mapping[str, Any]) -> list[Any]:
        return [rec[t] if t is not None and t in rec else rec.get(f) for t, f in keys]

    with path.open("rb") as raw:
        items = read_jsonl(raw, on_read=bar.update if bar is not None else None)
        picked = ((ln, it if isinstance(it, str) else pick(it)) for ln, it in items)
        for chunk in _chunked(picked, chunk_size):
            yield _RowsChunk(cast(list[tuple[int, Sequence[Any] | str]], chunk))


def _input_chunks(
    path: Path, fmt: str, mapping: Mapping[str, str], bar: tqdm | None, chunk_size: int
) -> Iterator[_RowsChunk | _TableChunk]:
    if fmt == "csv":
        return _csv_chunks(path, mapping, bar, chunk_size)
    if fmt == "parquet":
        return _parquet_chunks(path, mapping, bar, chunk_size)
    return _jsonl_chunks(path, mapping, bar, chunk_size)


# ---------------------------------------------------------------------------- checking

#: Printable ASCII, no blank at either end, 1..MAX_ID_LEN characters.
_ID_RE = rf"^[\x21-\x7e](?:[\x20-\x7e]{{0,{MAX_ID_LEN - 2}}}[\x21-\x7e])?$"
_KIND_KEYS = pa.array(sorted(_KIND_NAMES))
_KIND_VALUES = pa.array([_KIND_NAMES[k] for k in _KIND_KEYS.to_pylist()])
_EPOCH_MIN_S, _EPOCH_END_S = 631_152_000, 4_133_980_800  # 1990-01-01, 2101-01-01 (UTC)


@dataclass
class _Columns:
    """Valid events as parallel lists (``EventRow`` order; ``sku`` until resolved)."""

    lines: list[int]
    cols: list[list[Any]]

    def __len__(self) -> int:
        return len(self.lines)

    def keep(self, mask: Sequence[bool]) -> _Columns:
        return _Columns(
            list(compress(self.lines, mask)), [list(compress(c, mask)) for c in self.cols]
        )


def _clean_rows(chunk: _TableChunk) -> tuple[np.ndarray, _Columns]:
    """Mask of the rows the columnar checks accept, and their validated values."""
    n = len(chunk.lines)
    event_id, user_id, sku, product_sku, kind, ts, session, source = chunk.columns
    if sku is None:
        sku = product_sku  # the row validator falls back to product_sku when sku is empty
    if event_id is None or user_id is None or sku is None or kind is None or ts is None:
        return np.zeros(n, dtype=bool), _Columns([], [[] for _ in range(7)])
    ok = pc.is_in(kind, value_set=_KIND_KEYS)
    for col in (event_id, user_id, sku):
        ok = pc.and_(ok, pc.match_substring_regex(col, _ID_RE))
    digits = pc.match_substring_regex(ts, r"^[0-9]{1,15}$")
    num = pc.cast(pc.if_else(digits, ts, "0"), pa.int64())
    is_ms = pc.greater(num, 100_000_000_000)
    in_s = pc.and_(pc.greater_equal(num, _EPOCH_MIN_S), pc.less(num, _EPOCH_END_S))
    in_ms = pc.and_(pc.greater_equal(num, _EPOCH_MIN_S * 1000), pc.less(num, _EPOCH_END_S * 1000))
    ok = pc.and_(ok, pc.and_(digits, pc.if_else(is_ms, in_ms, in_s)))
    optional: list[tuple[pa.Array, pa.Array] | None] = []
    for col in (session, source):
        if col is None:
            optional.append(None)
            continue
        empty = pc.fill_null(pc.equal(pc.utf8_length(col), 0), True)  # null: absent
        ok = pc.and_(ok, pc.or_(empty, pc.match_substring_regex(col, _ID_RE)))
        optional.append((col, empty))
    # A null id, kind or time (Parquet) fails here; the row validator names what is missing.
    mask = pc.fill_null(ok, False).to_numpy(zero_copy_only=False)
    if not mask.any():
        return mask, _Columns([], [[] for _ in range(7)])
    keep = pa.array(mask)
    num = num.filter(keep)
    micros = pc.if_else(
        pc.greater(num, 100_000_000_000), pc.multiply(num, 1000), pc.multiply(num, 1_000_000)
    )
    ts_text = micros.cast(pa.timestamp("us")).cast(pa.string())
    kinds = _KIND_VALUES.take(pc.index_in(kind.filter(keep), value_set=_KIND_KEYS))
    cols: list[list[Any]] = [
        event_id.filter(keep).to_pylist(),
        user_id.filter(keep).to_pylist(),
        sku.filter(keep).to_pylist(),
        kinds.to_pylist(),
        ts_text.to_pylist(),
    ]
    m = int(mask.sum())
    for opt in optional:
        if opt is None:
            cols.append([None] * m)
        else:
            col, empty = opt
            cols.append(pc.if_else(empty, None, col).filter(keep).to_pylist())
    return mask, _Columns(chunk.lines[mask].tolist(), cols)


def _validate_rows(
    items: Sequence[tuple[int, Sequence[Any] | str]], file: str, add_bad: Any
) -> _Columns:
    """The row validator over ``items``; bad rows go to ``add_bad``."""
    lines: list[int] = []
    rows: list[tuple[str, str, str, str, str, Any, Any]] = []
    for line, values in items:
        if isinstance(values, str):
            add_bad(BadRow(file, line, values))
            continue
        try:
            rows.append(validate_event_values(values))
        except RowError as exc:
            add_bad(BadRow(file, line, str(exc)))
            continue
        lines.append(line)
    cols = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(7)]
    return _Columns(lines, cols)


def _validate_chunk(chunk: _RowsChunk | _TableChunk, file: str, add_bad: Any) -> _Columns:
    """Valid events of one chunk, in file order; every other row reported."""
    if isinstance(chunk, _RowsChunk):
        return _validate_rows(chunk.items, file, add_bad)
    mask, clean = _clean_rows(chunk)
    if mask.all():
        return clean
    rest = _validate_rows(chunk.values(np.flatnonzero(~mask)), file, add_bad)
    if not len(rest):
        return clean
    lines = clean.lines + rest.lines
    order = np.argsort(np.asarray(lines, dtype=np.int64), kind="stable").tolist()
    getter = itemgetter(*order) if len(order) > 1 else (lambda seq: (seq[order[0]],))
    return _Columns(
        list(getter(lines)),
        [list(getter(a + b)) for a, b in zip(clean.cols, rest.cols, strict=True)],
    )


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


def import_events(
    engine: Engine,
    *,
    path: Path,
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    chunk_size: int = 50_000,
    progress: bool = True,
    errors_out: TextIO | None = None,
) -> ImportReport:
    """Insert events from ``path``, idempotent by event id; users are created as needed.

    Columns: ``event_id, user_id, sku`` (or ``product_sku``; a product's or a variant's),
    ``kind, ts`` and optionally ``session, source``; ``mapping`` is our field <- file column.
    Each chunk of ``chunk_size`` input rows is one transaction. Bad rows are reported with
    their line number and reason; good rows always load.
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
        for chunk in _input_chunks(path, fmt, mapping or {}, bar, chunk_size):
            report.rows_read += (
                len(chunk.items) if isinstance(chunk, _RowsChunk) else len(chunk.lines)
            )
            valid = _validate_chunk(chunk, file, add_bad)
            if not len(valid):
                continue
            event_ids = valid.cols[0]
            fresh = seen_ids.first_seen(
                np.fromiter(map(hash, event_ids), dtype=np.int64, count=len(event_ids))
            )
            if not fresh.all():
                for i in np.flatnonzero(~fresh).tolist():
                    add_bad(
                        BadRow(file, valid.lines[i], f"duplicate event_id {event_ids[i]!r} in file")
                    )
                valid = valid.keep(fresh.tolist())
            skus = valid.cols[2]
            missing = set(skus).difference(sku_ids)
            if missing:
                if len(sku_ids) + len(missing) > _CACHE_LIMIT:
                    sku_ids.clear()
                with Session(engine) as session:
                    found = product_ids_by_sku(session, skus=missing)
                sku_ids.update({s: found.get(s) for s in missing})
            pids = [sku_ids.get(s) for s in skus]
            if None in pids:
                known = [p is not None for p in pids]
                for line, sku, ok in zip(valid.lines, skus, known, strict=True):
                    if not ok:
                        add_bad(BadRow(file, line, f"unknown product sku {sku!r}"))
                valid = valid.keep(known)
                pids = [p for p in pids if p is not None]
            if not len(valid):
                continue
            valid.cols[2] = pids
            new_users = set(valid.cols[1]).difference(known_users)
            inserted, created = writer.write(valid, new_users)
            if len(known_users) + len(new_users) > _CACHE_LIMIT:
                known_users.clear()
            known_users |= new_users
            report.users_created += created
            report.written += inserted
            report.unchanged += len(valid) - inserted
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    return report
