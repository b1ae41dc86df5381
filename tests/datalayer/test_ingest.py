"""Ingestion: bad rows are reported and never stop good rows; re-imports change nothing."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from data.ingest import import_catalog, import_events
from data.ingest.importer import parse_mapping, parse_timestamp
from data.models import Event, Product
from data.repos.stats import count_all

GOOD_PRODUCTS = [
    {"item_code": f"SKU{i}", "name": f"Product {i}", "cat": "Mug", "price": str(5 + i)}
    for i in range(5)
]
MAPPING = {"sku": "item_code", "title": "name", "category": "cat"}


def _write_catalog_csv(path: Path) -> None:
    """5 good rows and 6 bad ones: missing sku, wrong type, duplicate, 10 MB text,
    a non-UTF-8 byte, and a truncated last line."""
    header = "item_code,name,cat,price,description,image\n"
    lines = [header]
    for p in GOOD_PRODUCTS:
        lines.append(
            f"{p['item_code']},{p['name']},{p['cat']},{p['price']},nice,img/{p['item_code']}.png\n"
        )
    lines.append(",No sku,Mug,3,x,\n")  # line 7: missing sku
    lines.append("SKU9,Bad price,Mug,cheap,x,\n")  # line 8: wrong type
    lines.append("SKU0,Duplicate,Mug,3,x,\n")  # line 9: duplicate sku
    lines.append("SKU10,Huge,Mug,3," + "a" * 10_000_000 + ",\n")  # line 10: 10 MB description
    raw = "".join(lines).encode()
    raw += b"SKU11,Bad \xff byte,Mug,3,x,\n"  # line 11: invalid UTF-8
    raw += b"SKU12,Truncated,Mu"  # line 12: truncated last line
    path.write_bytes(raw)


def test_catalog_csv_with_bad_rows_loads_every_good_row(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "catalog.csv"
    _write_catalog_csv(path)
    report = import_catalog(sqlite_engine, path=path, mapping=MAPPING, progress=False)
    assert report.rows_read == 11
    assert report.written == 5
    # Rows are numbered by the file's line (the header is line 1).
    assert {b.row for b in report.bad_rows} == {7, 8, 9, 10, 11, 12}
    reasons = {b.row: b.reason for b in report.bad_rows}
    assert "missing 'sku'" in reasons[7]
    assert "price" in reasons[8]
    assert "duplicate sku 'SKU0' (first at line 2)" in reasons[9]
    assert "too long" in reasons[10]
    assert "UTF-8" in reasons[11]
    assert "columns" in reasons[12]
    assert all(b.file == str(path) for b in report.bad_rows)
    with Session(sqlite_engine) as s:
        products = s.exec(select(Product).order_by(Product.sku)).all()
        assert [p.sku for p in products] == [f"SKU{i}" for i in range(5)]
        assert products[0].category == "mug"
        assert products[0].image == str((tmp_path / "img" / "SKU0.png").resolve())
        assert products[1].price == 6.0
    again = import_catalog(sqlite_engine, path=path, mapping=MAPPING, progress=False)
    assert (again.written, again.unchanged, again.bad_count) == (0, 5, 6)


def _events_rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [
        {
            "event_id": f"e{i}",
            "user_id": f"u{i % 3}",
            "sku": f"SKU{i % 5}",
            "kind": "view",
            "ts": "2026-03-01T10:00:00Z",
        }
        for i in range(20)
    ]
    rows.append(
        {"event_id": "e20", "user_id": "u1", "sku": "SKU1", "kind": "purchase", "ts": 1772359200}
    )
    rows.append(
        {"event_id": "bad-ts", "user_id": "u1", "sku": "SKU1", "kind": "view", "ts": "yesterday"}
    )
    rows.append(
        {
            "event_id": "bad-product",
            "user_id": "u1",
            "sku": "NOPE",
            "kind": "view",
            "ts": "2026-03-01",
        }
    )
    rows.append(
        {"event_id": "e1", "user_id": "u1", "sku": "SKU1", "kind": "view", "ts": "2026-03-01"}
    )
    rows.append(
        {
            "event_id": "bad-kind",
            "user_id": "u1",
            "sku": "SKU1",
            "kind": "wishlist",
            "ts": "2026-03-01",
        }
    )
    rows.append(
        {
            "event_id": "bad-type",
            "user_id": {"a": 1},
            "sku": "SKU1",
            "kind": "view",
            "ts": "2026-03-01",
        }
    )
    return rows


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_events_every_format_reports_bad_rows_and_is_idempotent(
    db_engine: Engine, tmp_path: Path, fmt: str
) -> None:
    cat = tmp_path / "catalog.csv"
    _write_catalog_csv(cat)
    import_catalog(db_engine, path=cat, mapping=MAPPING, progress=False)
    rows = _events_rows()
    path = tmp_path / f"events.{fmt}"
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"event_id": "trunc", "user_')
    elif fmt == "csv":
        rows = [r for r in rows if r["event_id"] != "bad-type"]  # CSV has no types to get wrong
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["event_id", "user_id", "sku", "kind", "ts"])
            w.writeheader()
            w.writerows(rows)
    else:
        rows = [r for r in rows if r["event_id"] != "bad-type"]
        pq.write_table(pa.Table.from_pylist([{**r, "ts": str(r["ts"])} for r in rows]), path)
    report = import_events(db_engine, path=path, progress=False, chunk_size=7)
    assert report.written == 21
    bad = {b.reason.split(" ")[0] + ":" + str(b.row) for b in report.bad_rows}
    assert any("'ts'" in b.reason for b in report.bad_rows)
    assert any("unknown product sku 'NOPE'" in b.reason for b in report.bad_rows)
    assert any("duplicate event_id 'e1'" in b.reason for b in report.bad_rows)
    assert any("'kind'" in b.reason for b in report.bad_rows)
    expected_bad = {"jsonl": 6, "csv": 4, "parquet": 4}[fmt]
    assert report.bad_count == expected_bad, bad
    # File lines (CSV: the header is line 1; Parquet: row index), reported in file order.
    first = {"jsonl": 22, "csv": 23, "parquet": 22}[fmt]
    words = ["'ts':", "unknown", "duplicate", "'kind':", "'user_id':", "invalid"]
    got = [(b["row"], b["reason"].split(" ")[0]) for b in report.to_dict()["bad_rows"]]
    assert got == [(first + i, w) for i, w in enumerate(words[:expected_bad])]
    with Session(db_engine) as s:
        counts = count_all(s)
        assert counts["events"] == 21 and counts["users"] == 3
        purchase = s.exec(select(Event).where(Event.event_id == "e20")).one()
        assert purchase.ts == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    again = import_events(db_engine, path=path, progress=False, chunk_size=7)
    assert (again.written, again.unchanged, again.bad_count) == (0, 21, expected_bad)


@pytest.mark.parametrize("threads", [1, 2])
def test_crash_mid_import_leaves_no_half_written_chunk(
    db_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    import data.ingest.event_writers as writers

    cat = tmp_path / "catalog.csv"
    _write_catalog_csv(cat)
    import_catalog(db_engine, path=cat, mapping=MAPPING, progress=False)
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _events_rows()[:20]))
    sqlite = db_engine.dialect.name == "sqlite"
    writer = writers._SqliteEventWriter if sqlite else writers._PostgresEventWriter
    real = writer._insert

    def crash_in_chunk_2(self, cur, rows, users):  # type: ignore[no-untyped-def]
        n = real(self, cur, rows, users)
        if "e8" in rows.cols[0]:  # chunk 2 is e8..e15; chunks may run on two threads
            raise RuntimeError("simulated crash after writing part of chunk 2")
        return n

    monkeypatch.setattr(writer, "_insert", crash_in_chunk_2)
    # One transaction per chunk (SQLite's initial load is one for all: test_events_import_paths).
    monkeypatch.setattr(writers._SqliteEventWriter, "initial_load", False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        import_events(db_engine, path=path, progress=False, chunk_size=8, writer_threads=threads)
    monkeypatch.undo()
    with Session(db_engine) as s:
        stored = set(s.exec(select(Event.event_id)).all())
    # Chunk 2 rolled back whole. One writer stops at the error (chunk 3 never starts); with
    # two (PostgreSQL), chunk 3 commits whole if it was handed over before chunk 2 failed,
    # else not at all (timing: both are whole chunks, never a part).
    first, chunk3 = {f"e{i}" for i in range(8)}, {f"e{i}" for i in range(16, 20)}
    if threads == 2 and not sqlite:
        assert stored in (first, first | chunk3), sorted(stored)
    else:
        assert stored == first
    resumed = import_events(db_engine, path=path, progress=False, chunk_size=8)
    assert (resumed.written, resumed.unchanged) == (20 - len(stored), len(stored))


def test_fast_event_validation_matches_the_reference_validator() -> None:
    from data.ingest.event_rows import _FIELDS, validate_event_values
    from data.ingest.importer import RowError, validate_event

    # ``base`` is clean (the fast path); each case spoils one thing or takes a slower form.
    base = {"event_id": " e1 ", "user_id": "u 1", "sku": "S", "kind": "add_to_cart"}
    cases: list[dict[str, object]] = [
        {**base, "ts": "1772359200", "kind": "Add-To-Cart", "user_id": "u\x01 1"},
        {**base, "ts": "1772359200"},
        {**base, "ts": 1772359200000, "session": "s", "source": " web\x7f "},
        {**base, "ts": "2026-03-01T12:00:00+02:00", "sku": "", "product_sku": "P"},
        {**base, "ts": "2026-03-01"},
        {**base, "ts": "2026-03-01T10:00:00Z", "session": "x" * 100, "source": "y" * 100},
        {**base, "ts": " 1772359200 ", "event_id": "e\t1", "kind": "view"},
        {**base, "ts": "1772359200.5", "kind": "purchase", "session": 7},
        {**base, "ts": "20260301"},
        {**base, "ts": "2150-01-01T00:00:00"},
        {**base, "ts": 4_200_000_000},
        {**base, "ts": "yesterday"},
        {**base, "ts": "1850-01-01"},
        {**base, "ts": True},
        {**base, "kind": "wishlist", "ts": "2026-03-01"},
        {**base, "user_id": {"a": 1}, "ts": "2026-03-01"},
        {**base, "event_id": "x" * 129, "ts": "2026-03-01"},
        {**base, "sku": None, "ts": "2026-03-01"},
        {**base, "event_id": float("nan"), "ts": "2026-03-01"},
    ]
    for rec in cases:
        try:
            ref = validate_event(rec)
        except RowError as exc:
            with pytest.raises(RowError) as got:
                validate_event_values([rec.get(f) for f in _FIELDS])
            assert str(got.value) == str(exc), rec
            continue
        fast = validate_event_values([rec.get(f) for f in _FIELDS])
        ts = ref["ts"].replace(tzinfo=None).isoformat(" ", "microseconds")
        expected = (ref["event_id"], ref["user_id"], ref["sku"], ref["kind"].name, ts)
        assert fast == (*expected, ref["session"], ref["source"]), rec
    ok = validate_event_values([base.get(f) for f in _FIELDS[:5]] + ["1772359200", None, None])
    assert ok == ("e1", "u 1", "S", "add_to_cart", "2026-03-01 10:00:00.000000", None, None)
    iso = validate_event_values(["e", "u", "S", None, "view", "2026-03-01T12:00:00+02:00", "", ""])
    assert iso == ("e", "u", "S", "view", "2026-03-01 10:00:00.000000", None, None)


def test_seen_ids_flag_every_repeat_across_chunks_with_8_bytes_per_id() -> None:
    import numpy as np

    from data.ingest.events import _SeenIds

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 5_000, size=20_000)  # many repeats, in random order
    seen = _SeenIds()
    got = np.concatenate([seen.first_seen(part) for part in np.array_split(ids, 37)])
    expected = np.zeros(len(ids), dtype=bool)
    expected[np.unique(ids, return_index=True)[1]] = True  # first occurrence in file order
    assert np.array_equal(got, expected)
    assert seen.nbytes == 8 * len(np.unique(ids))
    assert not seen.first_seen(ids[:10]).any()  # all seen before: nothing new, no empty block
    assert seen.first_seen(np.array([-1, -1, 7_000], dtype=np.int64)).tolist() == [
        True,
        False,
        True,
    ]


def test_parse_helpers_validate_clearly() -> None:
    assert parse_mapping(["sku=item_code", "title = name"]) == {"sku": "item_code", "title": "name"}
    with pytest.raises(ValueError, match="OURS=THEIRS"):
        parse_mapping(["sku"])
    assert parse_timestamp("2026-03-01T10:00:00+02:00") == datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    assert parse_timestamp(1772359200000) == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="out of range"):
        parse_timestamp("1850-01-01")


def test_missing_file_and_unknown_format_fail_loudly(sqlite_engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        import_events(sqlite_engine, path=tmp_path / "nope.csv", progress=False)
    odd = tmp_path / "events.xlsx"
    odd.write_text("x")
    with pytest.raises(ValueError, match="--format"):
        import_events(sqlite_engine, path=odd, progress=False)
