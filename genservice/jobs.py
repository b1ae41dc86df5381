"""A persistent generation-job queue over an SQLAlchemy engine (SQLite or PostgreSQL).

States: ``queued -> running -> succeeded | failed | cancelled``; a failed attempt that may
be retried goes back to ``queued`` with ``next_attempt_at`` pushed out (exponential backoff
with jitter). Every claim increments ``attempts``; the pair ``(worker_id, attempts)`` is the
worker's *lease* and fences every write it makes afterwards (heartbeat, progress, complete,
fail, cancel-ack): once a lease was recovered or expired, nothing its old holder writes lands,
so a job never completes twice.

Claiming is race-free on both backends: PostgreSQL uses ``SELECT ... FOR UPDATE SKIP
LOCKED``; SQLite (one writer at a time) uses one conditional ``UPDATE ... WHERE id = (next
due id) AND status = 'queued' RETURNING id`` (before SQLite 3.35, ``UPDATE ... WHERE id = ?
AND status = 'queued'`` per candidate with a row-count check).

Timestamps are naive UTC (``data.models.utcnow``), computed here and passed as parameters,
so the SQL is the same on both backends. Higher ``priority`` is claimed first.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from data.models import GenerationJob, JobStatus, utcnow
from genservice.brief import CreativeBrief
from genservice.config import GenerationConfig
from genservice.job_recovery import AttemptEnder, RecoverOutput

logger = logging.getLogger(__name__)

_T = cast(Table, GenerationJob.__table__)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class SubmitOutput:
    """What ``JobQueue.submit`` did: ``created`` (a new row) or ``requeued`` (a failed or
    cancelled job with the same brief hash was put back in the queue); neither means the
    existing job (queued, running or succeeded, with its result) was returned as is."""

    job: GenerationJob
    created: bool
    requeued: bool = False


@dataclass(frozen=True)
class LeaseStatus:
    """A worker's view of its lease: ``owned`` is False once the job was recovered, expired,
    finished or claimed by someone else; ``cancel_requested`` asks the worker to stop."""

    owned: bool
    cancel_requested: bool


class JobQueue:
    """Generation jobs persisted in the ``generationjob`` table.

    Args:
        engine: SQLAlchemy engine (tables must exist: ``data.db.init_db``).
        backoff_base_s: delay before the first retry, seconds; attempt ``n`` waits
            ``min(backoff_max_s, backoff_base_s * 2**(n-1))`` scaled by a jitter factor.
        backoff_max_s: cap of the retry delay, seconds.
        jitter: in ``[0, 1]``: the delay is multiplied by a uniform factor in ``[1 - jitter, 1]``.
        default_timeout_s: ``timeout_s`` of jobs submitted without one, seconds.
        default_max_attempts: ``max_attempts`` of jobs submitted without one.
        seed: seed of the jitter generator.
        clock: returns "now" as naive UTC (tests pass a fake clock).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        backoff_base_s: float = 2.0,
        backoff_max_s: float = 300.0,
        jitter: float = 0.5,
        default_timeout_s: float = 600.0,
        default_max_attempts: int = 3,
        seed: int = 0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if not backoff_base_s >= 0:
            raise ValueError(f"backoff_base_s must be >= 0 seconds, got {backoff_base_s!r}")
        if not backoff_max_s >= backoff_base_s:
            raise ValueError(
                f"backoff_max_s must be >= backoff_base_s ({backoff_base_s}), got {backoff_max_s!r}"
            )
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {jitter!r}")
        if not default_timeout_s > 0:
            raise ValueError(f"default_timeout_s must be > 0 seconds, got {default_timeout_s!r}")
        if not isinstance(default_max_attempts, int) or default_max_attempts < 1:
            raise ValueError(
                f"default_max_attempts must be an int >= 1, got {default_max_attempts!r}"
            )
        self.engine = engine
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.jitter = float(jitter)
        self.default_timeout_s = float(default_timeout_s)
        self.default_max_attempts = default_max_attempts
        self._clock = clock
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._dialect = engine.dialect.name
        # Late-bound, so a clock or backoff replaced on the instance (tests) is honoured.
        self._ender = AttemptEnder(engine, lambda: self.now(), lambda n: self.backoff_s(n))

    @classmethod
    def from_config(cls, engine: Engine, config: GenerationConfig, *, seed: int = 0) -> JobQueue:
        """A queue with the ``job_*`` settings of ``config``."""
        return cls(
            engine,
            backoff_base_s=config.job_backoff_base_s,
            backoff_max_s=max(config.job_backoff_max_s, config.job_backoff_base_s),
            jitter=config.job_backoff_jitter,
            default_timeout_s=config.job_timeout_s,
            default_max_attempts=config.job_max_attempts,
            seed=seed,
        )

    # ------------------------------------------------------------------ helpers

    def now(self) -> datetime:
        """The queue's current time (naive UTC)."""
        return self._clock()

    def backoff_s(self, attempts: int) -> float:
        """Delay before retrying a job that has made ``attempts`` (>= 1) attempts, seconds."""
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts!r}")
        base = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (attempts - 1))
        with self._rng_lock:
            u = self._rng.random()
        return base * (1.0 - self.jitter * u)

    def _relaxed(self, conn: Connection) -> None:
        """Heartbeats and progress need no fsync: losing the last one in a database crash
        only makes a lease look a little older (PostgreSQL: asynchronous commit)."""
        if self._dialect == "postgresql":
            conn.execute(text("SET LOCAL synchronous_commit TO OFF"))

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    @staticmethod
    def _owned(job_id: str, worker_id: str | None, attempt: int | None) -> list[Any]:
        """WHERE clauses of a fenced write: the job is running under this lease."""
        clauses: list[Any] = [_T.c.id == job_id, _T.c.status == JobStatus.running]
        if worker_id is not None:
            clauses.append(_T.c.worker_id == worker_id)
        if attempt is not None:
            clauses.append(_T.c.attempts == attempt)
        return clauses

    # ------------------------------------------------------------------ submit / read

    def submit(
        self,
        *,
        brief_hash: str,
        brief: dict[str, Any],
        priority: int = 0,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
    ) -> SubmitOutput:
        """Enqueue a job for ``brief`` unless one with ``brief_hash`` exists (idempotent).

        A failed or cancelled job with the same hash is requeued (attempts reset); a queued,
        running or succeeded one is returned unchanged. ``max_attempts`` / ``timeout_s``
        default to the queue's defaults. Concurrent submissions of one hash
        create exactly one row (the unique constraint decides; the losers read the winner).
        """
        if not isinstance(brief_hash, str) or not 1 <= len(brief_hash) <= 64:
            raise ValueError(
                f"brief_hash must be a non-empty string of at most 64 characters, "
                f"got {brief_hash!r}"
            )
        if not isinstance(brief, dict):
            raise TypeError(f"brief must be a dict, got {type(brief).__name__}")
        try:
            json.dumps(brief)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"brief must be JSON-serialisable: {exc}") from exc
        if max_attempts is None:
            max_attempts = self.default_max_attempts
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        if not isinstance(priority, int):
            raise TypeError(f"priority must be an int, got {type(priority).__name__}")
        timeout = self.default_timeout_s if timeout_s is None else float(timeout_s)
        if not timeout > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")

        now = self.now()
        job = GenerationJob(
            brief_hash=brief_hash,
            brief=brief,
            priority=priority,
            max_attempts=max_attempts,
            timeout_s=timeout,
            created_at=now,
            next_attempt_at=now,
        )
        try:
            with self._session() as session:
                session.add(job)
                session.commit()
            logger.info("job submitted", extra={"job_id": job.id, "brief_hash": brief_hash})
            return SubmitOutput(job=job, created=True)
        except IntegrityError:
            pass  # another submission of this hash won the race (or it existed already)

        with self.engine.begin() as conn:
            requeued = conn.execute(
                update(_T)
                .where(
                    _T.c.brief_hash == brief_hash,
                    _T.c.status.in_([JobStatus.failed, JobStatus.cancelled]),
                )
                .values(
                    status=JobStatus.queued,
                    brief=brief,
                    priority=priority,
                    max_attempts=max_attempts,
                    timeout_s=timeout,
                    attempts=0,
                    error=None,
                    cancel_requested=False,
                    worker_id=None,
                    progress_step=0,
                    progress_total=0,
                    started_at=None,
                    finished_at=None,
                    heartbeat_at=None,
                    next_attempt_at=now,
                )
            ).rowcount
        existing = self.get_by_hash(brief_hash)
        if existing is None:  # pragma: no cover - a row the constraint saw must exist
            raise RuntimeError(f"job with brief_hash {brief_hash!r} vanished during submit")
        if requeued:
            logger.info(
                "job requeued by resubmission",
                extra={"job_id": existing.id, "brief_hash": brief_hash},
            )
        return SubmitOutput(job=existing, created=False, requeued=bool(requeued))

    def submit_brief(self, brief: CreativeBrief) -> str:
        """Enqueue ``brief`` (idempotent by its hash, see :meth:`submit`); the job id. The
        one place a brief becomes a job payload (:func:`brief_of` reads it back)."""
        return self.submit(brief_hash=brief.brief_hash, brief=brief.to_dict()).job.id

    def get(self, job_id: str) -> GenerationJob | None:
        """The job with id ``job_id`` (a detached snapshot), or None."""
        with self._session() as session:
            return session.get(GenerationJob, job_id)

    def get_by_hash(self, brief_hash: str) -> GenerationJob | None:
        """The job for ``brief_hash``, or None."""
        with self._session() as session:
            stmt = select(GenerationJob).where(_T.c.brief_hash == brief_hash)
            return session.scalars(stmt).first()

    def list(
        self, *, status: JobStatus | str | None = None, limit: int = 100, offset: int = 0
    ) -> list[GenerationJob]:
        """Jobs, newest first, optionally of one ``status``."""
        if not 1 <= limit <= 10_000:
            raise ValueError(f"limit must be in [1, 10000], got {limit!r}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset!r}")
        stmt = select(GenerationJob)
        if status is not None:
            stmt = stmt.where(_T.c.status == JobStatus(status))
        stmt = stmt.order_by(_T.c.created_at.desc(), _T.c.id).limit(limit).offset(offset)
        with self._session() as session:
            return list(session.scalars(stmt).all())

    def queue_depth(self) -> int:
        """Number of queued jobs (due now or later)."""
        with self.engine.connect() as conn:
            stmt = select(func.count()).select_from(_T).where(_T.c.status == JobStatus.queued)
            return int(conn.execute(stmt).scalar_one())

    def counts(self) -> dict[str, int]:
        """Number of jobs per status (every status present, zeros included)."""
        out = {s.value: 0 for s in JobStatus}
        with self.engine.connect() as conn:
            rows = conn.execute(select(_T.c.status, func.count()).group_by(_T.c.status))
            for status, n in rows:
                out[JobStatus(status).value] = int(n)
        return out

    # ------------------------------------------------------------------ claim

    def claim(self, *, worker_id: str) -> GenerationJob | None:
        """Atomically take the next due queued job (highest priority, then oldest
        ``next_attempt_at``) for ``worker_id``; None if none is due.

        The returned job is ``running`` with ``attempts`` incremented; pass
        ``attempt=job.attempts`` with ``worker_id`` to the fenced calls.
        """
        if not worker_id or len(worker_id) > 128:
            raise ValueError(f"worker_id must be 1..128 characters, got {worker_id!r}")
        now = self.now()
        due = [_T.c.status == JobStatus.queued, _T.c.next_attempt_at <= now]
        order = (_T.c.priority.desc(), _T.c.next_attempt_at, _T.c.created_at, _T.c.id)
        claimed_values: dict[str, Any] = {
            "status": JobStatus.running,
            "attempts": _T.c.attempts + 1,
            "worker_id": worker_id,
            "started_at": now,
            "heartbeat_at": now,
            "progress_step": 0,
            "progress_total": 0,
        }
        job_id: str | None = None
        if self._dialect == "postgresql":
            with self.engine.begin() as conn:
                row = conn.execute(
                    select(_T.c.id)
                    .where(*due)
                    .order_by(*order)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).first()
                if row is not None:
                    job_id = row[0]
                    conn.execute(update(_T).where(_T.c.id == job_id).values(**claimed_values))
        elif self._dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 35):
            # SQLite runs one write statement at a time, so a single conditional UPDATE
            # whose subquery picks the next due job claims it atomically.
            pick = select(_T.c.id).where(*due).order_by(*order).limit(1).scalar_subquery()
            with self.engine.begin() as conn:
                job_id = conn.execute(
                    update(_T)
                    .where(_T.c.id == pick, *due)
                    .values(**claimed_values)
                    .returning(_T.c.id)
                ).scalar_one_or_none()
        else:
            # Other backends: read candidates, then take one with a conditional UPDATE;
            # rowcount 0 means another worker was faster.
            for _round in range(5):
                with self.engine.connect() as conn:
                    candidates = list(
                        conn.execute(select(_T.c.id).where(*due).order_by(*order).limit(8))
                        .scalars()
                        .all()
                    )
                if not candidates:
                    break
                for cand in candidates:
                    with self.engine.begin() as conn:
                        n = conn.execute(
                            update(_T).where(_T.c.id == cand, *due).values(**claimed_values)
                        ).rowcount
                    if n == 1:
                        job_id = cand
                        break
                if job_id is not None:
                    break
        if job_id is None:
            return None
        job = self.get(job_id)
        if job is not None:
            logger.info(
                "job claimed",
                extra={"job_id": job_id, "worker_id": worker_id, "attempt": job.attempts},
            )
        return job

    # ------------------------------------------------------------------ fenced writes

    def heartbeat(self, job_id: str, *, worker_id: str, attempt: int | None = None) -> LeaseStatus:
        """Record that ``worker_id`` is alive and still working on ``job_id``; returns whether
        it still owns the job and whether cancellation was requested."""
        with self.engine.begin() as conn:
            self._relaxed(conn)
            n = conn.execute(
                update(_T)
                .where(*self._owned(job_id, worker_id, attempt))
                .values(heartbeat_at=self.now())
            ).rowcount
            cancel = conn.execute(
                select(_T.c.cancel_requested).where(_T.c.id == job_id)
            ).scalar_one_or_none()
        return LeaseStatus(owned=n == 1, cancel_requested=bool(cancel))

    def lease_status(
        self, job_id: str, *, worker_id: str, attempt: int | None = None
    ) -> LeaseStatus:
        """Read-only version of ``heartbeat``."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_T.c.status, _T.c.worker_id, _T.c.attempts, _T.c.cancel_requested).where(
                    _T.c.id == job_id
                )
            ).first()
        if row is None:
            return LeaseStatus(owned=False, cancel_requested=False)
        owned = (
            JobStatus(row.status) == JobStatus.running
            and row.worker_id == worker_id
            and (attempt is None or row.attempts == attempt)
        )
        return LeaseStatus(owned=owned, cancel_requested=bool(row.cancel_requested))

    def report_progress(
        self,
        job_id: str,
        step: int,
        total: int,
        *,
        worker_id: str | None = None,
        attempt: int | None = None,
    ) -> bool:
        """Store progress ``step`` of ``total`` (also a heartbeat); False if not owned."""
        if not (isinstance(step, int) and isinstance(total, int) and 0 <= step <= total):
            raise ValueError(f"progress needs ints 0 <= step <= total, got {step!r}/{total!r}")
        with self.engine.begin() as conn:
            self._relaxed(conn)
            n = conn.execute(
                update(_T)
                .where(*self._owned(job_id, worker_id, attempt))
                .values(progress_step=step, progress_total=total, heartbeat_at=self.now())
            ).rowcount
        return n == 1

    def complete(
        self,
        job_id: str,
        *,
        worker_id: str,
        result_key: str,
        timings: dict[str, Any] | None = None,
        attempt: int | None = None,
    ) -> bool:
        """Mark ``job_id`` succeeded with ``result_key`` if ``worker_id`` (and ``attempt``)
        still holds it. Returns False (and changes nothing) otherwise: a recovered or
        expired lease, or a job already finished, never completes (twice)."""
        if not result_key or len(result_key) > 128:
            raise ValueError(f"result_key must be 1..128 characters, got {result_key!r}")
        with self.engine.begin() as conn:
            n = conn.execute(
                update(_T)
                .where(*self._owned(job_id, worker_id, attempt))
                .values(
                    status=JobStatus.succeeded,
                    result_key=result_key,
                    timings=dict(timings or {}),
                    finished_at=self.now(),
                    error=None,
                )
            ).rowcount
        extra = {"job_id": job_id, "worker_id": worker_id, "result_key": result_key}
        if n == 1:
            logger.info("job succeeded", extra=extra)
        else:
            logger.warning("completion rejected: lease lost", extra=extra)
        return n == 1

    def fail(
        self,
        job_id: str,
        error: str,
        retryable: bool = True,
        *,
        worker_id: str | None = None,
        attempt: int | None = None,
    ) -> GenerationJob | None:
        """End the current attempt of a running job with ``error``.

        ``retryable`` and attempts left: back to ``queued`` after ``backoff_s(attempts)``;
        otherwise ``failed``. Returns the updated job, or None if the (fenced) job was not
        running under this lease.
        """
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_T.c.attempts, _T.c.max_attempts, _T.c.worker_id).where(
                    *self._owned(job_id, worker_id, attempt)
                )
            ).first()
        if row is None:
            return None
        moved = self._ender.end_attempt(
            job_id,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            holder=row.worker_id,
            error=error,
            retryable=retryable,
        )
        return self.get(job_id) if moved is not None else None

    def mark_cancelled(
        self, job_id: str, *, worker_id: str | None = None, attempt: int | None = None
    ) -> bool:
        """A worker acknowledges a cancellation: running → cancelled (fenced)."""
        with self.engine.begin() as conn:
            n = conn.execute(
                update(_T)
                .where(*self._owned(job_id, worker_id, attempt))
                .values(status=JobStatus.cancelled, finished_at=self.now(), worker_id=None)
            ).rowcount
        if n == 1:
            logger.info("job cancelled", extra={"job_id": job_id, "worker_id": worker_id})
        return n == 1

    def release(
        self, job_id: str, *, worker_id: str, attempt: int | None = None, reason: str = ""
    ) -> bool:
        """Give a running job back to the queue untouched (a worker shutting down): it is
        claimable at once; the attempt still counts. A requested cancel wins."""
        now = self.now()
        with self.engine.begin() as conn:
            n = conn.execute(
                update(_T)
                .where(*self._owned(job_id, worker_id, attempt), _T.c.cancel_requested.is_(False))
                .values(
                    status=JobStatus.queued,
                    worker_id=None,
                    heartbeat_at=None,
                    next_attempt_at=now,
                    error=reason or None,
                )
            ).rowcount
        if n == 1:
            logger.info("job released", extra={"job_id": job_id, "worker_id": worker_id})
            return True
        return self.mark_cancelled(job_id, worker_id=worker_id, attempt=attempt)

    # ------------------------------------------------------------------ cancel

    def cancel(self, job_id: str) -> GenerationJob | None:
        """Cancel ``job_id``: a queued job is cancelled at once; a running one gets
        ``cancel_requested`` (its worker stops at its next step); a finished one is left as
        is. Returns the job after the change, or None if there is no such job."""
        now = self.now()
        with self.engine.begin() as conn:
            conn.execute(
                update(_T)
                .where(_T.c.id == job_id, _T.c.status == JobStatus.queued)
                .values(status=JobStatus.cancelled, finished_at=now, cancel_requested=True)
            )
            conn.execute(
                update(_T)
                .where(_T.c.id == job_id, _T.c.status == JobStatus.running)
                .values(cancel_requested=True)
            )
        job = self.get(job_id)
        if job is not None:
            logger.info("job cancel requested", extra={"job_id": job_id, "status": job.status})
        return job

    # ------------------------------------------------------------------ recovery

    def recover_stale(self, *, stale_after_s: float) -> RecoverOutput:
        """Running jobs with no heartbeat for ``stale_after_s`` seconds end their attempt
        (see :meth:`genservice.job_recovery.AttemptEnder.recover_stale`)."""
        return self._ender.recover_stale(stale_after_s=stale_after_s)

    def expire_timeouts(self) -> RecoverOutput:
        """Running jobs past their ``timeout_s`` end their attempt (retried with backoff
        while attempts are left, else failed)."""
        return self._ender.expire_timeouts()

    def maintain(self, *, stale_after_s: float) -> RecoverOutput:
        """``recover_stale`` then ``expire_timeouts`` (what a worker runs periodically)."""
        return self.recover_stale(stale_after_s=stale_after_s) + self.expire_timeouts()


def brief_of(job: GenerationJob) -> CreativeBrief:
    """The brief a job renders (the inverse of :meth:`JobQueue.submit_brief`)."""
    return CreativeBrief.from_dict(job.brief)
