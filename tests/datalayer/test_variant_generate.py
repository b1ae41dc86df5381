"""``tailorshot generate --product VARIANT_SKU`` after a Shopify-preset import: the brief names
the variant's own photo and options. The generator is replaced by a recorder here (diffusion
and composition are covered by tests/genservice); what is checked is the sku resolution."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from genservice.brief import CreativeBrief, file_sha256

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "shopify_products.csv"
RED = (200, 30, 40)
BLUE = (30, 90, 200)


@dataclass
class _Output:
    image_key: str
    brief_hash: str
    cached: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=lambda: {"total_s": 0.0})


class _Store:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def get(self, key: str) -> bytes:
        return self.blobs[key]


class _RecordingGenerator:
    """Stands in for ``HeroGenerator``: the "hero" is the product photo the brief names."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.store = _Store()
        self.briefs: list[CreativeBrief] = []

    def generate(self, brief: CreativeBrief, *, progress: Any = None) -> _Output:
        self.briefs.append(brief)
        path = Path(brief.product.image)
        data = (path if path.is_absolute() else self.home / path).read_bytes()
        key = f"k{len(self.briefs)}"
        self.store.blobs[key] = data
        return _Output(image_key=key, brief_hash=f"h{len(self.briefs)}")


def _photo(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (64, 64), colour)


def test_generate_with_a_variant_sku_uses_the_variant_photo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.cli import app
    from genservice.generator import HeroGenerator

    export = tmp_path / "export.csv"
    shutil.copy(FIXTURE, export)
    (tmp_path / "images").mkdir()
    _photo(RED).save(tmp_path / "images" / "tee-front.png")
    _photo(BLUE).save(tmp_path / "images" / "tee-blue.png")
    home = tmp_path / "home"
    recorder = _RecordingGenerator(home)
    monkeypatch.setattr(
        HeroGenerator, "from_config", classmethod(lambda cls, config, *, home: recorder)
    )
    env = {"TAILORSHOT_HOME": str(home), "TAILORSHOT_DATABASE_URL": ""}
    runner = CliRunner()
    res = runner.invoke(app, ["import", "catalog", str(export), "--preset", "shopify"], env=env)
    assert res.exit_code == 0, res.output

    colours = {}
    for sku in ("TEE-BLU-S", "TEE-RED-M", "classic-tee"):
        out = tmp_path / f"{sku}.png"
        res = runner.invoke(
            app, ["generate", "--product", sku, "--out", str(out), "--json"], env=env
        )
        assert res.exit_code == 0, res.output
        assert json.loads(res.output[res.output.index("{") :])["out"] == str(out)
        pixels = np.asarray(Image.open(io.BytesIO(out.read_bytes())).convert("RGB"))
        colours[sku] = tuple(int(c) for c in pixels.reshape(-1, 3).mean(axis=0).round())
    blue_brief, red_brief, product_brief = recorder.briefs
    blue_path = str(tmp_path / "images" / "tee-blue.png")
    front_path = str(tmp_path / "images" / "tee-front.png")
    assert blue_brief.product.image == blue_path
    assert blue_brief.product.title == "Classic Tee (Blue / S)"
    assert dict(blue_brief.content_hashes)[blue_path] == file_sha256(blue_path)
    # A variant without its own photo shows the product's; all three are one product.
    assert red_brief.product.image == product_brief.product.image == front_path
    assert red_brief.product.title == "Classic Tee (Red / M)"
    assert product_brief.product.title == "Classic Tee"
    assert blue_brief.product.id == red_brief.product.id == product_brief.product.id
    assert blue_brief.product.category == "shirts"
    assert colours == {"TEE-BLU-S": BLUE, "TEE-RED-M": RED, "classic-tee": RED}

    res = runner.invoke(app, ["generate", "--product", "CAP-2", "--out", "x.png"], env=env)
    assert res.exit_code == 2 and "no product with sku 'CAP-2'" in res.output
