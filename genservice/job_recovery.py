"""Ending job attempts and recovering lost ones: the state moves of ``genservice.jobs`` that
happen without a live lease (a failed attempt, a dead worker, a timeout).

Every move is conditional on the row not having changed since it was read, so a worker
that comes back (or a second recovering worker) never moves a job twice. Timestamps are
naive UTC from the queue's clock; retry delays come from the queue's backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.engine import Engine

from data.models import GenerationJob, JobStatus

logger = logging.getLogger("genservice.jobs")

_T = cast(Table, GenerationJob.__table__)  # type: ignore[attr-defined]

_MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class RecoverOutput:
    """Job ids moved by ``recover_stale`` / ``expire_timeouts``, by their new status."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.requeued) + len(self.failed) + len(self.cancelled)

    def __add__(self, other: RecoverOutput) -> RecoverOutput:
        return RecoverOutput(
            requeued=self.requeued + other.requeued,
            failed=self.failed + other.failed,
            cancelled=self.cancelled + other.cancelled,
        )

    def add(self, job_id: str, new: JobStatus | None) -> None:
        """Record that ``job_id`` moved to ``new`` (None: someone else moved it first)."""
        if new == JobStatus.queued:
            self.requeued.append(job_id)
        elif new == JobStatus.failed:
            self.failed.append(job_id)
        elif new == JobStatus.cancelled:
            self.cancelled.append(job_id)


class AttemptEnder:
    """Moves running jobs out of ``running`` on ``engine``; ``clock`` returns naive UTC and
    ``backoff_s(attempts)`` the retry delay in seconds."""

    def __init__(
        self, engine: Engine, clock: Callable[[], datetime], backoff_s: Callable[[int], float]
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.backoff_s = backoff_s

    def end_attempt(
        self,
        job_id: str,
        *,
        attempts: int,
        max_attempts: int,
        holder: str | None,
        error: str,
        retryable: bool,
        extra_where: Sequence[Any] = (),
        cancel: bool = False,
    ) -> JobStatus | None:
        """Move a running job (as last read: ``attempts``/``holder``) to cancelled, queued
        (retry with backoff) or failed. Conditional on nothing having changed since the
        read; returns the new status, or None if someone else moved it first."""
        now = self.clock()
        values: dict[str, Any] = {"error": error[:_MAX_ERROR_CHARS], "worker_id": None}
        if cancel:
            new = JobStatus.cancelled
            values.update(finished_at=now)
        elif retryable and attempts < max_attempts:
            new = JobStatus.queued
            delay = self.backoff_s(max(1, attempts))
            values.update(next_attempt_at=now + timedelta(seconds=delay), heartbeat_at=None)
        else:
            new = JobStatus.failed
            values.update(finished_at=now)
        values["status"] = new
        where = [
            _T.c.id == job_id,
            _T.c.status == JobStatus.running,
            _T.c.attempts == attempts,
            *extra_where,
        ]
        where.append(_T.c.worker_id.is_(None) if holder is None else _T.c.worker_id == holder)
        with self.engine.begin() as conn:
            n = conn.execute(update(_T).where(*where).values(**values)).rowcount
        if n != 1:
            return None
        log = logger.warning if new == JobStatus.failed else logger.info
        log(
            f"job attempt ended: {new.value}",
            extra={"job_id": job_id, "attempt": attempts, "status": new.value, "error": error},
        )
        return new

    def recover_stale(self, *, stale_after_s: float) -> RecoverOutput:
        """Running jobs whose heartbeat is older than ``stale_after_s`` seconds (their worker
        died or hung) go back to the queue — the lost attempt counts — or to ``failed`` when
        attempts are used up, or to ``cancelled`` when a cancel was requested."""
        if not stale_after_s >= 0:
            raise ValueError(f"stale_after_s must be >= 0 seconds, got {stale_after_s!r}")
        cutoff = self.clock() - timedelta(seconds=stale_after_s)
        stale = (_T.c.heartbeat_at < cutoff) | (
            _T.c.heartbeat_at.is_(None) & (_T.c.started_at < cutoff)
        )
        return self._end_each(
            self._running(where=[stale]),
            lambda row: f"worker {row.worker_id} lost: no heartbeat for {stale_after_s:g} s",
            extra_where=[stale],  # a heartbeat that arrived since the read keeps the job
        )

    def expire_timeouts(self) -> RecoverOutput:
        """Running jobs past their ``timeout_s`` (counted from ``started_at``) end their
        attempt: retried with backoff while attempts are left, else failed."""
        now = self.clock()
        expired = [
            row
            for row in self._running(_T.c.timeout_s, _T.c.started_at)
            if row.started_at is not None
            and row.started_at + timedelta(seconds=row.timeout_s) <= now
        ]
        return self._end_each(expired, lambda row: f"timed out after {row.timeout_s:g} s")

    def _running(self, *columns: Any, where: Sequence[Any] = ()) -> Sequence[Any]:
        """Running jobs (``where`` narrows them): the columns :meth:`_end_each` reads, plus
        ``columns``."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(
                    _T.c.id,
                    _T.c.attempts,
                    _T.c.max_attempts,
                    _T.c.worker_id,
                    _T.c.cancel_requested,
                    *columns,
                ).where(_T.c.status == JobStatus.running, *where)
            ).all()

    def _end_each(
        self,
        rows: Sequence[Any],
        error: Callable[[Any], str],
        extra_where: Sequence[Any] = (),
    ) -> RecoverOutput:
        """End the attempt of each running job in ``rows`` (result rows with ``id``,
        ``attempts``, ``max_attempts``, ``worker_id``, ``cancel_requested``; retryable,
        cancelled when a cancel was requested) with ``error(row)``."""
        out = RecoverOutput()
        for row in rows:
            new = self.end_attempt(
                row.id,
                attempts=row.attempts,
                max_attempts=row.max_attempts,
                holder=row.worker_id,
                error=error(row),
                retryable=True,
                extra_where=extra_where,
                cancel=bool(row.cancel_requested),
            )
            out.add(row.id, new)
        return out
