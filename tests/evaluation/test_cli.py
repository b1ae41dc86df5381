"""``tailorshot evaluate obd | simulate | report``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app

runner = CliRunner()


def test_evaluate_obd_json(obd_path: Path) -> None:
    res = runner.invoke(
        app,
        [
            "evaluate",
            "obd",
            "--path",
            str(obd_path),
            "--campaign",
            "women",
            "--json",
            "--n-bootstrap",
            "50",
            "--n-folds",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["campaign"] == "women" and out["evaluated_policy"] == "random"
    assert out["logs_from"] == "bts" and out["truth"] == pytest.approx(0.0046)
    for name in ("ipw", "snipw", "dm", "dr"):
        assert set(out["estimates"][name]) == {"value", "ci_low", "ci_high", "relative_error"}


def test_evaluate_obd_missing_path(tmp_path: Path) -> None:
    res = runner.invoke(app, ["evaluate", "obd", "--path", str(tmp_path / "none"), "--json"])
    assert res.exit_code == 2
    assert "Open Bandit Dataset folder not found" in res.output


def test_evaluate_simulate_json() -> None:
    res = runner.invoke(
        app,
        [
            "evaluate",
            "simulate",
            "--json",
            "--n-users",
            "120",
            "--n-rounds",
            "3000",
            "--n-bootstrap",
            "50",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["arms"]) == {"personalized", "segment", "generic"}
    for arm in out["arms"].values():
        assert 0 < arm["truth"] < 1
        assert {"snipw", "dr"} <= set(arm["estimates"])


def test_evaluate_report_demo_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILORSHOT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TAILORSHOT_DATABASE_URL", raising=False)
    res = runner.invoke(
        app,
        [
            "evaluate",
            "report",
            "--out",
            str(tmp_path / "rep"),
            "--n-bootstrap",
            "50",
            "--demo-rounds",
            "2000",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "DEMO" in res.stdout
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["source"] == "demo-simulation"
    assert set(summary["truth"]) == {"personalized", "segment", "generic"}
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "DEMO DATA" in page and "(demo data)" in page
    assert page.count("data:image/png;base64,") == 4
