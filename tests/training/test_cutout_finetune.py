"""U^2-Net-p fine-tuned on demo products: the graph read into PyTorch is the wheel's network
(same maps), training pictures and targets per kind, the loss's known values, learning on a
fixed batch, the ONNX export serving runs, and the command's export path and errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genservice.imaging.cutout import SalientObjectModel, bundled_u2netp_path
from genservice.training import cutout_finetune as cf
from genservice.training.cutout_data import SIZE, SampleMaker, make_shard, save_shard
from genservice.training.cutout_train import network_input

pytest.importorskip("onnx2torch")


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnx2torch's indexing deprecation warning
        return cf.u2netp_module()


def _ramp_saliency(image: Image.Image) -> np.ndarray:
    """A stand-in for the original network: a known left-to-right ramp (320, 320)."""
    return np.broadcast_to(np.linspace(0, 1, SIZE, dtype=np.float32), (SIZE, SIZE)).copy()


def test_the_graph_in_pytorch_is_the_wheels_network(net: torch.nn.Module) -> None:
    import skimage.data

    image = Image.fromarray(skimage.data.coffee()).resize((SIZE, SIZE))
    ref = SalientObjectModel(bundled_u2netp_path(), cache_size=0, threads=1).raw_saliency(image)
    got = cf.predict(net, np.asarray(image)[None])[0]
    np.testing.assert_allclose(got, ref, atol=1e-4)
    # The cup is what U^2-Net-p finds in the coffee photograph: a real map, not a constant.
    assert 0.1 < float((got > 0.5).mean()) < 0.8


def test_training_batches_per_kind() -> None:
    maker = SampleMaker(_ramp_saliency, n_products=12)
    rng = np.random.default_rng(0)
    images, masks = cf.training_batch(maker, _ramp_saliency, rng, 4, crop=64, distill=1.0)
    assert images.shape == (4, 64, 64, 3) and images.dtype == np.uint8
    assert masks.shape == (4, 64, 64) and masks.dtype == np.float32
    # Distill targets are the (stand-in) original map of the crop itself, mirrored or not.
    ramp = np.linspace(0, 1, 64, dtype=np.float32)
    for m in masks:
        row = m[32]
        assert np.allclose(row, ramp, atol=0.02) or np.allclose(row, ramp[::-1], atol=0.02)
    images, masks = cf.training_batch(maker, _ramp_saliency, rng, 6, crop=96, distill=0.0)
    assert images.shape == (6, 96, 96, 3)
    # Composites, studio renders and empty pictures: masks are (box-filtered) product masks.
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    with pytest.raises(ValueError, match="crop"):
        cf.training_batch(maker, _ramp_saliency, rng, 1, crop=400)


def test_loss_known_values() -> None:
    t = torch.zeros(1, 1, 8, 8)
    t[..., 2:6, 2:6] = 1.0
    perfect = cf.side_loss([t.clone() for _ in range(7)], t)
    assert float(perfect) < 1e-3
    wrong = cf.side_loss([1.0 - t for _ in range(7)], t)
    # Seven clamped BCEs of -log(1e-6) each (side ones halved) + an IoU term of 1 - 1/65.
    assert float(wrong) == pytest.approx(4.0 * 13.8155 + 1.0 - 1.0 / 65.0, rel=1e-3)


def test_finetuning_learns_a_fixed_batch_and_keeps_the_best(
    net: torch.nn.Module, tmp_path: Path
) -> None:
    import copy

    model = copy.deepcopy(net)
    maker = SampleMaker(_ramp_saliency, n_products=12)
    images, masks = cf.training_batch(
        maker, _ramp_saliency, np.random.default_rng(3), 2, crop=64, distill=0.0
    )
    x = torch.from_numpy(network_input(images))
    t = torch.from_numpy(masks)[:, None]
    with torch.no_grad():
        before = float(cf.side_loss(model(x), t))
    val = make_shard(maker, 2, seed=9, kinds=("studio", "distill"))
    summary = cf.finetune(
        model, lambda rng: (images, masks), val, minutes=10.0, lr=1e-4, folder=tmp_path,
        max_steps=8, log=lambda m: None,
    )  # fmt: skip
    with torch.no_grad():
        after = float(cf.side_loss(model(x), t))
    assert summary["steps"] == 8 and after < 0.8 * before
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()
    report = cf.evaluate(model, val)
    assert set(report) == {"studio", "distill"}
    assert summary["best_score"] == pytest.approx(cf.score(report), abs=1e-4)


def test_export_is_what_serving_runs(net: torch.nn.Module, tmp_path: Path) -> None:
    path = cf.export_onnx(net, tmp_path / "ft.onnx")
    image = Image.fromarray(
        np.random.default_rng(1).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    )
    served = SalientObjectModel(path, cache_size=0, threads=1).raw_saliency(image)
    np.testing.assert_allclose(served, cf.predict(net, np.asarray(image)[None])[0], atol=1e-4)


def test_cli_exports_a_state_dict_and_refuses_bad_arguments(
    net: torch.nn.Module, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from api.cli import app

    runner = CliRunner()
    cmd = ["train", "cutout-finetune", "--work", str(tmp_path / "w")]
    res = runner.invoke(app, [*cmd, "--minutes", "0"])
    assert res.exit_code == 2 and "--init" in res.output
    res = runner.invoke(app, [*cmd, "--crop", "16"])
    assert res.exit_code == 2 and "--crop" in res.output
    bad = tmp_path / "bad.pt"
    torch.save({"x": torch.zeros(1)}, bad)
    work = tmp_path / "w"
    work.mkdir()
    # A small held-out shard in place, so the command does not build its 100 pictures.
    save_shard(
        work / "fusion_val.npz",
        make_shard(SampleMaker(_ramp_saliency, n_products=12), 2, seed=4, kinds=("studio",)),
    )
    res = runner.invoke(app, [*cmd, "--minutes", "0", "--init", str(bad), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "not a U^2-Net-p state dict" in res.output
    state = tmp_path / "state.pt"
    torch.save(net.state_dict(), state)
    out = tmp_path / "out"
    res = runner.invoke(app, [*cmd, "--minutes", "0", "--init", str(state), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "u2netp_finetuned.onnx").is_file() and (out / "finetune.json").is_file()
    # The unchanged network on studio renders: as good as the original (same maps).
    assert "validation studio: IoU" in res.output


class _FixedHead(torch.nn.Module):
    """A stand-in head: saliency = U^2-Net-p's map unchanged, product map = ``level`` on a
    centred square of a quarter of the picture (0 elsewhere)."""

    def __init__(self, level: float) -> None:
        super().__init__()
        q = torch.zeros(1, 1, SIZE, SIZE)
        q[..., SIZE // 4 : 3 * SIZE // 4, SIZE // 4 : 3 * SIZE // 4] = level
        self.register_buffer("q", q)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return s, self.q + 0.0 * x[:, :1]


class _LeftHalf(torch.nn.Module):
    """A stand-in fine-tuned network: 1 on the left half of the picture, 0 on the right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = (torch.arange(SIZE) < SIZE // 2).to(x.dtype)
        return left.expand(1, 1, SIZE, SIZE) + 0.0 * x[:, :1]


@pytest.mark.parametrize("level", [0.99, 0.6])
def test_products_model_uses_the_finetuned_network_only_where_a_product_is_found(
    tmp_path: Path, level: float
) -> None:
    import skimage.data

    head = tmp_path / "head.onnx"
    torch.onnx.export(
        _FixedHead(level), (torch.zeros(1, 3, SIZE, SIZE), torch.zeros(1, 1, SIZE, SIZE)),
        str(head), input_names=["head_x", "head_s"], output_names=["saliency", "product"],
        dynamo=False, opset_version=17,
    )  # fmt: skip
    torch.onnx.export(
        _LeftHalf(), (torch.zeros(1, 3, SIZE, SIZE),), str(tmp_path / "u2netp_finetuned.onnx"),
        input_names=["input.1"], dynamo=False, opset_version=17,
    )  # fmt: skip
    image = Image.fromarray(skimage.data.coffee()).resize((SIZE, SIZE))
    got = SalientObjectModel(head, cache_size=0, threads=1).raw_saliency(image)
    original = SalientObjectModel(bundled_u2netp_path(), cache_size=0, threads=1)
    if level > 0.9:  # ProductNet sure of a product: the fine-tuned network's map
        np.testing.assert_allclose(got[:, : SIZE // 2], 1.0)
        np.testing.assert_allclose(got[:, SIZE // 2 :], 0.0)
    else:  # unsure (< 0.85): U^2-Net-p's own map, the fine-tuned network not used
        np.testing.assert_allclose(got, original.raw_saliency(image), atol=1e-5)
    # Without the file beside the head, the head alone (U^2-Net-p's map here).
    (tmp_path / "u2netp_finetuned.onnx").unlink()
    alone = SalientObjectModel(head, cache_size=0, threads=1).raw_saliency(image)
    np.testing.assert_allclose(alone, original.raw_saliency(image), atol=1e-5)
