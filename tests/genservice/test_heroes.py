"""The delivery hero path: blending rule and its fidelity check, ghost removal, ground line,
product restoration rule, contact shadow, and the generator wired with imaging collaborators
(fakes here, so the test is fast and exact; the learned ones are measured by
``tailorshot evaluate heroes``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gen_fixtures import product_image, stub_imaging, tiny_model_dir
from PIL import Image

from genservice.brief import PLACEMENTS, CreativeBrief, ProductRef, StyleTerm
from genservice.compose import (
    CORE_ALPHA,
    MAX_GAIN_DEV,
    Cutout,
    apply_gain,
    check_fidelity,
    compose_hero,
    contact_shadow,
    crop_to_aspect,
    cut_out,
    find_ground,
    match_gain,
    parse_gain,
    place_cutout,
    plan_scene_layout,
    remove_ghosts,
    scene_canvas,
)
from genservice.errors import FidelityError
from genservice.generator import HeroImaging, backdrop_prompt, place_product
from genservice.metadata import parse_box, read_metadata


def _scene(w: int = 96, h: int = 48, horizon: float = 0.5) -> np.ndarray:
    """Sky gradient above ``horizon``, sand below (uint8 (h, w, 3))."""
    arr = np.zeros((h, w, 3), np.float32)
    hy = round(horizon * h)
    t = np.linspace(0, 1, hy)[:, None]
    arr[:hy] = (
        (120 + 80 * t)[..., None] * np.array([0.8, 0.9, 1.0])[None, None] * np.ones((1, w, 1))
    )
    arr[hy:] = (220, 200, 150)
    return arr.astype(np.uint8)


def _placed(gain: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Any:
    cut = cut_out(product_image(64))
    return place_cutout(cut, (10, 6, 40, 36), soft_edges=True).with_gain(gain)


def test_fidelity_accepts_exactly_the_global_gain_rule() -> None:
    placement = PLACEMENTS["banner"].__class__("t", 96, 48)
    placed = _placed((1.1, 1.05, 0.98))
    hero = compose_hero(Image.fromarray(_scene()), placed, placement)
    n = check_fidelity(hero, placed)
    assert n == int(placed.mask.sum()) > 300
    x, y, w, h = placed.box
    region = np.asarray(hero)[y : y + h, x : x + w]
    # The pixels are the source times the gain, rounded: a red body 200 -> 220.
    assert np.array_equal(region[placed.mask], apply_gain(placed.rgb[placed.mask], placed.gain))
    red = placed.rgb[placed.mask][:, 0] == 200
    assert red.any() and (region[placed.mask][red, 0] == 220).all()
    # One repainted pixel fails, even though the gain is allowed.
    arr = np.asarray(hero).copy()
    ys, xs = np.nonzero(placed.mask)
    arr[y + ys[0], x + xs[0]] ^= 1
    with pytest.raises(FidelityError, match="1 of"):
        check_fidelity(Image.fromarray(arr), placed)
    # A gain outside the rule is refused before any pixel is looked at.
    with pytest.raises(FidelityError, match="within 1"):
        placed.with_gain((1.0 + MAX_GAIN_DEV + 0.01, 1.0, 1.0))
    with pytest.raises(FidelityError, match="of each other"):
        placed.with_gain((1.1, 1.1, 0.95))
    assert parse_gain("1.1000,1.0500,0.9800") == (1.1, 1.05, 0.98)


def test_match_gain_follows_the_scene_light_within_the_rule() -> None:
    placed = _placed()
    grey = Image.new("RGB", (96, 48), (128, 128, 128))
    assert match_gain(grey, placed) == pytest.approx((1.0, 1.0, 1.0), abs=0.01)
    blue_night = Image.new("RGB", (96, 48), (20, 30, 90))
    r, g, b = match_gain(blue_night, placed)
    assert b > g >= r and r < 0.95  # bluer light, darker overall
    assert max(r, g, b) - min(r, g, b) <= 0.12 + 1e-9 and min(r, g, b) >= 1 - MAX_GAIN_DEV


def test_soft_edges_take_the_product_colour_not_the_old_background() -> None:
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = 255  # a white studio background bleeding into the edge
    rgba[10:30, 10:30] = (200, 20, 20, 255)
    rgba[9, 10:30, 3] = 120  # a soft edge row with the background's colour
    placed = place_cutout(Cutout(Image.fromarray(rgba, "RGBA")), (0, 0, 40, 40), soft_edges=True)
    assert placed.alpha is not None and placed.mask.sum() == 400
    edge = (placed.alpha > 0) & ~placed.mask
    assert edge.any() and (placed.rgb[edge] == (200, 20, 20)).all()
    assert (placed.alpha[placed.mask] >= CORE_ALPHA).all()


def test_remove_ghosts_fills_from_the_backdrop_and_keeps_the_rest() -> None:
    base = _scene()
    arr = base.copy()
    arr[20:40, 30:50] = (200, 20, 30)  # a painted "product" across the horizon
    sal = np.zeros(arr.shape[:2], np.float32)
    sal[20:40, 30:50] = 0.9
    clean, mask = remove_ghosts(Image.fromarray(arr), sal, grow=1)
    out = np.asarray(clean).astype(int)
    assert mask[20:40, 30:50].all() and not mask[:, :28].any()
    assert np.array_equal(out[~mask], arr[~mask])
    # Filled from its surroundings: close to the backdrop, nothing red left.
    assert np.abs(out[mask] - base[mask].astype(int)).mean() < 12
    assert out[30:40, 35:45, 1].min() > 150  # sand (green 200), not the red ghost (20)
    with pytest.raises(ValueError, match="saliency"):
        remove_ghosts(Image.fromarray(arr), sal[:10])


def test_ground_is_below_the_horizon_where_the_ghost_stood() -> None:
    scene = Image.fromarray(_scene(horizon=0.4))
    assert find_ground(scene) == pytest.approx(0.4 + 0.7 * 0.6, abs=0.03)
    ghosts = np.zeros((48, 96), bool)
    ghosts[15:44, 40:60] = True  # bottom row 43 -> 44 / 48
    assert find_ground(scene, ghosts=ghosts) == pytest.approx(44 / 48)
    floating = np.zeros((48, 96), bool)
    floating[2:10, 40:60] = True  # in the sky: not a surface
    assert find_ground(scene, ghosts=floating) == pytest.approx(0.4 + 0.7 * 0.6, abs=0.03)


@pytest.mark.parametrize("name", ["banner", "square", "story"])
def test_scene_layout_stands_the_product_on_the_ground(name: str) -> None:
    placement = PLACEMENTS[name]
    lay = plan_scene_layout(placement, (300, 400), ground=0.85, headline=True)
    x, y, w, h = lay.product_box
    W, H = placement.size
    assert y + h == round(0.85 * H)
    assert h <= 0.62 * H + 1 and abs(w / h - 0.75) < 0.02
    assert lay.text_box is not None
    tx, ty, tw, th = lay.text_box
    assert x >= tx + tw or y >= ty + th  # never under the headline
    assert x >= 0 and x + w <= W
    cw, ch = scene_canvas(placement, native=64, multiple=16)
    assert min(cw, ch) == 64 and cw % 16 == 0 and ch % 16 == 0
    native = crop_to_aspect(Image.new("RGB", (cw, ch)), placement.aspect)
    assert abs(native.width / native.height - placement.aspect) < 0.02


def test_small_products_are_restored_never_enlarged_by_resampling() -> None:
    cut = cut_out(product_image(64))
    calls: list[tuple[int, int]] = []

    def fake_sr(image: Image.Image, size: tuple[int, int]) -> Image.Image:
        calls.append(size)
        return image.resize(size, Image.Resampling.NEAREST)

    big = place_product(cut, (0, 0, cut.size[0] * 3, cut.size[1] * 3), fake_sr)
    assert calls == [(cut.size[0] * 3, cut.size[1] * 3)]
    assert big.upscale == 1.0  # the pasted pixels are the restored ones, 1:1
    small = place_product(cut, (0, 0, cut.size[0], cut.size[1]), fake_sr)
    assert len(calls) == 1 and small.upscale == 1.0
    near = place_product(cut, (0, 0, round(cut.size[0] * 1.2), round(cut.size[1] * 1.2)), fake_sr)
    assert len(calls) == 1 and 1.0 < near.upscale <= 1.25


def test_contact_shadow_darkens_under_the_product_only() -> None:
    scene = Image.new("RGB", (96, 48), (200, 200, 200))
    placed = _placed()
    out = np.asarray(contact_shadow(scene, placed)).astype(int)
    x, y, w, h = placed.box
    base = y + h
    below = out[base - 2 : base + 2, x + w // 4 : x + 3 * w // 4]
    assert below.mean() < 170  # clearly darker right under the base
    assert (out[: y + h // 2] == 200).all()  # nothing above the product's middle
    assert (out[:, x + w + 12 :] == 200).all()  # nor far to the side


def _fake_imaging(record: dict[str, Any]) -> HeroImaging:
    def ghosts(image: Image.Image) -> np.ndarray:
        record["native"] = image.copy()
        sal = np.zeros(image.size[::-1], np.float32)
        w, h = image.size
        sal[h // 4 : h - h // 10, w // 3 : w // 2] = 1.0  # one painted product
        return sal

    return stub_imaging(record, saliency=ghosts)


def test_generator_delivery_path_end_to_end(tmp_path: Path) -> None:
    from genservice.backends.diffusers_backend import DiffusersBackend
    from genservice.cache import ResultCache
    from genservice.config import GenerationConfig
    from genservice.generator import HeroGenerator
    from genservice.safety import SkinToneHeuristicChecker
    from genservice.storage import LocalImageStore

    (tmp_path / "catalog").mkdir()
    product_image(96).save(tmp_path / "catalog" / "p.png")
    config = GenerationConfig(model=str(tiny_model_dir()), device="cpu", num_inference_steps=2)
    record: dict[str, Any] = {}
    gen = HeroGenerator(
        backend=DiffusersBackend(config, home=tmp_path),
        store=LocalImageStore(tmp_path / "images"),
        cache=ResultCache(":memory:"),
        safety=SkinToneHeuristicChecker(),
        config=config,
        home=tmp_path,
        imaging=_fake_imaging(record),
    )
    brief = CreativeBrief(
        product=ProductRef(id="1", title="Red mug", image="catalog/p.png", category="mug"),
        placement=PLACEMENTS["banner"],
        style_terms=(StyleTerm("beach", 2.0), StyleTerm("golden hour", 1.0)),
        seed=3,
        model_id=config.model,
    )
    prompt = gen.prompt_builder.build(brief)
    assert backdrop_prompt(prompt) == "on a beach, golden hour"  # no product in the scene prompt
    out = gen.generate(brief)
    meta = read_metadata(gen.store.get(out.image_key))
    hero = Image.open(gen.store.path(out.image_key))  # type: ignore[attr-defined]
    assert hero.size == (1200, 628)
    # The scene was generated at native scale (short side = the model's native size) and
    # brought to 1200x628 by the upscaler, not by bicubic enlargement.
    native = record["native"]
    assert native.height == gen.backend.native_size
    assert (native.size, (1200, 628)) in record["sr"]
    # The product: restored (96 px source into a ~390 px box), then pasted 1:1 with its gain.
    x, y, w, h = parse_box(meta["product_box"])
    cut = cut_out(product_image(96))
    assert (cut.size, (w, h)) in record["sr"]
    gain = parse_gain(meta["product_gain"]) if "product_gain" in meta else (1.0, 1.0, 1.0)
    placed = place_product(cut, (x, y, w, h), lambda im, s: im.resize(s, Image.Resampling.NEAREST))
    assert check_fidelity(hero, placed.with_gain(gain)) > 0.3 * w * h
    # It stands on the ground line where the painted product stood (its bottom row, the
    # erased area grown by 2 native pixels).
    ghost_bottom = round((native.height - native.height // 10 + 2) / native.height * 628)
    assert abs((y + h) - ghost_bottom) <= 1
    # The scene info keeps the detector's regions as found (what the ghost measure counts
    # outside the product box), not the grown mask the path erased.
    info, erased = gen.deliver_scene(native, PLACEMENTS["banner"])
    nw, nh = native.size
    expected = np.zeros((nh, nw), bool)
    expected[nh // 4 : nh - nh // 10, nw // 3 : nw // 2] = True
    assert info.marked is not None and np.array_equal(info.marked, expected)
    assert erased[expected].all() and erased.sum() > expected.sum()


def test_backdrop_prompt_keeps_the_setting_the_product_prompt_dropped() -> None:
    """With a long title, a 32-token product prompt drops low-weight terms such as the setting;
    the scene prompt has no title to fit, so setting and lighting come back, first."""
    from genservice.prompts import BuiltPrompt

    prompt = BuiltPrompt(
        prompt="a long product title, leather, zigzag",
        negative_prompt="nsfw",
        terms_used=("leather", "zigzag"),
        terms_dropped=("canvas", "golden hour", "desert", "spotlight", "minimalist", "wool"),
        prompt_tokens=32,
        negative_tokens=3,
    )
    words = backdrop_prompt(prompt).split(", ")
    assert words[:3] == ["golden hour", "in a desert", "spotlight"]
    assert words[3:] == ["leather", "zigzag", "canvas"]  # weight order, at most 6 terms
    empty = BuiltPrompt("red mug", "", (), (), 3, 0)
    assert backdrop_prompt(empty) == "red mug"


def test_remove_ghosts_leaves_specks_below_the_area_floor() -> None:
    arr = _scene()
    sal = np.zeros(arr.shape[:2], np.float32)
    sal[20:40, 30:50] = 0.9  # 400 px: 8.7 % of the 48 x 96 scene
    sal[5:7, 5:7] = 0.9  # 4 px: 0.09 %, a detector speck
    _clean, mask = remove_ghosts(Image.fromarray(arr), sal, grow=0, min_area_frac=0.005)
    assert mask[20:40, 30:50].all() and mask.sum() == 400  # the speck is left alone
    _clean, none = remove_ghosts(Image.fromarray(arr), sal, grow=0, min_area_frac=0.1)
    assert not none.any()


@pytest.mark.parametrize(
    ("native", "size", "passes_input"),
    [
        ((64, 64), (1080, 1080), (68, 68)),  # 16.9x: two x4 passes after 1.0625x, not three
        ((64, 114), (1080, 1920), (68, 120)),
        ((122, 64), (1200, 628), (122, 64)),  # 9.8x: two passes reach it as it is
        ((300, 300), (1000, 1000), (300, 300)),  # 3.3x: one pass
        ((100, 100), (90, 90), (100, 100)),  # a reduction
    ],
)
def test_scene_is_fitted_for_the_fewest_whole_passes(
    native: tuple[int, int], size: tuple[int, int], passes_input: tuple[int, int]
) -> None:
    from genservice.imaging.restore import fit_for_passes

    out = fit_for_passes(Image.new("RGB", native), size)
    assert out.size == passes_input
    assert max(out.width / native[0], out.height / native[1]) <= 1.25
    need = max(size[0] / out.width, size[1] / out.height)
    k = 0
    while 4**k < need:
        k += 1
    assert 4**k >= need and (k == 0 or 4 ** (k - 1) * 1.25 < need)  # fewest whole passes


def test_scene_layout_restores_a_product_only_when_it_would_be_small() -> None:
    story = PLACEMENTS["story"]
    free = plan_scene_layout(story, (495, 638), ground=0.95)
    capped = plan_scene_layout(story, (495, 638), ground=0.95, max_plain_scale=1.25)
    assert free.product_box[3] / 638 > 1.6  # the width allows 1.65x: a Real-ESRGAN pass
    assert capped.product_box[3] / 638 <= 1.25 and capped.product_box[3] >= 0.4 * 1920 - 1
    # A small source is still enlarged (restored) to 40 % of the height, not left tiny.
    small = plan_scene_layout(story, (150, 200), ground=0.95, max_plain_scale=1.25)
    assert small.product_box[3] == pytest.approx(0.4 * 1920, abs=2)
    # Where the layout needs no more than 1.25x, nothing changes.
    banner = PLACEMENTS["banner"]
    assert plan_scene_layout(banner, (495, 638), ground=0.9, max_plain_scale=1.25) == (
        plan_scene_layout(banner, (495, 638), ground=0.9)
    )
