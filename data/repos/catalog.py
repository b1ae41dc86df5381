"""Products, users and events. Upserts are idempotent (by sku / user id / event id) and
use the dialect's ``INSERT ... ON CONFLICT`` so they are one statement per chunk."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from data.models import (
    Event,
    EventKind,
    ImportedImage,
    Product,
    ProductVariant,
    User,
    utcnow,
)

#: Product columns an import may set (``id`` and timestamps are ours).
PRODUCT_FIELDS = (
    "sku",
    "title",
    "description",
    "category",
    "attributes",
    "image",
    "price",
)

#: Variant columns an import may set; ``product_id`` is resolved from the product's sku.
VARIANT_FIELDS = (
    "sku",
    "product_id",
    "title",
    "options",
    "attributes",
    "image",
    "price",
    "position",
)

# SQLite allows at most 32766 bound parameters per statement.
_MAX_ROWS_PER_STATEMENT = 2000


def _insert_for(conn: Connection | Session, table: Any) -> Any:
    """The dialect-specific ``insert`` construct supporting ``on_conflict_*``."""
    bind = conn.get_bind() if isinstance(conn, Session) else conn
    name = bind.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"unsupported database dialect {name!r}; expected sqlite or postgresql")


def _chunks(rows: Sequence[dict[str, Any]], size: int) -> Iterable[Sequence[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _upsert_changed_by_sku(
    session: Session, model: Any, rows: Sequence[dict[str, Any]], fields: Sequence[str]
) -> int:
    """Upsert ``rows`` of ``model`` by ``sku``, updating only rows whose ``fields`` (those a
    row carries) differ from the stored ones; returns the number of rows written."""
    table = model.__table__
    written = 0
    for chunk in _chunks(rows, _MAX_ROWS_PER_STATEMENT // 10):
        stmt = _insert_for(session, model).values(list(chunk))
        update_cols = [c for c in fields if c != "sku" and c in chunk[0]]
        changed = None
        for c in update_cols:
            cond = table.c[c].is_distinct_from(stmt.excluded[c])
            changed = cond if changed is None else (changed | cond)
        stmt = stmt.on_conflict_do_update(
            index_elements=["sku"],
            set_={
                **{c: stmt.excluded[c] for c in update_cols},
                "updated_at": stmt.excluded.updated_at,
            },
            where=changed,
        ).returning(table.c.id)
        written += len(session.connection().execute(stmt).all())
    return written


def upsert_products(session: Session, *, products: Sequence[dict[str, Any]]) -> int:
    """Insert or update products by ``sku``; returns the number of rows written.

    Each dict holds a subset of ``PRODUCT_FIELDS`` with ``sku`` and ``title`` required.
    A row identical to the stored one is left untouched (re-imports change nothing).
    """
    if not products:
        return 0
    now = utcnow()
    # PostgreSQL refuses to update one row twice in a statement: the last row per sku wins.
    by_sku = {p.get("sku"): p for p in products}
    rows = [
        {**{k: p[k] for k in PRODUCT_FIELDS if k in p}, "updated_at": now} for p in by_sku.values()
    ]
    for r in rows:
        if not r.get("sku") or not r.get("title"):
            raise ValueError(f"products: each row needs 'sku' and 'title', got {sorted(r)}")
        r.setdefault("description", "")
        r.setdefault("category", "")
        r.setdefault("attributes", {})
        r["created_at"] = now
    return _upsert_changed_by_sku(session, Product, rows, PRODUCT_FIELDS)


def upsert_variants(session: Session, *, variants: Sequence[dict[str, Any]]) -> int:
    """Insert or update product variants by ``sku``; returns the number of rows written.

    Each dict holds ``VARIANT_FIELDS`` with ``sku`` and ``product_id`` required. A row identical
    to the stored one is left untouched; a sku seen again under another product moves there.
    """
    if not variants:
        return 0
    now = utcnow()
    by_sku = {v.get("sku"): v for v in variants}
    rows = []
    for v in by_sku.values():
        if not v.get("sku") or v.get("product_id") is None:
            raise ValueError(f"variants: each row needs 'sku' and 'product_id', got {sorted(v)}")
        rows.append(
            {
                "sku": v["sku"],
                "product_id": int(v["product_id"]),
                "title": v.get("title") or "",
                "options": dict(v.get("options") or {}),
                "attributes": dict(v.get("attributes") or {}),
                "image": v.get("image"),
                "price": v.get("price"),
                "position": int(v.get("position") or 0),
                "created_at": now,
                "updated_at": now,
            }
        )
    return _upsert_changed_by_sku(session, ProductVariant, rows, VARIANT_FIELDS)


def upsert_users(session: Session, *, user_ids: Iterable[str]) -> int:
    """Create users that do not exist yet; returns how many were created."""
    rows = [{"id": u, "created_at": utcnow()} for u in sorted(set(user_ids))]
    if not rows:
        return 0
    table = User.__table__  # type: ignore[attr-defined]
    stmt = _insert_for(session, table).on_conflict_do_nothing().returning(table.c.id)
    # executemany of one cached statement ("insertmanyvalues"): no per-chunk SQL compilation.
    return len(session.connection().execute(stmt, rows).all())


def insert_events(session: Session, *, events: Sequence[dict[str, Any]]) -> int:
    """Insert events, skipping those whose ``event_id`` already exists; returns rows inserted.

    Each dict: ``event_id, user_id, product_id, kind, ts`` and optionally ``session, source``.
    The users must exist (see ``upsert_users``); ``product_id`` must reference a product.
    """
    if not events:
        return 0
    rows = [
        {
            "event_id": e["event_id"],
            "user_id": e["user_id"],
            "product_id": e["product_id"],
            "kind": EventKind(e["kind"]).name,
            "ts": e["ts"],
            "session": e.get("session"),
            "source": e.get("source"),
        }
        for e in events
    ]
    table = Event.__table__  # type: ignore[attr-defined]
    stmt = _insert_for(session, table).on_conflict_do_nothing(index_elements=["event_id"])
    return len(session.connection().execute(stmt.returning(table.c.id), rows).all())


def product_ids_by_sku(
    session: Session, *, skus: Iterable[str], variants: bool = True
) -> dict[str, int]:
    """Map the given skus to product ids (unknown skus are absent). A variant's sku maps to
    its product's id (unless ``variants=False``), so events may name either."""
    wanted = list(set(skus))
    out: dict[str, int] = {}
    for start in range(0, len(wanted), _MAX_ROWS_PER_STATEMENT):
        part = wanted[start : start + _MAX_ROWS_PER_STATEMENT]
        for sku, pid in session.exec(
            select(Product.sku, Product.id).where(col(Product.sku).in_(part))
        ):
            out[sku] = int(pid)  # type: ignore[arg-type]
    if variants:
        rest = [s for s in wanted if s not in out]
        for sku, (_vid, pid) in variant_ids_by_sku(session, skus=rest).items():
            out[sku] = pid
    return out


def variant_ids_by_sku(session: Session, *, skus: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Map the given variant skus to ``(variant_id, product_id)`` (unknown skus are absent)."""
    wanted = list(set(skus))
    out: dict[str, tuple[int, int]] = {}
    for start in range(0, len(wanted), _MAX_ROWS_PER_STATEMENT):
        part = wanted[start : start + _MAX_ROWS_PER_STATEMENT]
        rows = session.exec(
            select(ProductVariant.sku, ProductVariant.id, ProductVariant.product_id).where(
                col(ProductVariant.sku).in_(part)
            )
        )
        for sku, vid, pid in rows:
            out[sku] = (int(vid), int(pid))  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class SkuMatch:
    """What a sku names: a product, or one variant of a product (``variant`` set)."""

    product: Product
    variant: ProductVariant | None = None

    @property
    def image(self) -> str | None:
        """The variant's own image if it has one, else the product's."""
        if self.variant is not None and self.variant.image:
            return self.variant.image
        return self.product.image

    @property
    def title(self) -> str:
        """The product title, followed by the variant's option values (``Tee (Red / M)``)."""
        if self.variant is not None and self.variant.title:
            return f"{self.product.title} ({self.variant.title})"
        return self.product.title

    @property
    def attributes(self) -> dict[str, Any]:
        """The product's attributes, overridden by the variant's (options included)."""
        attrs = dict(self.product.attributes or {})
        if self.variant is not None:
            attrs.update(self.variant.attributes or {})
        return attrs


def resolve_sku(session: Session, *, sku: str) -> SkuMatch | None:
    """The product or product variant that ``sku`` names, or None."""
    product = get_product_by_sku(session, sku=sku)
    if product is not None:
        return SkuMatch(product=product)
    variant = session.exec(select(ProductVariant).where(ProductVariant.sku == sku)).first()
    if variant is None:
        return None
    parent = session.get(Product, variant.product_id)
    if parent is None:  # cannot happen with the foreign key; kept for a clear failure
        return None
    return SkuMatch(product=parent, variant=variant)


def list_variants(session: Session, *, product_id: int) -> list[ProductVariant]:
    """A product's variants in file order."""
    q = select(ProductVariant).where(ProductVariant.product_id == product_id)
    return list(session.exec(q.order_by(col(ProductVariant.position), col(ProductVariant.id))))


def get_imported_image(session: Session, *, url_hash: str) -> ImportedImage | None:
    """The stored copy of an image URL (by the URL's SHA-256), or None."""
    return session.get(ImportedImage, url_hash)


def record_imported_image(session: Session, *, image: ImportedImage) -> None:
    """Remember where an image URL was stored (replaces an earlier record of the same URL)."""
    session.merge(image)


def get_product_by_sku(session: Session, *, sku: str) -> Product | None:
    """The product with this sku, or None."""
    return session.exec(select(Product).where(Product.sku == sku)).first()


def list_products(
    session: Session,
    *,
    category: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[Product]:
    """Products ordered by id, optionally of one category."""
    q = select(Product).order_by(col(Product.id))
    if category is not None:
        q = q.where(Product.category == category)
    if offset:
        q = q.offset(offset)
    if limit is not None:
        q = q.limit(limit)
    return list(session.exec(q))


def events_for_user(
    session: Session, *, user_id: str, before: datetime | None = None
) -> list[Event]:
    """A user's events in time order (optionally only those before ``before``)."""
    q = select(Event).where(Event.user_id == user_id)
    if before is not None:
        q = q.where(col(Event.ts) < before)
    return list(session.exec(q.order_by(col(Event.ts), col(Event.id))))


def all_events(session: Session, *, kinds: Sequence[EventKind] | None = None) -> list[Event]:
    """Every event in (user, time) order, optionally of the given kinds."""
    q = select(Event)
    if kinds is not None:
        q = q.where(col(Event.kind).in_(list(kinds)))
    return list(session.exec(q.order_by(col(Event.user_id), col(Event.ts), col(Event.id))))


def product_popularity(
    session: Session, *, kinds: Sequence[EventKind] | None = None
) -> dict[int, int]:
    """Event counts per product id (optionally only of the given kinds)."""
    q = select(Event.product_id, func.count()).group_by(col(Event.product_id))
    if kinds is not None:
        q = q.where(col(Event.kind).in_(list(kinds)))
    return {int(pid): int(n) for pid, n in session.exec(q)}


def delete_user_events(session: Session, *, user_id: str) -> int:
    """Delete every event of a user; returns how many were deleted."""
    res = session.execute(delete(Event).where(col(Event.user_id) == user_id))
    return int(res.rowcount or 0)  # type: ignore[attr-defined]
