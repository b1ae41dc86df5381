"""Validated, chunked, idempotent imports of events, and the row helpers the catalog import
(``data.ingest.catalog``) shares.

Each chunk is written in one transaction, so a crash mid-import leaves no half-written chunk;
re-running the same file changes nothing (upserts by sku, inserts skipped by event id).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

from data.files import under_home
from data.ingest.readers import (
    RowItem,
    parquet_num_rows,
    read_csv,
    read_jsonl,
    read_parquet,
)
from data.models import EventKind

#: Bounds that keep one hostile row from bloating the database.
MAX_ID_LEN = 128
MAX_TITLE_LEN = 512
MAX_DESCRIPTION_LEN = 20_000
MAX_CATEGORY_LEN = 128
MAX_IMAGE_LEN = 2048
MAX_ATTRIBUTES_JSON = 10_000
#: Bad rows kept in memory for the report (all of them go to ``errors_out``).
MAX_BAD_ROWS_KEPT = 1_000

_KIND_ALIASES = {
    "view": EventKind.view,
    "pageview": EventKind.view,
    "page_view": EventKind.view,
    "detail_view": EventKind.view,
    "click": EventKind.click,
    "add_to_cart": EventKind.add_to_cart,
    "addtocart": EventKind.add_to_cart,
    "cart": EventKind.add_to_cart,
    "purchase": EventKind.purchase,
    "order": EventKind.purchase,
    "transaction": EventKind.purchase,
}
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class BadRow:
    """A row that was not loaded (``level="error"``), or was loaded with a problem
    (``level="warning"``, e.g. an image that could not be fetched): where it is and why.
    ``row`` is the file's line number (for Parquet, the 1-based row index)."""

    file: str
    row: int
    reason: str
    level: str = "error"


@dataclass
class ImportReport:
    """What an import did. ``unchanged`` rows matched what was stored already."""

    file: str
    kind: str
    rows_read: int = 0
    written: int = 0
    unchanged: int = 0
    bad_count: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)
    users_created: int = 0
    #: Catalog only: products and variants loaded (written or unchanged), Shopify image-only
    #: rows, images fetched from URLs, images found already stored, and warnings.
    products: int = 0
    variants: int = 0
    image_rows: int = 0
    images_fetched: int = 0
    images_reused: int = 0
    warning_count: int = 0
    warnings: list[BadRow] = field(default_factory=list)

    def add_bad(self, bad: BadRow) -> None:
        self.bad_count += 1
        if len(self.bad_rows) < MAX_BAD_ROWS_KEPT:
            self.bad_rows.append(bad)

    def add_warning(self, warning: BadRow) -> None:
        self.warning_count += 1
        if len(self.warnings) < MAX_BAD_ROWS_KEPT:
            self.warnings.append(warning)

    def sorted_bad_rows(self) -> list[BadRow]:
        """The kept bad rows in file order (checks run in stages, so they arrive out of it)."""
        return sorted(self.bad_rows, key=lambda b: b.row)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data; ``row`` in each bad row is the file's line number,
        the same number the text report prints."""
        out: dict[str, Any] = {
            "file": self.file,
            "kind": self.kind,
            "rows_read": self.rows_read,
            "written": self.written,
            "unchanged": self.unchanged,
            "bad": self.bad_count,
            "users_created": self.users_created,
            "bad_rows": [b.__dict__ for b in self.sorted_bad_rows()],
        }
        if self.kind == "catalog":
            out.update(
                products=self.products,
                variants=self.variants,
                image_rows=self.image_rows,
                images_fetched=self.images_fetched,
                images_reused=self.images_reused,
                warning_count=self.warning_count,
                warnings=[w.__dict__ for w in sorted(self.warnings, key=lambda w: w.row)],
            )
        return out


class RowError(ValueError):
    """A row failed validation; the message is the reason shown to the user."""


def parse_mapping(pairs: list[str] | None) -> dict[str, str]:
    """``["sku=item_code", ...]`` → ``{"sku": "item_code"}`` (our name ← file column)."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise ValueError(f"map: expected OURS=THEIRS (e.g. sku=item_code), got {pair!r}")
        out[ours.strip()] = theirs.strip()
    return out


def _apply_mapping(rec: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    if not mapping:
        return dict(rec)
    out = dict(rec)
    for ours, theirs in mapping.items():
        if theirs in rec:
            out[ours] = rec[theirs]
    return out


def _text(
    rec: Mapping[str, Any],
    key: str,
    *,
    max_len: int,
    required: bool = False,
    default: str = "",
) -> str:
    value = rec.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if required:
            raise RowError(f"missing {key!r}")
        return default
    if isinstance(value, (dict, list, bool)):
        raise RowError(f"{key!r}: expected text, got {type(value).__name__}")
    text = _CONTROL.sub("", str(value)).strip()
    if required and not text:
        raise RowError(f"missing {key!r}")
    if len(text) > max_len:
        raise RowError(f"{key!r} too long: {len(text)} characters (at most {max_len})")
    return text


def _price(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RowError(f"'price': expected a number, got {value!r}")
    try:
        price = float(value)
    except (TypeError, ValueError):
        raise RowError(f"'price': expected a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(price) or price < 0:
        raise RowError(f"'price': expected a finite number >= 0, got {price}")
    return price


def _attributes(rec: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes: an ``attributes`` object or JSON string, plus ``attributes.X`` / ``attr_X``."""
    attrs: dict[str, Any] = {}
    raw = rec.get("attributes")
    if isinstance(raw, str) and raw.strip():
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise RowError("'attributes': not valid JSON") from None
    if isinstance(raw, dict):
        attrs.update(raw)
    elif raw not in (None, ""):
        raise RowError(f"'attributes': expected an object, got {type(raw).__name__}")
    for key, value in rec.items():
        for prefix in ("attributes.", "attr_"):
            if key.startswith(prefix) and value not in (None, ""):
                attrs[key[len(prefix) :]] = value
    if len(json.dumps(attrs, default=str)) > MAX_ATTRIBUTES_JSON:
        raise RowError(f"'attributes' too large (more than {MAX_ATTRIBUTES_JSON} bytes as JSON)")
    return json.loads(json.dumps(attrs, default=str))


def _image(value: Any, base_dir: Path) -> str | None:
    if value in (None, ""):
        return None
    text = str(value).strip()
    if len(text) > MAX_IMAGE_LEN:
        raise RowError(f"'image' too long ({len(text)} characters)")
    if _URI.match(text):
        return text
    # Image paths are relative to the file that names them.
    return str(under_home(text, base_dir).resolve())


def parse_timestamp(value: Any) -> datetime:
    """ISO 8601 text or epoch seconds/milliseconds → aware UTC (naive input is taken as UTC)."""
    if isinstance(value, datetime):
        ts = value
    elif isinstance(value, bool) or value is None or value == "":
        raise RowError(f"'ts': expected a timestamp, got {value!r}")
    elif isinstance(value, (int, float)) or (isinstance(value, str) and _is_number(value)):
        num = float(value)
        if not math.isfinite(num):
            raise RowError(f"'ts': not a finite number: {value!r}")
        if num > 1e11:  # milliseconds since the epoch
            num /= 1000.0
        try:
            ts = datetime.fromtimestamp(num, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise RowError(f"'ts': out of range: {value!r}") from None
    else:
        text = str(value).strip()
        try:
            ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise RowError(f"'ts': expected ISO 8601 or epoch seconds, got {text[:40]!r}") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    ts = ts.astimezone(UTC)
    if not (1990 <= ts.year <= 2100):
        raise RowError(f"'ts': year {ts.year} is out of range 1990..2100")
    return ts


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def validate_event(rec: Mapping[str, Any]) -> dict[str, Any]:
    """One event record → a dict with ``sku`` (product resolved later) (raises ``RowError``)."""
    sku = _text(rec, "sku", max_len=MAX_ID_LEN)
    if not sku:
        sku = _text(rec, "product_sku", max_len=MAX_ID_LEN, required=True)
    kind_raw = (
        _text(rec, "kind", max_len=64, required=True).lower().replace("-", "_").replace(" ", "_")
    )
    kind = _KIND_ALIASES.get(kind_raw)
    if kind is None:
        raise RowError(
            f"'kind': expected one of {[k.value for k in EventKind]}, got {kind_raw[:40]!r}"
        )
    return {
        "event_id": _text(rec, "event_id", max_len=MAX_ID_LEN, required=True),
        "user_id": _text(rec, "user_id", max_len=MAX_ID_LEN, required=True),
        "sku": sku,
        "kind": kind,
        "ts": parse_timestamp(rec.get("ts")),
        "session": _text(rec, "session", max_len=MAX_ID_LEN) or None,
        "source": _text(rec, "source", max_len=MAX_ID_LEN) or None,
    }


def _iter_rows(path: Path, fmt: str, progress: tqdm | None) -> Iterator[RowItem]:
    if fmt == "parquet":
        yield from read_parquet(path, on_rows=progress.update if progress else None)
        return
    with path.open("rb") as raw:
        reader = read_csv if fmt == "csv" else read_jsonl
        yield from reader(raw, on_read=progress.update if progress else None)


def _progress(path: Path, fmt: str, enabled: bool, desc: str) -> tqdm | None:
    if not enabled:
        return None
    if fmt == "parquet":
        return tqdm(total=parquet_num_rows(path), unit="row", desc=desc, unit_scale=True)
    return tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=desc)


_T = TypeVar("_T")


def _chunked(items: Iterator[_T], size: int) -> Iterator[list[_T]]:
    """Lists of ``size`` consecutive items (the last may be shorter)."""
    chunk: list[_T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _bad_writer(errors_out: TextIO | None, report: ImportReport) -> Callable[[BadRow], None]:
    def add(bad: BadRow) -> None:
        report.add_bad(bad)
        if errors_out is not None:
            errors_out.write(json.dumps(bad.__dict__) + "\n")

    return add


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"file: {path} does not exist")
    if not path.is_file():
        raise ValueError(f"file: {path} is not a regular file")
