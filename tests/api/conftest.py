"""Fixtures of the API tests (helpers live in ``apitest_helpers``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from apitest_helpers import Env, build_env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from build_env(tmp_path)
