"""Idempotent generation requests: an ``Idempotency-Key`` (scoped to the calling key) maps
to one job; reusing it with another request body is a conflict."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from data.models import IdempotencyRecord


class IdempotencyConflict(ValueError):
    """The Idempotency-Key was already used with a different request body."""

    def __init__(self) -> None:
        super().__init__("Idempotency-Key was already used with a different request body")


def request_hash(body: dict[str, Any]) -> str:
    """sha256 hex of the request body's canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def prior_job_id(session: Session, *, scoped: str, request_hash: str) -> str | None:
    """The job id recorded for ``scoped`` (``<key id>:<Idempotency-Key>``), or None; raises
    :class:`IdempotencyConflict` when it was recorded for another body. Ends the session's
    read (commit): one database connection at a time per request."""
    prior = session.get(IdempotencyRecord, scoped)
    session.commit()
    if prior is None:
        return None
    if prior.request_hash != request_hash:
        raise IdempotencyConflict
    return prior.result_id


def remember(session: Session, *, scoped: str, request_hash: str, job_id: str) -> str:
    """Record ``scoped`` → ``job_id``; when a concurrent request recorded the key first, its
    job id (or :class:`IdempotencyConflict` when that request had another body)."""
    session.add(IdempotencyRecord(key=scoped, request_hash=request_hash, result_id=job_id))
    try:
        session.commit()
    except IntegrityError:  # a concurrent request with this key won
        session.rollback()
        prior = session.get(IdempotencyRecord, scoped)
        session.commit()
        if prior is None or prior.request_hash != request_hash:
            raise IdempotencyConflict from None
        return prior.result_id
    return job_id
