"""Event import at store scale: validated in columns, written in chunks through the database's
bulk path, idempotent by event id, with every bad row reported at its file line.

Reading and checking (the CPU-bound part) is vectorised where the input allows it:

- CSV: the file is cut into byte blocks at line ends; a block without quotes, blank lines or
  lone carriage returns has exactly one record per line, so pyarrow parses it (C++) and row
  ``i`` is line ``first + i``. A block pyarrow rejects (wrong column count, invalid UTF-8) is
  read again by the row reader, which names each bad line; from the first block holding a
  quote on, the row reader reads the rest of the file (a quoted field may span lines).
- JSONL (without a column mapping): the file is cut into byte blocks at line ends; a block
  with no CR, no blank line, no escaped surrogate and valid UTF-8 is parsed by pyarrow with
  our fields as columns (text; the time as a JSON integer, else as text) and row ``i`` is
  line ``first + i``; a block pyarrow refuses (another JSON type, a duplicate key, a line
  that is not an object, a row count differing from its line count) goes to the row reader.
- Parquet batches whose columns are text go the same columnar way; the rest row by row
  (``validate_event_values``).
- A row is *clean* when its ids are printable ASCII without surrounding blanks (at most 128
  characters), its kind is one we know as written and its time is epoch seconds or
  milliseconds in range: checked with pyarrow compute over the whole chunk. Clean rows are
  exactly those the row validator would accept unchanged; every other row goes through that
  validator, so reasons and results are identical on both paths.

Per chunk of ``chunk_size`` input rows, one transaction:

- SQLite: ``INSERT OR IGNORE`` with 100 rows per prepared statement through the DB-API
  ``executemany``; for the import the connection gets a 256 MB page cache and a WAL
  checkpoint every 64 MB instead of 4 MB (fewer rewrites of the same index pages).
  Durability is the database's own: WAL with ``synchronous=NORMAL`` (a committed chunk
  survives a crash of the process; a power cut may lose the last chunks, never corrupts the
  file, and a re-import restores them). Foreign keys stay checked. *Initial load*: when the
  event table is empty, the whole import is one transaction that drops the table's indexes,
  appends the rows and builds the indexes again before its commit (other writers wait for
  it; an error rolls all of it back; see ``event_writers._SqliteEventWriter``).
- PostgreSQL: one query probes, by index, the chunk's products and users; the rows whose
  references exist go with one ``COPY`` (CSV written by pyarrow) straight into the event
  table. Should ``COPY`` meet a stored event id (a re-import, an overlapping export, another
  writer), the chunk starts over the staged way, and later chunks probe their ids first:
  ``COPY`` into a temporary staging table, one anti-join that refuses staged rows whose user
  or product is gone, and one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``. New users
  are inserted first (``ON CONFLICT DO NOTHING``); the event table has no foreign keys there
  (per-row trigger checks were 40 % of the server's CPU; see ``data.models.Event``). Two
  connections write chunks at once (``writer_threads``), so the server's work (~80 % of the
  import's CPU) uses both cores of a small machine; chunks may then commit out of order. The
  transaction commits with ``synchronous_commit=off``: a server crash may lose the last
  chunks committed in the previous ~0.6 s (never a half chunk, never corruption; a
  re-import restores them).

Memory is bounded by three chunks (one being read, two being written) and a byte block
(8 MB), the sku -> product id cache (at most the catalog), the user ids known to exist (both
capped) and 8 bytes per event id (a 64-bit hash in a sorted numpy block, to report duplicates
inside the file): 8 MB per million events.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO, TextIO, cast

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy.engine import Engine
from sqlmodel import Session
from tqdm import tqdm

from data.ingest.event_rows import (
    _FIELDS,
    _RowsChunk,
    _TableChunk,
    _validate_chunk,
)
from data.ingest.event_writers import _Columns, _writers_for, _Written
from data.ingest.importer import (
    BadRow,
    ImportReport,
    _bad_writer,
    _check_file,
    _chunked,
    _progress,
)
from data.ingest.readers import csv_rows, detect_format, read_jsonl
from data.repos.catalog import product_ids_by_sku

#: Caches are cleared when they reach this many entries (memory stays bounded).
_CACHE_LIMIT = 2_000_000
#: The report's reason for a row of an erased shopper (the id is not repeated).
ERASED_USER_REASON = "user was erased: events of an erased shopper are never stored"
#: Bytes per CSV block handed to pyarrow (cut at a line end).
_BLOCK_BYTES = 8 << 20
#: Columnar checks on (tests switch this off to compare with the row-by-row path).
_COLUMNAR = True


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
        use_arrow = _COLUMNAR and b'"' not in head
        blocks = _LineBlocks(raw, bar)
        for block, n_lines in blocks:
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
                    yield from _table_chunks(cols, line, n_lines, chunk_size)
                    line += n_lines
                    continue
                # pyarrow refused the block: the row reader names each bad line in it (a
                # quote-free block is self-contained).
                _, rows = csv_rows(io.BytesIO(head + block))
                yield from _row_chunks(rows, plan, width, chunk_size, line - 2)
                line += n_lines
                continue
            # A quote (or an odd line end): from here on the row reader reads the stream.
            _, rows = csv_rows(cast(BinaryIO, _Chain(head + block + blocks.carry, raw, bar)))
            yield from _row_chunks(rows, plan, width, chunk_size, line - 2)
            return


class _LineBlocks:
    """Iterating gives ``(block, n_lines)``: whole lines of ``raw`` about ``_BLOCK_BYTES`` at a
    time (the file's last line may lack its newline); ``carry`` holds the partial line read
    past the last block handed out. Reads are reported to ``bar`` (bytes)."""

    def __init__(self, raw: BinaryIO, bar: tqdm | None) -> None:
        self.raw, self.bar, self.carry = raw, bar, b""

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        while True:
            data = self.raw.read(_BLOCK_BYTES)
            if self.bar is not None:
                self.bar.update(len(data))
            block = self.carry + data
            # A short read is the end of the file (a buffered file reads ``n`` bytes until then).
            if len(data) == _BLOCK_BYTES:  # not yet the end: hand out whole lines only
                cut = block.rfind(b"\n") + 1
                if cut == 0:
                    self.carry = block
                    continue
                block, self.carry = block[:cut], block[cut:]
            else:
                self.carry = b""
            if not block:
                return
            yield block, block.count(b"\n") + (0 if block.endswith(b"\n") else 1)


def _table_chunks(
    cols: Sequence[pa.Array | None], line: int, n_rows: int, chunk_size: int
) -> Iterator[_TableChunk]:
    """A parsed block's columns (None = a field the file lacks) as chunks of ``chunk_size``
    rows, numbered from file line ``line``."""
    for s in range(0, n_rows, chunk_size):
        m = min(chunk_size, n_rows - s)
        yield _TableChunk(
            [c.slice(s, m) if c is not None else None for c in cols],
            np.arange(line + s, line + s + m, dtype=np.int64),
        )


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
    """JSON Lines as chunks: plain blocks parsed by pyarrow (without a ``mapping``), the rest
    by ``read_jsonl``."""
    keys = [(mapping.get(f), f) for f in _FIELDS]

    def pick(rec: Mapping[str, Any]) -> list[Any]:
        return [rec[t] if t is not None and t in rec else rec.get(f) for t, f in keys]

    def row_chunks(raw: BinaryIO, offset: int, on_read: Any) -> Iterator[_RowsChunk]:
        items = read_jsonl(raw, on_read=on_read)
        picked = ((ln + offset, it if isinstance(it, str) else pick(it)) for ln, it in items)
        for chunk in _chunked(picked, chunk_size):
            yield _RowsChunk(cast(list[tuple[int, Sequence[Any] | str]], chunk))

    with path.open("rb") as raw:
        if not _COLUMNAR or mapping:
            yield from row_chunks(raw, 0, bar.update if bar is not None else None)
            return
        line = 1
        for block, n_lines in _LineBlocks(raw, bar):
            table = _jsonl_table(block) if _plain_json_lines(block) else None
            if table is not None and table.num_rows == n_lines:
                cols = [table.column(f).combine_chunks() for f in _FIELDS]
                yield from _table_chunks(cols, line, n_lines, chunk_size)
            else:  # the row reader names each bad line of the block (lines are records)
                yield from row_chunks(io.BytesIO(block), line - 1, None)
            line += n_lines


def _plain_json_lines(block: bytes) -> bool:
    """True when pyarrow may parse ``block``: no ``\\r`` (the row reader splits lines there
    too), no blank line, no escaped surrogate (``\\ud800``: Python keeps a lone one), valid
    UTF-8. A blank line of spaces only is caught by the row count afterwards."""
    if b"\r" in block or block.startswith(b"\n") or b"\n\n" in block:
        return False
    if b"\\ud" in block or b"\\uD" in block:
        return False
    if not block.isascii():
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


#: Our fields as JSON Lines columns: text, the time as an integer or (second try) as text.
_JSON_SCHEMAS = [
    pa.schema([(f, pa.int64() if f == "ts" and ts_int else pa.string()) for f in _FIELDS])
    for ts_int in (True, False)
]


def _jsonl_table(block: bytes) -> pa.Table | None:
    """``block`` parsed by pyarrow with our fields as columns (other keys ignored), or None
    when it refuses (a value of another JSON type, a duplicate key, a line not an object...)."""
    import pyarrow.json as pa_json

    read_opts = pa_json.ReadOptions(use_threads=False, block_size=len(block) + 1)
    for schema in _JSON_SCHEMAS:
        parse_opts = pa_json.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore", newlines_in_values=False
        )
        try:
            return pa_json.read_json(
                io.BytesIO(block), read_options=read_opts, parse_options=parse_opts
            )
        except (pa.ArrowInvalid, UnicodeDecodeError):
            continue
    return None


def _input_chunks(
    path: Path, fmt: str, mapping: Mapping[str, str], bar: tqdm | None, chunk_size: int
) -> Iterator[_RowsChunk | _TableChunk]:
    if fmt == "csv":
        return _csv_chunks(path, mapping, bar, chunk_size)
    if fmt == "parquet":
        return _parquet_chunks(path, mapping, bar, chunk_size)
    return _jsonl_chunks(path, mapping, bar, chunk_size)


# ---------------------------------------------------------------------------- checking


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


def import_events(
    engine: Engine,
    *,
    path: Path,
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    chunk_size: int = 50_000,
    progress: bool = True,
    errors_out: TextIO | None = None,
    writer_threads: int | None = None,
    refused_users: Callable[[set[str]], set[str]] | None = None,
) -> ImportReport:
    """Insert events from ``path``, idempotent by event id; users are created as needed.

    Columns: ``event_id, user_id, sku`` (or ``product_sku``; a product's or a variant's),
    ``kind, ts`` and optionally ``session, source``; ``mapping`` is our field <- file column.
    Each chunk of ``chunk_size`` input rows is one transaction. Bad rows are reported with
    their line number and reason; good rows always load. ``writer_threads``: PostgreSQL
    connections writing chunks at once (default ``event_writers.PG_WRITERS``; SQLite: 1).
    ``refused_users``: given user ids not yet stored by this import, those whose events must
    never be stored (erased shoppers: the api layer passes its tombstone check); their rows are
    reported as bad, without the id.
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
    writers = _writers_for(engine, writer_threads)

    def finished(done: list[tuple[_Written, tuple[_Columns, list[str], set[str]]]]) -> None:
        nonlocal known_users
        for written, (rows, skus, users) in done:
            # Known once committed: until then later chunks insert them too (ON CONFLICT DO
            # NOTHING waits for this chunk), so their check never misses a user in flight.
            if len(known_users) + len(users) > _CACHE_LIMIT:
                known_users = set()
            known_users |= users
            # A reference deleted meanwhile (PostgreSQL). The user stays in ``known_users``:
            # later chunks must not create it again, and the check refuses its rows there too.
            for pos, what in written.refused:
                line = rows.lines[pos]
                if what == "product":
                    sku_ids.pop(skus[pos], None)
                    add_bad(BadRow(file, line, f"unknown product sku {skus[pos]!r}"))
                else:
                    user = rows.cols[1][pos]
                    add_bad(BadRow(file, line, f"user {user!r} was deleted during the import"))
            report.users_created += written.created
            report.written += written.inserted
            report.unchanged += len(rows) - written.inserted - len(written.refused)

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
            if refused_users is not None:
                erased = refused_users(set(valid.cols[1]).difference(known_users))
                if erased:
                    keep = [u not in erased for u in valid.cols[1]]
                    for line, ok in zip(valid.lines, keep, strict=True):
                        if not ok:
                            add_bad(BadRow(file, line, ERASED_USER_REASON))
                    valid = valid.keep(keep)
                    pids = [p for p, ok in zip(pids, keep, strict=True) if ok]
                    if not len(valid):
                        continue
            skus = valid.cols[2]
            valid.cols[2] = pids
            new_users = set(valid.cols[1]).difference(known_users)
            finished(writers.submit(valid, new_users, (valid, skus, new_users)))
        finished(writers.drain())
        writers.finish()
    finally:
        writers.close()
        if bar is not None:
            bar.close()
    return report
