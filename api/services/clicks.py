"""Click logging: one click per impression, recorded once."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from data.models import Click, Impression


class UnknownImpression(LookupError):
    """No impression has this id."""


def record_click(session: Session, *, impression_id: str) -> bool:
    """Record a click on ``impression_id``; True when created, False when it was already
    recorded (a repeat or a concurrent request changes nothing). Raises
    :class:`UnknownImpression`."""
    if session.get(Impression, impression_id) is None:
        raise UnknownImpression(f"unknown impression {impression_id}")
    if session.exec(select(Click.id).where(Click.impression_id == impression_id)).first():
        return False
    session.add(Click(impression_id=impression_id))
    try:
        session.commit()
    except IntegrityError:  # a concurrent click won the unique constraint
        session.rollback()
        return False
    return True
