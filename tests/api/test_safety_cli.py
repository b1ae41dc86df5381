"""``tailorshot evaluate safety --json``: the heuristic's rates with the keys the issue names;
the heroes come from a stand-in source here (rendering 500 demo heroes is a CPU-heavy job)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner


def test_evaluate_safety_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import api.cli.safety as cli_safety
    from api.cli import app

    def fake_heroes(
        settings: Any,
        engine: Any,
        *,
        n: int,
        seed: int,
        progress: bool,
        render: bool,
        scene_upscale: str = "model",
    ) -> Iterator:
        # 9 product-on-backdrop heroes and one skin-dominant image among them (a false positive);
        # none is cached, so --no-render finds none. The Lanczos variant of the first hero has
        # a skin-coloured product twice as large (its score changes, its decision does not).
        if not render:
            return
        for i in range(n - 1):
            img = Image.new("RGB", (120, 60), (40 + i, 90, 160))
            right = 105 if (scene_upscale == "lanczos" and i == 0) else 75
            img.paste((200, 160, 120), (45, 10, right, 50))
            yield f"h{i}", img
        yield "skin", Image.new("RGB", (120, 60), (224, 172, 140))

    monkeypatch.setattr(cli_safety, "demo_heroes", fake_heroes)
    monkeypatch.setenv("TAILORSHOT_HOME", str(tmp_path / "home"))
    out = CliRunner().invoke(app, ["evaluate", "safety", "--n", "10", "--n-positives", "16",
                                   "--json"])  # fmt: skip
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["n"] == 10 and result["n_requested"] == 10 and result["n_positives"] == 16
    assert result["false_positive_rate"] == 0.1 and result["true_positive_rate"] == 1.0
    assert result["false_positives"] == 1 and result["hero_score_max"] == 1.0
    assert result["n_catalog"] == 0 and result["baseline_true_positive_rate"] < 1.0
    assert result["scene_upscale"] == "model" and "agreement_with_model" not in result
    out = CliRunner().invoke(app, ["evaluate", "safety", "--n", "10", "--n-positives", "16",
                                   "--scene-upscale", "lanczos", "--pair-with-model", "10",
                                   "--scenes", "0", "--json"])  # fmt: skip
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    agreement = result["agreement_with_model"]
    assert result["scene_upscale"] == "lanczos" and result["false_positives"] == 1
    assert agreement["n_pairs"] == 10 and agreement["same_decision"] == 10
    assert agreement["max_abs_score_difference"] > 0
    for args in (["--scene-upscale", "bicubic"], ["--pair-with-model", "11"]):
        bad = CliRunner().invoke(app, ["evaluate", "safety", "--n", "10", *args])
        assert bad.exit_code == 2 and args[0] in bad.output
    bad = CliRunner().invoke(app, ["evaluate", "safety", "--n", "0"])
    assert bad.exit_code == 2 and "--n" in bad.output
    none = CliRunner().invoke(app, ["evaluate", "safety", "--n", "10", "--no-render", "--json"])
    assert none.exit_code == 2 and "no hero to check" in none.output
    # A folder of heroes (any depth): two plain backdrops and one skin-dominant image.
    folder = tmp_path / "heroes" / "ab"
    folder.mkdir(parents=True)
    for i, colour in enumerate([(40, 90, 160), (20, 20, 20), (224, 172, 140)]):
        Image.new("RGB", (64, 32), colour).save(folder / f"h{i}.png")
    out = CliRunner().invoke(app, ["evaluate", "safety", "--heroes-dir", str(tmp_path / "heroes"),
                                   "--n-positives", "8", "--scenes", "0", "--json"])  # fmt: skip
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["n"] == 3 and result["false_positives"] == 1
