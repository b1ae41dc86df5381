"""``tailorshot batch`` command glue: JSON summary, option errors (no rendering here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from batch_world import build_world
from typer.testing import CliRunner

from api.cli import app


def test_personalize_without_profiles_plans_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _engine = build_world(tmp_path / "home", n_users=3)
    monkeypatch.setenv("TAILORSHOT_HOME", str(settings.home))
    r = CliRunner().invoke(
        app, ["batch", "personalize", "--executor", "local", "--active-since", "30d", "--json"]
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("{") :])
    # The shoppers are active but have no stored profile: nothing to personalize from.
    assert out["planned"] == 0 and out["extra"]["active_shoppers"] == 0
    assert "shoppers" not in out["extra"]  # shopper ids never leave the database
    ledger = (settings.home / "batch" / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == 1 and json.loads(ledger[0])["command"] == "personalize"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["variants", "--placements", "poster"], "--placements"),
        (["variants", "--products", "0"], "--products"),
        (["variants", "--segments", "x"], "--segments"),
        (["personalize", "--active-since", "soon"], "--active-since"),
        (["variants", "--executor", "spark"], "executor"),
    ],
)
def test_option_errors_name_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    build_world(tmp_path / "home", n_products=2, n_users=1)
    monkeypatch.setenv("TAILORSHOT_HOME", str(tmp_path / "home"))
    r = CliRunner().invoke(app, ["batch", *args])
    assert isinstance(r.exception, ValueError) and message in str(r.exception)
