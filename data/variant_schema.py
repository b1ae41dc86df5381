"""Migration of the ``creativevariant`` table of databases created before exactly-once was in
the schema (``data.db.init_db`` runs it; idempotent, safe with several processes starting).

1. the ``derived_from`` column (recomposed variants) is added when missing;
2. live duplicates (same owner, placement and brief hash, not retired) are retired but the
   one to keep: the approved one, else the one with an image, else the oldest; each
   retirement is written to the audit log (actor ``system:migration``, ``duplicate_of``);
3. the partial unique index :data:`data.models.VARIANT_KEY_INDEX` is created.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import insert, inspect, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex

from data.models import VARIANT_KEY_INDEX, CreativeVariant, VariantChange, VariantStatus, utcnow

__all__ = ["has_index", "live_duplicates", "migrate_variants"]

TABLE = "creativevariant"
MIGRATION_ACTOR = "system:migration"
_DERIVED_IX = "ix_creativevariant_derived_from"
_VARIANTS = CreativeVariant.__table__  # type: ignore[attr-defined]
_CHANGES = VariantChange.__table__  # type: ignore[attr-defined]


def live_duplicates(conn: Connection) -> dict[tuple[Any, ...], list[tuple[int, str, bool]]]:
    """``key -> [(id, status, has image), ...]`` for every key held by more than one variant
    that is not retired (key: segment id or 0, user id or "", placement, brief hash)."""
    rows = conn.execute(
        text(
            "SELECT id, coalesce(segment_id, 0), coalesce(user_id, ''), placement, brief_hash, "
            "status, image_key FROM creativevariant WHERE status != 'retired' ORDER BY id"
        )
    ).all()
    groups: dict[tuple[Any, ...], list[tuple[int, str, bool]]] = defaultdict(list)
    for vid, seg, user, placement, h, status, image in rows:
        groups[(seg, user, placement, h)].append((int(vid), str(status), bool(image)))
    return {k: v for k, v in groups.items() if len(v) > 1}


def has_index(engine: Engine, name: str) -> bool:
    """Whether index ``name`` exists (a catalog query: SQLAlchemy does not reflect
    expression indexes on SQLite)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            q = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = :n"
            return conn.execute(text(q), {"n": name}).first() is not None
        if engine.dialect.name == "postgresql":
            return conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar() is not None
        return name in {i["name"] for i in inspect(engine).get_indexes(TABLE)}


def _keeper(members: list[tuple[int, str, bool]]) -> int:
    approved = VariantStatus.approved.name
    return min(members, key=lambda m: (m[1] != approved, not m[2], m[0]))[0]


def migrate_variants(engine: Engine) -> dict[str, int]:
    """Bring ``creativevariant`` up to date (see the module docstring); returns what was done:
    ``{"column_added": 0|1, "retired_duplicates": n, "index_created": 0|1}``."""
    done = {"column_added": 0, "retired_duplicates": 0, "index_created": 0}
    insp = inspect(engine)
    if not insp.has_table(TABLE):
        return done
    columns = {c["name"] for c in insp.get_columns(TABLE)}
    if "derived_from" not in columns:
        try:
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE {TABLE} ADD COLUMN derived_from INTEGER"))
                conn.execute(
                    text(f"CREATE INDEX IF NOT EXISTS {_DERIVED_IX} ON {TABLE} (derived_from)")
                )
            done["column_added"] = 1
        except DBAPIError:  # another process added it first
            if "derived_from" not in {c["name"] for c in inspect(engine).get_columns(TABLE)}:
                raise
    if has_index(engine, str(VARIANT_KEY_INDEX.name)):
        return done
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # One migrating process at a time: the others wait, then find the index.
            conn.execute(text(f"LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE"))
        now = utcnow()
        for members in live_duplicates(conn).values():
            keep = _keeper(members)
            for vid, status, _image in members:
                if vid == keep:
                    continue
                conn.execute(
                    update(_VARIANTS)
                    .where(_VARIANTS.c.id == vid)
                    .values(status=VariantStatus.retired, updated_at=now)
                )
                detail = {
                    "from": status,
                    "to": "retired",
                    "reason": "duplicate",
                    "duplicate_of": keep,
                }
                conn.execute(
                    insert(_CHANGES).values(
                        variant_id=vid,
                        actor=MIGRATION_ACTOR,
                        action="retire",
                        detail=detail,
                        at=now,
                    )
                )
                done["retired_duplicates"] += 1
        conn.execute(CreateIndex(VARIANT_KEY_INDEX, if_not_exists=True))
    done["index_created"] = 1
    return done
