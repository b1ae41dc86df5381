"""The event writers' fast paths store exactly what the plain ones store: SQLite's initial load
(one transaction, indexes rebuilt at the end) against one transaction per chunk, PostgreSQL's
direct ``COPY`` against the staging table; an error in an initial load leaves the table as it
was (indexes included); a stored event id met by ``COPY`` sends the chunk the staged way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

import data.ingest.event_writers as writers
from data.db import drop_all, init_db
from data.ingest import import_catalog, import_events

T0 = 1_772_359_200  # 2026-03-01 10:00 UTC


def _catalog(engine: Engine, folder: Path) -> None:
    path = folder / "catalog.csv"
    path.write_text("sku,title\n" + "".join(f"S{i},Product {i}\n" for i in range(5)))
    import_catalog(engine, path=path, progress=False)


def _eid(i: int) -> str:
    return f"e{i - 3}" if i % 11 == 10 else f"e{i}"


def _events_csv(folder: Path, n: int) -> Path:
    """``n`` events: every 9th refers to an unknown product, every 11th repeats an id, every
    13th has a bad time; quotes and backslashes in some ids."""
    lines = ["event_id,user_id,sku,kind,ts,session"]
    for i in range(n):
        eid = _eid(i)
        uid = f'"u""{i % 6}\\"' if i % 4 == 0 else f"u{i % 6}"  # u"0\ in CSV quoting
        sku = "NOPE" if i % 9 == 8 else f"S{i % 5}"
        ts = "soon" if i % 13 == 12 else str(T0 + i)
        lines.append(f"{eid},{uid},{sku},view,{ts},s{i // 7}")
    path = folder / "events.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _stored(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT e.event_id, e.user_id, p.sku, e.kind, e.ts, e.session FROM event e "
                "JOIN product p ON p.id = e.product_id ORDER BY e.event_id"
            )
        ).all()
        users = conn.execute(text('SELECT id FROM "user" ORDER BY id')).scalars().all()
    return [tuple(r) for r in rows] + [("users", *users)]


def _indexes(engine: Engine) -> list[tuple[str, str]]:
    sql = (
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'event' "
        "ORDER BY name"
        if engine.dialect.name == "sqlite"
        else "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'event' ORDER BY 1"
    )
    with engine.connect() as conn:
        return [(str(a), str(b)) for a, b in conn.execute(text(sql)).all()]


def _summary(report: Any) -> tuple[Any, ...]:
    bad = [(b.row, b.reason) for b in report.sorted_bad_rows()]
    return report.rows_read, report.written, report.unchanged, report.users_created, bad


def test_fast_path_stores_what_the_plain_path_stores(
    db_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _events_csv(tmp_path, 200)
    sqlite = db_engine.dialect.name == "sqlite"
    results = []
    for fast in (False, True):
        drop_all(db_engine)
        init_db(db_engine)
        _catalog(db_engine, tmp_path)
        indexes = _indexes(db_engine)
        if sqlite:
            monkeypatch.setattr(writers._SqliteEventWriter, "initial_load", fast)
        else:
            monkeypatch.setattr(writers._PostgresEventWriter, "direct", fast)
        report = import_events(db_engine, path=path, progress=False, chunk_size=30)
        assert _indexes(db_engine) == indexes  # SQLite's initial load built them again
        again = import_events(db_engine, path=path, progress=False, chunk_size=30)
        assert (again.written, again.unchanged) == (0, report.written)
        results.append((_summary(report), _stored(db_engine)))
    assert results[0] == results[1]
    (rows_read, written, unchanged, created, bad), stored = results[1]
    # Known answer, by the import's order of checks: the time, then an id seen before among
    # rows with a valid time, then the product.
    seen: set[str] = set()
    loaded, refused = [], []
    for i in range(200):
        eid = _eid(i)
        if i % 13 == 12 or eid in seen:
            refused.append(i)
            continue
        seen.add(eid)
        (refused if i % 9 == 8 else loaded).append(i)
    assert (rows_read, written, unchanged, created) == (200, len(loaded), 0, 9)
    assert [line for line, _ in bad] == [i + 2 for i in refused]
    assert bad[0] == (8 + 2, "unknown product sku 'NOPE'")
    assert bad[1] == (10 + 2, "duplicate event_id 'e7' in file")
    assert [r[0] for r in stored[:-1]] == sorted(_eid(i) for i in loaded)
    assert stored[-1] == ("users", 'u"0\\', 'u"2\\', 'u"4\\', *[f"u{k}" for k in range(6)])


def _crash_sqlite_chunk_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's chunk writer raises after writing the chunk holding ``e30`` (chunk 2 of 30)."""
    real = writers._SqliteEventWriter._insert

    def crash_in_chunk_2(self, cur, rows, users):  # type: ignore[no-untyped-def]
        n = real(self, cur, rows, users)
        if "e30" in rows.cols[0]:
            raise RuntimeError("simulated crash in chunk 2")
        return n

    monkeypatch.setattr(writers._SqliteEventWriter, "_insert", crash_in_chunk_2)


def test_sqlite_initial_load_error_leaves_the_table_as_it_was(
    sqlite_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _catalog(sqlite_engine, tmp_path)
    path = _events_csv(tmp_path, 90)
    indexes = _indexes(sqlite_engine)
    _crash_sqlite_chunk_2(monkeypatch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        import_events(sqlite_engine, path=path, progress=False, chunk_size=30)
    # One transaction: chunk 1 and the dropped indexes rolled back with it.
    assert _stored(sqlite_engine) == [("users",)]
    assert _indexes(sqlite_engine) == indexes
    monkeypatch.undo()
    report = import_events(sqlite_engine, path=path, progress=False, chunk_size=30)
    assert report.written == len(_stored(sqlite_engine)) - 1 > 60


def test_sqlite_non_empty_table_commits_each_chunk(
    sqlite_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _catalog(sqlite_engine, tmp_path)
    first = tmp_path / "first.csv"
    first.write_text(f"event_id,user_id,sku,kind,ts\nold,u9,S1,view,{T0}\n")
    assert import_events(sqlite_engine, path=first, progress=False).written == 1
    path = _events_csv(tmp_path, 90)
    _crash_sqlite_chunk_2(monkeypatch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        import_events(sqlite_engine, path=path, progress=False, chunk_size=30)
    ids = {r[0] for r in _stored(sqlite_engine)[:-1]}
    # Not an initial load: chunk 1 (lines 2-31, i = 0..29) committed, chunk 2 rolled back.
    # Rows 0..29 with a valid time and product (row 10 repeats e7, which loads).
    assert ids == {"old"} | {_eid(i) for i in range(30) if i % 9 != 8 and i % 13 != 12}


def test_postgres_stored_id_sends_the_chunk_staged(
    db_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db_engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's direct path")
    _catalog(db_engine, tmp_path)
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,user_id,sku,kind,ts\n"
        + "".join(f"e{i},u{i % 3},S{i % 5},view,{T0 + i}\n" for i in range(50))
    )
    real = writers._PostgresEventWriter._copy
    made: list[Any] = []

    def insert_e3_meanwhile(cur: Any, sql: str, table: Any) -> None:
        if sql.startswith('COPY "event"') and not made:  # after the reference probe
            with db_engine.begin() as conn:  # another writer, committed meanwhile
                pid = conn.execute(text("SELECT id FROM product WHERE sku = 'S3'")).scalar_one()
                conn.execute(text("INSERT INTO \"user\" (id, created_at) VALUES ('other', now())"))
                insert = (
                    "INSERT INTO event (event_id, user_id, product_id, kind, ts) "
                    "VALUES ('e3', 'other', :p, 'view', now())"
                )
                conn.execute(text(insert), {"p": pid})
            made.append(1)
        real(cur, sql, table)

    made_writers: list[Any] = []
    make = writers._writer_for

    def keep(engine: Engine) -> Any:
        made_writers.append(make(engine))
        return made_writers[-1]

    monkeypatch.setattr(writers._PostgresEventWriter, "_copy", staticmethod(insert_e3_meanwhile))
    monkeypatch.setattr(writers, "_writer_for", keep)
    report = import_events(db_engine, path=path, progress=False, chunk_size=20, writer_threads=1)
    assert sum(w.fallbacks for w in made_writers) == 1
    assert (report.written, report.unchanged, report.users_created, report.bad_count) == (
        49,
        1,
        3,
        0,
    )
    stored = _stored(db_engine)
    assert [r[0] for r in stored[:-1]] == sorted(f"e{i}" for i in range(50))
    assert next(r for r in stored if r[0] == "e3")[1] == "other"  # the first writer's row
    # A re-import: chunk 1's COPY meets stored ids and goes staged; chunks 2 and 3 probe.
    made_writers.clear()
    again = import_events(db_engine, path=path, progress=False, chunk_size=20, writer_threads=1)
    assert [(w.fallbacks, w.probe_ids) for w in made_writers] == [(1, True)]
    assert (again.written, again.unchanged) == (0, 50)
    assert _stored(db_engine) == stored


def test_text_array_literal_round_trips(db_engine: Engine) -> None:
    if db_engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL array literal")
    values = ['x","y', 'q\\"z', "{}", "NULL", "a b", "c,d", "\\", '"', "é", "(1)"]
    with db_engine.connect() as conn:
        for case in (values, ["plain", "ids"], []):
            got = conn.execute(
                text("SELECT CAST(:a AS text[])"), {"a": writers._text_array(case)}
            ).scalar_one()
            assert got == case
