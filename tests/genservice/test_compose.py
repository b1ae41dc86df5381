"""Hero composition: cut-out, layout, paste-back, fidelity check, metadata."""

from __future__ import annotations

import io

import numpy as np
import pytest
from gen_fixtures import product_image
from PIL import Image

from genservice.brief import PLACEMENTS, Placement
from genservice.compose import (
    canvas_size,
    check_fidelity,
    compose_hero,
    cut_out,
    inpaint_inputs,
    place_cutout,
    plan_layout,
)
from genservice.errors import FidelityError
from genservice.metadata import hero_metadata, parse_box, png_info, read_metadata
from genservice.storage import encode_image


def test_cut_out_recovers_a_known_rectangle_on_a_plain_background() -> None:
    arr = np.full((60, 80, 3), 250, dtype=np.uint8)
    arr[10:40, 20:50] = (10, 120, 200)
    arr[2, 2] = (0, 0, 0)  # a speck: removed by the morphological opening
    cut = cut_out(Image.fromarray(arr))
    assert cut.size == (30, 30)
    a = np.asarray(cut.image)
    assert (a[..., 3] == 255).all()
    assert (a[..., :3] == (10, 120, 200)).all()


def test_cut_out_keeps_enclosed_background_coloured_parts_and_uses_alpha() -> None:
    arr = np.full((50, 50, 3), 255, dtype=np.uint8)
    arr[10:40, 10:40] = (0, 0, 0)
    arr[20:30, 20:30] = 255  # a white logo inside the product: not background
    cut = cut_out(Image.fromarray(arr))
    assert cut.size == (30, 30) and (np.asarray(cut.image)[..., 3] == 255).all()
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[5:15, 8:30] = (255, 0, 0, 255)
    cut2 = cut_out(Image.fromarray(rgba, "RGBA"))
    assert cut2.size == (22, 10)
    with pytest.raises(ValueError, match="distinguishable"):
        cut_out(Image.new("RGB", (20, 20), (9, 9, 9)))


@pytest.mark.parametrize("name", ["banner", "square", "story"])
@pytest.mark.parametrize("headline", [False, True])
def test_layout_respects_margins_aspect_and_headline(name: str, headline: bool) -> None:
    placement = PLACEMENTS[name]
    lay = plan_layout(placement, (300, 200), headline=headline)
    x, y, w, h = lay.product_box
    W, H = placement.size
    m = lay.margin
    assert x >= m and y >= m and x + w <= W - m and y + h <= H - m
    assert w / h == pytest.approx(1.5, rel=0.01)
    assert max(w / (W - 2 * m), h / (H - 2 * m)) > 0.4  # the product is prominent
    if headline:
        assert lay.text_box is not None
        tx, ty, tw, th = lay.text_box
        # No overlap between text and product.
        assert tx + tw <= x or x + w <= tx or ty + th <= y or y + h <= ty
    else:
        assert lay.text_box is None


def test_canvas_keeps_aspect_and_multiple() -> None:
    assert canvas_size(PLACEMENTS["banner"], native=64, multiple=16) == (96, 48)
    assert canvas_size(PLACEMENTS["square"], native=512, multiple=64) == (512, 512)
    w, h = canvas_size(PLACEMENTS["story"], native=512, multiple=64)
    assert w % 64 == 0 and h % 64 == 0 and h / w == pytest.approx(1920 / 1080, rel=0.15)
    assert canvas_size(PLACEMENTS["banner"], native=64, multiple=8, max_side=400) == (400, 208)


def test_compose_keeps_product_pixels_and_fidelity_detects_changes() -> None:
    placement = PLACEMENTS["banner"]
    cut = cut_out(product_image(128))
    lay = plan_layout(placement, cut.size, headline=True)
    placed = place_cutout(cut, lay.product_box)
    rng = np.random.default_rng(0)
    scene = Image.fromarray(rng.integers(0, 255, (48, 96, 3), dtype=np.uint8))
    hero = compose_hero(scene, placed, placement, headline="Big sale today", text_box=lay.text_box)
    assert hero.size == (1200, 628)
    n = check_fidelity(hero, placed)
    assert n == int(placed.mask.sum()) > 1000
    arr = np.asarray(hero).copy()
    x, y, _w, _h = placed.box
    ys, xs = np.nonzero(placed.mask)
    arr[y + ys[0], x + xs[0], 0] ^= 1  # one bit of one product pixel
    with pytest.raises(FidelityError, match="1 of"):
        check_fidelity(Image.fromarray(arr), placed)


def test_inpaint_inputs_mask_black_on_the_product() -> None:
    placement = PLACEMENTS["square"]
    cut = cut_out(product_image(96))
    placed = place_cutout(cut, plan_layout(placement, cut.size).product_box)
    init, mask = inpaint_inputs(placed, placement, (64, 64))
    assert init.size == mask.size == (64, 64)
    m = np.asarray(mask)
    assert set(np.unique(m)) <= {0, 255}
    assert m[0, 0] == 255 and m[32, 28] == 0  # corner repainted, product centre kept


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_metadata_round_trip_and_lossless_encoding(fmt: str) -> None:
    meta = hero_metadata(model="m", seed=3, brief_hash="ab" * 32, box=(1, 2, 3, 4))
    img = product_image(40)
    data, ctype = encode_image(img, fmt, metadata=meta)
    assert ctype == f"image/{fmt}"
    assert read_metadata(data) == meta
    assert parse_box(read_metadata(data)["product_box"]) == (1, 2, 3, 4)
    back = Image.open(io.BytesIO(data)).convert("RGB")
    assert np.array_equal(np.asarray(back), np.asarray(img))


def test_metadata_refuses_personal_data() -> None:
    with pytest.raises(ValueError, match="only"):
        png_info({"user_id": "u1"})
    with pytest.raises(ValueError, match="only"):
        encode_image(product_image(20), "png", metadata={"email": "a@b.c"})


def test_place_cutout_validates_box() -> None:
    cut = cut_out(product_image(40))
    with pytest.raises(ValueError, match="box"):
        place_cutout(cut, (0, 0, 0, 5))
    with pytest.raises(ValueError, match=r"placed\.box"):
        compose_hero(
            Image.new("RGB", (8, 8)), place_cutout(cut, (100, 100, 20, 20)), Placement("p", 64, 64)
        )
