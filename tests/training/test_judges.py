"""The ghost detector's training: the style augmentation and a ghost-only run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genservice.training.judges import (
    demo_scenes,
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
    fig = train_judges(tmp_path, n_train=12, n_test=10, steps=2, progress=False, setting=False)
    assert (tmp_path / "ghost.pt").exists()
    assert not (tmp_path / "setting.pt").exists()
    assert "setting_accuracy_on_test_renders" not in fig
    assert fig["smear"] is True
    for k in (
        "ghost_iou_on_test_renders",
        "ghost_backdrops_marked_on_styled_test_renders",
        "ghost_backdrops_marked_on_vae_test_renders",
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
