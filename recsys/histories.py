"""Shoppers' event histories and product popularity, read from the database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from data.models import Event
from recsys.profiles import HistoryEvent

__all__ = ["load_histories", "popularity", "purchased_ids"]


def load_histories(
    engine: Engine, *, before: Mapping[str, datetime] | None = None
) -> dict[str, list[HistoryEvent]]:
    """Every user's events (time order); with ``before``, only a user's events earlier than
    ``before[user]`` (users absent from ``before`` keep all)."""
    out: dict[str, list[HistoryEvent]] = {}
    with Session(engine) as session:
        rows = session.exec(
            select(Event.user_id, Event.product_id, Event.kind, Event.ts).order_by(
                col(Event.user_id), col(Event.ts), col(Event.id)
            )
        )
        for user_id, product_id, kind, ts in rows:
            if before is not None and user_id in before and ts >= before[user_id]:
                continue
            out.setdefault(user_id, []).append(
                HistoryEvent(product_id=int(product_id), kind=str(kind), ts=ts)
            )
    return out


def popularity(histories: Mapping[str, Sequence[HistoryEvent]]) -> dict[int, float]:
    """Product id -> distinct users who had an event on it."""
    seen: dict[int, set[str]] = {}
    for user, evs in histories.items():
        for e in evs:
            seen.setdefault(e.product_id, set()).add(user)
    return {p: float(len(u)) for p, u in seen.items()}


def purchased_ids(engine: Engine, *, user_id: str) -> set[int]:
    """Products the user bought."""
    with Session(engine) as session:
        rows = session.exec(
            select(Event.product_id).where(Event.user_id == user_id, Event.kind == "purchase")
        )
        return {int(r) for r in rows}
