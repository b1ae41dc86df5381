"""Product cut-out model: training pictures kept apart from the measure (photographs and
product seeds), known masks per kind, the loss's known values, ProductNet learning on a fixed
batch, the fusion rule's known answers, the merged ONNX export and the model setting."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genservice.imaging.cutout import (
    FINETUNED_MODEL_PATH,
    MODEL_ENV,
    PRODUCTS_MODEL_PATH,
    SalientObjectModel,
    bundled_u2netp_path,
    cutout_model_path,
)
from genservice.training.cutout_data import (
    BACKGROUND_PHOTOS,
    DISTILL_PHOTOS,
    HELD_OUT_PHOTOS,
    RENDER_SEED_BASE,
    SIZE,
    WORLD_SEED,
    SampleMaker,
    load_photo,
    make_shard,
    save_shard,
)
from genservice.training.cutout_train import (
    ProductCutout,
    ProductNet,
    export_onnx,
    half_size,
    load_shards,
    mask_ious,
    network_input,
    segmentation_loss,
    state_from_head,
)
from genservice.training.heroeval import PHOTOS


def _flat_saliency(image: Image.Image) -> np.ndarray:
    """A stand-in for the network in data tests: 0.25 everywhere (not a mask)."""
    return np.full((SIZE, SIZE), 0.25, np.float32)


def test_training_never_sees_the_measures_photographs_or_products(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = {n.split(":")[-1] for n in BACKGROUND_PHOTOS + DISTILL_PHOTOS}
    assert set(PHOTOS) <= set(HELD_OUT_PHOTOS) and "cat" in HELD_OUT_PHOTOS  # cat = chelsea
    assert not names & set(HELD_OUT_PHOTOS)
    for name in HELD_OUT_PHOTOS:
        with pytest.raises(ValueError, match="measure"):
            load_photo(name)
    # heroeval builds world seed 0 and renders with seeds 0..n and 1000..1000+n.
    assert WORLD_SEED != 0 and RENDER_SEED_BASE > 1000 + 10_000
    # Making pictures of every kind touches no held-out photograph.
    import skimage.data

    for name in HELD_OUT_PHOTOS:
        monkeypatch.setattr(skimage.data, name, lambda: pytest.fail("held-out photo loaded"))
    import data.demo.render as render

    seeds: list[int] = []
    real = render.render_product

    def spy(attributes: dict, *, category: str, size: int, seed: int) -> Image.Image:  # type: ignore[type-arg]
        seeds.append(seed)
        return real(attributes, category=category, size=size, seed=seed)

    monkeypatch.setattr(render, "render_product", spy)
    maker = SampleMaker(_flat_saliency, n_products=12)
    make_shard(maker, 24, seed=5, kinds=("composite", "studio", "empty", "distill"))
    maker.batch(np.random.default_rng(0), 6)
    # Products of another world, rendered with seeds far from the measure's.
    assert seeds and min(seeds) >= RENDER_SEED_BASE
    from data.demo.world import build_world

    own = build_world(seed=WORLD_SEED, n_products=12, n_users=1).products
    assert [p.attributes for p in maker.products] == [p.attributes for p in own]


def test_samples_are_seeded_and_masks_match_the_kind() -> None:
    maker = SampleMaker(_flat_saliency, n_products=12)
    kinds = ("composite", "studio", "empty", "distill")
    a = make_shard(maker, 8, seed=3, kinds=kinds)
    b = make_shard(maker, 8, seed=3, kinds=kinds)
    np.testing.assert_array_equal(a["images"], b["images"])
    np.testing.assert_array_equal(a["masks"], b["masks"])
    assert a["images"].shape == (8, SIZE, SIZE, 3) and a["images"].dtype == np.uint8
    assert a["kinds"].tolist() == list(kinds) * 2
    for mask, kind in zip(a["masks"], a["kinds"], strict=True):
        cover = (mask > 127).mean()
        if kind == "distill":
            # The target is the (stand-in) network's own map.
            assert np.all(mask == round(0.25 * 255))
        elif kind == "empty":
            assert mask.max() == 0
        else:
            # A product was pasted: a real, partial region of the picture.
            assert 0.005 < cover < 0.9
    # Training batches: fresh default-mix pictures, masks in [0, 1].
    images, masks = SampleMaker(n_products=12).batch(np.random.default_rng(1), 4)
    assert images.shape == (4, SIZE, SIZE, 3) and masks.shape == (4, SIZE, SIZE)
    assert masks.min() >= 0.0 and masks.max() <= 1.0


def test_distill_samples_need_the_original_network() -> None:
    with pytest.raises(ValueError, match="saliency"):
        SampleMaker(n_products=12).make(np.random.default_rng(0), "distill")


def test_shards_round_trip(tmp_path: Path) -> None:
    maker = SampleMaker(_flat_saliency, n_products=12)
    shard = make_shard(maker, 3, seed=1)
    assert shard["saliency"].shape == (3, SIZE, SIZE)
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
    # Logits of 0: BCE is ln 2 everywhere, weighted 5x on rows 2-5 (within 2 px of the
    # boundary): mean weight 3. Soft intersection 0.5 * 32 = 16, soft union 32 + 32 - 16.
    got = float(segmentation_loss(torch.zeros(1, 1, 8, 8), target))
    assert got == pytest.approx(3 * math.log(2) + 1 - (16 + 1) / (48 + 1), abs=1e-5)
    # A confident right answer costs almost nothing.
    assert float(segmentation_loss(40 * (2 * target - 1), target)) < 1e-6
    assert mask_ious(np.asarray(target[:, 0]), np.asarray(target[:, 0])).tolist() == [1.0]
    # Targets at half size are 2 x 2 means.
    m = np.zeros((1, 4, 4), np.float32)
    m[0, 0, 0] = 1.0
    assert half_size(m)[0, 0].tolist() == [[0.25, 0.0], [0.0, 0.0]]


def test_product_net_learns_which_square_is_the_product_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = ProductNet(width=4)
    x = torch.zeros(2, 3, 64, 64)
    x[:, 0, 8:30, 8:30] = 2.0  # the product is red
    x[:, 2, 36:60, 36:60] = 2.0  # the photo's own subject is blue
    target = torch.zeros(2, 1, 64, 64)
    target[..., 8:30, 8:30] = 1.0
    t = half_size(target[:, 0].numpy())
    assert model(x).shape == (2, 1, 32, 32)
    with torch.no_grad():
        before = float(segmentation_loss(model(x), t))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = segmentation_loss(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        q = torch.sigmoid(model(x))
        after = float(segmentation_loss(model(x), t))
    assert after < 0.5 * before
    assert float(q[..., 20:28, 20:28].mean()) < 0.5 < float(q[..., 6:12, 6:12].mean())


class _FixedNet(ProductNet):
    """A stand-in ProductNet whose logits are a fixed ``(160, 160)`` map."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__(width=4)
        self.fixed = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Uses x (times 0) so that an export keeps the picture input.
        return self.fixed + 0.0 * x[:, :1, ::2, ::2]


def test_fusion_rule_known_answers() -> None:
    x = torch.zeros(1, 3, 320, 320)
    s = torch.full((1, 1, 320, 320), 0.02)
    s[..., 40:120, 40:120] = 0.97  # the product, U^2-Net-p's sharp edges
    s[..., 60:100, 120:170] = 0.95  # the photo's subject, touching the product
    s[..., 200:300, 180:300] = 0.95  # and another part of it, apart
    # No product found: U^2-Net-p's map, unchanged.
    none = ProductCutout(_FixedNet(torch.full((160, 160), -20.0)))
    torch.testing.assert_close(none(x, s), s)
    # A product found but not surely (ProductNet's mean 0.73 < 0.9): unchanged too.
    q = torch.full((160, 160), -20.0)
    q[20:60, 20:60] = 1.0
    torch.testing.assert_close(ProductCutout(_FixedNet(q))(x, s), s)
    # Found surely (cells 20-59 at 160 px = pixels 40-119): the subject goes, apart or
    # touching, and the product keeps U^2-Net-p's edge.
    q[20:60, 20:60] = 20.0
    out = ProductCutout(_FixedNet(q), band_px=5)(x, s)[0, 0]
    assert float(out[200:300, 180:300].max()) < 0.05
    assert float(out[42:118, 42:118].min()) > 0.95
    hard = (out > 0.5).numpy()
    assert hard[40:120, 40:120].all()
    # Where they disagree the mean decides: the touching subject keeps one column (x = 120,
    # where q is 0.25 and s 0.95), nothing beyond.
    assert not hard[:, 121:].any() and hard.sum() == 80 * 80 + 40


def test_exported_head_runs_after_u2netp(tmp_path: Path) -> None:
    none = ProductCutout(_FixedNet(torch.full((160, 160), -20.0)))
    out = export_onnx(none, tmp_path / "head.onnx")
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    arr[30:70, 40:90] = (220, 30, 30)
    image = Image.fromarray(arr)
    merged = SalientObjectModel(out, cache_size=0, threads=1).raw_saliency(image)
    original = SalientObjectModel(bundled_u2netp_path(), cache_size=0, threads=1).raw_saliency(
        image
    )
    assert merged.shape == (320, 320)
    # No product found: U^2-Net-p then the head is the original network.
    np.testing.assert_allclose(merged, original, atol=1e-5)
    import onnx

    assert [o.name for o in onnx.load(str(out)).graph.output] == ["saliency", "product"]


def _trained_like_net(seed: int) -> ProductNet:
    """A width-4 ProductNet in eval mode whose batch norms are not the identity, as after
    training (a fresh net's export folds them into constants that are not initializers)."""
    torch.manual_seed(seed)
    net = ProductNet(4)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)  # type: ignore[union-attr]
                m.running_var.uniform_(0.5, 2.0)  # type: ignore[union-attr]
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def test_a_head_gives_back_its_product_net(tmp_path: Path) -> None:
    net = _trained_like_net(0)
    head = export_onnx(ProductCutout(net), tmp_path / "head.onnx")
    images = np.random.default_rng(2).integers(0, 255, (2, 320, 320, 3), dtype=np.uint8)
    back = ProductNet(4)
    back.load_state_dict(state_from_head(head, images, width=4))
    back.eval()
    x = torch.from_numpy(network_input(images))
    with torch.no_grad():
        torch.testing.assert_close(back(x), net(x), atol=2e-3, rtol=1e-3)
        # In training mode, on the pictures it was calibrated with, the same maps.
        back.train()
        torch.testing.assert_close(back(x), net(x), atol=2e-3, rtol=1e-3)


def test_model_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert cutout_model_path("original") == bundled_u2netp_path()
    monkeypatch.delenv(MODEL_ENV, raising=False)
    assert cutout_model_path() == bundled_u2netp_path()
    if PRODUCTS_MODEL_PATH.is_file():
        assert cutout_model_path("products") == PRODUCTS_MODEL_PATH
    else:
        with pytest.raises(FileNotFoundError, match="train cutout"):
            cutout_model_path("products")
    if FINETUNED_MODEL_PATH.is_file():
        assert cutout_model_path("finetuned") == FINETUNED_MODEL_PATH
    else:
        with pytest.raises(FileNotFoundError, match="train cutout-finetune"):
            cutout_model_path("finetuned")
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
    res = runner.invoke(app, ["train", "cutout", "--minutes", "0", "--work", str(tmp_path)])
    assert res.exit_code == 2 and "--init" in res.output
    res = runner.invoke(app, ["train", "cutout", "--batch-size", "0", "--work", str(tmp_path)])
    assert res.exit_code == 2 and "--batch-size" in res.output
    res = runner.invoke(app, ["evaluate", "cutout", "--model", str(tmp_path / "none.onnx")])
    assert res.exit_code == 2 and MODEL_ENV in res.output
    res = runner.invoke(app, ["evaluate", "cutout", "--n", "0"])
    assert res.exit_code == 2 and "--n" in res.output


def test_cli_continues_from_an_exported_head(tmp_path: Path) -> None:
    """`--init head.onnx --minutes 0` recovers the head's ProductNet and exports it again: the
    new head gives the old head's maps (batch norms folded and calibrated back)."""
    import onnxruntime as ort
    from typer.testing import CliRunner

    from api.cli import app

    old = export_onnx(ProductCutout(_trained_like_net(1)), tmp_path / "old" / "head.onnx")
    work = tmp_path / "work"
    work.mkdir()
    # Small validation shards in place, so the command does not build its 96 + 100 pictures.
    maker = SampleMaker(_flat_saliency)
    save_shard(work / "val.npz", make_shard(SampleMaker(), 4, seed=5, kinds=("studio",)))
    save_shard(work / "fusion_val.npz", make_shard(maker, 3, seed=6, kinds=("studio",)))
    res = CliRunner().invoke(
        app,
        ["train", "cutout", "--minutes", "0", "--width", "4", "--init", str(old),
         "--work", str(work), "--out", str(tmp_path / "new"), "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    images = load_shards([work / "val.npz"])["images"][:2]
    x = network_input(images)
    s = np.random.default_rng(0).random((2, 1, SIZE, SIZE)).astype(np.float32)
    outs = []
    for head in (old, tmp_path / "new" / "head.onnx"):
        sess = ort.InferenceSession(str(head), providers=["CPUExecutionProvider"])
        outs.append(
            [sess.run(None, {"head_x": x[i : i + 1], "head_s": s[i : i + 1]}) for i in range(2)]
        )
    for a, b in zip(outs[0], outs[1], strict=True):
        np.testing.assert_allclose(b[1], a[1], atol=2e-3)  # ProductNet's own map
        np.testing.assert_allclose(b[0], a[0], atol=2e-3)  # the fused map
    # A head of another width is refused clearly, nothing written.
    res = CliRunner().invoke(
        app,
        ["train", "cutout", "--minutes", "0", "--width", "8", "--init", str(old),
         "--work", str(work), "--out", str(tmp_path / "bad")],
    )  # fmt: skip
    assert res.exit_code == 2 and "--init" in res.output
    assert not (tmp_path / "bad").exists()
