"""Event references without foreign keys on PostgreSQL: the bulk writer refuses rows whose
user or product is gone (reported at their lines, never inserted, the user never re-created),
chunks written by two connections store exactly what one stores, ``init_db`` drops the old
constraints, and an erasure waits for an import's open chunk (the advisory lock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

import data.ingest.event_writers as writers
from data.db import EVENT_IMPORT_LOCK, exclude_event_imports, init_db
from data.ingest import import_catalog, import_events

T0 = 1_772_359_200  # 2026-03-01 10:00 UTC


def _setup(engine: Engine, folder: Path, n: int) -> Path:
    """Products S0..S4 and ``n`` clean events: event ``i`` is user ``u{i % 4}``, S{i % 5}."""
    cat = folder / "catalog.csv"
    cat.write_text("sku,title\n" + "".join(f"S{i},Product {i}\n" for i in range(5)))
    import_catalog(engine, path=cat, progress=False)
    path = folder / "events.csv"
    path.write_text(
        "event_id,user_id,sku,kind,ts\n"
        + "".join(f"e{i},u{i % 4},S{i % 5},view,{T0 + i}\n" for i in range(n))
    )
    return path


def _rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql)).all())


def test_foreign_keys_on_sqlite_only(db_engine: Engine) -> None:
    fks = inspect(db_engine).get_foreign_keys("event")
    if db_engine.dialect.name == "sqlite":
        assert sorted(f["referred_table"] for f in fks) == ["product", "user"]
    else:
        assert fks == []


def test_init_db_drops_the_old_constraints(db_engine: Engine) -> None:
    if db_engine.dialect.name != "postgresql":
        pytest.skip("SQLite keeps its foreign keys")
    with db_engine.begin() as conn:  # a database created before: both constraints present
        conn.execute(text('ALTER TABLE event ADD FOREIGN KEY (user_id) REFERENCES "user" (id)'))
        conn.execute(text("ALTER TABLE event ADD FOREIGN KEY (product_id) REFERENCES product (id)"))
    assert len(inspect(db_engine).get_foreign_keys("event")) == 2
    init_db(db_engine)
    assert inspect(db_engine).get_foreign_keys("event") == []
    init_db(db_engine)  # idempotent
    assert inspect(db_engine).get_foreign_keys("event") == []


def test_two_writers_store_what_one_stores(db_engine: Engine, tmp_path: Path) -> None:
    path = _setup(db_engine, tmp_path, 300)
    report = import_events(db_engine, path=path, progress=False, chunk_size=7, writer_threads=2)
    assert (report.written, report.users_created, report.bad_count) == (300, 4, 0)
    got = _rows(db_engine, "SELECT event_id, user_id, product_id FROM event ORDER BY id")
    pid = dict(_rows(db_engine, "SELECT sku, id FROM product"))
    expected = {(f"e{i}", f"u{i % 4}", pid[f"S{i % 5}"]) for i in range(300)}
    assert len(got) == 300 and set(map(tuple, got)) == expected
    again = import_events(db_engine, path=path, progress=False, chunk_size=7, writer_threads=2)
    assert (again.written, again.unchanged, again.users_created) == (0, 300, 0)


def test_user_deleted_mid_import_is_refused_not_recreated(
    db_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db_engine.dialect.name != "postgresql":
        pytest.skip("SQLite's foreign keys refuse such rows themselves")
    path = _setup(db_engine, tmp_path, 40)
    real = writers._PostgresEventWriter._insert

    def erase_u1_before_chunk_2(self, cur, rows, users):  # type: ignore[no-untyped-def]
        if "e10" in rows.cols[0]:  # chunk 2 (e10..e19): u1 was created by chunk 1
            with db_engine.begin() as conn:  # what erasure does, committed meanwhile
                conn.execute(text("DELETE FROM event WHERE user_id = 'u1'"))
                conn.execute(text("DELETE FROM \"user\" WHERE id = 'u1'"))
        return real(self, cur, rows, users)

    monkeypatch.setattr(writers._PostgresEventWriter, "_insert", erase_u1_before_chunk_2)
    report = import_events(db_engine, path=path, progress=False, chunk_size=10, writer_threads=1)
    # u1's events of chunks 2-4 (e13, e17, ..., e37) are refused at their lines (line = i + 2).
    refused = [i for i in range(10, 40) if i % 4 == 1]
    assert [(b.row, b.reason) for b in report.sorted_bad_rows()] == [
        (i + 2, "user 'u1' was deleted during the import") for i in refused
    ]
    assert report.written == 40 - len(refused)
    assert _rows(db_engine, "SELECT count(*) FROM event WHERE user_id = 'u1'") == [(0,)]
    assert _rows(db_engine, 'SELECT id FROM "user" ORDER BY id') == [("u0",), ("u2",), ("u3",)]


def test_product_deleted_mid_import_is_refused(
    db_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db_engine.dialect.name != "postgresql":
        pytest.skip("SQLite's foreign keys refuse such rows themselves")
    path = _setup(db_engine, tmp_path, 20)
    real = writers._PostgresEventWriter._insert

    def drop_s4_before_chunk_2(self, cur, rows, users):  # type: ignore[no-untyped-def]
        if "e10" in rows.cols[0]:
            with db_engine.begin() as conn:
                conn.execute(text("DELETE FROM event WHERE product_id IN "
                                  "(SELECT id FROM product WHERE sku = 'S4')"))  # fmt: skip
                conn.execute(text("DELETE FROM product WHERE sku = 'S4'"))
        return real(self, cur, rows, users)

    monkeypatch.setattr(writers._PostgresEventWriter, "_insert", drop_s4_before_chunk_2)
    report = import_events(db_engine, path=path, progress=False, chunk_size=10, writer_threads=1)
    assert [(b.row, b.reason) for b in report.sorted_bad_rows()] == [
        (14 + 2, "unknown product sku 'S4'"),
        (19 + 2, "unknown product sku 'S4'"),
    ]
    assert report.written == 18  # e14 and e19 refused; e4 and e9 written, then deleted
    assert _rows(db_engine, "SELECT count(*) FROM event") == [(16,)]


def test_erasure_waits_for_an_open_import_chunk(db_engine: Engine) -> None:
    if db_engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers itself")
    with db_engine.connect() as chunk:  # an import chunk's open transaction
        chunk.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": EVENT_IMPORT_LOCK})
        with Session(db_engine) as erasure:
            erasure.execute(text("SET LOCAL lock_timeout = '300ms'"))
            with pytest.raises(OperationalError, match="lock timeout"):
                exclude_event_imports(erasure)
            erasure.rollback()
        chunk.commit()  # the chunk commits: the erasure goes on
    with Session(db_engine) as erasure:
        erasure.execute(text("SET LOCAL lock_timeout = '300ms'"))
        exclude_event_imports(erasure)
        with db_engine.connect() as chunk:  # and a new chunk waits for the erasure
            chunk.execute(text("SET LOCAL lock_timeout = '300ms'"))
            with pytest.raises(OperationalError, match="lock timeout"):
                chunk.execute(
                    text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": EVENT_IMPORT_LOCK}
                )
        erasure.commit()
