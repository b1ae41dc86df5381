"""Fixtures of the evaluation tests: where the Open Bandit Dataset lives."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ../shared/data/obd relative to the repository root.
OBD_PATH = Path(__file__).resolve().parents[3] / "shared" / "data" / "obd"


@pytest.fixture(scope="session")
def obd_path() -> Path:
    """The Open Bandit Dataset folder; skips (visibly) when it is missing."""
    if not (OBD_PATH / "bts" / "men" / "men.csv").is_file():
        pytest.skip(f"Open Bandit Dataset not found at {OBD_PATH} (expected bts/ and random/)")
    return OBD_PATH
