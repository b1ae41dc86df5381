"""Event ingestion: a batch validated item by item, stored idempotently by event id, and
never stored for an erased user (api/services/erasure.py explains the order of checks)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from api.schemas import EventCreate
from api.services.erasure import ErasureGuard, rowcount
from data.models import Event, Product, User
from data.repos.catalog import insert_events, product_ids_by_sku, upsert_users


@dataclass(frozen=True)
class EventError:
    """Why item ``index`` of a batch was not stored (its ``event_id`` when readable)."""

    index: int
    event_id: str | None
    error: str


@dataclass
class IngestOutput:
    """Counts of a batch: items received, rows inserted, duplicates (in the batch or already
    stored) and the refused items, by index."""

    received: int
    inserted: int
    duplicates: int
    errors: list[EventError] = field(default_factory=list)


def _error_text(exc: ValidationError) -> str:
    """Field and message of each problem, never the input itself."""
    parts = []
    for e in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(x) for x in e.get("loc", ()))
        parts.append(f"{loc}: {e.get('msg', 'invalid')}" if loc else str(e.get("msg")))
    return "; ".join(parts)[:500]


def purge_late_users(session: Session, users: set[str]) -> int:
    """Delete every event and the user row of ``users`` (erased while this batch was being
    written); returns the events deleted. A concurrent batch still inserting events for them
    makes the user row's delete fail its foreign key: retry, then leave the row to that
    batch's own purge."""
    gone = 0
    for attempt in range(10):
        try:
            gone += rowcount(
                session.execute(delete(Event).where(col(Event.user_id).in_(list(users))))
            )
            session.execute(delete(User).where(col(User.id).in_(list(users))))
            session.commit()
            return gone
        except IntegrityError:
            session.rollback()
            time.sleep(0.05 * (attempt + 1))
    session.execute(delete(Event).where(col(Event.user_id).in_(list(users))))
    session.commit()
    return gone


def _validate(raw_events: list[Any]) -> tuple[list[tuple[int, EventCreate]], list[EventError], int]:
    """``(good items by index, errors, duplicates within the batch)``."""
    errors: list[EventError] = []
    good: list[tuple[int, EventCreate]] = []
    seen: set[str] = set()
    duplicates = 0
    for i, raw in enumerate(raw_events):
        eid = raw.get("event_id") if isinstance(raw, dict) else None
        eid_s = eid if isinstance(eid, str) and len(eid) <= 128 else None
        try:
            item = EventCreate.model_validate(raw)
        except ValidationError as exc:
            errors.append(EventError(index=i, event_id=eid_s, error=_error_text(exc)))
            continue
        if item.product_id is None and item.sku is None:
            errors.append(
                EventError(index=i, event_id=eid_s, error="product_id or sku is required")
            )
            continue
        if item.event_id in seen:
            duplicates += 1
            continue
        seen.add(item.event_id)
        good.append((i, item))
    return good, errors, duplicates


def ingest_events(session: Session, guard: ErasureGuard, raw_events: list[Any]) -> IngestOutput:
    """Validate and store ``raw_events`` (JSON objects); see :class:`IngestOutput`. Items name
    their product by ``product_id`` or ``sku``; events of an erased user are refused."""
    good, errors, duplicates = _validate(raw_events)
    by_sku = product_ids_by_sku(session, skus=[e.sku for _, e in good if e.sku])
    wanted_ids = {e.product_id for _, e in good if e.product_id is not None}
    known_ids = set(
        session.exec(select(Product.id).where(col(Product.id).in_(list(wanted_ids)))).all()
    ) if wanted_ids else set()  # fmt: skip
    erased = guard.erased_among([e.user_id for _, e in good], session)
    rows: list[dict[str, Any]] = []
    row_index: list[int] = []
    for i, e in good:
        if e.user_id in erased:
            errors.append(EventError(index=i, event_id=e.event_id, error="user erased"))
            continue
        pid = e.product_id if e.product_id is not None else by_sku.get(e.sku or "")
        if pid is None or (e.product_id is not None and pid not in known_ids):
            errors.append(EventError(index=i, event_id=e.event_id, error="unknown product"))
            continue
        # Stored timestamps are aware UTC; a naive one is taken to be UTC already.
        ts = e.ts.astimezone(UTC) if e.ts.tzinfo else e.ts.replace(tzinfo=UTC)
        rows.append(
            {
                "event_id": e.event_id,
                "user_id": e.user_id,
                "product_id": pid,
                "kind": e.kind.value,
                "ts": ts,
                "session": e.session,
                "source": e.source,
            }
        )
        row_index.append(i)
    inserted = 0
    if rows:
        upsert_users(session, user_ids=[r["user_id"] for r in rows])
        inserted = insert_events(session, events=rows)
        session.commit()
        # Committed, then checked: a user erased meanwhile loses what was just written
        # (api/services/erasure.py explains why this order cannot resurrect a user).
        late = guard.erased_among({r["user_id"] for r in rows}, session)
        if late:
            gone = purge_late_users(session, late)
            inserted -= min(gone, inserted)
            for i, r in zip(row_index, rows, strict=True):
                if r["user_id"] in late:
                    errors.append(EventError(index=i, event_id=r["event_id"], error="user erased"))
            rows = [r for r in rows if r["user_id"] not in late]
    errors.sort(key=lambda x: x.index)
    return IngestOutput(
        received=len(raw_events),
        inserted=inserted,
        duplicates=duplicates + len(rows) - inserted,
        errors=errors,
    )
