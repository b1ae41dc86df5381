"""Token buckets (known answers with a fake clock; Redis when one answers), graceful
shutdown with a job in hand, and the ``keys`` CLI."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from apitest_helpers import build_env
from sqlmodel import Session, select
from typer.testing import CliRunner

from api.ratelimit import MemoryRateLimiter, RedisRateLimiter
from data.models import ApiKey, GenerationJob, JobStatus


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_known_answers() -> None:
    clock = Clock()
    rl = MemoryRateLimiter(clock=clock)
    # burst 3, 2 tokens/s: 3 pass, the 4th waits 0.5 s for one token.
    assert [rl.hit("a", rate=2.0, burst=3.0).allowed for _ in range(3)] == [True] * 3
    d = rl.hit("a", rate=2.0, burst=3.0)
    assert not d.allowed and d.retry_after_s == pytest.approx(0.5) and d.retry_after_header == "1"
    clock.t += 0.5
    assert rl.hit("a", rate=2.0, burst=3.0).allowed
    assert not rl.hit("a", rate=2.0, burst=3.0).allowed
    clock.t += 100.0  # refills to the burst, never beyond
    assert [rl.hit("a", rate=2.0, burst=3.0).allowed for _ in range(4)] == [True, True, True, False]
    assert rl.hit("b", rate=2.0, burst=3.0).allowed  # buckets are independent
    with pytest.raises(ValueError, match="rate"):
        rl.hit("a", rate=0.0, burst=3.0)
    with pytest.raises(ValueError, match="burst"):
        rl.hit("a", rate=1.0, burst=0.5)


def test_redis_token_bucket() -> None:
    rl = RedisRateLimiter("redis://127.0.0.1:6379/15", prefix=f"test:{time.time_ns()}:")
    if not rl.ping():
        pytest.skip("no Redis answers at 127.0.0.1:6379")
    assert [rl.hit("k", rate=0.5, burst=2.0).allowed for _ in range(3)] == [True, True, False]
    d = rl.hit("k", rate=0.5, burst=2.0)
    assert not d.allowed and 0 < d.retry_after_s <= 2.0


def test_redis_limiter_fails_open_when_down() -> None:
    rl = RedisRateLimiter("redis://127.0.0.1:1/0")
    assert rl.hit("k", rate=1.0, burst=1.0).allowed


def test_graceful_shutdown_hands_back_the_job_in_hand(tmp_path: Path) -> None:
    """A job still running when the shutdown wait ends is given back to the queue at its next
    step (status ``queued``), never left ``running`` and never half-written."""
    gen = None
    for env in build_env(tmp_path, mode="block", worker=True, shutdown_timeout_s=0.3):
        gen = env.generator
        env.client.get("/v1/hero", params={"user_id": "u1"}, headers=env.auth("storefront"))
        env.comps.hero.drain()
        assert gen.started.wait(5.0)
        engine = env.comps.engine
    assert gen is not None
    with Session(engine) as s:
        [job] = s.exec(select(GenerationJob)).all()
        assert job.status == JobStatus.queued and job.result_key is None


def test_graceful_shutdown_lets_a_short_job_finish(tmp_path: Path) -> None:
    for env in build_env(tmp_path, mode="block", worker=True, shutdown_timeout_s=30.0):
        env.client.get("/v1/hero", params={"user_id": "u1"}, headers=env.auth("storefront"))
        env.comps.hero.drain()
        assert env.generator.started.wait(5.0)
        threading.Timer(0.5, env.generator.release.set).start()
        engine = env.comps.engine
    with Session(engine) as s:
        [job] = s.exec(select(GenerationJob)).all()
        assert job.status == JobStatus.succeeded and job.result_key


def test_keys_cli_prints_key_once_and_stores_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.auth import hash_key
    from api.cli import app
    from api.cli.common import load_settings, open_engine

    monkeypatch.setenv("TAILORSHOT_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    r = runner.invoke(app, ["keys", "create", "--role", "analyst", "--name", "ana"])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[0]
    assert key.startswith("ts_")
    bad = runner.invoke(app, ["keys", "create", "--role", "wizard"])
    assert bad.exit_code == 2 and "role" in bad.output
    engine = open_engine(load_settings())
    with Session(engine) as s:
        [row] = s.exec(select(ApiKey)).all()
        assert row.key_hash == hash_key(key) and row.role.value == "analyst" and row.name == "ana"
    listed = runner.invoke(app, ["keys", "list"])
    assert "analyst" in listed.stdout and key not in listed.stdout
    assert runner.invoke(app, ["keys", "revoke", str(row.id)]).exit_code == 0
    with Session(engine) as s:
        assert s.get(ApiKey, row.id).revoked  # type: ignore[union-attr]
