"""Category shape guides of text-only creations (issue 21): the guide is the training renders'
aligned median silhouette, held-out products are never used, and a creation with the guide off
is the creation of before (same seed, same pixels)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from genservice.creation import sketch as sk
from genservice.creation.request import CreationRequest
from genservice.creation.shape_guide import (
    GUIDES_FILE,
    ShapeGuides,
    build_guides,
    find_category,
    guide_sketch,
    shipped_guides,
    silhouette_guide,
)
from tests.genservice.gen_fixtures import tiny_model_dir  # also sets HF_HUB_OFFLINE, 1 thread


def box(side: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    m = np.zeros((side, side), bool)
    m[y0 : y0 + h, x0 : x0 + w] = True
    return m


def test_guide_is_the_median_box_at_the_median_place() -> None:
    # Three 4x4 squares whose centres are x = 4, 8, 10 and bottoms y = 6, 8, 12: the guide is
    # a 4x4 square centred at x = 8 with its bottom at y = 8.
    masks = [box(16, 2, 2, 4, 4), box(16, 6, 4, 4, 4), box(16, 8, 8, 4, 4)]
    assert np.array_equal(silhouette_guide(masks, 16), box(16, 6, 4, 4, 4))
    # A fourth, 8x8 at x, y in [0, 8): widths 4, 4, 4, 8 (median 4), centres 4, 8, 10, 4
    # (median 6), bottoms 6, 8, 12, 8 (median 8).
    masks.append(box(16, 0, 0, 8, 8))
    assert np.array_equal(silhouette_guide(masks, 16), box(16, 4, 4, 4, 4))


def test_guide_keeps_what_most_silhouettes_cover() -> None:
    # The same 4x4 box three times; two lack its top-left 2x2 corner: the guide lacks it too
    # (per-pixel median), a third shape with the corner does not outvote them.
    full = box(8, 2, 2, 4, 4)
    notched = full.copy()
    notched[2:4, 2:4] = False
    g = silhouette_guide([notched, full, notched], 8)
    assert np.array_equal(g, notched)
    # Scaled to another side: the same shape, twice as large.
    g2 = silhouette_guide([notched, full, notched], 16)
    assert g2.sum() == 4 * notched.sum() and not g2[4:8, 4:8].any() and g2[8:12, 4:12].all()


def test_held_out_products_are_never_used() -> None:
    pair = SimpleNamespace(product=11, category="mug", mask=box(8, 2, 2, 4, 4))
    held = SimpleNamespace(product=20, category="mug", mask=box(8, 2, 2, 4, 4))
    guides = build_guides([pair, pair], side=8)
    assert guides.products == (11,) and guides.counts == {"mug": 2}
    with pytest.raises(ValueError, match="held-out"):
        build_guides([pair, held], side=8)
    with pytest.raises(ValueError, match="held-out"):
        ShapeGuides(8, {"mug": box(8, 2, 2, 4, 4)}, (11, 30), {"mug": 2})
    # The shipped guides: every category of the demo world, training products only.
    from data.demo.attributes import CATEGORIES

    shipped = shipped_guides()
    assert shipped is not None and GUIDES_FILE.is_file()
    assert set(shipped.categories) == set(CATEGORIES)
    assert shipped.products and all(k % 10 != 0 for k in shipped.products)
    assert sum(shipped.counts.values()) == 720 and shipped.side == 64
    for c in shipped.categories:  # a silhouette about half the side, standing in the frame
        ys, xs = np.nonzero(shipped.masks[c])
        assert 0.2 < max(np.ptp(ys), np.ptp(xs)) / 64 < 0.7 and ys.max() > 40


def test_guides_of_real_renders_round_trip_through_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from genservice.training.controlnet import render_pairs

    pairs = render_pairs(n=12, held_out=False, seed=3)
    guides = build_guides(pairs)
    again = ShapeGuides.load(guides.save(tmp_path / "g.json"))
    assert again.products == guides.products and again.counts == guides.counts
    assert all(np.array_equal(again.masks[c], guides.masks[c]) for c in guides.categories)


def test_category_is_given_or_named_in_the_text() -> None:
    cats = ("t-shirt", "lamp", "chair", "sneaker", "mug")
    assert find_category("two red T-Shirts, in a photo studio", cats) == "t-shirt"
    assert find_category("a lamp beside a chair", cats) == "lamp"  # the earliest
    assert find_category("black sneakers", cats) == "sneaker"
    assert find_category("a clamp", cats) is None and find_category("a mugshot", cats) is None
    g = ShapeGuides(8, {c: box(8, 2, 2, 4, 4) for c in cats}, (1,), {})
    assert g.category_of("a red mug") == "mug"
    assert g.category_of("a red mug", "Lamp") == "lamp"  # given wins
    assert g.category_of("a red mug", "kettle") is None  # given, without a guide: none
    assert g.sketch(None, 8) is None and g.sketch("kettle", 8) is None


def test_guide_sketch_is_the_silhouette_the_sketch_path_fills() -> None:
    m = box(64, 20, 16, 24, 40)
    m[40:56, 28:36] = False  # a notch between two legs
    s = guide_sketch(m, 64)
    assert s.size == (64, 64) and np.asarray(s)[0, 0].tolist() == [255, 255, 255]
    filled = sk.filled_outline(s, 64)
    assert (filled & m).sum() / (filled | m).sum() > 0.97
    assert guide_sketch(m, 32).size == (32, 32)


# ----------------------------------------------------------------------------- the creator


@pytest.fixture(scope="module")
def tiny_pipe():  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model_dir()))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _creator(pipe, guides=None):  # type: ignore[no-untyped-def]
    from genservice.creation.pipeline import CreationImaging, Creator
    from genservice.imaging.cutout import cut_out_product
    from genservice.safety import AllowAllChecker

    return Creator(
        load_pipeline=lambda: pipe,
        safety=AllowAllChecker(),
        imaging=CreationImaging(
            cut_out=cut_out_product,
            upscale=lambda im, size: im.resize(size, Image.Resampling.LANCZOS),
        ),
        model_id="tiny-random",
        steps=4,
        shape_guides=guides,
        guide_strength=0.5,
    )


def test_guide_off_is_the_previous_creation_and_on_starts_from_the_silhouette(tiny_pipe) -> None:  # type: ignore[no-untyped-def]
    guides = ShapeGuides(64, {"mug": box(64, 16, 24, 32, 32)}, (1,), {"mug": 1})
    plain = _creator(tiny_pipe).create(CreationRequest(text="a red mug", n=1, seed=5, size=96))
    off = _creator(tiny_pipe, guides).create(
        CreationRequest(text="a red mug", n=1, seed=5, size=96, shape_guide=False)
    )
    unknown = _creator(tiny_pipe, guides).create(
        CreationRequest(text="a red kettle", n=1, seed=5, size=96)
    )
    again = _creator(tiny_pipe).create(CreationRequest(text="a red kettle", n=1, seed=5, size=96))
    assert plain.source == off.source == unknown.source == "text"
    for a, b in ((plain, off), (unknown, again)):
        assert np.array_equal(
            np.asarray(a.candidates[0].native), np.asarray(b.candidates[0].native)
        )
    steps: list[tuple[int, int]] = []
    on = _creator(tiny_pipe, guides).create(
        CreationRequest(text="a red mug", n=1, seed=5, size=96),
        progress=lambda s, t: steps.append((s, t)),
    )
    assert on.source == "text-shape-guide" and on.candidates[0].metadata["source"] == on.source
    assert steps[-1] == (3, 3)  # 4 steps x strength 0.5 + one finished candidate
    # Strength 0.5 keeps much of the start: the square in the named red on a light backdrop.
    native = np.asarray(on.candidates[0].native, np.float32)
    inside, outside = native[32:48, 24:40].mean((0, 1)), native[:8, :8].mean((0, 1))
    assert inside[0] > inside[2] + 20 and outside.mean() > inside.mean()
    assert not np.array_equal(
        np.asarray(on.candidates[0].native), np.asarray(plain.candidates[0].native)
    )


def test_request_payload_names_the_guide_only_when_off() -> None:
    on = CreationRequest(text="a red mug", n=1)
    off = CreationRequest(text="a red mug", n=1, shape_guide=False)
    assert "shape_guide" not in on.to_payload()  # requests made before keep their hash
    assert off.to_payload()["shape_guide"] is False
    assert CreationRequest.from_payload(off.to_payload()) == off
    assert CreationRequest.from_payload(on.to_payload()) == on
    assert on.request_hash != off.request_hash


def test_evaluation_cache_key_names_a_stated_strength(tiny_pipe) -> None:  # type: ignore[no-untyped-def]
    from genservice.training.creation_eval import cache_key

    creator = _creator(tiny_pipe)
    sketch = [guide_sketch(box(64, 16, 24, 32, 32), 64)]
    a = cache_key(creator, ["a red mug"], [1], sketches=sketch, mode="auto")
    b = cache_key(creator, ["a red mug"], [1], sketches=sketch, mode="auto", strength=None)
    c = cache_key(creator, ["a red mug"], [1], sketches=sketch, mode="auto", strength=0.7)
    assert a == b != c


def test_cut_out_joins_a_softer_key_inside_the_guide_only() -> None:
    from genservice.creation.cutout import GUIDE_KEY_HIGH, GUIDE_KEY_LOW, KEY_LOW, creation_alpha
    from genservice.creation.shape_guide import guide_mask

    # A light grey studio backdrop; a dark body (rows 30-50) and a pale part above it
    # (rows 20-30, 13 levels lighter: under KEY_LOW for the plain key, over the middle of the
    # softer key's ramp).
    lift = 13
    assert (GUIDE_KEY_LOW + GUIDE_KEY_HIGH) / 2 < lift < KEY_LOW
    rgb = np.full((64, 64, 3), 220, np.uint8)
    rgb[30:50, 20:44] = (150, 30, 30)
    rgb[20:30, 24:40] = 220 + lift
    u2 = np.zeros((64, 64), np.float32)
    u2[30:50, 20:44] = 1.0
    plain = creation_alpha(rgb, u2)
    assert plain.method == "studio" and plain.alpha[25, 32] == 0.0
    sketch = guide_sketch(box(64, 20, 18, 24, 32), 64)
    mask = guide_mask(sketch, 64)
    assert mask[25, 32] and not mask[5, 5] and guide_mask(sketch, 32).shape == (32, 32)
    guided = creation_alpha(rgb, u2, mask)
    assert guided.alpha[25, 32] > 0.5 and "shape guide" in guided.reason
    assert np.array_equal(guided.alpha[30:50], plain.alpha[30:50])
    # Outside the guide the same pale pixels stay background.
    off = creation_alpha(rgb, u2, box(64, 0, 40, 64, 24))
    assert off.alpha[25, 32] == 0.0
