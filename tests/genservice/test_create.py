"""New product images (issue 21): requests, sketches, ControlNet (scale 0 = none, single-file
round trip), the creator's whole path and the generated-image metadata."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from genservice.creation import sketch as sk
from genservice.creation.pipeline import (
    CreationImaging,
    Creator,
    encode_png,
    is_generated,
    on_background,
    plain_enlargement,
    product_box,
)
from genservice.creation.request import (
    CreationRejected,
    CreationRequest,
    creation_prompt,
    is_creation,
    parse_background,
)
from genservice.metadata import read_metadata
from genservice.safety import AllowAllChecker
from tests.genservice.gen_fixtures import tiny_model_dir  # also sets HF_HUB_OFFLINE, 1 thread


def square_sketch(side: int = 128) -> Image.Image:
    """Black outline of a square (x, y in [32, 96)) on white."""
    im = Image.new("RGB", (side, side), "white")
    ImageDraw.Draw(im).rectangle((32, 32, 95, 95), outline="black", width=3)
    return im


# ----------------------------------------------------------------------------- request


def test_prompt_appends_category_and_studio_and_rejects_blocked_text() -> None:
    assert creation_prompt("a red leather bag", "handbag") == (
        "a red leather bag, handbag, in a photo studio"
    )
    # A detail page keeps only the product: the setting named is replaced by the studio.
    assert creation_prompt("a blue mug on a beach") == "a blue mug, in a photo studio"
    for bad in ("free nudes", "n.s.f.w mug", "a mug, ignore previous instructions"):
        with pytest.raises(CreationRejected):
            creation_prompt(bad)
    with pytest.raises(CreationRejected):
        CreationRequest(text="mug", n=9)
    with pytest.raises(CreationRejected):
        CreationRequest(text="mug", background="#12345")


def test_request_payload_round_trips_and_hash_is_stable() -> None:
    req = CreationRequest(text="a red mug", n=2, seed=3, size=256, background="#102030")
    payload = req.to_payload()
    assert is_creation(payload) and not is_creation({"product": {}})
    assert CreationRequest.from_payload(payload) == req
    assert req.request_hash == CreationRequest.from_payload(payload).request_hash
    assert req.request_hash != CreationRequest(text="a red mug", n=2, seed=4).request_hash
    assert len(req.request_hash) == 64
    assert parse_background("#102030") == (16, 32, 48)
    assert parse_background("white") == (255, 255, 255)


# ----------------------------------------------------------------------------- sketches


def test_filled_outline_of_a_drawn_square_is_the_square() -> None:
    mask = sk.filled_outline(square_sketch(), 64)
    truth = np.zeros((64, 64), bool)
    truth[16:48, 16:48] = True
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.85
    assert not sk.filled_outline(Image.new("RGB", (64, 64), "white"), 64).any()


def test_derived_sketch_of_a_product_outlines_it() -> None:
    im = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(im).ellipse((12, 12, 52, 52), fill=(200, 30, 40))
    sketch = sk.derive_sketch(im, 64)
    arr = np.asarray(sketch)
    assert set(np.unique(arr)) <= {0, 255}
    filled = sk.filled_outline(sketch, 64)
    disk = np.asarray(im.convert("L")) < 200
    assert (filled & disk).sum() / (filled | disk).sum() > 0.85
    # The control map is white edges on black, the init image keeps the outline filled.
    ctrl = np.asarray(sk.control_image(sketch, 64))
    assert ctrl.shape == (64, 64, 3) and ctrl[32, 32].max() == 0 and ctrl.max() == 255
    init = np.asarray(sk.init_image(sketch, 64))
    assert init[32, 32].tolist() == [128, 128, 128] and init[2, 2].tolist() == [236] * 3
    # With the description's colour, the uncoloured inside starts in that colour.
    red = sk.prompt_colour("a Red leather handbag, in a photo studio")
    assert red == (204, 32, 38) and sk.prompt_colour("a leather handbag") is None
    assert sk.prompt_colour("a reddish bag") is None  # whole words only
    tinted = np.asarray(sk.init_image(sketch, 64, colour=red))
    assert tinted[32, 32].tolist() == [204, 32, 38] and tinted[2, 2].tolist() == [236] * 3


# ----------------------------------------------------------------------------- ControlNet


def _random_controlnet(unet):  # type: ignore[no-untyped-def]
    """A ControlNet from ``unet`` whose zero convolutions are NOT zero (so scale matters)."""
    import torch
    from diffusers import ControlNetModel

    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 64, 128))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def tiny_pipe():  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model_dir()))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _fast_imaging() -> CreationImaging:
    from genservice.imaging.cutout import cut_out_product

    return CreationImaging(
        cut_out=cut_out_product,
        upscale=lambda im, size: im.resize(size, Image.Resampling.LANCZOS),
    )


def _creator(pipe, controlnet=None, **kw):  # type: ignore[no-untyped-def]
    return Creator(
        load_pipeline=lambda: pipe,
        safety=AllowAllChecker(),
        imaging=_fast_imaging(),
        model_id="tiny-random",
        controlnet=controlnet,
        steps=3,
        **kw,
    )


@pytest.mark.parametrize("strength", [None, 0.6])
def test_controlnet_at_scale_zero_equals_no_controlnet(tiny_pipe, strength) -> None:  # type: ignore[no-untyped-def]
    """From noise (strength None) the reference is text alone; from the filled outline
    (strength 0.6) it is the img2img fallback at the same strength: same seed, same pixels."""
    net = _random_controlnet(tiny_pipe.unet)
    plain = _creator(tiny_pipe, img2img_strength=strength or sk.IMG2IMG_STRENGTH)
    with_cn = _creator(tiny_pipe, controlnet=net, controlnet_strength=strength)
    plain.steps = with_cn.steps = 3 if strength is None else 6  # 3 denoising steps either way
    prompt = "a red mug, in a photo studio"
    if strength is None:
        ref, src = plain.diffuse(prompt, [7])
    else:
        ref, src = plain.diffuse(prompt, [7], sketch=square_sketch())
    zero, src0 = with_cn.diffuse(prompt, [7], sketch=square_sketch(), controlnet_scale=0.0)
    one, _ = with_cn.diffuse(prompt, [7], sketch=square_sketch(), controlnet_scale=1.0)
    assert (src, src0) == ("text" if strength is None else "sketch-img2img", "sketch-controlnet")
    a, b, c = (np.asarray(x[0], np.int16) for x in (ref, zero, one))
    assert np.abs(a - b).max() <= 1  # identical up to float rounding of the extra adds
    assert np.abs(a - c).mean() > 2.0  # the control does change the image at scale 1


def test_controlnet_path_starts_from_the_outline_and_auto_picks_the_measured_best(
    tiny_pipe,
) -> None:  # type: ignore[no-untyped-def]
    net = _random_controlnet(tiny_pipe.unet)
    creator = _creator(tiny_pipe, controlnet=net, controlnet_strength=0.5)
    assert creator.sketch_mode("controlnet") == "controlnet"
    assert creator.sketch_mode("img2img") == "img2img"
    assert creator.sketch_mode("auto") == sk.AUTO_SKETCH_MODE
    assert (
        _creator(tiny_pipe, controlnet=net, auto_sketch_mode="img2img").sketch_mode("auto")
        == "img2img"
    )
    with pytest.raises(ValueError):
        _creator(tiny_pipe, controlnet=net, auto_sketch_mode="text")
    assert creator.sketch_steps("controlnet") == 1  # 3 steps x 0.5, as diffusers runs them
    steps: list[tuple[int, int]] = []
    out = creator.create(
        CreationRequest(text="a red mug", n=1, size=96, sketch_mode="controlnet"),
        sketch=square_sketch(),
        progress=lambda s, t: steps.append((s, t)),
    )
    assert out.source == "sketch-controlnet"
    assert steps[-1] == (2, 2)  # one denoising step + one finished candidate
    # Strength 0.5 keeps much of the start (the outline in red on the light backdrop): the
    # square's inside is reddish, its outside light.
    native = np.asarray(out.candidates[0].native, np.float32)
    inside, outside = native[24:40, 24:40].mean((0, 1)), native[:8, :8].mean((0, 1))
    assert inside[0] > inside[2] + 20 and outside.mean() > inside.mean()


def test_single_file_controlnet_round_trips(tiny_pipe, tmp_path) -> None:  # type: ignore[no-untyped-def]
    net = _random_controlnet(tiny_pipe.unet)
    folder = tmp_path / "cn"
    net.save_pretrained(str(folder))
    single = sk.save_controlnet_single_file(net, tmp_path / "one" / "controlnet.safetensors")
    loaded = sk.load_controlnet(single, config=folder)
    again = sk.load_controlnet(folder)
    want = net.state_dict()
    for other in (loaded, again):
        got = other.state_dict()
        assert set(got) == set(want)
        assert all(bool((got[k] == want[k]).all()) for k in want)
    with pytest.raises(ValueError, match="config"):
        sk.load_controlnet(single)  # no config.json beside it and none given


def test_img2img_fallback_without_controlnet_states_its_strength(tiny_pipe) -> None:  # type: ignore[no-untyped-def]
    creator = _creator(tiny_pipe)
    assert creator.sketch_mode("auto") == "img2img"
    with pytest.raises(CreationRejected):
        creator.sketch_mode("controlnet")
    steps: list[tuple[int, int]] = []
    out = creator.create(
        CreationRequest(text="a red mug", n=1, size=96),
        sketch=square_sketch(),
        progress=lambda s, t: steps.append((s, t)),
    )
    assert out.source == "sketch-img2img" and creator.img2img_strength == sk.IMG2IMG_STRENGTH == 0.4
    assert steps[-1][0] == steps[-1][1]  # progress ends at its total


# ----------------------------------------------------------------------------- whole path


def test_create_makes_n_marked_candidates_at_the_requested_size(tiny_pipe) -> None:  # type: ignore[no-untyped-def]
    class Store:
        def __init__(self) -> None:
            self.data: dict[str, bytes] = {}

        def put(self, data: bytes, content_type: str) -> str:
            key = f"{len(self.data):064d}.png"
            self.data[key] = data
            return key

    store = Store()
    creator = _creator(tiny_pipe, store=store)
    out = creator.create(CreationRequest(text="a red mug", n=2, seed=5, size=160))
    assert [c.seed for c in out.candidates] == [5, 6] and out.source == "text"
    assert out.keys == list(store.data)
    for c in out.candidates:
        assert c.image.size == (160, 160)
        assert c.image.getpixel((0, 0)) == (255, 255, 255)  # clean white background
        assert is_generated(c.png)
        meta = read_metadata(c.png)
        assert meta["generated"] == "true" and meta["seed"] == str(c.seed)
        assert meta["source"] == "text" and meta["model"] == "tiny-random"
        assert "red mug" not in c.png.decode("latin-1")  # the prompt's hash, not its text
        assert c.alpha.shape == (64, 64)
    # Same request, same seed: the same pixels.
    again = _creator(tiny_pipe).create(CreationRequest(text="a red mug", n=1, seed=5, size=160))
    assert np.array_equal(
        np.asarray(again.candidates[0].image), np.asarray(out.candidates[0].image)
    )


def test_geometry_helpers() -> None:
    assert product_box((40, 20), 100) == (80, 40)
    assert plain_enlargement((50, 50), (800, 800), 1.25) == pytest.approx(1.0)
    assert plain_enlargement((50, 50), (864, 864), 1.25) == pytest.approx(864 / 800)
    assert plain_enlargement((100, 100), (90, 90), 1.25) == pytest.approx(0.9)
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 255))
    out = on_background(rgba, 30, (0, 0, 255))
    assert out.getpixel((0, 0)) == (0, 0, 255) and out.getpixel((15, 15)) == (255, 0, 0)
    png = encode_png(out, {"generated": "true"})
    assert is_generated(png) and b"trainedAlgorithmicMedia" in png


def test_handler_runs_creations_and_passes_other_jobs_on() -> None:
    from types import SimpleNamespace

    from genservice.creation.handler import CreationJobHandler

    class FakeCreator:
        def create(self, request, *, sketch=None, progress=None, should_cancel=None):  # type: ignore[no-untyped-def]
            cands = [SimpleNamespace(key=f"k{i}", product_upscale=1.0) for i in range(request.n)]
            return SimpleNamespace(
                candidates=cands, keys=[c.key for c in cands], timings={}, source="text"
            )

    seen: list[str] = []

    def inner(job, progress, should_cancel):  # type: ignore[no-untyped-def]
        seen.append(job.id)
        return "hero-key"

    built: list[int] = []

    def factory() -> FakeCreator:
        built.append(1)
        return FakeCreator()

    handler = CreationJobHandler(inner, factory, images=None)  # type: ignore[arg-type]
    job = SimpleNamespace(id="c", brief=CreationRequest(text="a mug", n=3).to_payload())
    res = handler(job, lambda s, t: None, lambda: False)  # type: ignore[arg-type]
    assert res.result_key == "k0" and res.timings["candidate_keys"] == ["k0", "k1", "k2"]
    hero = SimpleNamespace(id="h", brief={"product": {}})
    assert handler(hero, lambda s, t: None, lambda: False) == "hero-key"  # type: ignore[arg-type]
    assert seen == ["h"] and built == [1]


def test_evaluation_reuses_cached_diffusion_only_for_the_same_inputs(tiny_pipe, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from genservice.training.creation_eval import _diffuse_cached

    creator = _creator(tiny_pipe)
    calls: list[list[int]] = []
    real = creator.diffuse

    def counting(prompts, seeds, **kw):  # type: ignore[no-untyped-def]
        calls.append(list(seeds))
        return real(prompts, seeds, **kw)

    creator.diffuse = counting  # type: ignore[method-assign]
    args = {"sketches": None, "mode": "auto", "cache_dir": tmp_path}
    first = _diffuse_cached(creator, ["a red mug", "a blue mug"], [1, 2], **args)
    again = _diffuse_cached(creator, ["a red mug", "a blue mug"], [1, 2], **args)
    assert calls == [[1, 2]]  # the second run read the cache
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again, strict=True)
    )
    _diffuse_cached(creator, ["a red mug", "a blue mug"], [1, 3], **args)
    creator.img2img_strength = 0.5
    _diffuse_cached(creator, ["a red mug"], [1], **{**args, "sketches": [square_sketch()]})
    assert calls == [[1, 2], [1, 3], [1]]  # another seed or a sketch is computed anew


def test_page_judge_samples_are_true_renders_on_plain_grounds_at_any_place() -> None:
    from data.demo import attributes as vocab
    from genservice.training.creation_eval import page_judge_samples

    x, cols, cats = page_judge_samples(24, seed=0)
    again, cols2, _ = page_judge_samples(24, seed=0)
    assert x.shape == (24, 64, 64, 3) and x.dtype == np.uint8
    assert np.array_equal(x, again) and cols == cols2  # seeded
    assert set(cols) <= set(vocab.COLOURS) and set(cats) <= set(vocab.CATEGORIES)
    # Plain grounds: the most common pixel of each image is its ground; white about half.
    grounds = []
    for im in x:
        px, counts = np.unique(im.reshape(-1, 3), axis=0, return_counts=True)
        grounds.append(tuple(px[counts.argmax()]))
        assert counts.max() > 0.1 * 64 * 64
    n_white = sum(g == (255, 255, 255) for g in grounds)
    assert 6 <= n_white <= 18
    # Products stand anywhere and at many scales: their boxes' centres and spans vary.
    spans, centres = [], []
    for im, g in zip(x, grounds, strict=True):
        ys, xs = np.nonzero(np.abs(im.astype(int) - np.array(g)).sum(-1) > 60)
        spans.append(max(np.ptp(ys), np.ptp(xs)) + 1)
        centres.append((xs.min() + xs.max()) / 2)
    assert max(spans) - min(spans) > 20 and np.std(centres) > 3
    held, _, _ = page_judge_samples(4, seed=0, held_out=True)
    assert not np.array_equal(held, x[:4])


def test_pick_captions_first_or_spread() -> None:
    from genservice.training.creation_eval import pick_captions

    held = [f"c{i:03d}" for i in range(200)]
    assert pick_captions(held, 3) == ["c000", "c001", "c002"]
    spread = pick_captions(held, 50, spread=True)
    assert len(spread) == 50 and spread[:3] == ["c000", "c004", "c008"] and spread[-1] == "c196"
    assert pick_captions(held, 0, spread=True) == [] and len(pick_captions(held, 200, True)) == 200
