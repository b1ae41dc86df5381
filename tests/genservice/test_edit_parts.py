"""Parts of a product (genservice.edits.parts, ``--mask-part``): known answers on a synthetic
two-colour product with shading; recolour / material of a part change only its pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from genservice.edits import apply_edit
from genservice.edits.parts import part_mask

RED, BLUE, BG = (192, 32, 32), (40, 60, 170), (246, 246, 244)


def two_colour_product(size: int = 96) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """A shaded box on a light backdrop: a red body (rows 20-59, 40 rows) over a blue sole
    (rows 60-74, 15 rows), columns 16-79, with a lighting ramp (x0.75-1.0 left to right) and
    seeded noise (+-3 levels). Returns the RGB image, its alpha (1 on the box) and the bool
    mask of the blue pixels."""
    rng = np.random.default_rng(5)
    arr = np.empty((size, size, 3), np.float64)
    arr[:] = BG
    alpha = np.zeros((size, size), np.float32)
    blue = np.zeros((size, size), bool)
    shade = np.linspace(0.75, 1.0, 64)[None, :, None]
    arr[20:60, 16:80] = np.array(RED) * shade
    arr[60:75, 16:80] = np.array(BLUE) * shade
    arr[20:75, 16:80] += rng.integers(-3, 4, size=(55, 64, 3))
    alpha[20:75, 16:80] = 1.0
    blue[60:75, 16:80] = True
    rgb = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB"), alpha, blue


def test_dominant_and_secondary_are_the_two_colours_despite_shading() -> None:
    img, alpha, blue = two_colour_product()
    rgb = np.asarray(img)
    dom, sec = part_mask(rgb, alpha, "dominant"), part_mask(rgb, alpha, "secondary")
    assert ((sec > 0) == blue).all()  # exactly the blue sole
    assert ((dom > 0) == ((alpha > 0) & ~blue)).all()  # exactly the red body
    one = np.asarray(Image.new("RGB", (32, 32), RED))
    with pytest.raises(ValueError, match="found one"):
        part_mask(one, np.ones((32, 32), np.float32), "secondary")


def test_colour_region_and_bands_known_answers() -> None:
    img, alpha, blue = two_colour_product()
    rgb = np.asarray(img)
    assert ((part_mask(rgb, alpha, "colour:#2a3caa") > 0) == blue).all()
    assert ((part_mask(rgb, alpha, "colour:red:35") > 0) == (alpha > 0) & ~blue).all()
    bottom = part_mask(rgb, alpha, "bottom:0.2")  # 20 % of 55 rows = 11 rows: 64-74
    assert np.flatnonzero(bottom.any(axis=1)).tolist() == list(range(64, 75))
    assert (part_mask(rgb, alpha, "sole") > 0).sum() == 8 * 64  # 15 % of 55: 8 rows
    left = part_mask(rgb, alpha, "left")  # half of 64 columns
    assert np.flatnonzero(left.any(axis=0)).tolist() == list(range(16, 48))
    for bad, msg in (
        ("middle", "expected one of"),
        ("top:1.5", "band share"),
        ("colour:", "colour:COLOUR"),
        ("colour:#00ff00:5", "has no pixel"),
        ("colour:notacolour", "mask_part: expected #rrggbb"),
    ):
        with pytest.raises(ValueError, match=msg):
            part_mask(rgb, alpha, bad)


def test_recolor_secondary_changes_only_those_pixels() -> None:
    """Acceptance of --mask-part: the blue sole turns green; every other pixel (the red body
    and the backdrop) is bit-exact; the sole's shading ramp survives."""
    img, alpha, blue = two_colour_product()
    res = apply_edit("recolor", img, mask=alpha, colour="#1f9d3a", part="secondary")
    out, src = np.asarray(res.image).astype(int), np.asarray(img).astype(int)
    assert (out[~blue] == src[~blue]).all()
    assert (out[blue] != src[blue]).any(axis=-1).all()
    sole = out[60:75, 16:80]
    assert (sole[..., 1] > sole[..., 0] + 40).all() and (sole[..., 1] > sole[..., 2]).all()
    assert sole[:, -8:, 1].mean() > sole[:, :8, 1].mean() + 10  # lit side stays lighter
    assert json.loads(res.metadata["edit_params"])["part"] == "secondary"
    assert res.metadata["mask_method"] == "given+part:secondary"


def test_material_on_a_band_changes_only_the_band() -> None:
    img, alpha, _ = two_colour_product()
    res = apply_edit("material", img, mask=alpha, texture="denim", part="top:0.5")
    out, src = np.asarray(res.image), np.asarray(img)
    band = np.zeros(alpha.shape, bool)
    band[20:48, 16:80] = True  # round(0.5 * 55) = 28 rows
    assert (out[~band] == src[~band]).all()
    assert (out[band] != src[band]).any(axis=-1).mean() > 0.9
