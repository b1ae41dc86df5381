"""Exactly once in the schema: one live variant per owner, placement and brief hash, enforced
by the database (SQLite and PostgreSQL), and the migration that brings older databases there
(duplicates retired with an audit row, then the unique index)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import MetaData, Table, insert, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from data.db import init_db
from data.models import (
    CreativeVariant,
    Product,
    Segment,
    VariantChange,
    VariantStatus,
    utcnow,
)
from data.variant_schema import MIGRATION_ACTOR, has_index, migrate_variants

H = "a" * 64
_T = CreativeVariant.__table__  # type: ignore[attr-defined]


def _world(engine: Engine) -> None:
    with Session(engine) as s:
        s.add(Product(id=1, sku="P1", title="Mug", image="catalog/P1.png"))
        s.add(Segment(id=1, label="one"))
        s.commit()


def _row(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"product_id": 1, "placement": "banner", "brief_hash": H,
                            "brief": {}, "terms": [], "status": VariantStatus.draft,
                            "created_by": "t"}  # fmt: skip
    return {**base, **kw}


def _insert(engine: Engine, **kw: Any) -> None:
    with engine.begin() as conn:
        conn.execute(insert(_T).values(**_row(**kw)))


def test_a_duplicate_live_variant_fails_in_the_database(db_engine: Engine) -> None:
    _world(db_engine)
    _insert(db_engine, segment_id=1)
    with pytest.raises(IntegrityError):
        _insert(db_engine, segment_id=1, status=VariantStatus.approved)
    # NULL owners are folded: a shopper's and a generic variant are unique too.
    _insert(db_engine, user_id="u1")
    with pytest.raises(IntegrityError):
        _insert(db_engine, user_id="u1")
    _insert(db_engine)
    with pytest.raises(IntegrityError):
        _insert(db_engine)
    # Another owner, placement or brief, or a retired row, is not a duplicate.
    _insert(db_engine, segment_id=1, placement="square")
    _insert(db_engine, segment_id=1, brief_hash="b" * 64)
    _insert(db_engine, user_id="u2")
    _insert(db_engine, segment_id=1, status=VariantStatus.retired)
    with Session(db_engine) as s:
        assert len(list(s.exec(select(CreativeVariant)))) == 7


def test_migration_retires_duplicates_then_adds_the_key(db_engine: Engine) -> None:
    """A database from before the key: no index, no ``derived_from`` column, duplicates."""
    with db_engine.begin() as conn:
        conn.execute(text("DROP INDEX uq_variant_owner_brief"))
        conn.execute(text("DROP INDEX ix_creativevariant_derived_from"))
        conn.execute(text("ALTER TABLE creativevariant DROP COLUMN derived_from"))
    assert not has_index(db_engine, "uq_variant_owner_brief")
    _world(db_engine)
    legacy = Table("creativevariant", MetaData(), autoload_with=db_engine)
    assert "derived_from" not in legacy.c
    rows = [
        (1, VariantStatus.draft, None),  # oldest, no image: retired
        (1, VariantStatus.approved, "k1.png"),  # approved: kept
        (1, VariantStatus.draft, "k2.png"),  # retired
        (None, VariantStatus.draft, None),  # generic, alone: kept
    ]
    with db_engine.begin() as conn:
        for seg, status, image in rows:
            values = _row(segment_id=seg, status=status.name, image_key=image)
            conn.execute(insert(legacy).values(**values, created_at=utcnow(), updated_at=utcnow()))
    done = migrate_variants(db_engine)
    assert done == {"column_added": 1, "retired_duplicates": 2, "index_created": 1}
    assert has_index(db_engine, "uq_variant_owner_brief")
    with Session(db_engine) as s:
        got = {int(v.id): v.status for v in s.exec(select(CreativeVariant))}  # type: ignore[arg-type]
        audit = list(s.exec(select(VariantChange).order_by(col(VariantChange.id))))
    assert [got[i] for i in sorted(got)] == [
        VariantStatus.retired, VariantStatus.approved, VariantStatus.retired, VariantStatus.draft
    ]  # fmt: skip
    keep = sorted(got)[1]
    assert [(a.variant_id, a.actor, a.action, a.detail["duplicate_of"]) for a in audit] == [
        (sorted(got)[0], MIGRATION_ACTOR, "retire", keep),
        (sorted(got)[2], MIGRATION_ACTOR, "retire", keep),
    ]
    with pytest.raises(IntegrityError):
        _insert(db_engine, segment_id=1)
    # Idempotent: a second start finds nothing to do.
    init_db(db_engine)
    assert migrate_variants(db_engine) == {
        "column_added": 0, "retired_duplicates": 0, "index_created": 0
    }  # fmt: skip
