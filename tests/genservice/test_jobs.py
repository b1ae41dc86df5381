"""JobQueue contract tests, on SQLite and PostgreSQL (skipped with a reason if absent)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import types
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent))

from jobs_helpers import (
    REPO,
    FakeClock,
    engine_fixture,  # noqa: F401  (the `engine` fixture)
    make_queue,
    pg_url_fixture,  # noqa: F401  (the `pg_url` fixture)
    url_of,
)

from data.models import JobStatus
from genservice.jobs import JobQueue

BRIEF = {"product": {"id": 1, "title": "Mug"}, "seed": 0}


def submit_n(queue: JobQueue, n: int, **kw: object) -> list[str]:
    return [queue.submit(brief_hash=f"h{i:04d}", brief=BRIEF, **kw).job.id for i in range(n)]  # type: ignore[arg-type]


def test_submit_is_idempotent_by_brief_hash(engine: Engine) -> None:
    q = make_queue(engine)
    a = q.submit(brief_hash="abc", brief=BRIEF)
    b = q.submit(brief_hash="abc", brief={"other": 1})
    c = q.submit(brief_hash="xyz", brief=BRIEF)
    assert a.created and not b.created and not b.requeued and c.created
    assert a.job.id == b.job.id != c.job.id
    assert b.job.brief == BRIEF  # the original job is untouched
    assert q.queue_depth() == 2
    # a succeeded job gives the same job and result
    job = q.claim(worker_id="w")
    assert job is not None
    assert q.complete(job.id, worker_id="w", result_key="img-1", attempt=job.attempts)
    again = q.submit(brief_hash=job.brief_hash, brief=BRIEF)
    assert not again.created and again.job.id == job.id
    assert again.job.status == JobStatus.succeeded and again.job.result_key == "img-1"


def test_concurrent_submissions_create_one_job(engine: Engine) -> None:
    q = make_queue(engine)
    barrier = threading.Barrier(8)
    outs = []
    lock = threading.Lock()

    def go() -> None:
        barrier.wait()
        out = q.submit(brief_hash="same", brief=BRIEF)
        with lock:
            outs.append(out)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(o.created for o in outs) == 1
    assert len({o.job.id for o in outs}) == 1
    assert q.counts()["queued"] == 1


def test_failed_or_cancelled_job_is_requeued_on_resubmit(engine: Engine) -> None:
    q = make_queue(engine)
    job = q.submit(brief_hash="f", brief=BRIEF, max_attempts=1).job
    claimed = q.claim(worker_id="w")
    assert claimed is not None and claimed.id == job.id
    failed = q.fail(job.id, "boom", retryable=True, worker_id="w", attempt=1)
    assert failed is not None and failed.status == JobStatus.failed and failed.error == "boom"
    out = q.submit(brief_hash="f", brief=BRIEF, max_attempts=2)
    assert out.requeued and not out.created and out.job.id == job.id
    assert (out.job.status, out.job.attempts, out.job.error) == (JobStatus.queued, 0, None)
    assert out.job.max_attempts == 2

    c = q.submit(brief_hash="c", brief=BRIEF).job
    assert q.cancel(c.id).status == JobStatus.cancelled  # type: ignore[union-attr]
    again = q.submit(brief_hash="c", brief=BRIEF)
    assert again.requeued and again.job.status == JobStatus.queued
    assert not again.job.cancel_requested


def test_submit_validates_arguments(engine: Engine) -> None:
    q = make_queue(engine)
    with pytest.raises(ValueError, match="brief_hash"):
        q.submit(brief_hash="", brief=BRIEF)
    with pytest.raises(ValueError, match="brief_hash"):
        q.submit(brief_hash="x" * 65, brief=BRIEF)
    with pytest.raises(ValueError, match="max_attempts"):
        q.submit(brief_hash="a", brief=BRIEF, max_attempts=0)
    with pytest.raises(ValueError, match="timeout_s"):
        q.submit(brief_hash="a", brief=BRIEF, timeout_s=0)
    with pytest.raises(ValueError, match="JSON"):
        q.submit(brief_hash="a", brief={"x": object()})
    with pytest.raises(ValueError, match="jitter"):
        JobQueue(engine, jitter=2.0)
    assert q.counts()["queued"] == 0  # nothing half-written


def test_claim_order_priority_then_due_time(engine: Engine) -> None:
    clock = FakeClock()
    q = make_queue(engine, clock=clock)
    low = q.submit(brief_hash="low", brief=BRIEF, priority=0).job
    clock.advance(1)
    high = q.submit(brief_hash="high", brief=BRIEF, priority=5).job
    clock.advance(1)
    low2 = q.submit(brief_hash="low2", brief=BRIEF, priority=0).job
    got = [q.claim(worker_id="w") for _ in range(4)]
    assert [j.id if j else None for j in got] == [high.id, low.id, low2.id, None]
    assert all(j.status == JobStatus.running and j.attempts == 1 for j in got if j)
    assert got[0] is not None and got[0].worker_id == "w" and got[0].heartbeat_at == clock.t


def test_claim_skips_jobs_not_due_yet(engine: Engine) -> None:
    clock = FakeClock()
    q = make_queue(engine, clock=clock, backoff_base_s=10.0, backoff_max_s=10.0, jitter=0.0)
    job = q.submit(brief_hash="r", brief=BRIEF).job
    assert q.claim(worker_id="w") is not None
    retry = q.fail(job.id, "transient", worker_id="w", attempt=1)
    assert retry is not None and retry.status == JobStatus.queued
    assert retry.next_attempt_at == clock.t + timedelta(seconds=10)
    clock.advance(9.9)
    assert q.claim(worker_id="w") is None
    clock.advance(0.2)
    again = q.claim(worker_id="w")
    assert again is not None and again.id == job.id and again.attempts == 2


@pytest.mark.parametrize("legacy_sqlite", [False, True])
def test_threads_never_claim_the_same_job(
    engine: Engine, legacy_sqlite: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if legacy_sqlite:  # the per-candidate conditional UPDATE used before SQLite 3.35
        if engine.dialect.name != "sqlite":
            pytest.skip("the legacy claim path is SQLite's")
        import genservice.jobs

        monkeypatch.setattr(
            genservice.jobs, "sqlite3", types.SimpleNamespace(sqlite_version_info=(3, 31, 1))
        )
    q = make_queue(engine)
    ids = submit_n(q, 40)
    claimed: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def claimer(k: int) -> None:
        barrier.wait()
        while (job := q.claim(worker_id=f"t{k}")) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)  # every job once, none twice
    assert q.counts()["running"] == 40 and q.queue_depth() == 0


def test_processes_never_claim_the_same_job(engine: Engine, tmp_path: Path) -> None:
    """Several OS processes claim concurrently with ``FOR UPDATE SKIP LOCKED``: the union of
    their claims is every job, exactly once. (SQLite's conditional UPDATE is covered by the
    thread test and the worker-subprocess kill test.)"""
    if engine.dialect.name != "postgresql":
        pytest.skip("multi-process claiming is the PostgreSQL (SKIP LOCKED) path")
    q = make_queue(engine)
    ids = submit_n(q, 45)
    start = tmp_path / "start"
    script = Path(__file__).with_name("jobs_helpers.py")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), "claim", url_of(engine), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(3)
    ]
    # release all claimers at once, after each has imported and connected
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.02)
    start.touch()
    claimed: list[str] = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        claimed.extend(json.loads(out.strip().splitlines()[-1]))
    assert len(claimed) == len(set(claimed)) == 45
    assert sorted(claimed) == sorted(ids)


def test_complete_is_fenced_by_lease(engine: Engine) -> None:
    clock = FakeClock()
    q = make_queue(engine, clock=clock)
    job = q.submit(brief_hash="fence", brief=BRIEF).job
    a = q.claim(worker_id="A")
    assert a is not None and a.attempts == 1
    clock.advance(60)  # A stops heartbeating (dead or paused)
    rec = q.recover_stale(stale_after_s=30)
    assert rec.requeued == [job.id] and rec.failed == [] and rec.total == 1
    clock.advance(1)
    b = q.claim(worker_id="B")
    assert b is not None and b.id == job.id and b.attempts == 2
    # the old lease can write nothing any more
    assert not q.heartbeat(job.id, worker_id="A", attempt=1).owned
    assert not q.report_progress(job.id, 3, 5, worker_id="A", attempt=1)
    assert not q.complete(job.id, worker_id="A", result_key="stale", attempt=1)
    assert q.fail(job.id, "late", worker_id="A", attempt=1) is None
    assert q.complete(job.id, worker_id="B", result_key="fresh", attempt=2, timings={"s": 1})
    assert not q.complete(job.id, worker_id="B", result_key="twice", attempt=2)
    done = q.get(job.id)
    assert done is not None
    assert (done.status, done.result_key, done.timings) == (JobStatus.succeeded, "fresh", {"s": 1})


def test_fail_retries_with_exponential_backoff_then_fails(engine: Engine) -> None:
    clock = FakeClock()
    q = make_queue(engine, clock=clock, backoff_base_s=1.0, backoff_max_s=3.0, jitter=0.0)
    job = q.submit(brief_hash="retry", brief=BRIEF, max_attempts=4).job
    delays = []
    for attempt in range(1, 5):
        claimed = q.claim(worker_id="w")
        assert claimed is not None and claimed.attempts == attempt
        after = q.fail(job.id, f"err {attempt}", worker_id="w", attempt=attempt)
        assert after is not None
        if attempt < 4:
            assert after.status == JobStatus.queued and after.worker_id is None
            delays.append((after.next_attempt_at - clock.t).total_seconds())
            clock.advance(delays[-1])
        else:
            assert after.status == JobStatus.failed and after.error == "err 4"
            assert after.finished_at == clock.t
    assert delays == [1.0, 2.0, 3.0]  # 1, 2, 4 capped at 3
    assert q.claim(worker_id="w") is None


def test_backoff_jitter_is_bounded_and_seeded(engine: Engine) -> None:
    a = make_queue(engine, backoff_base_s=2.0, backoff_max_s=100.0, jitter=0.5, seed=7)
    b = make_queue(engine, backoff_base_s=2.0, backoff_max_s=100.0, jitter=0.5, seed=7)
    da = [a.backoff_s(n) for n in range(1, 6)]
    assert da == [b.backoff_s(n) for n in range(1, 6)]
    for n, d in enumerate(da, start=1):
        assert 0.5 * 2.0 * 2 ** (n - 1) <= d <= 2.0 * 2 ** (n - 1)


def test_non_retryable_failure_fails_at_once(engine: Engine) -> None:
    q = make_queue(engine)
    job = q.submit(brief_hash="nr", brief=BRIEF, max_attempts=5).job
    q.claim(worker_id="w")
    after = q.fail(job.id, "bad brief", retryable=False, worker_id="w")
    assert after is not None and after.status == JobStatus.failed and after.attempts == 1


def test_cancel_queued_running_and_finished(engine: Engine) -> None:
    q = make_queue(engine)
    queued = q.submit(brief_hash="q", brief=BRIEF, priority=-1).job
    running = q.submit(brief_hash="r", brief=BRIEF, priority=1).job
    claimed = q.claim(worker_id="w")
    assert claimed is not None and claimed.id == running.id
    c1 = q.cancel(queued.id)
    assert c1 is not None and c1.status == JobStatus.cancelled and c1.finished_at is not None
    c2 = q.cancel(running.id)
    assert c2 is not None and c2.status == JobStatus.running and c2.cancel_requested
    assert q.lease_status(running.id, worker_id="w", attempt=1).cancel_requested
    assert q.heartbeat(running.id, worker_id="w", attempt=1).cancel_requested
    assert q.claim(worker_id="w") is None  # the cancelled queued job is never claimed
    assert q.mark_cancelled(running.id, worker_id="w", attempt=1)
    assert q.get(running.id).status == JobStatus.cancelled  # type: ignore[union-attr]
    assert q.cancel("no-such-job") is None
    done = q.submit(brief_hash="d", brief=BRIEF).job
    q.claim(worker_id="w")
    q.complete(done.id, worker_id="w", result_key="k")
    assert q.cancel(done.id).status == JobStatus.succeeded  # type: ignore[union-attr]


def test_recover_stale_requeues_fails_or_cancels(engine: Engine) -> None:
    clock = FakeClock()
    q = make_queue(engine, clock=clock)
    lost = q.submit(brief_hash="lost", brief=BRIEF, max_attempts=2).job
    last = q.submit(brief_hash="last", brief=BRIEF, max_attempts=1).job
    cancelled = q.submit(brief_hash="cancel", brief=BRIEF).job
    alive = q.submit(brief_hash="alive", brief=BRIEF).job
    for w in ("w1", "w2", "w3", "w4"):
        assert q.claim(worker_id=w) is not None
    q.cancel(cancelled.id)
    clock.advance(20)
    assert q.heartbeat(alive.id, worker_id=q.get(alive.id).worker_id).owned  # type: ignore[union-attr,arg-type]
    clock.advance(15)
    out = q.recover_stale(stale_after_s=30)
    assert out.requeued == [lost.id]
    assert out.failed == [last.id]
    assert out.cancelled == [cancelled.id]
    assert q.get(alive.id).status == JobStatus.running  # type: ignore[union-attr]
    requeued = q.get(lost.id)
    assert requeued is not None and requeued.attempts == 1 and "no heartbeat" in requeued.error  # type: ignore[operator]
    assert "lost" in q.get(last.id).error  # type: ignore[union-attr,operator]
    assert q.recover_stale(stale_after_s=30).total == 0  # idempotent


def test_timeout_expires_running_jobs(engine: Engine) -> None:
    clock = FakeClock()
    q = make_queue(engine, clock=clock)
    short = q.submit(brief_hash="short", brief=BRIEF, timeout_s=5, max_attempts=2).job
    long = q.submit(brief_hash="long", brief=BRIEF, timeout_s=500).job
    q.claim(worker_id="a")
    q.claim(worker_id="b")
    clock.advance(6)
    out = q.maintain(stale_after_s=3600)
    assert out.requeued == [short.id] and out.failed == []
    assert "timed out after 5 s" in (q.get(short.id).error or "")  # type: ignore[union-attr]
    assert q.get(long.id).status == JobStatus.running  # type: ignore[union-attr]
    clock.advance(1)
    again = q.claim(worker_id="c")
    assert again is not None and again.id == short.id and again.attempts == 2
    clock.advance(6)
    assert q.expire_timeouts().failed == [short.id]
    assert q.get(short.id).status == JobStatus.failed  # type: ignore[union-attr]


def test_progress_is_readable_and_validated(engine: Engine) -> None:
    q = make_queue(engine)
    job = q.submit(brief_hash="p", brief=BRIEF).job
    q.claim(worker_id="w")
    assert q.report_progress(job.id, 3, 10, worker_id="w", attempt=1)
    other = make_queue(engine)  # another reader, e.g. the API process
    seen = other.get(job.id)
    assert seen is not None and (seen.progress_step, seen.progress_total) == (3, 10)
    with pytest.raises(ValueError, match="step"):
        q.report_progress(job.id, 11, 10)
    with pytest.raises(ValueError, match="step"):
        q.report_progress(job.id, -1, 10)


def test_list_counts_and_depth(engine: Engine) -> None:
    clock = FakeClock()
    q = make_queue(engine, clock=clock)
    ids = []
    for i in range(5):
        ids.append(q.submit(brief_hash=f"l{i}", brief=BRIEF).job.id)
        clock.advance(1)
    q.claim(worker_id="w")
    assert q.queue_depth() == 4
    assert q.counts() == {
        "queued": 4,
        "running": 1,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert [j.id for j in q.list()] == ids[::-1]
    assert [j.id for j in q.list(status="running")] == [ids[0]]
    assert [j.id for j in q.list(limit=2, offset=1)] == ids[::-1][1:3]
    with pytest.raises(ValueError, match="limit"):
        q.list(limit=0)
