"""Row readers that stream a file as ``(line_number, record | error)`` pairs.

The number is the file's 1-based line number where the record starts (the CSV header is line
1, so the first data row is line 2; a quoted field spanning lines counts every line; blank lines
count too), so every report points at the line an editor shows. Parquet has no lines: there it
is the 1-based row index. A row that cannot be parsed is yielded as a ``str`` reason instead of
a dict, so one bad line never stops the rest.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

Record = dict[str, Any]
RowItem = tuple[int, Record | str]

FORMATS = ("csv", "jsonl", "parquet")

# Lone surrogates U+DC80..U+DCFF appear only where surrogateescape met an invalid UTF-8 byte.
_BAD_BYTE = re.compile("[\udc80-\udcff]")

# Large enough for a 10 MB field to be read (and then rejected by validation with a reason)
# rather than abort the reader.
_CSV_FIELD_LIMIT = 64 * 1024 * 1024


def detect_format(path: Path, fmt: str | None = None) -> str:
    """``fmt`` if given, else from the suffix (.csv, .jsonl/.ndjson/.json, .parquet/.pq)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"format: expected one of {FORMATS}, got {fmt!r}")
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ValueError(
        f"format: cannot tell the format of {path.name!r} from its suffix; "
        f"pass --format one of {FORMATS}"
    )


class _CountingReader(io.RawIOBase):
    """Wraps a binary file and reports bytes read (for the progress bar)."""

    def __init__(self, raw: BinaryIO, on_read: Callable[[int], object] | None) -> None:
        self._raw = raw
        self._on_read = on_read

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._raw.read(len(b))
        n = len(data)
        b[:n] = data
        if self._on_read is not None and n:
            self._on_read(n)
        return n


def _text_stream(raw: BinaryIO, on_read: Callable[[int], object] | None) -> io.TextIOWrapper:
    buffered = io.BufferedReader(_CountingReader(raw, on_read), buffer_size=1 << 20)
    return io.TextIOWrapper(buffered, encoding="utf-8", errors="surrogateescape", newline="")


def csv_rows(
    raw: BinaryIO, *, on_read: Callable[[int], object] | None = None
) -> tuple[list[str], Iterator[tuple[int, list[str] | str]]]:
    """The header of a CSV and a stream of ``(line, values | error)`` with one value per header
    column (a wrong column count is an error). Reads the header at once, rows lazily."""
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    text = _text_stream(raw, on_read)
    head = text.readline()
    if head.startswith(codecs.BOM_UTF8.decode("utf-8")):
        head = head[1:]
    dialect = csv.excel_tab if head.count("\t") > head.count(",") else csv.excel
    header = next(csv.reader([head], dialect=dialect), [])
    header = [h.strip() for h in header]
    if not header or any(not h for h in header):
        raise ValueError("csv: the first line must be a header naming every column")
    width = len(header)

    def rows() -> Iterator[tuple[int, list[str] | str]]:
        reader = csv.reader(text, dialect=dialect)
        lines_before = 1  # the header line
        while True:
            row_no = lines_before + 1  # where this record starts
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                lines_before = 1 + reader.line_num
                yield row_no, f"unparseable CSV row: {exc}"
                continue
            lines_before = 1 + reader.line_num
            if not row:
                continue  # blank line: not a record (its line still counts)
            # One check over the joined row is cheaper than one per field; ASCII has none.
            joined = "".join(row)
            if not joined.isascii() and _BAD_BYTE.search(joined):
                yield row_no, "invalid UTF-8 byte in row"
                continue
            if len(row) != width:
                yield (
                    row_no,
                    f"expected {width} columns, got {len(row)} (truncated or malformed row)",
                )
                continue
            yield row_no, row

    return header, rows()


def read_csv(raw: BinaryIO, *, on_read: Callable[[int], object] | None = None) -> Iterator[RowItem]:
    """Stream a CSV with a header row as ``(line, record)``. A wrong column count is an error."""
    header, rows = csv_rows(raw, on_read=on_read)
    for row_no, row in rows:
        yield row_no, row if isinstance(row, str) else dict(zip(header, row, strict=True))


def read_jsonl(
    raw: BinaryIO, *, on_read: Callable[[int], object] | None = None
) -> Iterator[RowItem]:
    """Stream JSON Lines as ``(line, object)``: one object per line; blank lines are skipped."""
    text = _text_stream(raw, on_read)
    for row_no, line in enumerate(text, start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if _BAD_BYTE.search(stripped):
            yield row_no, "invalid UTF-8 byte in line"
            continue
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as exc:
            yield (
                row_no,
                f"invalid JSON ({exc.msg} at column {exc.colno}; truncated line?)",
            )
            continue
        if not isinstance(obj, dict):
            yield row_no, f"expected a JSON object, got {type(obj).__name__}"
            continue
        if ("\\ud" in stripped or "\\uD" in stripped) and not _encodes(obj):
            yield row_no, "invalid JSON string: a lone surrogate escape (\\ud800-\\udfff)"
            continue
        yield row_no, obj


def _encodes(obj: Any) -> bool:
    """False when a string in ``obj`` holds a lone surrogate (from a ``\\udXXX`` escape):
    no database can store it as UTF-8."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_parquet(
    path: Path,
    *,
    batch_size: int = 10_000,
    on_rows: Callable[[int], object] | None = None,
) -> Iterator[RowItem]:
    """Stream a Parquet file batch by batch as ``(row index from 1, record)``."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    row_no = 0
    for batch in pf.iter_batches(batch_size=batch_size):
        rows = batch.to_pylist()
        for rec in rows:
            row_no += 1
            yield row_no, rec
        if on_rows is not None:
            on_rows(len(rows))


def parquet_num_rows(path: Path) -> int:
    """Rows in a Parquet file (from its metadata, without reading it)."""
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)
