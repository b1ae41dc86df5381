"""DiffusersBackend on a tiny random SD pipeline built from configs (64 px, 2 steps)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gen_fixtures import product_image, reference_image, tiny_model_dir
from PIL import Image

from genservice.backends import diffusers_backend as db
from genservice.backends.base import Backend, GenerationRequest
from genservice.backends.diffusers_backend import DiffusersBackend, DiffusersSafetyChecker
from genservice.config import GenerationConfig
from genservice.errors import GenerationError, JobCancelled

RED, BLUE, GREEN = (220, 20, 30), (20, 40, 220), (30, 200, 40)


def make_backend(tmp: Path, **kw: Any) -> DiffusersBackend:
    cfg = GenerationConfig(model=str(tiny_model_dir()), device="cpu", **kw)
    return DiffusersBackend(cfg, home=tmp)


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> DiffusersBackend:
    return make_backend(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> DiffusersBackend:
    """The same weights without an IP-Adapter."""
    return make_backend(tmp_path_factory.mktemp("home2"), ip_adapter=None)


def req(seed: int = 0, **kw: Any) -> GenerationRequest:
    base: dict[str, Any] = {
        "prompt": "a red mug on a table",
        "negative_prompt": "blurry",
        "width": 64,
        "height": 64,
        "num_inference_steps": 2,
        "guidance_scale": 5.0,
    }
    base.update(kw)
    return GenerationRequest(seed=seed, **base)


def test_text_to_image_is_seeded_and_sized(backend: DiffusersBackend) -> None:
    assert isinstance(backend, Backend)
    a = backend.generate(req(1, width=96, height=48))
    b = backend.generate(req(1, width=96, height=48))
    c = backend.generate(req(2, width=96, height=48))
    assert a.image.size == (96, 48) and a.image.mode == "RGB"
    assert a.steps_run == 2 and a.model_id == str(tiny_model_dir())
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))
    assert a.array.shape == (48, 96, 3) and np.isfinite(a.array).all()
    assert float(np.asarray(a.image).std()) > 1.0  # not a constant image


def test_tokenizer_is_clip_bpe(backend: DiffusersBackend) -> None:
    assert backend.max_tokens == 77
    assert backend.count_tokens("hello world") == 2
    assert backend.tokenizer("hello world").input_ids == [49406, 3306, 1002, 49407]
    assert backend.native_size == 64 and backend.size_multiple == 16


def test_inpainting_keeps_product_pixels_bit_for_bit(backend: DiffusersBackend) -> None:
    init = product_image(64)
    mask_arr = np.where(np.asarray(init.convert("L")) < 200, 0, 255).astype(np.uint8)  # 0 = keep
    mask = Image.fromarray(mask_arr, "L")
    out = backend.generate(req(3, image=init, mask_image=mask, strength=1.0))
    o, i = np.asarray(out.image), np.asarray(init)
    keep = mask_arr == 0
    assert keep.sum() > 500
    assert np.array_equal(o[keep], i[keep])
    assert np.mean(np.abs(o[~keep].astype(int) - i[~keep].astype(int))) > 5  # scene is new
    # Without the paste-back the VAE round trip would have changed the product.
    raw = np.clip(out.array * 255, 0, 255).round().astype(np.uint8)
    assert not np.array_equal(raw[keep], i[keep])


def test_img2img_runs_strength_share_of_steps(backend: DiffusersBackend) -> None:
    seen: list[tuple[int, int]] = []
    out = backend.generate(
        req(4, image=product_image(64), strength=0.5, num_inference_steps=4),
        progress=lambda s, t: seen.append((s, t)),
    )
    assert out.image.size == (64, 64)
    assert seen == [(1, 2), (2, 2)]


def test_ip_adapter_scale_zero_equals_no_adapter(
    backend: DiffusersBackend, plain: DiffusersBackend
) -> None:
    none = plain.generate(req(5))
    zero = backend.generate(req(5, ip_adapter_image=[reference_image(RED)], ip_adapter_scale=0.0))
    full = backend.generate(req(5, ip_adapter_image=[reference_image(RED)], ip_adapter_scale=1.0))
    assert np.array_equal(none.array, zero.array)
    assert not np.allclose(none.array, full.array, atol=1e-3)
    # A loaded adapter with no references also equals no adapter.
    assert np.array_equal(backend.generate(req(5)).array, none.array)


def test_per_block_scale_is_accepted_and_differs_from_full(backend: DiffusersBackend) -> None:
    ref = [reference_image(BLUE)]
    style = backend.generate(
        req(6, ip_adapter_image=ref, ip_adapter_scale={"up": {"block_0": [1.0]}})
    )
    full = backend.generate(req(6, ip_adapter_image=ref, ip_adapter_scale=1.0))
    zero = backend.generate(req(6, ip_adapter_image=ref, ip_adapter_scale=0.0))
    assert not np.allclose(style.array, full.array, atol=1e-4)
    assert not np.allclose(style.array, zero.array, atol=1e-4)


def test_batched_equals_one_by_one_with_own_references(backend: DiffusersBackend) -> None:
    items = [
        req(10, ip_adapter_image=[reference_image(RED)], ip_adapter_scale=1.0),
        req(11, ip_adapter_image=[reference_image(BLUE)], ip_adapter_scale=1.0),
        req(12, ip_adapter_image=[reference_image(GREEN)], ip_adapter_scale=1.0, prompt="a lamp"),
        req(13),  # no references: its own call
    ]
    calls = backend.calls
    batched = backend.generate_batch(items)
    assert backend.calls - calls == 2  # three with references in one call, one alone
    singles = [backend.generate(r) for r in items]
    for b, s in zip(batched, singles, strict=True):
        np.testing.assert_allclose(b.array, s.array, atol=2e-4)
    # No reference leaked into a neighbour: item 0 with blue's reference looks different.
    swapped = backend.generate(
        req(10, ip_adapter_image=[reference_image(BLUE)], ip_adapter_scale=1.0)
    )
    assert not np.allclose(batched[0].array, swapped.array, atol=1e-3)


def test_reference_embeddings_are_computed_once(
    backend: DiffusersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = backend.load()
    backend.reference_embeds([reference_image((1, 2, 3))])  # ensure the adapter is loaded
    n = {"calls": 0}
    original = pipe.prepare_ip_adapter_image_embeds

    def spy(*a: Any, **k: Any) -> Any:
        n["calls"] += 1
        return original(*a, **k)

    monkeypatch.setattr(pipe, "prepare_ip_adapter_image_embeds", spy)
    ref = reference_image((90, 80, 70))
    backend.generate(req(20, ip_adapter_image=[ref]))
    backend.generate(req(21, ip_adapter_image=[ref.copy()]))
    assert n["calls"] == 1
    (emb,) = backend.reference_embeds([ref])
    assert tuple(emb.shape) == (2, 1, 32)
    assert float(emb[0].abs().max()) == 0.0  # the negative embedding is zeros
    # The disk cache serves a fresh backend, and ids resolve to the same tensor.
    key = db._image_hash(ref)
    other = DiffusersBackend(backend.config, home=backend.home)
    got = other.embeds_by_id([key])
    assert np.allclose(got.numpy(), emb.numpy())
    with pytest.raises(GenerationError, match="no cached embedding"):
        other.embeds_by_id(["0" * 64])
    # A fresh backend (another worker process) finds the embedding on disk, keeps it in
    # memory and serves it again: the path that once raised KeyError on the second use.
    third = DiffusersBackend(backend.config, home=backend.home)
    for _ in range(2):
        (again,) = third.reference_embeds([ref])
        assert np.allclose(again.numpy(), emb.numpy())


def test_cancel_stops_within_one_step(backend: DiffusersBackend) -> None:
    seen: list[tuple[int, int]] = []
    with pytest.raises(JobCancelled, match="after step 1 of 6"):
        backend.generate(
            req(7, num_inference_steps=6),
            progress=lambda s, t: seen.append((s, t)),
            should_cancel=lambda: len(seen) >= 1,
        )
    assert seen == [(1, 6)]
    # The backend is usable again afterwards.
    assert backend.generate(req(7)).steps_run == 2


def test_one_pipeline_is_never_used_by_two_threads(backend: DiffusersBackend) -> None:
    events: list[str] = []
    results: dict[str, np.ndarray] = {}

    def work(name: str, seed: int) -> None:
        out = backend.generate(
            req(seed, num_inference_steps=3), progress=lambda s, t: events.append(name)
        )
        results[name] = out.array

    threads = [threading.Thread(target=work, args=(f"t{i}", 30 + i)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each thread's steps are contiguous: runs never interleave.
    blocks = [events[i] for i in range(len(events)) if i == 0 or events[i] != events[i - 1]]
    assert sorted(blocks) == ["t0", "t1", "t2"]
    for i in range(3):
        np.testing.assert_array_equal(
            results[f"t{i}"], backend.generate(req(30 + i, num_inference_steps=3)).array
        )


def test_scheduler_by_name_and_validation(tmp_path: Path) -> None:
    b = make_backend(tmp_path, scheduler="euler")
    assert type(b.load().scheduler).__name__ == "EulerDiscreteScheduler"
    assert b.generate(req(1)).image.size == (64, 64)
    with pytest.raises(ValueError, match=r"generation\.scheduler"):
        make_backend(tmp_path, scheduler="nope").load()
    with pytest.raises(ValueError, match="multiple of 8"):
        req(width=60)
    with pytest.raises(ValueError, match="expected size"):
        b.generate(req(1, image=product_image(32), mask_image=Image.new("L", (32, 32))))
    with pytest.raises(ValueError, match="dtype"):
        DiffusersBackend(GenerationConfig(device="cpu", dtype="float16"))


def test_default_model_falls_back_to_a_built_random_pipeline_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(db, "_PROJECT_ROOT", tmp_path)
    built: list[Path] = []

    def fake_build(folder: Path, seed: int = 0, **_: Any) -> Path:
        built.append(Path(folder))
        shutil.copytree(tiny_model_dir(), folder)
        return Path(folder)

    monkeypatch.setattr(db, "build_tiny_pipeline", fake_build)
    cfg = GenerationConfig()
    home = tmp_path / "var"
    p1 = db.resolve_model_path(cfg, home=home)
    p2 = db.resolve_model_path(cfg, home=home)
    assert p1 == p2 == str((home / "models" / "sd-tiny-random").resolve())
    assert len(built) == 1
    b = DiffusersBackend(cfg, home=home)
    assert b.generate(req(0)).image.size == (64, 64)
    with pytest.raises(GenerationError, match="fallback_random_model is off"):
        db.resolve_model_path(GenerationConfig(fallback_random_model=False), home=home)
    with pytest.raises(GenerationError, match=r"model_index\.json"):
        db.resolve_model_path(GenerationConfig(model=str(tmp_path)), home=home)


def test_hub_id_offline_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    b = DiffusersBackend(GenerationConfig(model="no-such-org/no-such-model"), home=tmp_path)
    with pytest.raises(GenerationError, match=r"could not load 'no-such-org/no-such-model'"):
        b.load()


def test_tiny_folder_ships_no_safety_checker() -> None:
    assert DiffusersSafetyChecker.from_folder(str(tiny_model_dir())) is None
