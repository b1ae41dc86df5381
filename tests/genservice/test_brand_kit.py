"""The brand kit on heroes: the logo's pixels land where placed, the call to action and the
price are drawn in the kit's colours (sampled), the product stays bit-exact; kits from JSON
through ``tailorshot brand-kit set``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gen_fixtures import product_image
from PIL import Image
from typer.testing import CliRunner

from api.cli import app
from genservice.brandkit import (
    BrandKit,
    brand_id,
    brand_kit_for,
    draw_brand,
    kit_colour_pixels,
    load_brand,
    parse_colour,
    read_brand_kit,
)
from genservice.brief import PLACEMENTS, CreativeBrief, ProductRef
from genservice.compose import check_fidelity, compose_hero, cut_out, place_cutout, plan_layout

KIT = {
    "name": "acme",
    "headline_colour": "#102030",
    "panel_colour": "#ffffffe0",
    "price_colour": "#0a7a2f",
    "accent_colour": "#8a1538",
    "cta_text_colour": "#ffe600",
    "cta": "Shop now",
    "currency": "€",
    "logo": "logo.png",
    "logo_position": "top-left",
    "logo_height_frac": 0.12,
}


PRODUCT = ProductRef(id="1", title="Mug", image="catalog/m.png")


def logo_image() -> Image.Image:
    """An opaque 3-colour logo (stripes), distinct from everything else in the test scene."""
    arr = np.zeros((40, 100, 4), np.uint8)
    arr[..., 3] = 255
    arr[:, :34, :3] = (230, 40, 200)
    arr[:, 34:67, :3] = (20, 200, 220)
    arr[:, 67:, :3] = (250, 140, 10)
    return Image.fromarray(arr, "RGBA")


@pytest.fixture()
def kit_file(tmp_path: Path) -> Path:
    folder = tmp_path / "kit"
    folder.mkdir()
    logo_image().save(folder / "logo.png")
    (folder / "kit.json").write_text(json.dumps(KIT))
    return folder / "kit.json"


def scene() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(60, 190, (628, 1200, 3), dtype=np.uint8))


def test_kit_on_a_hero_logo_cta_price_and_product_exact(kit_file: Path) -> None:
    brand = load_brand(read_brand_kit(kit_file), home=kit_file.parent)
    assert brand.font_path is not None and brand.font_path.endswith(".ttf")  # DejaVu by default
    placement = PLACEMENTS["banner"]
    cut = cut_out(product_image(128))
    lay = plan_layout(placement, cut.size, headline=True)
    placed = place_cutout(cut, lay.product_box)
    plain = compose_hero(scene(), placed, placement, headline="Autumn mugs", text_box=lay.text_box)
    hero = compose_hero(
        scene(), placed, placement, headline="Autumn mugs", text_box=lay.text_box,
        brand=brand, price=24.5,
    )  # fmt: skip
    # The product: bit-exact, and identical to the hero without a kit.
    assert check_fidelity(hero, placed) > 1000
    x, y, w, h = placed.box
    got = np.asarray(hero)[y : y + h, x : x + w][placed.mask]
    np.testing.assert_array_equal(got, np.asarray(plain)[y : y + h, x : x + w][placed.mask])

    # Where each element went (the same drawing on a copy of the scene).
    where = draw_brand(
        scene(), brand, headline="Autumn mugs", price=24.5, text_box=lay.text_box,
        product_box=placed.box,
    )  # fmt: skip
    assert where.logo_box and where.cta_box and where.price_box and where.headline_box
    # The logo: its (resized) pixels exactly, top-left inside the margin, height 12 % of H.
    lx, ly, lw, lh = where.logo_box
    assert lh == round(628 * 0.12) and lx < 60 and ly < 60
    want = np.asarray(logo_image().resize((lw, lh), Image.Resampling.LANCZOS).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(hero)[ly : ly + lh, lx : lx + lw], want)
    # The headline block moves clear of the logo (they share the top-left corner).
    hx, hy, _hw, _hh = where.headline_box
    assert hy >= ly + lh or hx >= lx + lw
    # The CTA: text in the kit's text colour on the accent fill (sampled in its box).
    assert kit_colour_pixels(hero, where.cta_box, KIT["cta_text_colour"]) >= 40
    assert kit_colour_pixels(hero, where.cta_box, KIT["accent_colour"]) >= 0.3 * (
        where.cta_box[2] * where.cta_box[3]
    )
    assert kit_colour_pixels(plain, where.cta_box, KIT["cta_text_colour"], tol=8) == 0
    # The price and the headline in their colours.
    assert kit_colour_pixels(hero, where.price_box, KIT["price_colour"]) >= 30
    assert kit_colour_pixels(hero, where.headline_box, KIT["headline_colour"]) >= 30
    assert brand.kit.price_text(24.5) == "€24.50"


def test_kit_without_headline_goes_away_from_the_product(kit_file: Path) -> None:
    kit = read_brand_kit(kit_file).model_copy(update={"logo": None, "show_price": False})
    brand = load_brand(kit, home=kit_file.parent)
    img = Image.new("RGB", (1080, 1080), (120, 120, 120))
    where = draw_brand(
        img, brand, headline=None, price=9.0, text_box=None, product_box=(600, 300, 400, 600)
    )
    assert where.price_box is None and where.logo_box is None and where.cta_box is not None
    assert where.cta_box[0] < 540  # product on the right: the block on the left
    assert kit_colour_pixels(img, where.cta_box, KIT["cta_text_colour"]) >= 40


def test_kit_validation_and_lookup(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="colour"):
        BrandKit(accent_colour="not-a-colour")
    with pytest.raises(ValueError, match="price_format"):
        BrandKit(price_format="{cost}")
    with pytest.raises(ValueError, match="extra"):
        BrandKit.model_validate({"colour": "#fff"})
    assert parse_colour("#ff000080") == (255, 0, 0, 128)
    assert BrandKit(show_price=False).price_text(3.0) is None
    assert brand_kit_for(None, None, home=tmp_path) is None  # no kit: plain headlines
    with pytest.raises(ValueError, match="logo"):
        load_brand(BrandKit(logo="missing.png"), home=tmp_path)
    with pytest.raises(ValueError, match="font"):
        load_brand(BrandKit(font="missing.ttf"), home=tmp_path)
    setting = BrandKit(name="from-settings")
    assert brand_kit_for(setting, None, home=tmp_path) is setting


def test_brand_kit_cli_installs_a_self_contained_kit(kit_file: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"TAILORSHOT_HOME": str(home)}
    runner = CliRunner()
    res = runner.invoke(app, ["brand-kit", "set", "--file", str(kit_file)], env=env)
    assert res.exit_code == 0, res.output
    stored = json.loads((home / "brand_kit.json").read_text())
    assert stored["logo"] == "brand/logo.png" and (home / "brand" / "logo.png").is_file()
    kit = brand_kit_for(None, None, home=home)
    assert kit is not None and kit.name == "acme"
    assert load_brand(kit, home=home).logo is not None
    res = runner.invoke(app, ["brand-kit", "show"], env=env)
    assert res.exit_code == 0 and json.loads(res.output)["cta"] == "Shop now"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"accent_colour": "nope"}))
    res = runner.invoke(app, ["brand-kit", "set", "--file", str(bad)], env=env)
    assert res.exit_code == 2 and "colour" in res.output
    # The kit's fingerprint: briefs carry it, so a changed kit or logo changes the brief hash.
    first = brand_id(None, None, home=home)
    assert first.startswith("acme:")
    logo_image().rotate(90, expand=True).save(home / "brand" / "logo.png")
    second = brand_id(None, None, home=home)
    assert second != first
    assert (
        CreativeBrief(product=PRODUCT, brand_id=first).brief_hash
        != CreativeBrief(product=PRODUCT, brand_id=second).brief_hash
    )
    assert runner.invoke(app, ["brand-kit", "clear"], env=env).exit_code == 0
    assert brand_kit_for(None, None, home=home) is None
    assert brand_id(None, None, home=home) == ""


def test_price_joins_the_brief_only_when_set() -> None:
    base = ProductRef(id="1", title="Mug", image="catalog/m.png")
    priced = ProductRef(id="1", title="Mug", image="catalog/m.png", price=24.5)
    a, b = CreativeBrief(product=base), CreativeBrief(product=priced)
    # Unpriced, kit-less briefs keep their hashes.
    assert "price" not in a.to_dict()["product"] and "brand_id" not in a.to_dict()
    assert a.brief_hash != b.brief_hash
    assert CreativeBrief.from_dict(b.to_dict()) == b
    c = CreativeBrief(product=priced, brand_id="acme:0123")
    assert CreativeBrief.from_dict(c.to_dict()) == c and c.brief_hash != b.brief_hash
    with pytest.raises(ValueError, match="price"):
        ProductRef(id="1", title="Mug", image="x.png", price=float("nan"))


def test_generator_draws_the_kit_and_keeps_the_product(tmp_path: Path) -> None:
    """End to end through ``HeroGenerator`` (tiny model, classic path): the settings' kit is
    drawn (logo pixels at the corner, CTA in the kit's colour), the product passes the
    bit-exact fidelity check, and a brief naming another kit is refused."""
    from gen_fixtures import tiny_model_dir

    from genservice.backends.diffusers_backend import DiffusersBackend
    from genservice.cache import ResultCache
    from genservice.config import GenerationConfig
    from genservice.errors import GenerationError
    from genservice.generator import HeroGenerator
    from genservice.metadata import parse_box
    from genservice.safety import SkinToneHeuristicChecker
    from genservice.storage import LocalImageStore

    (tmp_path / "catalog").mkdir()
    product_image(128).save(tmp_path / "catalog" / "MUG-1.png")
    logo_image().save(tmp_path / "logo.png")
    kit = BrandKit.model_validate(KIT)  # logo.png relative to the home folder
    config = GenerationConfig(
        model=str(tiny_model_dir()), device="cpu", num_inference_steps=2, brand_kit=kit
    )
    store = LocalImageStore(tmp_path / "images")
    gen = HeroGenerator(
        backend=DiffusersBackend(config, home=tmp_path),
        store=store,
        cache=ResultCache(tmp_path / "cache.sqlite", store=store),
        safety=SkinToneHeuristicChecker(),
        config=config,
        home=tmp_path,
    )
    product = ProductRef(id="1", title="Red mug", image="catalog/MUG-1.png", price=12.0)
    brief = CreativeBrief(
        product=product,
        placement=PLACEMENTS["square"],
        seed=1,
        model_id=str(tiny_model_dir()),
        headline="Warm mugs",
        brand_id=gen.brand_id,
    )
    out = gen.generate(brief)
    hero = Image.open(store.path(out.image_key)).convert("RGB")
    W, H = hero.size
    m = max(4, round(min(W, H) * 0.04))
    lh = round(H * KIT["logo_height_frac"])
    lw = round(100 * lh / 40)
    want = np.asarray(logo_image().resize((lw, lh), Image.Resampling.LANCZOS).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(hero)[m : m + lh, m : m + lw], want)
    assert kit_colour_pixels(hero, (0, 0, W, H), KIT["cta_text_colour"]) >= 40
    # The product box of the metadata holds none of the kit's drawing (pasted last).
    x, y, w, h = parse_box(out.metadata["product_box"])
    assert kit_colour_pixels(hero, (x, y, w, h), KIT["cta_text_colour"]) == 0
    other = CreativeBrief(product=product, model_id=str(tiny_model_dir()), brand_id="x:1")
    with pytest.raises(GenerationError, match="brand kit"):
        gen.generate(other)
