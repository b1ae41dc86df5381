"""Safety: flagged images are never stored or served; checker errors fail closed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from gen_fixtures import product_image, tiny_model_dir
from PIL import Image

from genservice.backends.diffusers_backend import DiffusersBackend
from genservice.backends.safety_checker import DiffusersSafetyChecker
from genservice.brief import CreativeBrief, ProductRef
from genservice.cache import ResultCache
from genservice.config import GenerationConfig
from genservice.errors import SafetyViolation
from genservice.generator import HeroGenerator
from genservice.safety import (
    AllowAllChecker,
    SafetyChecker,
    SkinToneHeuristicChecker,
    enforce_safe,
    make_checker,
)
from genservice.storage import LocalImageStore


class FlagAll:
    name = "flag-all"

    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        return [True] * len(images)


class Broken:
    name = "broken"

    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        raise RuntimeError("model file missing")


def test_heuristic_known_answers() -> None:
    checker = SkinToneHeuristicChecker()
    assert isinstance(checker, SafetyChecker)
    skin = Image.new("RGB", (32, 32), (224, 172, 140))
    grey = Image.new("RGB", (32, 32), (128, 128, 128))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert checker.skin_fraction(skin) == 1.0 and checker.skin_fraction(grey) == 0.0
    assert checker.check([skin, grey, noise]) == [True, False, False]
    with pytest.raises(ValueError, match="max_skin_fraction"):
        SkinToneHeuristicChecker(max_skin_fraction=0)


def test_enforce_fails_closed() -> None:
    img = Image.new("RGB", (8, 8))
    enforce_safe(SkinToneHeuristicChecker(), [img])
    with pytest.raises(SafetyViolation, match="flagged image"):
        enforce_safe(FlagAll(), [img])
    with pytest.raises(SafetyViolation, match="failed: RuntimeError: model file missing"):
        enforce_safe(Broken(), [img])


def test_allow_all_is_loud(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        checker = make_checker("allow_all")
        assert checker.check([Image.new("RGB", (4, 4))]) == [False]
    assert isinstance(checker, AllowAllChecker)
    assert "SAFETY CHECK DISABLED" in caplog.text
    assert isinstance(make_checker("auto"), SkinToneHeuristicChecker)
    assert make_checker("auto", shipped=FlagAll()).name == "flag-all"
    with pytest.raises(ValueError, match="safety_checker"):
        make_checker("nope")


@pytest.mark.parametrize("checker", [FlagAll(), Broken()])
def test_flagged_output_is_never_stored(tmp_path: Path, checker: SafetyChecker) -> None:
    (tmp_path / "catalog").mkdir()
    product_image(64).save(tmp_path / "catalog" / "p.png")
    cfg = GenerationConfig(model=str(tiny_model_dir()), device="cpu", num_inference_steps=2)
    store = LocalImageStore(tmp_path / "images")
    cache = ResultCache(tmp_path / "cache.sqlite", store=store)
    gen = HeroGenerator(
        backend=DiffusersBackend(cfg, home=tmp_path),
        store=store,
        cache=cache,
        safety=checker,
        config=cfg,
        home=tmp_path,
    )
    brief = CreativeBrief(product=ProductRef(id="1", title="Mug", image="catalog/p.png"), seed=1)
    with pytest.raises(SafetyViolation):
        gen.generate(brief)
    assert not (tmp_path / "images").exists() or not any((tmp_path / "images").rglob("*.*"))
    assert len(cache) == 0 and cache.get(brief.brief_hash) is None


def _tiny_sd_checker(weight: float) -> DiffusersSafetyChecker:
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=32,
    )
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(weight)
        checker.special_care_embeds_weights.fill_(weight)
    fe = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return DiffusersSafetyChecker(checker, fe)


def test_diffusers_safety_checker_wrapper() -> None:
    imgs = [Image.new("RGB", (40, 40), (10, 200, 30)), Image.new("RGB", (40, 40), (0, 0, 0))]
    assert _tiny_sd_checker(weight=10.0).check(imgs) == [False, False]  # never above threshold
    assert _tiny_sd_checker(weight=-10.0).check(imgs) == [True, True]  # always above
    with pytest.raises(SafetyViolation):
        enforce_safe(_tiny_sd_checker(weight=-10.0), imgs)


# -- the calibrated heuristic ------------------------------------------------------------------


def _scene(color: tuple[int, int, int], product: tuple[int, int, int], frac: float) -> Image.Image:
    """A plain backdrop with a centred rectangular "product" covering ``frac`` of it."""
    img = Image.new("RGB", (200, 120), color)
    w, h = int(200 * frac**0.5), int(120 * frac**0.5)
    img.paste(product, (100 - w // 2, 60 - h // 2, 100 + w // 2, 60 + h // 2))
    return img


def test_heuristic_flags_every_synthetic_positive_and_the_58_percent_case() -> None:
    from genservice.safety import synthetic_skin_images

    checker = SkinToneHeuristicChecker()
    positives = synthetic_skin_images(32, seed=1)
    assert all(checker.check(positives))
    # The miss: 58% skin pixels (one body-like region on a dark background).
    fifty_eight = _scene((30, 40, 60), (208, 150, 118), 0.58)
    assert 0.55 < checker.skin_fraction(fifty_eight) < 0.61
    assert checker.check([fifty_eight]) == [True]
    # Every tone of the palette, from very light to very dark, is skin.
    from genservice.safety import SKIN_TONES

    for tone in SKIN_TONES:
        assert checker.score(Image.new("RGB", (64, 64), tone)) == 1.0, tone


def test_heuristic_passes_warm_scenes_and_skin_toned_products() -> None:
    checker = SkinToneHeuristicChecker()
    # A beige chair on a pale cream wall: the old rule saw > 60% "skin" and refused it.
    chair = _scene((245, 235, 215), (200, 160, 120), 0.3)
    cream_wall = _scene((226, 196, 160), (40, 60, 120), 0.25)  # a warm backdrop around a product
    grain = np.asarray(_scene((210, 150, 110), (20, 20, 20), 0.2), dtype=np.float32)
    for k in range(0, 200, 6):
        grain[:, k : k + 3] *= 0.7  # wood grain: textured, not smooth
    wood = Image.fromarray(grain.astype(np.uint8))
    assert checker.check([chair, cream_wall, wood]) == [False, False, False]
    # The same warm backdrop without a product is a frame full of skin tone: refused.
    assert checker.check([Image.new("RGB", (64, 64), (226, 196, 160))]) == [True]
    with pytest.raises(ValueError, match="max_gradient"):
        SkinToneHeuristicChecker(max_gradient=0)


def test_synthetic_positives_are_seeded() -> None:
    from genservice.safety import synthetic_skin_images

    a = synthetic_skin_images(3, seed=5)
    b = synthetic_skin_images(3, seed=5)
    assert [np.asarray(x).tobytes() for x in a] == [np.asarray(x).tobytes() for x in b]
    assert np.asarray(a[0]).shape == (192, 256, 3)
    with pytest.raises(ValueError, match="n: expected"):
        synthetic_skin_images(0, seed=0)


def test_procedural_demo_scenes_pass_with_warm_products() -> None:
    """48 demo-world scenes (every setting under every lighting, warm products: white, brown,
    orange, pink) of the kind the small model learned to draw: at most one is refused."""
    from data.demo.attributes import CATEGORIES, LIGHTING, SETTINGS
    from data.demo.render import compose_scene, render_product

    checker = SkinToneHeuristicChecker()
    colours = ["white", "brown", "orange", "pink"]
    flagged = []
    for i, (setting, lighting) in enumerate([(s, lt) for s in SETTINGS for lt in LIGHTING]):
        attrs = {"colour": colours[i % 4], "pattern": "solid", "material": "leather",
                 "style": "minimalist"}  # fmt: skip
        product = render_product(attrs, category=CATEGORIES[i % len(CATEGORIES)], size=96, seed=i)
        scene = compose_scene(product, setting=setting, lighting=lighting, size=128, seed=i).image
        if checker.check([scene])[0]:
            flagged.append((setting, lighting))
    assert len(flagged) <= 1, flagged
