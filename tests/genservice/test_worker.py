"""Worker tests with fake step handlers, on SQLite and PostgreSQL (skipped if absent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent))

from jobs_helpers import (
    REPO,
    StepHandler,
    engine_fixture,  # noqa: F401  (the `engine` fixture)
    make_queue,
    pg_url_fixture,  # noqa: F401  (the `pg_url` fixture)
    url_of,
)

from data.models import GenerationJob, JobStatus
from genservice.jobs import JobQueue
from genservice.worker import JobResult, RunOutput, Worker

BRIEF = {"product": {"id": 7}, "seed": 1}


def fast_worker(q: JobQueue, handler: object, **kw: object) -> Worker:
    opts: dict[str, object] = {
        "poll_interval": 0.01,
        "heartbeat_interval": 0.05,
        "stale_after": 30.0,
        "cancel_check_interval": 0.0,
        "progress_interval": 0.0,
        "maintenance_interval": 0.0,
    }
    opts.update(kw)
    return Worker(q, handler, **opts)  # type: ignore[arg-type]


def wait_for(cond: object, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def drain(worker: Worker, q: JobQueue, job_id: str, timeout: float = 30.0) -> list[RunOutput]:
    """Run the worker in this thread until ``job_id`` is finished; the run outcomes."""
    outs: list[RunOutput] = []
    deadline = time.monotonic() + timeout
    while True:
        job = q.get(job_id)
        assert job is not None
        if job.status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled):
            return outs
        assert time.monotonic() < deadline, f"job {job_id} still {job.status}"
        out = worker.run_once()
        if out is None:
            time.sleep(0.005)  # a retry not due yet
        else:
            outs.append(out)


def test_worker_runs_a_job_to_success(engine: Engine) -> None:
    q = make_queue(engine)
    handler = StepHandler(steps=3)
    job = q.submit(brief_hash="ok", brief=BRIEF).job
    worker = fast_worker(q, handler)
    assert worker.run(until_idle=True) == 1
    done = q.get(job.id)
    assert done is not None and done.status == JobStatus.succeeded
    assert done.result_key == "result-ok" and done.attempts == 1 and done.error is None
    assert (done.progress_step, done.progress_total) == (3, 3)
    assert done.worker_id == worker.worker_id and done.timings["attempt"] == 1
    assert done.timings["run_s"] >= 0 and done.timings["queue_wait_s"] >= 0
    assert handler.steps_done == {job.id: 3}


def test_handler_may_return_job_result_with_timings(engine: Engine) -> None:
    q = make_queue(engine)
    job = q.submit(brief_hash="jr", brief=BRIEF).job

    def handler(job: GenerationJob, progress: object, should_cancel: object) -> JobResult:
        return JobResult("key-1", {"denoise_s": 1.5})

    out = fast_worker(q, handler).run_once()
    assert out is not None and (out.outcome, out.result_key) == ("succeeded", "key-1")
    done = q.get(job.id)
    assert done is not None and done.timings["denoise_s"] == 1.5 and done.result_key == "key-1"


def test_two_worker_threads_never_run_the_same_job(engine: Engine) -> None:
    q = make_queue(engine)
    ids = [q.submit(brief_hash=f"t{i}", brief=BRIEF).job.id for i in range(20)]
    handler = StepHandler(steps=2, step_s=0.002)
    workers = [fast_worker(q, handler, worker_id=f"w{k}") for k in range(2)]
    for w in workers:
        w.start()
    try:
        wait_for(lambda: q.counts()["succeeded"] == 20, what="20 jobs to succeed")
    finally:
        for w in workers:
            assert w.stop(timeout=10)
    assert sorted(handler.calls) == sorted(ids)  # each job ran once
    assert sorted(handler.completed) == sorted(ids)
    assert sum(w.processed for w in workers) == 20
    assert {j.worker_id for j in q.list(limit=50)} <= {"w0", "w1"}


@pytest.mark.parametrize("check_interval,step_s", [(0.0, 0.0), (0.05, 0.06)])
def test_cancel_stops_within_one_step(engine: Engine, check_interval: float, step_s: float) -> None:
    """Cancel arrives (from another connection) during step 3 of 10: the handler's next
    ``should_cancel`` sees it (the cached flag is older than one step), so exactly 3 steps
    ran and the job ends cancelled."""
    q = make_queue(engine)
    api = make_queue(engine)  # the canceller, e.g. the API process
    job = q.submit(brief_hash="cancel", brief=BRIEF).job

    def on_step(j: GenerationJob, step: int) -> None:
        if step == 3:
            api.cancel(j.id)

    handler = StepHandler(steps=10, step_s=step_s, on_step=on_step)
    worker = fast_worker(q, handler, cancel_check_interval=check_interval)
    out = worker.run_once()
    assert out is not None and out.outcome == "cancelled"
    assert handler.steps_done[job.id] == 3 and handler.completed == []
    done = q.get(job.id)
    assert done is not None and done.status == JobStatus.cancelled and done.progress_step == 3
    assert done.finished_at is not None and done.result_key is None


def test_retries_with_backoff_then_succeeds_or_fails(engine: Engine) -> None:
    q = make_queue(engine)
    flaky = q.submit(brief_hash="flaky", brief=BRIEF, max_attempts=3).job
    outs = drain(fast_worker(q, StepHandler(steps=1, fail_times=2)), q, flaky.id)
    assert [o.outcome for o in outs] == ["retry", "retry", "succeeded"]
    done = q.get(flaky.id)
    assert done is not None and done.status == JobStatus.succeeded and done.attempts == 3

    broken = q.submit(brief_hash="broken", brief=BRIEF, max_attempts=2).job
    outs = drain(fast_worker(q, StepHandler(steps=1, fail_times=99)), q, broken.id)
    assert [o.outcome for o in outs] == ["retry", "failed"]
    failed = q.get(broken.id)
    assert failed is not None and failed.status == JobStatus.failed and failed.attempts == 2
    assert failed.error == f"RuntimeError: injected failure 2 of job {broken.id}"


def test_non_retryable_handler_error_fails_at_once(engine: Engine) -> None:
    class BadBrief(ValueError):
        retryable = False

    def handler(job: GenerationJob, progress: object, should_cancel: object) -> str:
        raise BadBrief("product image missing")

    q = make_queue(engine)
    job = q.submit(brief_hash="bad", brief=BRIEF, max_attempts=5).job
    out = fast_worker(q, handler).run_once()
    assert out is not None and out.outcome == "failed"
    done = q.get(job.id)
    assert done is not None and done.attempts == 1 and "product image missing" in done.error  # type: ignore[operator]


def test_timeout_stops_the_handler_and_fails_the_job(engine: Engine) -> None:
    q = make_queue(engine)
    job = q.submit(brief_hash="slow", brief=BRIEF, timeout_s=0.2, max_attempts=1).job
    handler = StepHandler(steps=200, step_s=0.01)
    out = fast_worker(q, handler).run_once()
    assert out is not None and out.outcome == "failed"
    assert 1 <= handler.steps_done[job.id] < 200
    done = q.get(job.id)
    assert done is not None and done.status == JobStatus.failed
    assert done.error is not None and done.error.startswith("JobTimedOut: ")


def test_progress_is_readable_while_running(engine: Engine) -> None:
    q = make_queue(engine)
    reached, release = threading.Event(), threading.Event()

    def on_step(j: GenerationJob, step: int) -> None:
        if step == 5:
            reached.set()
            assert release.wait(20)

    job = q.submit(brief_hash="prog", brief=BRIEF).job
    worker = fast_worker(q, StepHandler(steps=10, on_step=on_step))
    worker.start()
    try:
        assert reached.wait(20)
        seen = make_queue(engine).get(job.id)  # read from another connection
        assert seen is not None and seen.status == JobStatus.running
        assert (seen.progress_step, seen.progress_total) == (5, 10)
        assert seen.heartbeat_at is not None and worker.current_job_id == job.id
        release.set()
        wait_for(lambda: q.get(job.id).status == JobStatus.succeeded)  # type: ignore[union-attr]
    finally:
        release.set()
        assert worker.stop(timeout=10)


@pytest.mark.parametrize("graceful", [True, False])
def test_stop_leaves_no_job_half_done(engine: Engine, graceful: bool) -> None:
    """Graceful stop finishes the job in hand and claims nothing more; an immediate stop
    hands the job back to the queue at its next step, and another worker finishes it."""
    q = make_queue(engine)
    in_job = threading.Event()

    def on_step(j: GenerationJob, step: int) -> None:
        if step == 2:
            in_job.set()

    first = q.submit(brief_hash="first", brief=BRIEF, priority=1).job
    second = q.submit(brief_hash="second", brief=BRIEF).job
    handler = StepHandler(steps=10, step_s=0.02, on_step=on_step)
    worker = fast_worker(q, handler, worker_id="stopping")
    worker.start()
    assert in_job.wait(20)
    assert worker.stop(graceful=graceful, timeout=20)
    assert not worker.running
    got = q.get(first.id)
    assert got is not None
    assert q.get(second.id).status == JobStatus.queued  # type: ignore[union-attr]
    if graceful:
        assert got.status == JobStatus.succeeded and handler.steps_done[first.id] == 10
        return
    assert (got.status, got.worker_id, got.attempts) == (JobStatus.queued, None, 1)
    assert handler.steps_done[first.id] < 10 and handler.completed == []
    fresh = StepHandler(steps=10)
    assert fast_worker(q, fresh).run(until_idle=True) == 2
    done = q.get(first.id)
    assert done is not None and done.status == JobStatus.succeeded and done.attempts == 2


def test_zombie_worker_stops_and_never_completes(engine: Engine) -> None:
    """A worker whose lease was recovered (it looked dead) notices at its next step, stops,
    and writes nothing; the job's new holder completes it once."""
    q = make_queue(engine)
    job = q.submit(brief_hash="zombie", brief=BRIEF).job

    def on_step(j: GenerationJob, step: int) -> None:
        if step == 2:  # the worker looks dead to the others: its lease is recovered
            time.sleep(0.01)
            assert q.recover_stale(stale_after_s=0.0).requeued == [j.id]

    zombie = StepHandler(steps=5, on_step=on_step)
    # heartbeats far apart so the recovered lease is noticed by should_cancel, not a beat
    out = fast_worker(q, zombie, heartbeat_interval=10.0, stale_after=20.0).run_once()
    assert out is not None and out.outcome == "lost" and zombie.completed == []
    requeued = q.get(job.id)
    assert requeued is not None and requeued.status == JobStatus.queued
    fresh = StepHandler(steps=5)
    outs = drain(fast_worker(q, fresh), q, job.id)
    assert [o.outcome for o in outs] == ["succeeded"] and fresh.completed == [job.id]
    assert q.get(job.id).attempts == 2  # type: ignore[union-attr]


def test_killed_worker_process_job_completes_exactly_once(engine: Engine, tmp_path: Path) -> None:
    """SIGKILL a worker subprocess mid-job; ``recover_stale`` requeues the job; a new worker
    completes it; the handler's completion side effect is recorded exactly once."""
    q = make_queue(engine)
    job = q.submit(brief_hash="killme", brief=BRIEF).job
    other = q.submit(brief_hash="later", brief=BRIEF, priority=-1).job
    log = tmp_path / "handler.log"
    script = Path(__file__).with_name("jobs_helpers.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "work", url_of(engine), str(log), "20", "0.1"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: (q.get(job.id).progress_step or 0) >= 3 or proc.poll() is not None,  # type: ignore[union-attr]
            timeout=60,
            what="the subprocess to reach step 3",
        )
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()
    dead = q.get(job.id)
    assert dead is not None and dead.status == JobStatus.running and dead.attempts == 1
    assert dead.worker_id == f"sub-{proc.pid}"
    assert q.get(other.id).status == JobStatus.queued  # type: ignore[union-attr]

    # its heartbeat (every 0.1 s) stops; once it is older than 0.5 s the job is stale
    recovered: list[str] = []
    deadline = time.monotonic() + 30
    while not recovered and time.monotonic() < deadline:
        time.sleep(0.1)
        recovered = q.recover_stale(stale_after_s=0.5).requeued
    assert recovered == [job.id]

    handler = StepHandler(steps=20, log=log)
    worker = fast_worker(q, handler, worker_id="rescuer")
    assert worker.run(until_idle=True) == 2
    done = q.get(job.id)
    assert done is not None and done.status == JobStatus.succeeded and done.attempts == 2
    assert done.worker_id == "rescuer" and done.result_key == "result-killme"
    lines = log.read_text().split("\n")
    assert lines.count(f"start {job.id} 1") == 1 and lines.count(f"start {job.id} 2") == 1
    assert [ln for ln in lines if ln.startswith(f"done {job.id}")] == [f"done {job.id} 2"]
    assert q.recover_stale(stale_after_s=0.5).total == 0


def test_worker_validates_intervals(engine: Engine) -> None:
    q = make_queue(engine)
    with pytest.raises(ValueError, match="stale_after"):
        Worker(q, StepHandler(), heartbeat_interval=5.0, stale_after=5.0)
    with pytest.raises(ValueError, match="poll_interval"):
        Worker(q, StepHandler(), poll_interval=-1)


def test_cli_worker_once_drains_the_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``tailorshot worker --once`` builds its handler through api.composition (a fake one
    here), processes every due job and exits."""
    import logging

    from typer.testing import CliRunner

    import api.composition
    from api.cli import app
    from data.db import init_db, make_engine

    monkeypatch.setenv("TAILORSHOT_HOME", str(tmp_path))
    monkeypatch.delenv("TAILORSHOT_DATABASE_URL", raising=False)
    handler = StepHandler(steps=2)
    monkeypatch.setattr(api.composition, "build_job_handler", lambda settings: handler)
    eng = make_engine(f"sqlite:///{(tmp_path / 'tailorshot.db').resolve()}")
    init_db(eng)
    q = make_queue(eng)
    ids = [q.submit(brief_hash=f"cli{i}", brief=BRIEF).job.id for i in range(3)]
    gen_logger = logging.getLogger("genservice")
    saved = (list(gen_logger.handlers), gen_logger.propagate, gen_logger.level)
    try:
        result = CliRunner().invoke(app, ["worker", "--once", "--poll-interval", "0.01"])
    finally:
        gen_logger.handlers[:], gen_logger.propagate = saved[0], saved[1]
        gen_logger.setLevel(saved[2])
    assert result.exit_code == 0, result.output
    assert '"processed": 3' in result.output
    assert sorted(handler.completed) == sorted(ids)
    assert q.counts()["succeeded"] == 3
    eng.dispose()


def test_worker_maintenance_recovers_a_dead_workers_job(engine: Engine) -> None:
    """A running worker periodically requeues stale jobs (here one claimed by a worker that
    vanished) and then runs them itself."""
    q = make_queue(engine, backoff_base_s=0.0, backoff_max_s=0.0)
    job = q.submit(brief_hash="orphan", brief=BRIEF).job
    assert q.claim(worker_id="vanished") is not None
    time.sleep(0.3)  # the vanished worker's heartbeat is now older than stale_after
    handler = StepHandler(steps=2)
    worker = fast_worker(q, handler, stale_after=0.2, maintenance_interval=0.01)
    assert worker.run(until_idle=True) == 1
    done = q.get(job.id)
    assert done is not None and done.status == JobStatus.succeeded and done.attempts == 2
    assert done.error is None  # success clears the "worker vanished lost" error
    assert handler.completed == [job.id]


@pytest.mark.parametrize("signals", [1, 2])
def test_cli_worker_sigterm_finishes_or_hands_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signals: int
) -> None:
    """``tailorshot worker`` (SQLite): one SIGTERM finishes the job in hand and exits; a
    second one hands the job back to the queue at its next step."""
    from data.db import init_db, make_engine

    eng = make_engine(f"sqlite:///{(tmp_path / 'tailorshot.db').resolve()}")
    init_db(eng)
    q = make_queue(eng)
    job = q.submit(brief_hash="sig", brief=BRIEF).job
    env = {**os.environ, "TAILORSHOT_HOME": str(tmp_path)}
    env.pop("TAILORSHOT_DATABASE_URL", None)
    log = tmp_path / "handler.log"
    script = Path(__file__).with_name("jobs_helpers.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "cli", "-", str(log), "40", "0.05"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: (q.get(job.id).progress_step or 0) >= 2 or proc.poll() is not None,  # type: ignore[union-attr]
            timeout=60,
            what="the worker to start the job",
        )
        for _ in range(signals):
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    done = q.get(job.id)
    assert done is not None
    if signals == 1:
        assert done.status == JobStatus.succeeded and done.progress_step == 40
        assert '"processed": 1' in out
    else:
        assert (done.status, done.worker_id) == (JobStatus.queued, None)
        assert 2 <= done.progress_step < 40
        assert f"done {job.id} 1" not in log.read_text()
    eng.dispose()


def test_deterministic_generation_errors_are_not_retried() -> None:
    from genservice.errors import FidelityError, GenerationError, SafetyViolation

    # The worker reads ``retryable`` off the exception: a flagged or unfaithful render of
    # the same brief would fail again, so it fails the job at once.
    assert SafetyViolation("x").retryable is False
    assert FidelityError("x").retryable is False
    assert getattr(GenerationError("x"), "retryable", True) is True
