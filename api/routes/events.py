"""Event ingestion: batches validated item by item, idempotent by event id."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ComponentsDep, SessionDep, StorefrontKey
from api.schemas import EventErrorPublic, EventsCreate, EventsPublic
from api.services.events import ingest_events

router = APIRouter(prefix="/v1", tags=["storefront"])


@router.post("/events", response_model=EventsPublic)
def post_events(
    comps: ComponentsDep, session: SessionDep, _key: StorefrontKey, body: EventsCreate
) -> EventsPublic:
    """Ingest up to 1000 events. Each item is validated on its own: bad items are reported
    with their index and reason, good items are stored. Re-sending an ``event_id`` changes
    nothing (it counts as a duplicate). Items name their product by ``product_id`` or ``sku``.
    Events of an erased user are refused (``user erased``): nothing is stored for them again."""
    out = ingest_events(session, comps.guard, body.events)
    return EventsPublic(
        received=out.received,
        inserted=out.inserted,
        duplicates=out.duplicates,
        errors=[
            EventErrorPublic(index=e.index, event_id=e.event_id, error=e.error) for e in out.errors
        ],
    )
