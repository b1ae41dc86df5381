"""The ghost detector's training: the style augmentation and a ghost-only run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genservice.judges import GhostDetector, GhostNet
from genservice.training.judge_scenes import canvas_scenes, demo_scenes, squeeze
from genservice.training.judges import (
    ghost_training_data,
    product_kept,
    style_augment,
    train_judges,
    vae_smear,
)


def test_style_augment_is_seeded_bounded_and_softens() -> None:
    x = torch.rand(16, 3, 64, 64) * 2 - 1
    a = style_augment(x, torch.Generator().manual_seed(3))
    b = style_augment(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape
    assert torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    changed = (a - x).abs().flatten(1).amax(1) > 0
    assert 0 < int(changed.sum()) < 16  # about 20 % kept as rendered
    # softer: neighbouring-pixel differences shrink on random noise images
    tv = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean()  # noqa: E731
    assert tv(a[changed]) < tv(x[changed])


def test_ghost_only_training_keeps_setting_judge_out(tmp_path: Path) -> None:
    fig = train_judges(
        tmp_path, n_train=12, n_test=10, steps=2, progress=False, setting=False, canvas_share=0.5
    )
    assert (tmp_path / "ghost.pt").exists()
    assert not (tmp_path / "setting.pt").exists()
    assert "setting_accuracy_on_test_renders" not in fig
    assert fig["smear"] is True
    assert fig["n_train_canvas"] == 2 + 4  # 12 x 0.5 x (0.4 banner, 0.6 story), rounded
    for k in (
        "ghost_iou_on_test_renders",
        "ghost_backdrops_marked_on_styled_test_renders",
        "ghost_backdrops_marked_on_vae_test_renders",
        "ghost_iou_on_story_test_renders",
        "ghost_backdrops_marked_on_vae_banner_test_renders",
    ):
        assert 0.0 <= fig[k] <= 1.0


def test_demo_scenes_masks_only_on_product_scenes() -> None:
    s = demo_scenes(10, seed=4, product_share=0.5)
    has = s.masks.reshape(10, -1).any(1)
    assert s.images.shape == (10, 64, 64, 3) and s.images.dtype == np.uint8
    assert 0 < has.sum() < 10


def test_vae_smear_is_seeded_close_and_noise_smears_more() -> None:
    s = demo_scenes(6, seed=2)
    plain = vae_smear(s.images, seed=1)
    again = vae_smear(s.images, seed=1)
    noisy = vae_smear(s.images, latent_noise=(0.4, 0.4), seed=1)
    assert plain.shape == s.images.shape and plain.dtype == np.uint8
    assert np.array_equal(plain, again)
    err = lambda a: float(np.abs(a.astype(float) - s.images).mean())  # noqa: E731
    # the round trip keeps the picture (a few grey levels off) but changes it
    assert 0.5 < err(plain) < 20
    assert err(noisy) > err(plain)


def test_product_kept_drops_a_dissolved_product() -> None:
    img = np.zeros((3, 16, 16, 3), np.uint8)
    img[:, 4:10, 4:10] = 200  # a bright product on black
    masks = np.zeros((3, 16, 16), bool)
    masks[:2, 4:10, 4:10] = True  # the third is a backdrop
    smeared = img.copy()
    smeared[1, 4:10, 4:10] = 10  # product 1 dissolved into the backdrop
    smeared[2] = 90
    assert product_kept(img, smeared, masks).tolist() == [True, False, True]


def test_canvas_scenes_are_native_seeded_and_squeeze_to_the_judged_square() -> None:
    for canvas, shape in (("story", (120, 64)), ("banner", (64, 128))):
        a = canvas_scenes(10, canvas=canvas, seed=3)
        b = canvas_scenes(10, canvas=canvas, seed=3)
        assert a.images.shape == (10, *shape, 3) and a.masks.shape == (10, *shape)
        assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
        has = a.masks.reshape(10, -1).any(1)
        assert 0 < has.sum() < 10  # about 40 % hold a product
        # a product stands out from the backdrop under its mask
        i = int(np.argmax(has))
        assert a.masks[i].mean() > 0.02
        sq, sm = squeeze(a.images, a.masks, canvas)
        assert sq.shape == (10, 64, 64, 3) and sm.shape == (10, 64, 64)
        assert sm.reshape(10, -1).any(1).tolist() == has.tolist()
    with pytest.raises(ValueError, match="canvas"):
        canvas_scenes(1, canvas="square", seed=0)


def test_ghost_training_data_adds_squeezed_canvas_renders() -> None:
    train = demo_scenes(10, seed=5)
    data, smeared = ghost_training_data(train, seed=5, smear=False, canvas_share=0.5)
    assert smeared == []
    assert data.images.shape == (10 + 2 + 3, 64, 64, 3)
    assert np.array_equal(data.images[:10], train.images)
    assert data.masks.shape == (15, 64, 64) and data.settings.shape == (15,)
    same, _ = ghost_training_data(train, seed=5, smear=False, canvas_share=0.0)
    assert np.array_equal(same.images, train.images)


def test_ghost_detector_keeps_its_shape_and_bias(tmp_path: Path) -> None:
    torch.manual_seed(0)
    det = GhostDetector(GhostNet(c=8, dilations=(2, 4, 8)).eval(), bias=-1.5)
    det.save(tmp_path / "g.pt")
    back = GhostDetector.load(tmp_path / "g.pt")
    assert back.bias == -1.5 and back.net is not None
    assert back.net.c == 8 and back.net.dilations == (2, 4, 8)
    img = Image.fromarray(demo_scenes(1, seed=1).images[0])
    p = back.probability(img)
    assert np.allclose(p, det.probability(img))
    p0 = GhostDetector(back.net).probability(img)  # the same net without the bias
    logit = lambda q: np.log(q) - np.log1p(-q)  # noqa: E731
    ok = (p0 > 1e-4) & (p0 < 1 - 1e-4)
    assert np.allclose(logit(p[ok]) - logit(p0[ok]), -1.5, atol=1e-3)
    # weights saved before the shape and bias were stored load as the default net, no bias
    torch.save({"state": GhostNet().state_dict()}, tmp_path / "old.pt")
    old = GhostDetector.load(tmp_path / "old.pt")
    assert old.bias == 0.0 and old.net is not None and old.net.dilations == (2, 4)
