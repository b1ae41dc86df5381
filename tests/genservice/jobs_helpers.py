"""Helpers for the job-queue and worker tests, and a tiny worker-subprocess script.

As a script (run with the repository root on ``sys.path``)::

    python jobs_helpers.py claim URL START_FILE         # claim until empty; print ids (JSON)
    python jobs_helpers.py work URL LOG_FILE STEPS STEP_S  # one worker, fake step handler
    python jobs_helpers.py cli - LOG_FILE STEPS STEP_S     # `tailorshot worker`, fake handler

The ``work`` handler appends ``start <job> <attempt>`` to LOG_FILE when it starts a job and
``done <job> <attempt>`` after its last step (the side effect the kill test counts).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pytest  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from data.models import GenerationJob  # noqa: E402
from genservice.errors import JobCancelled  # noqa: E402

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"
PG_URL_TEMPLATE = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"


def pg_unavailable_reason() -> str | None:
    """None if PostgreSQL answers on 127.0.0.1:5432 (db ``test``), else why not."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_DSN) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure means "skip", with the reason shown
        return f"PostgreSQL at 127.0.0.1:5432/test does not answer: {exc!s:.200}"
    return None


@contextmanager
def pg_database() -> Iterator[str]:
    """Create a private database ``tailorshot_test_jobs_<pid>_<rand>``; yield its URL; drop it."""
    import psycopg

    name = f"tailorshot_test_jobs_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL_TEMPLATE.format(db=name)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class StepHandler:
    """A fake generation: ``steps`` sleeps of ``step_s`` seconds, checking ``should_cancel``
    before each step and reporting progress after it. Records what it did.

    ``on_step(job, step)`` runs after each step (tests use it to cancel or block);
    ``fail_times`` makes the first N calls per job raise ``RuntimeError``.
    """

    steps: int = 5
    step_s: float = 0.0
    fail_times: int = 0
    on_step: Callable[[GenerationJob, int], None] | None = None
    log: Path | None = None
    calls: list[str] = field(default_factory=list)
    steps_done: dict[str, int] = field(default_factory=dict)
    completed: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, line: str) -> None:
        if self.log is not None:
            with self.log.open("a") as fh:  # one short append per line: atomic enough
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    def __call__(
        self,
        job: GenerationJob,
        progress: Callable[[int, int], None],
        should_cancel: Callable[[], bool],
    ) -> str:
        with self._lock:
            self.calls.append(job.id)
            n_calls = self.calls.count(job.id)
            self.steps_done.setdefault(job.id, 0)
        self._record(f"start {job.id} {job.attempts}")
        if n_calls <= self.fail_times:
            raise RuntimeError(f"injected failure {n_calls} of job {job.id}")
        for step in range(1, self.steps + 1):
            if should_cancel():
                raise JobCancelled(f"job {job.id} cancelled before step {step}")
            if self.step_s:
                time.sleep(self.step_s)
            with self._lock:
                self.steps_done[job.id] += 1
            progress(step, self.steps)
            if self.on_step is not None:
                self.on_step(job, step)
        with self._lock:
            self.completed.append(job.id)
        self._record(f"done {job.id} {job.attempts}")
        return f"result-{job.brief_hash}"


class FakeClock:
    """A settable naive-UTC clock for ``JobQueue(clock=...)``."""

    def __init__(self) -> None:
        from data.models import utcnow

        self.t = utcnow()

    def __call__(self) -> Any:
        return self.t

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self.t += timedelta(seconds=seconds)


@pytest.fixture(scope="module", name="pg_url")
def pg_url_fixture() -> Iterator[str]:
    """URL of a private PostgreSQL database with the tables created (module scope)."""
    from data.db import init_db, make_engine

    reason = pg_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with pg_database() as url:
        eng = make_engine(url)
        init_db(eng)
        eng.dispose()
        yield url


@pytest.fixture(params=["sqlite", "postgresql"], name="engine")
def engine_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A fresh, empty job table on SQLite (a tmp file) or PostgreSQL (skipped if absent)."""
    from sqlalchemy import delete

    from data.db import init_db, make_engine

    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
        init_db(eng)
    else:
        eng = make_engine(request.getfixturevalue("pg_url"))
        with eng.begin() as conn:
            conn.execute(delete(GenerationJob.__table__))  # type: ignore[attr-defined]
    yield eng
    eng.dispose()


def url_of(engine: Engine) -> str:
    """The engine's URL with its password, for a subprocess."""
    return engine.url.render_as_string(hide_password=False)


def make_queue(engine: Engine, **kwargs: Any) -> Any:
    """A JobQueue with test-friendly (short) backoff unless overridden."""
    from genservice.jobs import JobQueue

    kwargs.setdefault("backoff_base_s", 0.01)
    kwargs.setdefault("backoff_max_s", 0.05)
    return JobQueue(engine, **kwargs)


def _main(argv: list[str]) -> int:
    from data.db import make_engine
    from genservice.worker import Worker

    mode, url = argv[0], argv[1]
    engine = make_engine(url if url != "-" else "sqlite://")
    queue = make_queue(engine)
    if mode == "claim":
        start = Path(argv[2])
        (start.parent / f"ready-{os.getpid()}").touch()
        while not start.exists():  # start all claimers at once
            time.sleep(0.005)
        wid = f"claimer-{os.getpid()}"
        got = []
        while (job := queue.claim(worker_id=wid)) is not None:
            got.append(job.id)
        print(json.dumps(got))
        return 0
    if mode == "work":
        log, steps, step_s = Path(argv[2]), int(argv[3]), float(argv[4])
        handler = StepHandler(steps=steps, step_s=step_s, log=log)
        worker = Worker(
            queue,
            handler,
            worker_id=f"sub-{os.getpid()}",
            poll_interval=0.02,
            heartbeat_interval=0.1,
            stale_after=60.0,
            maintenance_interval=0,
            progress_interval=0,
        )
        worker.run()
        return 0
    if mode == "cli":  # `tailorshot worker` in-process, with a fake handler
        import api.composition
        from api.cli.worker import run_worker_process

        log, steps, step_s = Path(argv[2]), int(argv[3]), float(argv[4])
        fake = StepHandler(steps=steps, step_s=step_s, log=log)
        api.composition.build_job_handler = lambda settings: fake  # type: ignore[assignment]
        processed = run_worker_process(0, once=False, poll_interval=0.02, log_level="WARNING")
        print(json.dumps({"processed": processed}))
        return 0
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
