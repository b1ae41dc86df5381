"""Event rows: the row validator (``validate_event_values``), the chunk types the readers
yield, and the columnar checks that pick the rows it would accept unchanged (pyarrow compute)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import compress
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.ingest.importer import (
    _CONTROL,
    _KIND_ALIASES,
    MAX_ID_LEN,
    BadRow,
    RowError,
    parse_timestamp,
)
from data.models import EventKind

#: Our event fields, in the order the validated tuple and the writers use.
_FIELDS = ("event_id", "user_id", "sku", "product_sku", "kind", "ts", "session", "source")
_KINDS = [k.value for k in EventKind]

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
    """Input rows as text columns (one per ``_FIELDS`` entry, None when the file lacks it; the
    time may be an integer column); row ``i`` is file line ``lines[i]``."""

    columns: list[pa.Array | None]
    lines: np.ndarray

    def values(self, rows: np.ndarray) -> list[tuple[int, Sequence[Any]]]:
        """``(line, values)`` of the given row positions, for the row validator."""
        take = pa.array(rows, type=pa.int64())
        cols = [
            c.take(take).to_pylist() if c is not None else [None] * len(rows) for c in self.columns
        ]
        return list(zip(self.lines[rows].tolist(), zip(*cols, strict=True), strict=True))


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
    if pa.types.is_integer(ts.type):  # JSON numbers: the row validator's ``int`` path
        digits = pc.and_(pc.greater_equal(ts, 0), pc.less(ts, 10**15))
        num = pc.cast(pc.if_else(digits, ts, 0), pa.int64())
    else:
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
        ok = pc.and_(ok, pc.or_kleene(empty, pc.match_substring_regex(col, _ID_RE)))
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
