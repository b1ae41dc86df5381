"""OpenClipEmbedder loader paths (tiny random models built from a config), the embedding
cache, and a known answer from the shipped default model. Offline throughout."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recsys.embedders.base import Embedder
from recsys.embedders.cache import CachedEmbedder, EmbeddingCache
from recsys.embedders.clip import ModelNotAvailableError, OpenClipEmbedder, default_model_dir

TINY_ARCH = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE on, and any socket connection fails loudly (proves no network use)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*_: object, **__: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random tiny open_clip model: its arch json, a hub-layout folder and a bare checkpoint."""
    import torch

    from recsys.training.clip_train import build_model, export_model

    root = tmp_path_factory.mktemp("tiny")
    arch = root / "tiny-clip-test.json"
    arch.write_text(json.dumps(TINY_ARCH))
    model, cfg = build_model(arch, seed=0)
    folder = root / "model"
    weights = export_model(model, cfg, folder, fp16=False)
    ckpt = root / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    return {"arch": arch, "folder": folder, "weights": weights, "ckpt": ckpt}


def images(n: int = 5) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(n)]


def test_folder_load_outputs(tiny: dict[str, Path]) -> None:
    emb = OpenClipEmbedder.load(tiny["folder"], batch_size=2)
    assert isinstance(emb, Embedder)
    assert emb.dim == 16 and emb.model_id.startswith("model@")
    x = emb.embed_images(images())
    t = emb.embed_texts(["a red mug", "a blue chair", "x"])
    for arr, n in ((x, 5), (t, 3)):
        assert arr.dtype == np.float32 and arr.shape == (n, 16)
        np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)
    # Batching does not change results.
    big = OpenClipEmbedder.load(tiny["folder"], batch_size=64)
    np.testing.assert_allclose(big.embed_images(images()), x, atol=1e-5)
    np.testing.assert_allclose(big.embed_texts(["a red mug", "a blue chair", "x"]), t, atol=1e-5)
    assert emb.embed_texts([]).shape == (0, 16) and emb.embed_images([]).shape == (0, 16)


def test_checkpoint_file_with_registered_arch(tiny: dict[str, Path]) -> None:
    folder = OpenClipEmbedder.load(tiny["folder"])
    by_file = OpenClipEmbedder.load(
        "tiny-clip-test", pretrained=str(tiny["ckpt"]), model_config=tiny["arch"]
    )
    np.testing.assert_allclose(
        by_file.embed_texts(["a red mug"]), folder.embed_texts(["a red mug"]), atol=1e-5
    )
    assert by_file.model_id.startswith("tiny-clip-test@")


def test_model_id_follows_weights(tiny: dict[str, Path], tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "copy"
    shutil.copytree(tiny["folder"], copy)
    assert (
        OpenClipEmbedder.load(copy).model_id.split("@")[1]
        == (OpenClipEmbedder.load(tiny["folder"]).model_id.split("@")[1])
    )
    state = load_file(str(copy / "open_clip_model.safetensors"))
    state["logit_scale"] = state["logit_scale"] + torch.tensor(1.0)
    save_file(state, str(copy / "open_clip_model.safetensors"))
    assert OpenClipEmbedder.load(copy).model_id != OpenClipEmbedder.load(tiny["folder"]).model_id


def test_hf_hub_offline_from_cache(tiny: dict[str, Path], tmp_path: Path) -> None:
    # Lay the model out exactly as huggingface_hub caches a download.
    repo = tmp_path / "models--acme--tiny-clip"
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    for f in tiny["folder"].iterdir():
        shutil.copy(f, snap / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    hub = OpenClipEmbedder.load("hf-hub:acme/tiny-clip", cache_dir=tmp_path)
    assert hub.model_id == "hf-hub:acme/tiny-clip"
    np.testing.assert_allclose(
        hub.embed_texts(["a mug"]),
        OpenClipEmbedder.load(tiny["folder"]).embed_texts(["a mug"]),
        atol=1e-5,
    )


def test_offline_missing_models_fail_without_network(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match="HF_HUB_OFFLINE"):
        OpenClipEmbedder.load("hf-hub:acme/not-cached", cache_dir=tmp_path)
    with pytest.raises(ModelNotAvailableError, match="not cached locally"):
        OpenClipEmbedder.load("ViT-B-32", pretrained="laion2b_s34b_b79k", cache_dir=tmp_path)
    with pytest.raises(ModelNotAvailableError, match="neither a folder"):
        OpenClipEmbedder.load("no-such-architecture")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"open_clip_config\.json"):
        OpenClipEmbedder.load(tmp_path / "empty")


def test_validation_and_rgba(tiny: dict[str, Path]) -> None:
    emb = OpenClipEmbedder.load(tiny["folder"])
    with pytest.raises(TypeError, match="sequence of str"):
        emb.embed_texts("a red mug")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        emb.embed_texts(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"images\[0\] must be a PIL image"):
        emb.embed_images([np.zeros((4, 4, 3))])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="device"):
        OpenClipEmbedder.load(tiny["folder"], device="tpu")
    # A fully transparent cut-out is a white studio shot.
    clear = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    white = Image.new("RGB", (32, 32), (255, 255, 255))
    np.testing.assert_allclose(emb.embed_images([clear]), emb.embed_images([white]), atol=1e-6)


class CountingEmbedder:
    """Wraps an embedder and counts items that reach the model."""

    def __init__(self, inner: Embedder, model_id: str | None = None) -> None:
        self.inner = inner
        self._model_id = model_id or inner.model_id
        self.image_calls = 0
        self.text_calls = 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def model_id(self) -> str:
        return self._model_id

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.image_calls += len(images)
        return self.inner.embed_images(images)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.text_calls += len(texts)
        return self.inner.embed_texts(texts)


def test_cache_never_embeds_twice(tiny: dict[str, Path], tmp_path: Path) -> None:
    base = OpenClipEmbedder.load(tiny["folder"])
    counting = CountingEmbedder(base)
    cached = CachedEmbedder(counting, EmbeddingCache(tmp_path))
    imgs = images(4)
    first = cached.embed_images(imgs)
    assert counting.image_calls == 4
    np.testing.assert_allclose(first, base.embed_images(imgs), atol=1e-6)
    again = cached.embed_images(imgs)
    assert counting.image_calls == 4  # served from the cache
    np.testing.assert_array_equal(again, first)
    # Texts, duplicates within a call, and a fresh process-like instance on the same folder.
    cached.embed_texts(["a", "b", "a"])
    assert counting.text_calls == 2
    reopened_counter = CountingEmbedder(base)
    reopened = CachedEmbedder(reopened_counter, EmbeddingCache(tmp_path))
    reopened.embed_texts(["a", "b"])
    reopened.embed_images(imgs)
    assert reopened_counter.text_calls == 0 and reopened_counter.image_calls == 0
    # A changed image and another model id are misses.
    changed = imgs[0].copy()
    changed.putpixel((0, 0), (1, 2, 3))
    reopened.embed_images([changed])
    assert reopened_counter.image_calls == 1
    other = CountingEmbedder(base, model_id="another-model")
    CachedEmbedder(other, EmbeddingCache(tmp_path)).embed_texts(["a"])
    assert other.text_calls == 1


def test_cache_image_bytes(tiny: dict[str, Path], tmp_path: Path) -> None:
    import io

    counting = CountingEmbedder(OpenClipEmbedder.load(tiny["folder"]))
    cached = CachedEmbedder(counting, EmbeddingCache(tmp_path))
    buf = io.BytesIO()
    images(1)[0].save(buf, format="PNG")
    a = cached.embed_image_bytes([buf.getvalue()])
    b = cached.embed_image_bytes([buf.getvalue()])
    assert counting.image_calls == 1
    np.testing.assert_array_equal(a, b)


SHIPPED = default_model_dir() / "open_clip_model.safetensors"


@pytest.mark.skipif(not SHIPPED.is_file(), reason=f"shipped model missing: {SHIPPED}")
def test_shipped_default_known_answer() -> None:
    from data.demo.render import on_studio_background, render_product

    emb = OpenClipEmbedder.load("default")
    assert emb.model_id.startswith("clip-tiny@")
    attrs = {"colour": "red", "pattern": "solid", "material": "ceramic", "style": "minimalist"}
    red_mug = on_studio_background(render_product(attrs, category="mug", seed=123))
    blue_chair = on_studio_background(
        render_product({**attrs, "colour": "blue", "material": "wood"}, category="chair", seed=7)
    )
    x = emb.embed_images([red_mug, blue_chair])
    t = emb.embed_texts(["a red mug", "a blue mug", "a red chair", "a blue chair"])
    sims = x @ t.T
    assert sims[0, 0] > sims[0, 1] and sims[0, 0] > sims[0, 2]  # red mug: colour and category
    assert sims[1, 3] > sims[1, 2] and sims[1, 3] > sims[1, 1]


def test_embedder_from_config(tiny: dict[str, Path], tmp_path: Path) -> None:
    from recsys.config import RecsysConfig
    from recsys.embedders.cache import embedder_from_config

    cfg = RecsysConfig(clip_model=str(tiny["folder"]), clip_batch_size=3)
    emb = embedder_from_config(cfg, home=tmp_path)
    assert isinstance(emb, CachedEmbedder) and emb.dim == 16
    emb.embed_texts(["a red mug"])
    assert (tmp_path / "cache" / "embeddings" / "embeddings.sqlite").is_file()
    assert isinstance(embedder_from_config(cfg), OpenClipEmbedder)
