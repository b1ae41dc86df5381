"""Creations (issue 21): the studio prompt, the creation cut-out (U^2-Net-p joined with a
colour key on a flat backdrop, shadows rejected) and the page framing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from genservice.creation.cutout import (
    MIN_STUDIO_FLATNESS,
    creation_alpha,
    key_alpha,
    shadow_mask,
)
from genservice.creation.pipeline import CreationImaging, Creator
from genservice.creation.request import creation_prompt, studio_prompt
from genservice.safety import AllowAllChecker

BACKDROP = (236, 236, 240)


def studio_lamp(side: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A red lamp on a light studio backdrop: ``(rgb, shade mask, pole + base mask)``; a grey
    contact shadow (the backdrop darkened to 0.7) lies under the base."""
    rgb = np.zeros((side, side, 3), np.uint8) + np.array(BACKDROP, np.uint8)
    shade = np.zeros((side, side), bool)
    shade[14:28, 22:42] = True
    thin = np.zeros((side, side), bool)
    thin[28:48, 31:33] = True  # a 2-px pole
    thin[48:51, 24:40] = True  # the base
    rgb[51:55, 18:46] = (np.array(BACKDROP) * 0.7).astype(np.uint8)  # the shadow
    rgb[shade | thin] = (200, 30, 40)
    return rgb, shade, thin


def test_studio_prompt_replaces_setting_and_lighting() -> None:
    cap = "a black checked cotton dress, sporty style, in a living room, overcast"
    assert creation_prompt(cap) == "a black checked cotton dress, sporty style, in a photo studio"
    assert studio_prompt("a red mug on a beach, golden hour, glossy") == (
        "a red mug, glossy, in a photo studio"
    )
    # "neon" as a word of a colour is kept; only a comma item that is a lighting term goes.
    assert creation_prompt("a neon green mug, neon") == "a neon green mug, in a photo studio"
    assert studio_prompt("in the mountains") == "in a photo studio"


def test_held_out_captions_become_prompts_no_training_caption_has() -> None:
    """The evaluation's prompts (held-out captions through ``creation_prompt``) end in "in a
    photo studio" with no lighting; every demo training caption names a lighting, so none of
    them can equal one (checked on the caption template, not a rendered data set)."""
    from genservice import vocab
    from genservice.training.data import make_caption

    lights = vocab.lighting()
    train_like = {
        f"{make_caption('red', 'solid', 'mug', f'{phrase}, {light}')}"
        for phrase in vocab.setting_phrases().values()
        for light in lights
    }
    prompt = creation_prompt("a red mug, minimalist style, in a kitchen, neon")
    assert prompt.endswith("in a photo studio")
    assert all(not prompt.endswith(f", {light}") for light in lights)
    assert prompt not in train_like


def test_key_rejects_the_shadow_and_keeps_thin_parts() -> None:
    rgb, shade, thin = studio_lamp()
    back = np.array(BACKDROP, np.float32)
    assert shadow_mask(rgb, back)[52, 30] and not shadow_mask(rgb, back)[20, 30]
    key = key_alpha(rgb, back)
    assert key[20, 30] == 1.0 and key[40, 31] == 1.0 and key[52, 30] == 0.0
    assert key[5, 5] == 0.0
    # U^2-Net-p found only the shade: the joined cut-out adds the pole and the base (they
    # touch it) and not the shadow.
    cut = creation_alpha(rgb, shade.astype(np.float32))
    assert cut.method == "studio" and cut.flatness >= MIN_STUDIO_FLATNESS
    got = cut.alpha > 0.5
    truth = shade | thin
    assert (got & truth).sum() / (got | truth).sum() > 0.95
    assert not got[51:55].any()
    # U^2-Net-p found nothing: the key's largest region.
    alone = creation_alpha(rgb, None)
    assert alone.method == "studio" and (alone.alpha > 0.5)[20, 30]


def test_a_busy_backdrop_keeps_u2netp_alone_and_a_blank_one_finds_nothing() -> None:
    rng = np.random.default_rng(0)
    busy = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    u2 = np.zeros((64, 64), np.float32)
    u2[20:40, 20:40] = 1.0
    cut = creation_alpha(busy, u2)
    assert cut.method == "u2netp" and np.array_equal(cut.alpha, u2)
    assert creation_alpha(busy, None).method == "none"
    blank = np.zeros((64, 64, 3), np.uint8) + np.array(BACKDROP, np.uint8)
    assert creation_alpha(blank, None).method == "none"


class _Cut:
    def __init__(self, alpha: np.ndarray) -> None:
        self.alpha = alpha


def _creator(framing: str) -> Creator:
    def cut_out(im: Image.Image) -> _Cut:
        rgb = np.asarray(im.convert("RGB"))
        return _Cut((np.abs(rgb.astype(int) - BACKDROP).max(-1) > 60).astype(np.float32))

    imaging = CreationImaging(
        cut_out=cut_out, upscale=lambda im, size: im.resize(size, Image.Resampling.LANCZOS)
    )
    return Creator(
        load_pipeline=lambda: None,
        safety=AllowAllChecker(),
        imaging=imaging,
        model_id="fake",
        framing=framing,
    )


@pytest.mark.parametrize("framing", ["native", "centred"])
def test_finish_frames_the_product_natively_or_centred(framing: str) -> None:
    rgb, _, _ = studio_lamp()
    page, alpha, plain, method = _creator(framing).finish(
        Image.fromarray(rgb), size=256, background=(255, 255, 255)
    )
    assert method == "studio" and page.size == (256, 256) and alpha.shape == (64, 64)
    assert plain <= 1.25
    arr = np.asarray(page).astype(int)
    red = (arr[..., 0] > 150) & (arr[..., 1] < 100)
    ys, xs = np.nonzero(red)
    # The shadow is gone: nothing dark grey under the base.
    grey = (np.abs(arr - arr.mean(-1, keepdims=True)).max(-1) < 8) & (arr.mean(-1) < 200)
    assert not grey.any()
    if framing == "native":
        # Where and as large as drawn: rows 14..50 and columns 22..41 of 64, times 4.
        assert abs(ys.min() - 56) <= 3 and abs(ys.max() - 203) <= 3
        assert abs(xs.min() - 88) <= 3 and abs(xs.max() - 167) <= 3
    else:
        # Centred, the longer side (the height) 0.8 of the page.
        assert abs((ys.max() - ys.min() + 1) - 0.8 * 256) <= 4
        assert abs((ys.min() + ys.max()) / 2 - 128) <= 3
    with pytest.raises(ValueError):
        _creator(framing).finish(Image.fromarray(rgb), size=64, background=(0, 0, 0), framing="x")


def test_validation_captions_are_training_captions_never_held_out_ones() -> None:
    """Where the creator's choices are checked: seeded training captions, by caption string
    disjoint from the held-out list (and a held-out one slipped in is refused)."""
    from dataclasses import replace

    from genservice.training.creation_eval import validation_captions
    from genservice.training.data import build_dataset

    ds = build_dataset(n=64, size=16, seed=0, source="synthetic", n_held_out=6)
    val = validation_captions(ds.train, ds.held_out, 10, seed=0)
    assert len(val) == len({c for c, _, _ in val}) == 10
    assert val == validation_captions(ds.train, ds.held_out, 10, seed=0)
    held = {h.caption for h in ds.held_out}
    assert held and not held & {c for c, _, _ in val}
    assert {c for c, _, _ in val} <= set(ds.train.captions)
    for c, col, cat in val:
        i = ds.train.captions.index(c)
        assert (ds.train.colours[i], ds.train.categories[i]) == (col, cat)
    leaked = replace(ds.held_out[0], caption=val[0][0])
    with pytest.raises(ValueError, match="held-out"):
        validation_captions(ds.train, [leaked], 64, seed=0)


def test_a_picture_with_no_product_is_placed_whole_with_a_margin() -> None:
    def nothing(im: Image.Image) -> _Cut:
        raise ValueError("no product")

    creator = _creator("native")
    creator.imaging = CreationImaging(
        cut_out=nothing, upscale=lambda im, size: im.resize(size, Image.Resampling.LANCZOS)
    )
    grey = Image.new("RGB", (64, 64), (120, 120, 120))
    page, alpha, _, method = creator.finish(grey, size=200, background=(255, 255, 255))
    assert method == "none" and float(alpha.min()) == 1.0
    assert page.getpixel((0, 0)) == (255, 255, 255)  # a margin of the background
    assert page.getpixel((100, 100)) == (120, 120, 120)  # the whole picture, centred
