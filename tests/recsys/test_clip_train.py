"""CLIP training: captions, loss, config validation, export, evaluation and exact resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from recsys.training.clip_data import (
    ATTRIBUTE_KEYS,
    AttributeCodes,
    ClipProduct,
    ProductSource,
    full_caption,
    make_caption,
    split_products,
)
from recsys.training.demo_source import demo_source

TINY_ARCH = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def small_source(n_products: int, *, seed: int = 0) -> ProductSource:
    """The first ``n_products`` demo-world products, rendered small (the tiny model is 32 px)."""
    src = demo_source(seed=seed, size=48)
    return ProductSource(src.name, src.products[:n_products], src.studio, src.scene)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_captions_mention_what_they_claim() -> None:
    rng = random.Random(0)
    product = ClipProduct(
        id=1,
        attributes={
            "colour": "red",
            "pattern": "striped",
            "material": "wool",
            "style": "vintage",
            "category": "hoodie",
        },
    )
    seen: set[str] = set()
    for _ in range(300):
        text, keys = make_caption(product, rng=rng, scene="on a beach")
        assert keys and keys <= set(ATTRIBUTE_KEYS)
        for key in keys:
            assert product.attr(key) in text
        seen.add(text)
    assert len(seen) > 50  # varied templates
    assert full_caption(product) == "a photo of a vintage red striped wool hoodie"


def test_split_is_seeded_disjoint_and_15_percent() -> None:
    products = small_source(200, seed=0).products
    train, held = split_products(products, holdout_fraction=0.15, seed=0)
    assert len(held) == 30 and len(train) == 170
    assert not {p.id for p in train} & {p.id for p in held}
    again = split_products(list(reversed(products)), holdout_fraction=0.15, seed=0)[1]
    assert [p.id for p in again] == [p.id for p in held]
    with pytest.raises(ValueError, match="holdout_fraction"):
        split_products(products, holdout_fraction=1.5, seed=0)


def test_attribute_codes() -> None:
    products = small_source(50, seed=1).products
    codes = AttributeCodes(products)
    a, b = codes.encode(products[0]), codes.encode(products[1])
    assert a.shape == (len(ATTRIBUTE_KEYS),) and a.dtype == np.int64
    same = [products[0].attr(k) == products[1].attr(k) for k in ATTRIBUTE_KEYS]
    assert list(a == b) == same


def test_multi_positive_loss_known_answers() -> None:
    import torch
    import torch.nn.functional as F

    from recsys.training.clip_train import multi_positive_clip_loss

    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    scale = torch.tensor(10.0)
    # One positive each: the standard CLIP loss.
    eye = torch.eye(6, dtype=torch.bool)
    logits = scale * txt @ img.T
    clip = F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6))
    assert torch.allclose(multi_positive_clip_loss(img, txt, eye, scale), clip / 2, atol=1e-6)
    # Identical embeddings in a group of 2 positives: the best possible is ln(2) per side.
    same = F.normalize(torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]]), dim=-1)
    pos = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    loss = multi_positive_clip_loss(same, same, pos, torch.tensor(100.0))
    assert abs(float(loss) - float(np.log(2))) < 1e-4


def _cfg(tmp_path: Path, **over: object):  # type: ignore[no-untyped-def]
    from recsys.training.clip_train import ClipTrainConfig

    tmp_path.mkdir(parents=True, exist_ok=True)
    arch = tmp_path / "tiny-train-test.json"
    arch.write_text(json.dumps(TINY_ARCH))
    base: dict[str, object] = {
        "out_dir": tmp_path / "out",
        "checkpoint_dir": tmp_path / "ckpt",
        "arch_config": arch,
        "source": "demo",
        "steps": 4,
        "batch_size": 16,
        "warmup_steps": 1,
        "studio_views": 1,
        "scene_views": 1,
        "checkpoint_every": 100,
        "seed": 3,
    }
    base.update(over)
    return ClipTrainConfig(**base)  # type: ignore[arg-type]


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="steps must be >= 1"):
        _cfg(tmp_path, steps=0)
    with pytest.raises(ValueError, match="min_lr"):
        _cfg(tmp_path, lr=1e-4, min_lr=1e-3)
    with pytest.raises(ValueError, match="attribute_loss_weight"):
        _cfg(tmp_path, attribute_loss_weight=-1.0)
    with pytest.raises(FileNotFoundError, match="arch_config"):
        _cfg(tmp_path, arch_config=tmp_path / "missing.json")


def test_train_export_evaluate_and_exact_resume(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from recsys.embedders.clip import OpenClipEmbedder
    from recsys.training.clip_train import train_clip, write_model_card

    source = small_source(320)
    full_cfg = _cfg(tmp_path / "a")
    full = train_clip(full_cfg, progress=False, log=lambda _: None, source=source)
    assert full is not None and np.isfinite(full.final_loss)
    assert (full_cfg.out_dir / "open_clip_config.json").is_file()
    state = load_file(str(full.weights_path))
    assert all(v.dtype.is_floating_point is False or str(v.dtype) == "torch.float16"
               for v in state.values())  # fmt: skip
    ev = full.evaluation
    assert ev.n_products == 48  # 15% of the 320 products
    for value in (ev.recall_at_5, ev.colour_accuracy, ev.category_accuracy):
        assert 0.0 <= value <= 1.0
    emb = OpenClipEmbedder.load(full_cfg.out_dir)
    assert emb.dim == 16
    write_model_card(full, full_cfg, path=full_cfg.out_dir / "MODEL_CARD.md")
    card = (full_cfg.out_dir / "MODEL_CARD.md").read_text()
    assert "recall@5" in card and "tailorshot train clip" in card

    # Interrupted after 2 steps, then resumed: bit-identical to the uninterrupted run.
    part_cfg = _cfg(tmp_path / "b")
    assert (
        train_clip(part_cfg, progress=False, log=lambda _: None, stop_after=2, source=source)
        is None
    )
    assert (part_cfg.checkpoint_dir / "last.pt").is_file()
    resumed = train_clip(part_cfg, progress=False, log=lambda _: None, source=source)
    assert resumed is not None
    a, b = load_file(str(full.weights_path)), load_file(str(resumed.weights_path))
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), key
    assert resumed.loss_curve == full.loss_curve

    # A checkpoint from another config is refused.
    with pytest.raises(ValueError, match="another config"):
        train_clip(_cfg(tmp_path / "b", lr=5e-4), progress=False, log=lambda _: None, source=source)
