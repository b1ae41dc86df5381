"""Product image edits (genservice.edits): recolour lands on the target colour and keeps the
luminance structure, material carries the texture and follows the shading, background keeps
the product bit-exact; outside the mask nothing changes; metadata; the ``edit`` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from data.demo.attributes import COLOUR_NAMES
from data.demo.render import on_studio_background, render_product
from data.demo.samples import mixed_products
from genservice.edits import EDITS, apply_edit, get_edit
from genservice.edits.base import edit_png_info, image_sha256, parse_colour
from genservice.edits.material import laid_texture, layout, load_texture
from genservice.edits.metrics import material_scores, recolor_scores
from genservice.edits.recolor import lab_to_srgb, srgb_to_lab
from genservice.imaging.cutout import mask_iou
from genservice.metadata import read_metadata

TARGETS = (*COLOUR_NAMES, "#1f4fd1")
SNEAKER = {"colour": "green", "pattern": "polka-dot", "material": "leather", "style": "vintage"}


def demo_products(n: int, size: int, seed: int = 17) -> list[tuple[Image.Image, np.ndarray]]:
    """``n`` seeded demo products on the studio backdrop (RGB) with the render's own alpha
    ``(size, size)`` float32: every category, colour, pattern, material and style mixed."""
    return [(p.studio, p.alpha) for p in mixed_products(n, size=size, seed=seed)]


def test_recolor_50_demo_products_land_on_the_target_and_keep_structure() -> None:
    """Acceptance: 50 products, every named colour and a hex as targets (white and black
    included); the render's own soft alpha is the mask."""
    worst_de, worst_ssim = 0.0, 1.0
    for i, (img, alpha) in enumerate(demo_products(50, 128)):
        target = TARGETS[i % len(TARGETS)]
        res = apply_edit("recolor", img, mask=alpha, colour=target)
        s = recolor_scores(img, res.image, alpha, parse_colour(target))
        assert s["outside_changed"] == 0, (i, target)
        worst_de, worst_ssim = max(worst_de, s["delta_e"]), min(worst_ssim, s["ssim"])
        assert s["delta_e"] <= 10.0, (i, target, s)
        assert s["ssim"] >= 0.9, (i, target, s)
    assert worst_de > 0.5  # the measure is not trivially zero (gamut, lightness slack)


def test_recolor_with_the_cutout_mask() -> None:
    """No mask given: the learned cut-out decides where the product is; the same rules hold
    for its mask, which matches the render's."""
    for i, (img, truth) in enumerate(demo_products(3, 192, seed=3)):
        res = apply_edit("recolor", img, colour=TARGETS[(i * 5) % len(TARGETS)])
        assert res.mask is not None and mask_iou(res.mask, truth) >= 0.9
        s = recolor_scores(img, res.image, res.mask, parse_colour(TARGETS[(i * 5) % 12]))
        assert s["outside_changed"] == 0 and s["delta_e"] <= 10.0 and s["ssim"] >= 0.9, s
        assert res.metadata["mask_method"] in ("u2netp", "flood")


def test_recolor_known_answer_keeps_every_lightness_offset() -> None:
    """A grey ramp (L 40-60) recoloured to mid blue: k = 1, so L' - L is one constant and
    the mean colour is the target's within rounding."""
    lab = np.zeros((32, 32, 3))
    lab[..., 0] = np.linspace(40, 60, 32)[None, :]
    img = Image.fromarray(lab_to_srgb(lab.reshape(-1, 3)).reshape(32, 32, 3))
    mask = np.zeros((32, 32), np.float32)
    mask[4:28, 4:28] = 1.0
    res = apply_edit("recolor", img, mask=mask, colour="#3a6ea5")
    l0, l1 = srgb_to_lab(np.asarray(img))[..., 0], srgb_to_lab(np.asarray(res.image))[..., 0]
    delta = (l1 - l0)[mask == 1]
    assert delta.std() < 0.3  # one shift for all pixels, up to 8-bit rounding
    assert abs(delta.mean() - (srgb_to_lab(np.array([0x3A, 0x6E, 0xA5]))[0] - 50.0)) < 0.5
    s = recolor_scores(img, res.image, mask, (0x3A, 0x6E, 0xA5))
    assert s["delta_e"] < 1.0 and s["ssim"] > 0.99 and s["outside_changed"] == 0


def test_soft_edge_blends_by_alpha_only_inside_the_support() -> None:
    img = Image.new("RGB", (16, 16), (200, 40, 40))
    mask = np.zeros((16, 16), np.float32)
    mask[4:12, 4:12] = 1.0
    mask[4:12, 12] = 0.5  # a soft column
    res = apply_edit("recolor", img, mask=mask, colour="#1f4fd1")
    out = np.asarray(res.image).astype(int)
    assert (out[mask == 0] == [200, 40, 40]).all()
    inner = out[6, 6]
    assert np.abs(out[6, 12] - np.round((inner + np.array([200, 40, 40])) / 2)).max() <= 1
    assert out[6, 6, 2] > out[6, 6, 0]  # it did turn blue


def test_recolor_the_measure_fails_a_wrong_colour() -> None:
    img, alpha = demo_products(1, 128)[0]
    res = apply_edit("recolor", img, mask=alpha, colour="red")
    assert recolor_scores(img, res.image, alpha, parse_colour("green"))["delta_e"] > 30


@pytest.mark.parametrize("texture", ["brick", "denim", "wood", "marble", "grass"])
def test_material_carries_texture_colour_frequency_and_shading(texture: str) -> None:
    """Measures (stated in genservice.edits.metrics): mean colour within CIEDE2000 10 of the
    texture's, high-frequency energy 0.5-2x the texture's as laid, smoothed luminance
    correlation >= 0.7 with the original's, outside bit-exact."""
    for img, alpha in demo_products(2, 160, seed=5):
        res = apply_edit("material", img, mask=alpha, texture=texture, seed=1)
        laid = laid_texture(load_texture(texture, seed=1), alpha, 1.0)
        _, _, sigma = layout(alpha, 1.0)
        s = material_scores(img, res.image, alpha, laid, sigma)
        assert s["outside_changed"] == 0, s
        assert s["delta_e"] <= 10.0, s
        assert 0.5 <= s["hf_ratio"] <= 2.0, s
        assert s["shading_corr"] >= 0.7, s
        # The same measures reject the unedited product: its colour is not the texture's.
        before = material_scores(img, img, alpha, laid, sigma)
        assert before["delta_e"] > 10.0 or not 0.5 <= before["hf_ratio"] <= 2.0
        # ... and a texture pasted without the product's shading.
        flat = apply_edit("material", img, mask=alpha, texture=texture, seed=1, strength=0.0)
        assert material_scores(img, flat.image, alpha, laid, sigma)["shading_corr"] < 0.7


def test_material_from_a_file_and_bad_names(tmp_path: Path) -> None:
    tex = tmp_path / "stripes.png"
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[:, ::8] = (250, 200, 0)
    Image.fromarray(arr).save(tex)
    img, alpha = demo_products(1, 96)[0]
    res = apply_edit("material", img, mask=alpha, texture=str(tex))
    assert json.loads(res.metadata["edit_params"])["texture"] == "stripes.png"  # no directory
    with pytest.raises(ValueError, match="texture: expected an image file or one of"):
        apply_edit("material", img, mask=alpha, texture="velvet")


def test_background_keeps_the_product_and_paints_the_requested_studio() -> None:
    rgba = render_product(SNEAKER, category="sneaker", size=192, seed=1)
    alpha = np.asarray(rgba)[..., 3].astype(np.float32) / 255.0
    img = on_studio_background(rgba)
    res = apply_edit("background", img, mask=alpha, studio="#1f4fd1", shadow=0.5)
    out, src = np.asarray(res.image), np.asarray(img)
    assert (out[alpha >= 1.0] == src[alpha >= 1.0]).all()  # product bit-exact
    assert (out[:10, :10] == (0x1F, 0x4F, 0xD1)).all()  # backdrop exactly the colour
    rows = np.flatnonzero((alpha > 0.5).any(axis=1))
    cols = np.flatnonzero((alpha > 0.5).any(axis=0))
    below = out[min(rows[-1] + 2, 191), (cols[0] + cols[-1]) // 2].astype(int)
    assert (below < [0x1F, 0x4F, 0xD1]).all()  # the contact shadow darkens under the product
    grad = apply_edit("background", img, mask=alpha, studio="navy", gradient=20, shadow=0.0)
    g = np.asarray(grad.image).astype(int)
    assert (g[96, 0] == (0, 0, 128)).all()  # row H // 2 is the colour itself
    assert g[0, 0].sum() > g[96, 0].sum() > g[191, 0].sum()  # lighter top, darker bottom


def test_background_refusals_are_clear_value_errors() -> None:
    """A scene from a prompt needs a generator (tests/genservice/test_edit_scene.py)."""
    img, alpha = demo_products(1, 64)[0]
    with pytest.raises(ValueError, match="needs a generator"):
        apply_edit("background", img, mask=alpha, prompt="a beach")
    with pytest.raises(ValueError, match="studio=COLOUR"):
        apply_edit("background", img, mask=alpha)
    with pytest.raises(ValueError, match="studio: expected #rrggbb hex or a colour name"):
        apply_edit("background", img, mask=alpha, studio="chartreuse-ish")


def test_remove_background_alpha_and_opaque_pixels() -> None:
    img, alpha = demo_products(1, 128)[0]
    res = apply_edit("remove-background", img, mask=alpha)
    out = np.asarray(res.image)
    assert res.image.mode == "RGBA"
    assert (out[..., 3] == np.round(alpha * 255).astype(np.uint8)).all()
    assert (out[alpha >= 1.0][:, :3] == np.asarray(img)[alpha >= 1.0]).all()
    assert (out[alpha == 0][:, :3] == 0).all()


def test_adjust_inside_a_mask_and_whole_image() -> None:
    img, alpha = demo_products(1, 128)[0]
    res = apply_edit("adjust", img, mask=alpha, brightness=1.3)
    src, out = np.asarray(img).astype(int), np.asarray(res.image).astype(int)
    assert (out[alpha == 0] == src[alpha == 0]).all()
    assert out[alpha >= 1].mean() > src[alpha >= 1].mean() + 5
    whole = np.asarray(apply_edit("adjust", img, brightness=0.5).image).astype(int)
    assert abs(whole.mean() - 0.5 * src.mean()) < 1.0


def test_restore_edit_enlarges_and_records_the_model() -> None:
    img = demo_products(1, 32)[0][0]
    res = apply_edit("restore", img, scale=2)
    assert res.image.size == (64, 64) and res.mask is None
    assert res.metadata["model"].startswith("realesr")
    small = res.image.resize((32, 32), Image.Resampling.BOX)
    assert np.abs(np.asarray(small).astype(int) - np.asarray(img).astype(int)).mean() < 6


def test_metadata_is_written_read_back_and_limited(tmp_path: Path) -> None:
    img, alpha = demo_products(1, 64)[0]
    res = apply_edit("recolor", img, mask=alpha, colour="teal")
    path = tmp_path / "e.png"
    res.save(path)
    with Image.open(path) as im:
        meta = read_metadata(im)
    assert meta["edit_op"] == "recolor" and meta["source_sha256"] == image_sha256(img)
    assert json.loads(meta["edit_params"]) == {"colour": "teal", "rgb": "#129296"}
    assert meta["mask_method"] == "given" and meta["model"] == "lab-recolor"
    with pytest.raises(ValueError, match="may be stored"):
        edit_png_info({"user_id": "u1"})


def test_registry_and_errors_name_the_argument() -> None:
    assert sorted(EDITS) == sorted(
        ["recolor", "material", "background", "restore", "adjust", "remove-background"]
    )
    with pytest.raises(ValueError, match="op: expected one of"):
        get_edit("sepia")
    img = Image.new("RGB", (16, 16))
    with pytest.raises(ValueError, match="mask: expected shape"):
        apply_edit("recolor", img, mask=np.ones((8, 8)), colour="red")
    with pytest.raises(ValueError, match="colour: expected #rrggbb"):
        apply_edit("recolor", img, mask=np.ones((16, 16)), colour="not-a-colour")
    assert parse_colour("#1f4fd1") == (31, 79, 209) and parse_colour("navy") == (0, 0, 128)


def test_cli_edit_recolor_json_and_refusals(tmp_path: Path) -> None:
    from api.cli import app

    img, alpha = demo_products(1, 96)[0]
    src, mask, out = tmp_path / "p.png", tmp_path / "m.png", tmp_path / "o.png"
    img.save(src)
    Image.fromarray(np.round(alpha * 255).astype(np.uint8), "L").save(mask)
    runner = CliRunner()
    args = ["edit", "--image", str(src), "--mask", str(mask), "--op", "recolor"]
    r = runner.invoke(app, [*args, "--colour", "#1f4fd1", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["op"] == "recolor" and info["metadata"]["source_sha256"] == image_sha256(img)
    assert set(info["timings"]) == {"mask", "edit", "total"}
    with Image.open(out) as im:
        s = recolor_scores(img, im.convert("RGB"), alpha, (31, 79, 209))
    assert s["outside_changed"] == 0 and s["delta_e"] <= 10
    r = runner.invoke(app, [*args[:-1], "background", "--out", str(out)])
    assert r.exit_code == 2 and "--studio" in r.output
    r = runner.invoke(
        app, [*args[:-1], "background", "--prompt", "x", "--user-id", "u", "--out", str(out)]
    )
    assert r.exit_code == 2 and "one of --studio, --prompt, --user-id" in r.output
    r = runner.invoke(app, ["edit", "--op", "recolor", "--colour", "red", "--out", str(out)])
    assert r.exit_code == 2 and "exactly one" in r.output
    assert "--texture" in runner.invoke(app, ["edit", "--help"]).output


def test_cli_edit_resolves_a_catalog_sku(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import api.cli.edit as edit_cli

    img, _ = demo_products(1, 64)[0]
    img.save(tmp_path / "sku.png")
    monkeypatch.setattr(edit_cli, "product_image_path", lambda sku: tmp_path / f"{sku}.png")
    from api.cli import app

    r = CliRunner().invoke(
        app,
        [
            "edit",
            "--product",
            "sku",
            "--op",
            "adjust",
            "--brightness",
            "1.1",
            "--json",
            "--out",
            str(tmp_path / "a.png"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["source"].endswith("sku.png")
