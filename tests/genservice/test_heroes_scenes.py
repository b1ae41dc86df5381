"""The scene model of the delivery path (``generation.scene_model``): which model draws
scenes, that the generator sends scene requests to it (and only those), the backdrop training
set it learns from, and the cached full-hero rows of ``tailorshot evaluate heroes``."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from gen_fixtures import product_image, stub_imaging, tiny_model_dir
from PIL import Image

from genservice.brief import PLACEMENTS, CreativeBrief, ProductRef, StyleTerm
from genservice.config import DEFAULT_MODEL, DEFAULT_SCENE_MODEL, GenerationConfig
from genservice.generator import HeroImaging


def test_scene_model_resolution_and_identity() -> None:
    shipped = (Path(__file__).resolve().parents[2] / DEFAULT_SCENE_MODEL).is_dir()
    auto = GenerationConfig()
    assert auto.model == DEFAULT_MODEL
    assert auto.scene_model_resolved == (DEFAULT_SCENE_MODEL if shipped else DEFAULT_MODEL)
    if shipped:
        assert auto.model_identity == f"{DEFAULT_MODEL}+scenes:{DEFAULT_SCENE_MODEL}"
    # Another model: it draws its own scenes, and its identity is unchanged.
    other = GenerationConfig(model="runwayml/sd15")
    assert other.scene_model_resolved == "runwayml/sd15"
    assert other.model_identity == "runwayml/sd15"
    same = GenerationConfig(scene_model="")
    assert same.scene_model_resolved == DEFAULT_MODEL and same.model_identity == DEFAULT_MODEL
    named = GenerationConfig(model="a", scene_model="b", loras={"x": 0.5})
    assert named.scene_model_resolved == "b"
    assert named.model_identity == "a+lora:x@0.5+scenes:b"


def _imaging() -> HeroImaging:
    """Fast stand-ins: colour-key cut-out, nearest-neighbour 'restoration', no ghosts."""
    return stub_imaging()


def _generator(tmp_path: Path, *, imaging: bool) -> tuple[Any, list[str], list[str]]:
    """A generator on the tiny model whose main and scene backends record their prompts."""
    from genservice.backends.diffusers_backend import DiffusersBackend
    from genservice.cache import ResultCache
    from genservice.generator import HeroGenerator
    from genservice.safety import SkinToneHeuristicChecker
    from genservice.storage import LocalImageStore

    config = GenerationConfig(model=str(tiny_model_dir()), device="cpu", num_inference_steps=2)
    main_calls: list[str] = []
    scene_calls: list[str] = []

    class Recording(DiffusersBackend):
        def __init__(self, calls: list[str]) -> None:
            super().__init__(config, home=tmp_path)
            self.prompts_seen = calls

        def generate_batch(self, requests: Any, **kw: Any) -> Any:
            self.prompts_seen.extend(r.prompt for r in requests)
            return super().generate_batch(requests, **kw)

    gen = HeroGenerator(
        backend=Recording(main_calls),
        store=LocalImageStore(tmp_path / "images"),
        cache=ResultCache(":memory:"),
        safety=SkinToneHeuristicChecker(),
        config=config,
        home=tmp_path,
        imaging=_imaging() if imaging else None,
        scene_backend=Recording(scene_calls),
    )
    return gen, main_calls, scene_calls


@pytest.mark.parametrize("imaging", [True, False])
def test_scene_requests_go_to_the_scene_model_only(tmp_path: Path, imaging: bool) -> None:
    (tmp_path / "catalog").mkdir()
    product_image(96).save(tmp_path / "catalog" / "p.png")
    gen, main_calls, scene_calls = _generator(tmp_path, imaging=imaging)
    brief = CreativeBrief(
        product=ProductRef(id="1", title="Red mug", image="catalog/p.png", category="mug"),
        placement=PLACEMENTS["square"],
        style_terms=(StyleTerm("forest", 2.0), StyleTerm("night", 1.0)),
        seed=1,
        model_id=gen.config.model,
    )
    gen.generate(brief)
    if imaging:  # the delivery path: a product-free scene from the scene model
        assert scene_calls == ["in a forest, night"] and main_calls == []
    else:  # the classic path inpaints around the product with the main model
        assert scene_calls == [] and len(main_calls) == 1
        assert main_calls[0].startswith("Red mug") or "Red mug" in main_calls[0]


def test_backdrop_set_is_seeded_and_captioned_as_scenes_are_asked_for() -> None:
    from transformers import CLIPTokenizer

    from genservice.prompts import SAFETY_NEGATIVE
    from genservice.training.scene_model import backdrop_set, unconditional_captions

    a, b = backdrop_set(24, seed=3), backdrop_set(24, seed=3)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert a.images.shape == (24, 64, 64, 3)
    from genservice import vocab

    phrases = vocab.setting_phrases()
    for cap, s, li in zip(a.captions, a.settings, a.lightings, strict=True):
        words = cap.split(", ")
        # Setting phrase first (unless dropped), then the lighting, as backdrop_prompt spells.
        assert words[:2] == [phrases[s], li] or words[0] == li
    # Different settings give different pictures (the renderer draws the setting).
    by = {s: a.images[i].astype(float) for i, s in enumerate(a.settings)}
    assert len(by) >= 4
    keys = list(by)
    assert all(np.abs(by[keys[0]] - by[k]).mean() > 5 for k in keys[1:])
    tok = CLIPTokenizer.from_pretrained(str(Path(DEFAULT_MODEL) / "tokenizer"))
    unc = unconditional_captions(tok)
    assert "" in unc and ", ".join(SAFETY_NEGATIVE) in unc
    assert all(c.startswith(", ".join(SAFETY_NEGATIVE)) for c in unc if c)


def test_hero_rows_are_measured_once_and_read_back(tmp_path: Path) -> None:
    from api.cli.heroes import hero_rows

    home = tmp_path / "home"
    home.mkdir()
    gen, _main, scene_calls = _generator(tmp_path / "gen", imaging=True)

    class _Saliency:
        def saliency(self, image: Image.Image) -> np.ndarray:
            sal = np.zeros(image.size[::-1], np.float32)
            sal[:300, :300] = 1.0  # a salient blob (> 1 % of the hero) in a corner: a ghost
            return sal

    settings = SimpleNamespace(home=str(home))
    kw: dict[str, Any] = {"judge": None, "model": _Saliency(), "progress": False}
    rows, thumbs, captions = hero_rows(settings, gen, n_heroes=3, seed=5, **kw)
    assert len(rows) == 3 and len(thumbs) == 3 and len(captions) == 3
    assert [r["placement"] for r in rows] == ["banner", "square", "story"]
    assert not any(r["cached"] for r in rows) and len(scene_calls) == 3
    # Requested setting and lighting lead the scene prompt; the product's style follows.
    for r in rows:
        assert r["prompt"].split(", ")[1] == r["lighting"]
        assert r["product_upscale"] <= 1.25 and r["sharpness_vs_bicubic"] > 0
        assert r["ghost"] is True, r  # the corner blob lies outside every product box
    again, thumbs2, _ = hero_rows(settings, gen, n_heroes=3, seed=5, **kw)
    assert all(r["cached"] for r in again) and len(scene_calls) == 3  # nothing regenerated
    strip = [{k: v for k, v in r.items() if k != "cached"} for r in rows]
    assert strip == [{k: v for k, v in r.items() if k != "cached"} for r in again]
    assert [t.size for t in thumbs2] == [t.size for t in thumbs]
    # Another seed is another hero: measured, not read back.
    other, _, _ = hero_rows(settings, gen, n_heroes=1, seed=6, **kw)
    assert other[0]["cached"] is False and len(scene_calls) == 4


def test_scene_negative_prompt_keeps_only_words_the_model_knows() -> None:
    from transformers import CLIPTokenizer

    from genservice.prompts import PromptBuilder
    from genservice.scene_prompt import known_words_only

    tok = CLIPTokenizer.from_pretrained(str(Path(DEFAULT_MODEL) / "tokenizer"))

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False).input_ids)

    # sd-tiny's tokenizer learned the demo captions: it splits every negative word into pieces.
    negative = PromptBuilder(max_tokens=32, token_counter=count).negative_prompt
    assert known_words_only(negative, count) == ""
    # Words it knows stay, whole items only ("low" alone is known, "low quality" is not).
    assert known_words_only("beach, low quality, golden hour", count) == "beach, golden hour"
    # A tokenizer that knows every word (a real CLIP's, for these) keeps them all.
    assert known_words_only("nsfw, nudity, low quality", lambda w: 1) == "nsfw, nudity, low quality"


def test_scene_model_recipe_runs_end_to_end_and_loads(tmp_path: Path) -> None:
    """Two steps on eight backdrops from the tiny random pipeline: the folder it writes loads
    as a pipeline and draws a scene (the shipped run's figures are in its model card)."""
    import torch

    from genservice.training.scene_model import export_checkpoint, train_scene_model

    torch.set_num_threads(1)
    out, work = tmp_path / "scenes", tmp_path / "work"
    rec = train_scene_model(
        out=out, base=tiny_model_dir(), work=work, n=8, steps=2, batch_size=2, seed=1
    )
    assert rec["steps"] == 2 and rec["n_backdrops"] == 8
    assert (out / "training" / "training_scenes.json").is_file()
    assert export_checkpoint(work=work, base=tiny_model_dir(), out=tmp_path / "again") == 2
    from diffusers import StableDiffusionPipeline

    a = StableDiffusionPipeline.from_pretrained(str(out)).unet.state_dict()
    b = StableDiffusionPipeline.from_pretrained(str(tmp_path / "again")).unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the checkpoint is what was saved
    base = StableDiffusionPipeline.from_pretrained(str(tiny_model_dir())).unet.state_dict()
    assert any(not torch.equal(a[k], base[k]) for k in a)  # and it moved from the base
