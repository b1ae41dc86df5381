"""Counts of every main table (``tailorshot stats``)."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, SQLModel, select

from data.models import (
    Click,
    CreativeVariant,
    Event,
    GenerationJob,
    Impression,
    Product,
    Segment,
    User,
)

_COUNTED: dict[str, type[SQLModel]] = {
    "products": Product,
    "users": User,
    "events": Event,
    "segments": Segment,
    "variants": CreativeVariant,
    "jobs": GenerationJob,
    "impressions": Impression,
    "clicks": Click,
}


def count_all(session: Session) -> dict[str, int]:
    """Row counts keyed products, users, events, segments, variants, jobs, impressions, clicks."""
    return {
        name: int(session.exec(select(func.count()).select_from(table)).one())
        for name, table in _COUNTED.items()
    }
