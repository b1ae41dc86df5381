"""``background`` from a generated scene (genservice.edits.scene): the hero path's scene
(product-free prompt at the model's native size, delivered to the image's size, contact
shadow), the product bit-exact where it was, the scene's ground under its base, metadata
with the prompt or terms; the edit job runs it with the worker's generator."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from data.demo.render import on_studio_background, render_product
from genservice.backends.base import GenerationRequest
from genservice.edits import apply_edit
from genservice.edits.scene import product_base, scene_terms, stand_on
from genservice.errors import GenerationError
from genservice.generator import HeroGenerator, HeroImaging
from genservice.metadata import read_metadata
from tests.genservice.gen_fixtures import tiny_model_dir

SNEAKER = {"colour": "red", "pattern": "solid", "material": "leather", "style": "sporty"}


def _imaging(record: dict[str, Any]) -> HeroImaging:
    """Deterministic stand-ins for the learned collaborators: nearest-neighbour
    "restoration" (recorded), no ghosts, the given cut-out never used (edits pass a mask)."""

    def sr(image: Image.Image, size: tuple[int, int]) -> Image.Image:
        record.setdefault("sr", []).append((image.size, size))
        return image.resize(size, Image.Resampling.NEAREST)

    def no_ghosts(image: Image.Image) -> np.ndarray:
        return np.zeros(image.size[::-1], np.float32)

    def no_cutout(image: Image.Image) -> Any:
        raise AssertionError("the edit passes its own mask")

    return HeroImaging(cut_out=no_cutout, upscale_product=sr, upscale_scene=sr, saliency=no_ghosts)


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> tuple[HeroGenerator, dict[str, Any]]:
    from genservice.backends.diffusers_backend import DiffusersBackend
    from genservice.cache import ResultCache
    from genservice.config import GenerationConfig
    from genservice.safety import SkinToneHeuristicChecker
    from genservice.storage import LocalImageStore

    home = tmp_path_factory.mktemp("scene")
    config = GenerationConfig(model=str(tiny_model_dir()), device="cpu", num_inference_steps=2)
    record: dict[str, Any] = {}
    gen = HeroGenerator(
        backend=DiffusersBackend(config, home=home),
        store=LocalImageStore(home / "images"),
        cache=ResultCache(":memory:"),
        safety=SkinToneHeuristicChecker(),
        config=config,
        home=home,
        imaging=_imaging(record),
    )
    requests: list[GenerationRequest] = []
    inner = gen.backend.generate

    def spy(request: GenerationRequest, **kw: Any) -> Any:
        requests.append(request)
        return inner(request, **kw)

    gen.backend.generate = spy  # type: ignore[method-assign]
    record["requests"] = requests
    return gen, record


def _product(size: int = 160) -> tuple[Image.Image, np.ndarray]:
    rgba = render_product(SNEAKER, category="handbag", size=size, seed=2)
    return on_studio_background(rgba), np.asarray(rgba)[..., 3].astype(np.float32) / 255.0


def test_scene_terms_split_sanitise_and_refuse() -> None:
    assert scene_terms("Beach,  golden hour , beach") == ["beach", "golden hour"]
    assert scene_terms(terms=["minimalist", "studio"]) == ["minimalist", "studio"]
    assert scene_terms("beach, (spotlight:1.5)") == ["beach", "spotlight"]  # weight syntax gone
    assert scene_terms("beach, naked model") == ["beach"]  # a blocked phrase is dropped whole
    with pytest.raises(ValueError, match="exactly one of prompt"):
        scene_terms("beach", ["beach"])
    with pytest.raises(ValueError, match="exactly one of prompt"):
        scene_terms()
    with pytest.raises(ValueError, match="prompt: expected scene words"):
        scene_terms(" , ,")


def test_stand_on_moves_the_ground_row_and_keeps_the_ends() -> None:
    """Known answer: a ramp scene (row r holds value r); the ground row 50 of 100 lands on
    row 75; the image's top and bottom edges stay (within half a row); rows stay monotone."""
    ramp = np.repeat(np.arange(100, dtype=np.uint8)[:, None, None], 3, axis=2)
    ramp = np.repeat(ramp, 4, axis=1)
    out = stand_on(ramp, ground=0.505, base=0.755, max_stretch=2.5)  # rows 50 and 75
    col = out[:, 0, 0].astype(int)
    assert col[75] == 50 and col[0] == 0 and col[99] >= 98
    assert (np.diff(col) >= 0).all()
    assert col[37] == 25  # upper part stretched by 50/75 (pixel centres)
    assert (stand_on(ramp, 0.5, 0.5) == ramp).all()  # ground already under the base
    # Bounded: the floor 0.9-1 would be stretched 3x into 0.7-1; at most 1.5x, so the scene
    # row under the base is 1 - 0.3 / 1.5 = 0.8 (row 80 lands on row 70).
    bounded = stand_on(ramp, ground=0.905, base=0.705)[:, 0, 0].astype(int)
    assert bounded[70] == 80 and bounded[0] == 0 and bounded[99] >= 98
    with pytest.raises(ValueError, match="ground, base"):
        stand_on(ramp, 0.0, 0.5)


def test_generated_background_keeps_the_product_and_uses_the_hero_scene(
    generator: tuple[HeroGenerator, dict[str, Any]],
) -> None:
    gen, record = generator
    img, alpha = _product()
    res = apply_edit(
        "background", img, mask=alpha, prompt="beach, golden hour", generator=gen, seed=3
    )
    out, src = np.asarray(res.image), np.asarray(img)
    assert res.image.size == img.size and res.image.mode == "RGB"
    core = alpha >= 1.0
    assert core.sum() > 2000 and (out[core] == src[core]).all()  # the product, bit-exact
    # The scene: the hero's product-free prompt (settings spelled as captions spell them), at
    # the model's native size, brought to the image's size by the scene restorer.
    req = record["requests"][-1]
    assert req.prompt == "on a beach, golden hour" and req.seed == 3
    native = gen.scene_backend.native_size
    assert (req.width, req.height) == (native, native)
    assert ((native, native), img.size) in record["sr"]
    outside = alpha == 0
    assert np.abs(out[outside].astype(int) - src[outside]).mean() > 20  # a new backdrop
    meta = res.metadata
    assert meta["edit_op"] == "background" and meta["model"] == gen.scene_backend.model_id
    params = json.loads(meta["edit_params"])
    assert params["prompt"] == "beach, golden hour" and params["seed"] == 3
    assert params["scene_prompt"] == "on a beach, golden hour"
    again = apply_edit(
        "background", img, mask=alpha, prompt="beach, golden hour", generator=gen, seed=3
    )
    assert (np.asarray(again.image) == out).all()  # seeded: the same scene twice


def test_generated_background_shadow_and_terms(
    generator: tuple[HeroGenerator, dict[str, Any]],
) -> None:
    """From terms (a taste profile's, resolved upstream): the hero's scene prompt (setting and
    light first, captions' spelling); the contact shadow darkens just under the product's base and nothing far above it."""
    gen, record = generator
    img, alpha = _product()
    kw: dict[str, Any] = {"mask": alpha, "generator": gen, "seed": 1}
    terms = ["minimalist", "studio", "soft light"]
    lit = apply_edit("background", img, terms=terms, shadow=0.0, **kw)
    shaded = apply_edit("background", img, terms=terms, shadow=0.6, **kw)
    assert json.loads(shaded.metadata["edit_params"])["terms"] == terms
    assert record["requests"][-1].prompt == "in a photo studio, soft light, minimalist"
    a, b = np.asarray(lit.image).astype(int), np.asarray(shaded.image).astype(int)
    base = product_base(alpha)
    cols = np.flatnonzero((alpha > 0.5).any(axis=0))
    mid = (cols[0] + cols[-1]) // 2
    assert (b[base + 1, mid] < a[base + 1, mid]).all()  # darker under the product
    assert (b[:20] == a[:20]).all()  # the sky is untouched
    core = alpha >= 1.0
    assert (b[core] == np.asarray(img)[core]).all()


def test_generated_background_refusals(generator: tuple[HeroGenerator, dict[str, Any]]) -> None:
    gen, _ = generator
    img, alpha = _product(64)
    with pytest.raises(ValueError, match="needs a generator"):
        apply_edit("background", img, mask=alpha, prompt="beach")
    with pytest.raises(ValueError, match="api layer"):
        apply_edit("background", img, mask=alpha, user_id="u1")
    with pytest.raises(ValueError, match="takes no"):
        apply_edit("background", img, mask=alpha, prompt="beach", studio="red", generator=gen)
    bare = HeroGenerator(
        backend=gen.backend, store=gen.store, cache=gen.cache, safety=gen.safety, imaging=None
    )
    with pytest.raises(GenerationError, match="no scene delivery path"):
        apply_edit("background", img, mask=alpha, prompt="beach", generator=bare)


def test_edit_job_runs_a_scene_with_the_workers_generator(
    generator: tuple[HeroGenerator, dict[str, Any]], tmp_path: Path
) -> None:
    from genservice.edits.jobs import edit_payload, run_edit
    from genservice.storage import LocalImageStore

    gen, _ = generator
    img, _ = _product(96)
    store = LocalImageStore(tmp_path / "images")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    key = store.put(buf.getvalue(), "image/png")
    steps = [{"op": "background", "params": {"terms": ["beach"], "seed": 0, "shadow": 0.4}}]
    payload = edit_payload(source_key=key, steps=steps)
    with pytest.raises(GenerationError, match="no scene generator"):
        run_edit(payload, store)
    res = run_edit(payload, store, scenes=lambda: gen)
    meta = read_metadata(store.get(res.result_key))
    assert meta["edit_op"] == "background" and meta["model"] == gen.scene_backend.model_id
    assert json.loads(meta["edit_params"]) == [steps[0]["params"]]  # terms, never a user


def test_cli_edit_background_from_a_prompt_and_from_a_user(
    generator: tuple[HeroGenerator, dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``tailorshot edit --op background --prompt`` / ``--user-id``: the configured generator
    (here the tiny one) makes the scene; a user's segment terms become the scene's words and
    the PNG records the terms, not the user; a user with no terms is refused (exit 2)."""
    from sqlmodel import Session
    from typer.testing import CliRunner

    import api.composition
    from api.cli import app
    from data.db import init_db, make_engine
    from data.models import Segment, SegmentMembership, User

    gen, record = generator
    monkeypatch.setenv("TAILORSHOT_HOME", str(tmp_path))
    monkeypatch.delenv("TAILORSHOT_DATABASE_URL", raising=False)
    monkeypatch.setattr(api.composition, "load_generator", lambda settings: gen)
    engine = make_engine(f"sqlite:///{(tmp_path / 'tailorshot.db').resolve()}")
    init_db(engine)
    with Session(engine) as s:
        s.add(Segment(id=1, label="outdoors", terms=[["forest", 1.4], ["overcast", 0.6]]))
        s.add(User(id="shopper-7"))
        s.add(User(id="nobody"))
        s.flush()
        s.add(SegmentMembership(user_id="shopper-7", segment_id=1, score=1.0))
        s.commit()
    img, alpha = _product(96)
    src, out = tmp_path / "p.png", tmp_path / "o.png"
    img.save(src)
    mask = tmp_path / "m.png"
    Image.fromarray(np.round(alpha * 255).astype(np.uint8), "L").save(mask)
    base = ["edit", "--image", str(src), "--mask", str(mask), "--op", "background", "--json"]
    runner = CliRunner()
    r = runner.invoke(app, [*base, "--prompt", "beach", "--seed", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output[r.output.index("{") :])
    assert info["scene_prompt"] == "on a beach" and info["params"]["seed"] == 2
    got = np.asarray(Image.open(out).convert("RGB"))
    core = alpha >= 1.0
    assert (got[core] == np.asarray(img)[core]).all()
    r = runner.invoke(app, [*base, "--user-id", "shopper-7", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert record["requests"][-1].prompt == "in a forest, overcast"
    meta = read_metadata(out.read_bytes())
    assert json.loads(meta["edit_params"])["terms"] == ["forest", "overcast"]
    assert "shopper-7" not in out.read_bytes().decode("latin-1")
    r = runner.invoke(app, [*base, "--user-id", "nobody", "--out", str(out)])
    assert r.exit_code == 2 and "no taste profile" in r.output
