"""Image store, result cache, and the HeroGenerator's cache path (a hit never runs the pipeline)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gen_fixtures import product_image, reference_image, tiny_model_dir
from PIL import Image

from genservice.backends.diffusers_backend import DiffusersBackend
from genservice.brief import PLACEMENTS, CreativeBrief, ProductRef, StyleTerm
from genservice.cache import CachedResult, ResultCache
from genservice.compose import check_fidelity, cut_out, place_cutout
from genservice.config import GenerationConfig
from genservice.errors import GenerationError
from genservice.generator import HeroGenerator, HeroOutput
from genservice.metadata import parse_box, read_metadata
from genservice.safety import SkinToneHeuristicChecker
from genservice.storage import ImageStore, LocalImageStore, content_key


def test_local_store_is_content_addressed_and_atomic(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "images")
    assert isinstance(store, ImageStore)
    data = b"\x89PNG fake bytes"
    key = store.put(data, "image/png")
    assert key == hashlib.sha256(data).hexdigest() + ".png" == content_key(data, "image/png")
    assert store.put(data, "image/png") == key  # idempotent
    assert store.exists(key) and store.get(key) == data
    assert store.path(key) == tmp_path / "images" / key[:2] / key
    assert store.url(key) == f"/v1/images/{key}"
    assert [p.name for p in (tmp_path / "images").rglob("*")] == [key[:2], key]  # no temp files
    assert store.delete(key) is True and store.delete(key) is False
    with pytest.raises(KeyError):
        store.get(key)
    with pytest.raises(ValueError, match="key"):
        store.get("../../etc/passwd")
    with pytest.raises(ValueError, match="content_type"):
        store.put(data, "image/gif")


def test_concurrent_puts_of_the_same_bytes(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    data = bytes(range(256)) * 100
    keys: list[str] = []
    threads = [
        threading.Thread(target=lambda: keys.append(store.put(data, "image/webp")))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and store.get(keys[0]) == data


def test_result_cache_persists_and_never_generates_on_a_hit(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "img")
    key = store.put(b"img", "image/png")
    path = tmp_path / "cache" / "results.sqlite"
    cache = ResultCache(path, store=store)
    calls = {"n": 0}

    def gen() -> CachedResult:
        calls["n"] += 1
        return CachedResult("h1", key, {"seed": "1"})

    _r1, hit1 = cache.get_or_generate("h1", gen)
    r2, hit2 = ResultCache(path, store=store).get_or_generate("h1", gen)  # a new process
    assert (hit1, hit2, calls["n"]) == (False, True, 1)
    assert r2.image_key == key and r2.metadata == {"seed": "1"}
    # A cached key whose image vanished is a miss.
    store.delete(key)
    assert cache.get("h1") is None
    with pytest.raises(ValueError, match="expected a result for brief h2"):
        cache.get_or_generate("h2", gen)


def _generator(home: Path, **cfg: Any) -> HeroGenerator:
    config = GenerationConfig(
        model=str(tiny_model_dir()), device="cpu", num_inference_steps=2, **cfg
    )
    store = LocalImageStore(home / "images")
    return HeroGenerator(
        backend=DiffusersBackend(config, home=home),
        store=store,
        cache=ResultCache(home / "cache" / "results.sqlite", store=store),
        safety=SkinToneHeuristicChecker(),
        config=config,
        home=home,
    )


def _brief(seed: int = 0, placement: str = "square", **kw: Any) -> CreativeBrief:
    return CreativeBrief(
        product=ProductRef(id="1", title="Red mug", image="catalog/MUG-1.png", category="mug"),
        placement=PLACEMENTS[placement],
        style_terms=(StyleTerm("cozy", 2.0),),
        seed=seed,
        model_id=str(tiny_model_dir()),
        **kw,
    )


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    (tmp_path / "catalog").mkdir()
    product_image(128).save(tmp_path / "catalog" / "MUG-1.png")
    reference_image((30, 60, 200)).save(tmp_path / "ref.png")
    return tmp_path


def test_generator_cache_hit_never_calls_the_pipeline(home: Path) -> None:
    gen = _generator(home)
    first = gen.generate(_brief(seed=3, headline="Summer sale"))
    assert isinstance(first, HeroOutput) and not first.cached
    calls = gen.backend.calls  # type: ignore[attr-defined]

    def boom(*a: Any, **k: Any) -> Any:
        raise AssertionError("the pipeline must not run on a cache hit")

    gen.backend.generate_batch = boom  # type: ignore[method-assign]
    again = gen.generate(_brief(seed=3, headline="Summer sale"))
    assert again.cached and again.image_key == first.image_key
    assert gen.backend.calls == calls  # type: ignore[attr-defined]
    # A fresh generator on the same state folder hits the persisted cache too.
    gen2 = _generator(home)
    gen2.backend.generate_batch = boom  # type: ignore[method-assign]
    assert gen2.generate(_brief(seed=3, headline="Summer sale")).image_key == first.image_key

    data = gen.store.get(first.image_key)
    meta = read_metadata(data)
    assert meta == first.metadata
    assert meta["brief_hash"] == _brief(seed=3, headline="Summer sale").brief_hash
    assert meta["seed"] == "3" and set(meta) == {"model", "seed", "brief_hash", "product_box"}
    box = parse_box(meta["product_box"])
    hero = Image.open(gen.store.path(first.image_key))  # type: ignore[attr-defined]
    assert hero.size == (1080, 1080)
    placed = place_cutout(cut_out(product_image(128)), box)
    assert check_fidelity(hero, placed) > 10_000


def test_generate_batch_dedupes_and_keeps_each_product(home: Path) -> None:
    gen = _generator(home, output_format="webp")
    briefs = [
        _brief(seed=1, placement="banner"),
        _brief(seed=2, placement="banner", references=("ref.png",)),
        _brief(seed=1, placement="banner"),  # duplicate of the first
        _brief(seed=4, placement="story"),
    ]
    seen: list[tuple[int, int]] = []
    outs = gen.generate_batch(briefs, progress=lambda s, t: seen.append((s, t)))
    assert outs[0] is outs[2]
    assert len({o.image_key for o in outs}) == 3
    assert all(o.image_key.endswith(".webp") for o in outs)
    assert seen[-1][0] == seen[-1][1] == 6  # three pipeline calls of two steps
    for o in outs:
        img = Image.open(gen.store.path(o.image_key)).convert("RGB")  # type: ignore[attr-defined]
        placed = place_cutout(cut_out(product_image(128)), parse_box(o.metadata["product_box"]))
        check_fidelity(img, placed)
    story = Image.open(gen.store.path(outs[3].image_key))  # type: ignore[attr-defined]
    assert story.size == (1080, 1920)
    assert not np.array_equal(
        np.asarray(Image.open(gen.store.path(outs[0].image_key))),  # type: ignore[attr-defined]
        np.asarray(Image.open(gen.store.path(outs[1].image_key))),  # type: ignore[attr-defined]
    )


def test_bad_brief_fails_alone_with_return_exceptions(home: Path) -> None:
    gen = _generator(home)
    bad = CreativeBrief(
        product=ProductRef(id="2", title="x", image="catalog/missing.png"),
        model_id=str(tiny_model_dir()),
    )
    outs = gen.generate_batch([bad, _brief(seed=9)], return_exceptions=True)
    assert isinstance(outs[0], Exception) and "missing.png" in str(outs[0])
    assert isinstance(outs[1], HeroOutput)
    with pytest.raises(Exception, match="this generator serves"):
        gen.generate(_brief(seed=9).__class__(product=_brief().product, model_id="other"))


def test_references_without_an_ip_adapter(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    gen = _generator(home, ip_adapter=None)
    brief = _brief(seed=5, references=("ref.png",))
    with caplog.at_level("WARNING"):
        out = gen.generate(brief)
    assert "has no IP-Adapter: ignoring 1 reference" in caplog.text
    assert gen.store.exists(out.image_key)
    strict = _generator(home / "strict", ip_adapter=None, require_ip_adapter=True)
    strict.home = home
    with pytest.raises(GenerationError, match="require_ip_adapter"):
        strict.generate(_brief(seed=6, references=("ref.png",)))
