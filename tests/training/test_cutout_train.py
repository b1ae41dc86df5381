"""Product cut-out refiner: training pictures (held-out backgrounds, known masks), the loss's
known values, the identity start, learning on a fixed batch, the merged ONNX export and the
model setting."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genservice.imaging.cutout import (
    MODEL_ENV,
    PRODUCTS_MODEL_PATH,
    SalientObjectModel,
    bundled_u2netp_path,
    cutout_model_path,
)
from genservice.training.cutout_data import (
    BACKGROUND_PHOTOS,
    DISTILL_PHOTOS,
    SIZE,
    SampleMaker,
    make_shard,
    save_shard,
)
from genservice.training.cutout_train import (
    CutoutRefiner,
    export_onnx,
    load_shards,
    mask_ious,
    network_input,
    refiner_loss,
)
from genservice.training.heroeval import PHOTOS


def _flat_saliency(image: Image.Image) -> np.ndarray:
    """A stand-in for the network in data tests: 0.25 everywhere (not a mask)."""
    return np.full((SIZE, SIZE), 0.25, np.float32)


def test_backgrounds_never_include_the_measures_photographs() -> None:
    assert not set(BACKGROUND_PHOTOS) & set(PHOTOS)
    assert not set(DISTILL_PHOTOS) & set(PHOTOS)
    assert "coffee" not in BACKGROUND_PHOTOS + DISTILL_PHOTOS


def test_samples_are_seeded_and_masks_match_the_kind() -> None:
    maker = SampleMaker(_flat_saliency, n_products=12)
    a = make_shard(maker, 6, seed=3)
    b = make_shard(maker, 6, seed=3)
    np.testing.assert_array_equal(a["images"], b["images"])
    np.testing.assert_array_equal(a["masks"], b["masks"])
    assert a["images"].shape == (6, SIZE, SIZE, 3) and a["images"].dtype == np.uint8
    for mask, kind in zip(a["masks"], a["kinds"], strict=True):
        cover = (mask > 127).mean()
        if kind == "distill":
            # The target is the (stand-in) network's own map.
            assert np.all(mask == round(0.25 * 255))
        else:
            # A product was pasted: a real, partial region of the picture.
            assert 0.005 < cover < 0.9
    assert set(a["kinds"].tolist()) <= {"composite", "studio", "distill"}


def test_shards_round_trip(tmp_path: Path) -> None:
    maker = SampleMaker(_flat_saliency, n_products=12)
    shard = make_shard(maker, 3, seed=1)
    save_shard(tmp_path / "shard000.npz", shard)
    save_shard(tmp_path / "shard001.npz", shard)
    both = load_shards([tmp_path / "shard000.npz", tmp_path / "shard001.npz"])
    assert len(both["images"]) == 6
    np.testing.assert_array_equal(both["masks"][3:], shard["masks"])
    with pytest.raises(FileNotFoundError):
        load_shards([])


def test_network_input_matches_the_cutout_preprocessing() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 200, (2, SIZE, SIZE, 3), dtype=np.uint8)
    x = network_input(img)
    assert x.shape == (2, 3, SIZE, SIZE)
    # Divided by the picture's maximum (200 -> 1.0) then ImageNet statistics.
    mx = img[0].max() / 255.0
    want = (img[0, 5, 7, 1] / 255.0 / mx - 0.456) / 0.224
    assert x[0, 1, 5, 7] == pytest.approx(want, abs=1e-5)


def test_loss_known_values() -> None:
    target = torch.zeros(1, 1, 8, 8)
    target[..., :4, :] = 1.0
    # Logits of 0: BCE is ln 2; soft intersection 0.5 * 32 = 16, soft union 32 + 32 - 16.
    got = float(refiner_loss(torch.zeros(1, 1, 8, 8), target))
    assert got == pytest.approx(math.log(2) + 1 - (16 + 1) / (48 + 1), abs=1e-5)
    # A confident right answer costs almost nothing.
    assert float(refiner_loss(40 * (2 * target - 1), target)) < 1e-6
    assert mask_ious(np.asarray(target[:, 0]), np.asarray(target[:, 0])).tolist() == [1.0]


def test_untrained_refiner_is_the_original_and_learns_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = CutoutRefiner(width=8)
    s = torch.full((2, 1, 64, 64), 0.1)
    s[..., 8:30, 8:30] = 0.9  # the product
    s[..., 40:60, 36:60] = 0.9  # the photo's own subject
    x = torch.zeros(2, 3, 64, 64)
    x[:, 0, 8:30, 8:30] = 2.0  # the product is red
    target = torch.zeros_like(s)
    target[..., 8:30, 8:30] = 1.0
    with torch.no_grad():
        torch.testing.assert_close(model.probabilities(x, s), s, atol=1e-4, rtol=0)
        before = float(refiner_loss(model(x, s), target))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss = refiner_loss(model(x, s), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        p = model.probabilities(x, s)
        after = float(refiner_loss(model(x, s), target))
    assert after < 0.5 * before
    # The subject's saliency fell, the product's stayed.
    assert float(p[..., 45:55, 40:55].mean()) < 0.5 < float(p[..., 12:26, 12:26].mean())


def test_export_merges_u2netp_and_an_untrained_refiner_into_the_original(tmp_path: Path) -> None:
    torch.manual_seed(0)
    out = export_onnx(CutoutRefiner(), bundled_u2netp_path(), tmp_path / "model.onnx")
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    arr[30:70, 40:90] = (220, 30, 30)
    image = Image.fromarray(arr)
    merged = SalientObjectModel(out, cache_size=0, threads=1).raw_saliency(image)
    original = SalientObjectModel(bundled_u2netp_path(), cache_size=0, threads=1).raw_saliency(
        image
    )
    assert merged.shape == (320, 320)
    # Zero correction: sigmoid(logit(clamp(s))) == s up to the clamp.
    np.testing.assert_allclose(merged, original, atol=2e-4)


def test_model_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert cutout_model_path("original") == bundled_u2netp_path()
    monkeypatch.delenv(MODEL_ENV, raising=False)
    assert cutout_model_path() == bundled_u2netp_path()
    if PRODUCTS_MODEL_PATH.is_file():
        assert cutout_model_path("products") == PRODUCTS_MODEL_PATH
    else:
        with pytest.raises(FileNotFoundError, match="train cutout"):
            cutout_model_path("products")
    made = tmp_path / "made.onnx"
    made.write_bytes(b"x")
    monkeypatch.setenv(MODEL_ENV, str(made))
    assert cutout_model_path() == made
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / "missing.onnx"))
    with pytest.raises(FileNotFoundError, match=MODEL_ENV):
        cutout_model_path()


def test_cli_refuses_bad_arguments_clearly(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from api.cli import app

    runner = CliRunner()
    res = runner.invoke(
        app, ["train", "cutout", "--shards", "1", "--val-shards", "1", "--data", str(tmp_path)]
    )
    assert res.exit_code == 2 and "--val-shards" in res.output
    res = runner.invoke(app, ["evaluate", "cutout", "--model", str(tmp_path / "none.onnx")])
    assert res.exit_code == 2 and MODEL_ENV in res.output
    res = runner.invoke(app, ["evaluate", "cutout", "--n", "0"])
    assert res.exit_code == 2 and "--n" in res.output
