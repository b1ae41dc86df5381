"""The product cut-out refiner: a small U-Net trained here that corrects U^2-Net-p's saliency
so the pasted product, not the photo's own subject (a coffee cup, an astronaut), is the cut-out.

Design (why not fine-tune U^2-Net-p itself: one 320-px forward and backward pass of it takes
about 6 CPU-seconds here, so an hour buys a few hundred pictures):

* U^2-Net-p runs unchanged (original weights, first output ``s``, 320 x 320);
* the refiner sees the network input ``x`` (3 channels, ImageNet-normalised), ``s`` and
  ``logit(s)``, all average-pooled 4x (to 80 x 80: the CPU budget), and predicts a
  correction ``c`` there;
* the refined logit is ``a * logit(s) + up(c)`` (``a`` learned, starts at 1; ``c``'s last
  layer starts at zero so the untrained refiner is the original model) and its sigmoid the
  refined saliency. Edges come from ``s`` at 320 px; the correction only says which salient
  regions are the product.

Loss: binary cross-entropy plus (1 - soft IoU) on the refined map. The export merges both
graphs into one ONNX file with U^2-Net-p's input (``input.1``) and one output, the refined
saliency ``(1, 1, 320, 320)``, so serving keeps onnxruntime and its pre-processing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)
#: U^2-Net-p's first (fused) output in the rembg wheel's ONNX graph.
U2NETP_OUTPUT = "1959"
U2NETP_INPUT = "input.1"


def network_input(images: np.ndarray) -> np.ndarray:
    """U^2-Net-p's input from ``images`` ``(B, 320, 320, 3)`` uint8: ``(B, 3, 320, 320)``
    float32, each picture divided by its maximum then ImageNet-normalised (as
    ``genservice.imaging.cutout`` does)."""
    x = images.astype(np.float32) / 255.0
    mx = np.maximum(x.reshape(len(x), -1).max(axis=1), 1e-6)[:, None, None, None]
    x = (x / mx - _MEAN) / _STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _block(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation),
        nn.ReLU(inplace=True),
    )


class CutoutRefiner(nn.Module):
    """Correction of U^2-Net-p's saliency. ``forward(x (B, 3, 320, 320), s (B, 1, 320, 320)
    in [0, 1])`` -> refined logits ``(B, 1, 320, 320)``; ``probabilities`` is their sigmoid."""

    def __init__(self, width: int = 16, pool: int = 4) -> None:
        super().__init__()
        w = width
        self.pool = pool
        self.e1 = _block(5, w)
        self.e2 = _block(w, 2 * w)
        self.e3 = _block(2 * w, 3 * w)
        self.e4 = _block(3 * w, 4 * w)
        self.e5 = _block(4 * w, 4 * w, dilation=2)
        self.glob = nn.Linear(4 * w, 4 * w)
        self.d4 = _block(8 * w + 4 * w, 3 * w)
        self.d3 = _block(3 * w + 3 * w, 2 * w)
        self.d2 = _block(2 * w + 2 * w, w)
        self.d1 = _block(w + w, w)
        self.out = nn.Conv2d(w, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        assert self.out.bias is not None
        nn.init.zeros_(self.out.bias)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        s = s.clamp(1e-4, 1.0 - 1e-4)
        logit = torch.log(s) - torch.log1p(-s)
        h = F.avg_pool2d(torch.cat([x, s, logit / 8.0], dim=1), self.pool)
        e1 = self.e1(h)
        e2 = self.e2(F.max_pool2d(e1, 2))
        e3 = self.e3(F.max_pool2d(e2, 2))
        e4 = self.e4(F.max_pool2d(e3, 2))
        e5 = self.e5(F.max_pool2d(e4, 2))
        # Whole-picture context: which salient region is the product depends on the others.
        g = self.glob(e5.mean(dim=(2, 3)))[:, :, None, None].expand_as(e5)
        up = F.interpolate(torch.cat([e5, g], 1), size=e4.shape[2:], mode="bilinear")
        d4 = self.d4(torch.cat([up, e4], 1))
        d3 = self.d3(torch.cat([F.interpolate(d4, size=e3.shape[2:], mode="bilinear"), e3], 1))
        d2 = self.d2(torch.cat([F.interpolate(d3, size=e2.shape[2:], mode="bilinear"), e2], 1))
        d1 = self.d1(torch.cat([F.interpolate(d2, size=e1.shape[2:], mode="bilinear"), e1], 1))
        corr = F.interpolate(self.out(d1), size=s.shape[2:], mode="bilinear")
        return self.scale * logit + corr

    def probabilities(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Refined saliency ``(B, 1, 320, 320)`` in [0, 1]."""
        return torch.sigmoid(self.forward(x, s))


def refiner_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus (1 - soft IoU), both averaged over the batch; ``target``
    ``(B, 1, H, W)`` in [0, 1] (soft for distillation samples)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    union = (p + target - p * target).sum(dim=(1, 2, 3))
    iou = (inter + 1.0) / (union + 1.0)
    return bce + (1.0 - iou).mean()


def load_shards(paths: list[Path]) -> dict[str, np.ndarray]:
    """Concatenate shards written by ``cutout_data.make_shard`` (``.npz``)."""
    if not paths:
        raise FileNotFoundError("cut-out training data: no shard (*.npz) found")
    parts = [dict(np.load(p)) for p in paths]
    return {k: np.concatenate([d[k] for d in parts]) for k in parts[0]}


def mask_ious(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-sample IoU of ``pred > 0.5`` and ``target > 0.5``, both ``(B, H, W)`` floats."""
    p = pred > 0.5
    t = target > 0.5
    inter = (p & t).sum(axis=(1, 2))
    union = (p | t).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _tensors(data: dict[str, np.ndarray], idx: np.ndarray, flip: np.ndarray | None = None):
    x = network_input(data["images"][idx])
    s = data["saliency"][idx].astype(np.float32)[:, None] / 255.0
    t = data["masks"][idx].astype(np.float32)[:, None] / 255.0
    if flip is not None and flip.any():
        x[flip], s[flip], t[flip] = x[flip, ..., ::-1], s[flip, ..., ::-1], t[flip, ..., ::-1]
    return (
        torch.from_numpy(np.ascontiguousarray(x)),
        torch.from_numpy(np.ascontiguousarray(s)),
        torch.from_numpy(np.ascontiguousarray(t)),
    )


@torch.no_grad()
def evaluate_refiner(
    model: CutoutRefiner, data: dict[str, np.ndarray], *, batch: int = 16
) -> dict[str, Any]:
    """Mean mask IoU per kind of ``data`` for the original saliency and the refined one."""
    model.eval()
    before, after = [], []
    for i in range(0, len(data["images"]), batch):
        idx = np.arange(i, min(len(data["images"]), i + batch))
        x, s, t = _tensors(data, idx)
        p = model.probabilities(x, s)
        before.append(mask_ious(s[:, 0].numpy(), t[:, 0].numpy()))
        after.append(mask_ious(p[:, 0].numpy(), t[:, 0].numpy()))
    b, a = np.concatenate(before), np.concatenate(after)
    out: dict[str, Any] = {}
    for kind in sorted(set(data["kinds"].tolist())):
        m = data["kinds"] == kind
        out[kind] = {
            "n": int(m.sum()),
            "iou_original": round(float(b[m].mean()), 4),
            "iou_refined": round(float(a[m].mean()), 4),
        }
    return out


def train_refiner(
    train: dict[str, np.ndarray],
    *,
    minutes: float,
    batch: int = 8,
    lr: float = 2e-3,
    seed: int = 0,
    checkpoint: Path | None = None,
    every_s: float = 180.0,
    log: Callable[[str], None] = print,
    refresh: Callable[[], dict[str, np.ndarray]] | None = None,
    init: dict[str, torch.Tensor] | None = None,
) -> tuple[CutoutRefiner, dict[str, Any]]:
    """Adam with a cosine learning-rate schedule over a wall-clock budget of ``minutes``
    (the schedule is on elapsed time so the budget is kept on a loaded machine); random
    horizontal flips. Saves ``checkpoint`` (state dict) every ``every_s`` seconds and at the
    end. ``refresh()``, when given, is called at each pass's end for a (grown) training set:
    training can start while samples are still being made. Returns the model and a summary
    (steps, samples seen, loss curve)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = CutoutRefiner()
    if init is not None:  # continue from a checkpoint (a state dict)
        model.load_state_dict(init)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(train["images"])
    budget = minutes * 60.0
    t0 = last_ckpt = time.monotonic()
    cpu0 = time.process_time()
    step, seen, curve, running = 0, 0, [], 0.0
    order = rng.permutation(n)
    pos = 0
    while time.monotonic() - t0 < budget:
        model.train()
        if pos + batch > n:
            if refresh is not None:
                train = refresh()
                n = len(train["images"])
                log(f"pass done: {n} training samples now")
            order, pos = rng.permutation(n), 0
        idx = np.sort(order[pos : pos + batch])
        pos += batch
        x, s, t = _tensors(train, idx, flip=rng.random(len(idx)) < 0.5)
        frac = min(1.0, (time.monotonic() - t0) / budget)
        for g in opt.param_groups:
            g["lr"] = lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * frac)))
        loss = refiner_loss(model(x, s), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        seen += len(idx)
        running = 0.9 * running + 0.1 * loss.item() if step > 1 else loss.item()
        if step % 25 == 0:
            el = time.monotonic() - t0
            curve.append([step, round(el, 1), round(running, 4)])
            log(f"step {step} samples {seen} loss {running:.4f} elapsed {el:.0f}s")
        if checkpoint is not None and time.monotonic() - last_ckpt > every_s:
            torch.save(model.state_dict(), checkpoint)
            last_ckpt = time.monotonic()
    if checkpoint is not None:
        torch.save(model.state_dict(), checkpoint)
    summary = {
        "steps": step,
        "batch": batch,
        "samples_seen": seen,
        "train_samples": n,
        "epochs": round(seen / n, 2),
        "wall_s": round(time.monotonic() - t0, 1),
        "cpu_s": round(time.process_time() - cpu0, 1),
        "final_loss": round(running, 4),
        "loss_curve": curve,
    }
    return model, summary


def export_onnx(model: CutoutRefiner, u2netp: Path, out: Path) -> Path:
    """One ONNX graph: U^2-Net-p (from ``u2netp``, unchanged) feeding the refiner; input
    ``input.1`` ``(1, 3, 320, 320)``, one output ``saliency`` ``(1, 1, 320, 320)``."""
    import tempfile

    import onnx
    from onnx import compose

    model.eval()

    class _Probs(nn.Module):
        def __init__(self, m: CutoutRefiner) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return self.m.probabilities(x, s)

    with tempfile.TemporaryDirectory() as tmp:
        head_path = Path(tmp) / "refiner.onnx"
        torch.onnx.export(
            _Probs(model),
            (torch.zeros(1, 3, 320, 320), torch.full((1, 1, 320, 320), 0.5)),
            str(head_path),
            input_names=["refiner_x", "refiner_s"],
            output_names=["saliency"],
            opset_version=11,
            dynamo=False,
        )
        head = onnx.load(str(head_path))
    base = onnx.load(str(u2netp))
    head = onnx.version_converter.convert_version(head, base.opset_import[0].version)
    head.ir_version = base.ir_version
    merged = compose.merge_models(
        base, head, io_map=[(U2NETP_OUTPUT, "refiner_s")], outputs=["saliency"]
    )
    # The refiner's picture input is U^2-Net-p's own input.
    for node in merged.graph.node:
        for i, name in enumerate(node.input):
            if name == "refiner_x":
                node.input[i] = U2NETP_INPUT
    keep = [i for i in merged.graph.input if i.name != "refiner_x"]
    del merged.graph.input[:]
    merged.graph.input.extend(keep)
    onnx.checker.check_model(merged)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(merged, str(out))
    return out


def write_training_record(path: Path, record: dict[str, Any]) -> None:
    """``training.json`` beside the weights: data, steps, loss, time and the command."""
    path.write_text(json.dumps(record, indent=1) + "\n")
