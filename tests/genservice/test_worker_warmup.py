"""``tailorshot worker`` loads its generator before the first claim (the backend warms up its
configured sizes while loading), once per process, and jobs reuse that generator."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner


class _CountingGenerator:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def generate(self, brief: Any, **_kw: Any) -> Any:
        self.log.append("generate")
        raise AssertionError("no job is queued in this test")


def _run_worker_once(monkeypatch: pytest.MonkeyPatch, home: Path) -> tuple[Any, list[str]]:
    import api.composition
    from api.cli import app

    monkeypatch.setenv("TAILORSHOT_HOME", str(home))
    monkeypatch.delenv("TAILORSHOT_DATABASE_URL", raising=False)
    log: list[str] = []

    def fake_load(settings: Any) -> _CountingGenerator:
        log.append("load")
        return _CountingGenerator(log)

    monkeypatch.setattr(api.composition, "load_generator", fake_load)
    gen_logger = logging.getLogger("genservice")
    saved = (list(gen_logger.handlers), gen_logger.propagate, gen_logger.level)
    try:
        result = CliRunner().invoke(app, ["worker", "--once", "--poll-interval", "0.01"])
    finally:
        gen_logger.handlers[:], gen_logger.propagate = saved[0], saved[1]
        gen_logger.setLevel(saved[2])
    return result, log


def test_worker_loads_the_generator_before_any_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an empty queue the old lazy path never loaded the model; now it loads exactly
    once, before claiming (so the first shopper's job pays no load or compile time)."""
    result, log = _run_worker_once(monkeypatch, tmp_path)
    assert result.exit_code == 0, result.output
    assert '"processed": 0' in result.output
    assert log == ["load"]


def test_handler_warmup_is_idempotent_and_shared_with_jobs() -> None:
    from api.composition import GeneratorJobHandler

    built: list[object] = []

    def factory() -> object:
        built.append(object())
        return built[-1]

    handler = GeneratorJobHandler(factory)
    first = handler.warmup()
    assert handler.warmup() is first
    assert built == [first]
