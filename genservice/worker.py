"""A generation worker: claims jobs from a ``JobQueue`` and runs a handler on each.

Runs in an in-process thread (``start()`` / ``stop()``) or in the foreground (``run()``,
what ``tailorshot worker`` does in each process). While the handler runs, a side thread
heartbeats the lease and refreshes the cancel flag; the handler sees cancellation and
timeouts through ``should_cancel`` and reports ``progress(step, total)``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from data.models import GenerationJob, JobStatus
from genservice.backends.base import CancelFn, ProgressFn
from genservice.config import GenerationConfig
from genservice.errors import JobCancelled, JobTimedOut
from genservice.jobs import JobQueue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    """What a handler may return instead of a bare result key: the key plus its own
    timings (seconds), merged into the job's ``timings``."""

    result_key: str
    timings: dict[str, Any] = field(default_factory=dict)


class JobHandler(Protocol):
    """Runs one job: calls ``progress(step, total)`` as it goes and ``should_cancel()`` at
    least once per step (raising ``JobCancelled`` when it returns True); returns the result
    key (or a ``JobResult``). ``should_cancel`` itself raises ``JobTimedOut`` past the job's
    timeout."""

    def __call__(
        self, job: GenerationJob, progress: ProgressFn, should_cancel: CancelFn
    ) -> str | JobResult: ...


@dataclass(frozen=True)
class RunOutput:
    """How one job run ended for this worker: ``outcome`` is one of ``succeeded``,
    ``retry`` (failed, requeued), ``failed``, ``cancelled``, ``released`` (requeued on
    shutdown) or ``lost`` (the lease was taken away; nothing written)."""

    job_id: str
    attempt: int
    outcome: str
    error: str | None = None
    result_key: str | None = None


def default_worker_id() -> str:
    """``host-pid-random``: unique per worker instance."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class _Lease:
    """Per-run state shared by the handler's callbacks and the heartbeat thread."""

    def __init__(
        self,
        queue: JobQueue,
        job: GenerationJob,
        worker_id: str,
        *,
        cancel_check_interval: float,
        progress_interval: float,
        abort: threading.Event,
    ) -> None:
        self.queue = queue
        self.job_id = job.id
        self.attempt = job.attempts
        self.worker_id = worker_id
        self.timeout_s = float(job.timeout_s)
        self.started = time.monotonic()
        self.cancel_check_interval = cancel_check_interval
        self.progress_interval = progress_interval
        self.abort = abort  # set by a non-graceful stop: give the job back
        self.cancel_requested = False
        self.lost = False
        self._checked_at = -float("inf")
        self._progress_at = -float("inf")
        self._lock = threading.Lock()

    def update(self, owned: bool, cancel_requested: bool, *, checked: bool = False) -> None:
        """Fold in a lease reading; ``checked`` restarts the ``should_cancel`` cache (only
        its own reads do, so a heartbeat just before a cancel cannot delay noticing it)."""
        with self._lock:
            self.lost = self.lost or not owned
            self.cancel_requested = self.cancel_requested or cancel_requested
            if checked:
                self._checked_at = time.monotonic()

    def timed_out(self) -> bool:
        return time.monotonic() - self.started > self.timeout_s

    def should_cancel(self) -> bool:
        """True when the job should stop (cancel requested, lease lost, worker aborting);
        raises ``JobTimedOut`` past the timeout. Reads the DB at most every
        ``cancel_check_interval`` seconds."""
        if self.timed_out():
            raise JobTimedOut(f"job {self.job_id} ran past its timeout of {self.timeout_s:g} s")
        if time.monotonic() - self._checked_at >= self.cancel_check_interval:
            st = self.queue.lease_status(
                self.job_id, worker_id=self.worker_id, attempt=self.attempt
            )
            self.update(st.owned, st.cancel_requested, checked=True)
        return self.cancel_requested or self.lost or self.abort.is_set()

    def progress(self, step: int, total: int) -> None:
        """Store progress (throttled to ``progress_interval``; the last step always)."""
        now = time.monotonic()
        if step < total and now - self._progress_at < self.progress_interval:
            return
        self._progress_at = now
        owned = self.queue.report_progress(
            self.job_id, step, total, worker_id=self.worker_id, attempt=self.attempt
        )
        if not owned:
            self.update(False, False)


class Worker:
    """Claims jobs from ``queue`` and runs ``handler`` on each, one at a time.

    Args:
        queue: the shared job queue.
        handler: see ``JobHandler``.
        worker_id: unique id of this worker (default ``host-pid-random``).
        poll_interval: seconds between claims when the queue is empty.
        heartbeat_interval: seconds between heartbeats while a job runs.
        stale_after: seconds without heartbeat after which a running job counts as lost
            (``JobQueue.recover_stale``, run every ``maintenance_interval`` seconds).
        cancel_check_interval: ``should_cancel`` reads the DB at most this often, seconds: a
            cancel is noticed at the first step that starts this long after the last read,
            so within one step whenever steps are longer than this.
        progress_interval: progress is written at most this often, seconds.
        maintenance_interval: seconds between ``JobQueue.maintain`` runs; 0 disables them.
        warmup: called once when the worker starts, before it claims any job (load the
            model and warm its canvas sizes up, e.g. ``lambda: backend.load()``), so no
            job pays for start-up; an error is logged and the worker goes on.
    """

    def __init__(
        self,
        queue: JobQueue,
        handler: JobHandler,
        *,
        worker_id: str | None = None,
        poll_interval: float = 0.5,
        heartbeat_interval: float = 2.0,
        stale_after: float = 30.0,
        cancel_check_interval: float = 0.1,
        progress_interval: float = 0.1,
        maintenance_interval: float = 5.0,
        warmup: Callable[[], object] | None = None,
    ) -> None:
        for name, value in (
            ("poll_interval", poll_interval),
            ("heartbeat_interval", heartbeat_interval),
            ("cancel_check_interval", cancel_check_interval),
            ("progress_interval", progress_interval),
            ("maintenance_interval", maintenance_interval),
        ):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
        if not heartbeat_interval > 0:
            raise ValueError(f"heartbeat_interval must be > 0 seconds, got {heartbeat_interval!r}")
        if not stale_after > heartbeat_interval:
            raise ValueError(
                f"stale_after must exceed heartbeat_interval ({heartbeat_interval} s), "
                f"got {stale_after!r}"
            )
        self.queue = queue
        self.handler = handler
        self.worker_id = worker_id or default_worker_id()
        self.poll_interval = float(poll_interval)
        self.heartbeat_interval = float(heartbeat_interval)
        self.stale_after = float(stale_after)
        self.cancel_check_interval = float(cancel_check_interval)
        self.progress_interval = float(progress_interval)
        self.maintenance_interval = float(maintenance_interval)
        self._stopping = threading.Event()  # claim nothing more
        self._abort = threading.Event()  # give the job in hand back at its next step
        self._thread: threading.Thread | None = None
        self._last_maintenance = -float("inf")
        self.current_job_id: str | None = None
        self.processed = 0
        self.warmup = warmup
        #: Seconds the warm-up took (None until it ran; it runs once per worker).
        self.warmup_s: float | None = None

    @classmethod
    def from_config(
        cls,
        queue: JobQueue,
        handler: JobHandler,
        config: GenerationConfig,
        *,
        worker_id: str | None = None,
        warmup: Callable[[], object] | None = None,
    ) -> Worker:
        """A worker with the ``worker_*`` settings of ``config``."""
        return cls(
            queue,
            handler,
            worker_id=worker_id,
            warmup=warmup,
            poll_interval=config.worker_poll_interval_s,
            heartbeat_interval=config.worker_heartbeat_interval_s,
            stale_after=max(config.worker_stale_after_s, 2 * config.worker_heartbeat_interval_s),
            cancel_check_interval=config.worker_cancel_check_interval_s,
        )

    def _log(self, msg: str, level: int = logging.INFO, **fields: Any) -> None:
        logger.log(level, msg, extra={"worker_id": self.worker_id, **fields})

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Run the worker loop in a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError(f"worker {self.worker_id} is already running")
        self._stopping.clear()
        self._abort.clear()
        self._thread = threading.Thread(
            target=self.run, name=f"worker-{self.worker_id}", daemon=True
        )
        self._thread.start()

    def request_stop(self, *, graceful: bool = True) -> None:
        """Ask the loop to stop without waiting (safe from a signal handler). Graceful: the
        job in hand finishes; otherwise it is given back to the queue at its next step."""
        self._stopping.set()
        if not graceful:
            self._abort.set()

    def stop(self, *, graceful: bool = True, timeout: float | None = None) -> bool:
        """Stop the thread started by ``start``; returns True once it has exited.

        Graceful waits for the job in hand to finish; after ``timeout`` seconds (or at once
        when not graceful) the job is handed back to the queue at its next step instead.
        Either way no job is left half-done: it ends succeeded/failed/cancelled or queued.
        """
        self.request_stop(graceful=graceful)
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        if thread.is_alive():
            self._abort.set()
            thread.join(timeout)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self, *, until_idle: bool = False) -> int:
        """The loop: claim, run, repeat until stopped (or, with ``until_idle``, until no job
        is due). Returns the number of jobs this call processed."""
        done = 0
        self._log("worker started")
        self._run_warmup()
        while not self._stopping.is_set():
            try:
                self._maybe_maintain()
                out = self.run_once()
            except Exception:  # a DB hiccup must not kill the worker: log and poll again
                self._log("worker loop error", logging.ERROR, error=traceback.format_exc(limit=5))
                out = None
            if out is not None:
                done += 1
                continue
            if until_idle:
                break
            self._stopping.wait(self.poll_interval)
        self._log("worker stopped", processed=done)
        return done

    def _run_warmup(self) -> None:
        """Run the warm-up hook once per worker (a restarted loop does not repeat it)."""
        if self.warmup is None or self.warmup_s is not None or self._stopping.is_set():
            return
        t0 = time.monotonic()
        try:
            self.warmup()
        except Exception:  # the jobs will report a broken model; the worker stays up
            self._log("warm-up failed", logging.ERROR, error=traceback.format_exc(limit=5))
        self.warmup_s = time.monotonic() - t0
        self._log("warm-up done", warmup_s=round(self.warmup_s, 3))

    def _maybe_maintain(self) -> None:
        if self.maintenance_interval <= 0:
            return
        now = time.monotonic()
        if now - self._last_maintenance < self.maintenance_interval:
            return
        self._last_maintenance = now
        moved = self.queue.maintain(stale_after_s=self.stale_after)
        if moved.total:
            self._log(
                "recovered jobs",
                requeued=moved.requeued,
                failed=moved.failed,
                cancelled=moved.cancelled,
            )

    # ------------------------------------------------------------------ one job

    def run_once(self) -> RunOutput | None:
        """Claim one due job and run it to the end; None if none was due."""
        if self._stopping.is_set():
            return None
        job = self.queue.claim(worker_id=self.worker_id)
        if job is None:
            return None
        self.current_job_id = job.id
        try:
            return self._run(job)
        finally:
            self.current_job_id = None
            self.processed += 1

    def _run(self, job: GenerationJob) -> RunOutput:
        lease = _Lease(
            self.queue,
            job,
            self.worker_id,
            cancel_check_interval=self.cancel_check_interval,
            progress_interval=self.progress_interval,
            abort=self._abort,
        )
        fields: dict[str, Any] = {"job_id": job.id, "attempt": job.attempts}
        self._log("job started", **fields)
        beat_stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat_loop,
            args=(lease, beat_stop),
            daemon=True,
            name=f"heartbeat-{job.id[:8]}",
        )
        beat.start()
        t0 = time.monotonic()
        result: str | JobResult | None = None
        error: BaseException | None = None
        try:
            result = self.handler(job, lease.progress, lease.should_cancel)
        except BaseException as exc:  # every outcome must end the attempt
            error = exc
        finally:
            beat_stop.set()
            beat.join()
        run_s = time.monotonic() - t0
        wid, att = self.worker_id, lease.attempt

        if error is None:
            if isinstance(result, JobResult):
                key, extra_timings = result.result_key, dict(result.timings)
            elif isinstance(result, str):
                key, extra_timings = result, {}
            else:
                error = TypeError(
                    f"handler must return a result key (str) or JobResult, "
                    f"got {type(result).__name__}"
                )
        if error is None:
            timings = {"run_s": run_s, "attempt": lease.attempt, **extra_timings}
            if job.started_at is not None and job.created_at is not None:
                timings["queue_wait_s"] = (job.started_at - job.created_at).total_seconds()
            if self.queue.complete(
                job.id, result_key=key, timings=timings, worker_id=wid, attempt=att
            ):
                self._log("job succeeded", run_s=run_s, result_key=key, **fields)
                return RunOutput(job.id, lease.attempt, "succeeded", result_key=key)
            self._log("job result discarded: lease lost", logging.WARNING, **fields)
            return RunOutput(job.id, lease.attempt, "lost", result_key=key)

        if isinstance(error, JobCancelled) or (
            not isinstance(error, JobTimedOut) and (lease.lost or lease.abort.is_set())
        ):
            if lease.lost:
                self._log("job stopped: lease lost", logging.WARNING, **fields)
                return RunOutput(job.id, lease.attempt, "lost", error=str(error))
            if lease.abort.is_set() and not lease.cancel_requested:
                released = self.queue.release(
                    job.id, reason="worker shut down", worker_id=wid, attempt=att
                )
                self._log("job released on shutdown", **fields)
                return RunOutput(
                    job.id, lease.attempt, "released" if released else "lost", error=str(error)
                )
            if self.queue.mark_cancelled(job.id, worker_id=wid, attempt=att):
                self._log("job cancelled", run_s=run_s, **fields)
                return RunOutput(job.id, lease.attempt, "cancelled", error=str(error))
            return RunOutput(job.id, lease.attempt, "lost", error=str(error))

        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            # The process is going down: hand the job back, then let the exit proceed.
            self.queue.release(
                job.id, reason=f"worker interrupted: {error!r}", worker_id=wid, attempt=att
            )
            raise error
        retryable = bool(getattr(error, "retryable", True))
        message = f"{type(error).__name__}: {error}"
        updated = self.queue.fail(job.id, message, retryable, worker_id=wid, attempt=att)
        if updated is None:
            return RunOutput(job.id, lease.attempt, "lost", error=message)
        outcome = "retry" if updated.status == JobStatus.queued else "failed"
        self._log(
            f"job attempt failed ({outcome})",
            logging.WARNING,
            error=message,
            traceback="".join(traceback.format_exception(error, limit=8)),
            **fields,
        )
        return RunOutput(job.id, lease.attempt, outcome, error=message)

    def _heartbeat_loop(self, lease: _Lease, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_interval):
            try:
                st = self.queue.heartbeat(
                    lease.job_id, worker_id=self.worker_id, attempt=lease.attempt
                )
            except Exception:  # keep beating; a missed beat only risks a (fenced) recovery
                self._log("heartbeat failed", logging.WARNING, error=traceback.format_exc(limit=3))
                continue
            lease.update(st.owned, st.cancel_requested)
            if not st.owned:
                self._log("lease lost", logging.WARNING, job_id=lease.job_id)
                return
