"""U^2-Net-p fine-tuned on demo products (``tailorshot train cutout-finetune``).

The products head (``cutout_train``) keeps U^2-Net-p fixed and learns, with a small network of
its own, which salient pixels are the product; on pictures where the photograph has a subject
of its own (a cup, an astronaut) that network is often unsure and the head falls back to
U^2-Net-p's map, subject and all. Here U^2-Net-p itself is trained further: its graph is read
from the wheel's ONNX file into PyTorch (``onnx2torch``), trained on the same seeded pictures
(demo products composited onto backgrounds the measure never uses, studio renders,
product-free pictures) plus real photographs whose target is the original network's own map
(so a real product photo keeps being cut as U^2-Net-p cuts it), and written back as a
single-input ONNX file that serving runs in U^2-Net-p's place.

Training crops ``crop`` px out of the 320-px pictures (same scale as serving, ~2x cheaper per
step than whole pictures on a CPU); validation runs on whole 320-px pictures.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from genservice.training.cutout_data import (
    DISTILL_PHOTOS,
    SIZE,
    SampleMaker,
    _random_crop,
    load_photo,
)
from genservice.training.cutout_train import mask_ious, network_input

#: Weight of U^2-Net-p's six side outputs against its fused output (its own training recipe
#: supervises all seven).
SIDE_WEIGHT = 0.5


def u2netp_module(path: Path | None = None) -> nn.Module:
    """U^2-Net-p's ONNX graph (default: the wheel's ``u2netp.onnx``) as a trainable PyTorch
    module: ``(B, 3, H, W)`` normalised input (``network_input``) -> a list of seven
    ``(B, 1, H, W)`` maps in [0, 1], the fused one first."""
    import onnx
    from onnx2torch import convert

    from genservice.imaging.cutout import bundled_u2netp_path

    module: nn.Module = convert(onnx.load(str(path or bundled_u2netp_path())))
    return module


def training_batch(
    maker: SampleMaker,
    original: Callable[[Image.Image], np.ndarray],
    rng: np.random.Generator,
    n: int,
    *,
    crop: int = 224,
    distill: float = 0.25,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` fresh pictures: ``(images (n, crop, crop, 3) uint8, masks (n, crop, crop) float32
    in [0, 1])``, half of them mirrored. A share ``distill`` are crops of real photographs whose
    target is ``original(crop)`` (U^2-Net-p's ``(320, 320)`` map, resized), the map of exactly
    what the network sees; the rest are ``maker``'s default mix cropped at a random place."""
    if not 32 <= crop <= SIZE:
        raise ValueError(f"crop: expected 32..{SIZE} px, got {crop}")
    images, masks = [], []
    for _ in range(n):
        if rng.random() < distill:
            name = DISTILL_PHOTOS[int(rng.integers(len(DISTILL_PHOTOS)))]
            small = _random_crop(load_photo(name), rng, crop)
            im = np.asarray(small)
            target = Image.fromarray(np.asarray(original(small), np.float32), "F")
            m = np.asarray(target.resize((crop, crop), Image.Resampling.BILINEAR), np.float32)
        else:
            s = maker.make(rng)
            y, x = (int(v) for v in rng.integers(0, SIZE - crop + 1, 2))
            im, m = s.image[y : y + crop, x : x + crop], s.mask[y : y + crop, x : x + crop]
        if rng.random() < 0.5:  # the renderer draws most products facing one way
            im, m = im[:, ::-1], m[:, ::-1]
        images.append(im)
        masks.append(m)
    return np.ascontiguousarray(np.stack(images)), np.ascontiguousarray(np.stack(masks))


def side_loss(outs: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """BCE on all seven maps (side outputs weighted ``SIDE_WEIGHT``) + (1 - soft IoU) of the
    fused map; ``target`` ``(B, 1, H, W)`` in [0, 1]."""
    loss = torch.zeros(())
    for k, o in enumerate(outs):
        weight = 1.0 if k == 0 else SIDE_WEIGHT
        loss = loss + weight * F.binary_cross_entropy(o.clamp(1e-6, 1 - 1e-6), target)
    p = outs[0]
    inter = (p * target).sum(dim=(1, 2, 3))
    union = (p + target - p * target).sum(dim=(1, 2, 3))
    return loss + (1.0 - (inter + 1.0) / (union + 1.0)).mean()


@torch.no_grad()
def predict(net: nn.Module, images: np.ndarray, *, batch: int = 8) -> np.ndarray:
    """Fused maps ``(B, H, W)`` float32 in [0, 1] of ``images`` ``(B, H, W, 3)`` uint8."""
    was = net.training
    net.eval()
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(network_input(images[i : i + batch]))
        out.append(net(x)[0][:, 0].numpy())
    net.train(was)
    return np.concatenate(out).astype(np.float32)


def evaluate(net: nn.Module, data: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per kind of a ``make_shard`` shard with ``saliency``: n, IoU and boundary F1 (2 px) of
    the original map and of ``net``'s, each against the shard's mask at 0.5."""
    from genservice.training.heroeval import boundary_f1

    maps = predict(net, data["images"])
    target = data["masks"] > 127
    original = data["saliency"] > 127
    pred = maps > 0.5
    report: dict[str, dict[str, Any]] = {}
    for kind in sorted(set(data["kinds"].tolist())):
        idx = np.flatnonzero(data["kinds"] == kind)
        report[kind] = {
            "n": len(idx),
            "iou_original": round(float(mask_ious(original[idx], target[idx]).mean()), 4),
            "iou_finetuned": round(float(mask_ious(pred[idx], target[idx]).mean()), 4),
            "boundary_f1_original": round(
                float(np.mean([boundary_f1(original[i], target[i]) for i in idx])), 4
            ),
            "boundary_f1_finetuned": round(
                float(np.mean([boundary_f1(pred[i], target[i]) for i in idx])), 4
            ),
        }
    return report


def score(report: dict[str, dict[str, Any]]) -> float:
    """The checkpoint rule: the mean fine-tuned IoU over the kinds present (composites,
    studio renders and real photos count alike, so a model that forgets real photos loses)."""
    return float(np.mean([v["iou_finetuned"] for v in report.values()]))


def finetune(
    net: nn.Module,
    make_batch: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]],
    val: dict[str, np.ndarray],
    *,
    minutes: float,
    lr: float = 1e-4,
    seed: int = 0,
    folder: Path,
    validate_every_min: float = 10.0,
    max_steps: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``net`` in place for ``minutes`` of wall time (or ``max_steps``): Adam, cosine
    learning rate from ``lr`` to ``lr / 10``. Validates every ``validate_every_min`` minutes
    and at the end; keeps ``folder/best.pt`` (best ``score``) and ``folder/last.pt`` and loads
    the best into ``net`` before returning the summary."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 0xF7])
    folder.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.Adam(net.parameters(), lr)
    budget = max(minutes * 60.0, 1e-9)
    t0 = time.monotonic()
    history: list[dict[str, Any]] = []
    best = -1.0
    losses: list[float] = []
    step = 0
    next_val = validate_every_min * 60.0

    def validate(elapsed: float) -> None:
        nonlocal best
        report = evaluate(net, val)
        s = score(report)
        history.append({"step": step, "minutes": round(elapsed / 60, 1), "score": round(s, 4)})
        log(f"step {step} ({elapsed / 60:.1f} min): loss {np.mean(losses[-50:]):.4f} score {s:.4f}")
        torch.save(net.state_dict(), folder / "last.pt")
        if s > best:
            best = s
            torch.save(net.state_dict(), folder / "best.pt")

    net.train()
    while True:
        elapsed = time.monotonic() - t0
        if elapsed >= budget or (max_steps is not None and step >= max_steps):
            break
        frac = min(1.0, elapsed / budget)
        for group in opt.param_groups:
            group["lr"] = lr * (0.1 + 0.45 * (1.0 + math.cos(math.pi * frac)))
        images, masks = make_batch(rng)
        x = torch.from_numpy(network_input(images))
        loss = side_loss(net(x), torch.from_numpy(masks)[:, None])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if elapsed >= next_val:
            validate(elapsed)
            next_val += validate_every_min * 60.0
    validate(time.monotonic() - t0)
    net.load_state_dict(torch.load(folder / "best.pt", weights_only=True))
    summary = {
        "steps": step,
        "wall_s": round(time.monotonic() - t0, 1),
        "lr": lr,
        "seed": seed,
        "best_score": round(best, 4),
        "history": history,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def export_onnx(net: nn.Module, out: Path) -> Path:
    """Write ``net`` as a single-input ONNX file (input ``input.1`` ``(1, 3, 320, 320)``, seven
    map outputs, the fused one first: U^2-Net-p's own interface, so serving runs it in
    U^2-Net-p's place). Returns ``out``."""
    was = net.training
    net.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.onnx")
    with warnings.catch_warnings():
        # The converted graph's shape arithmetic is fixed at 320 px, which is what serving feeds.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            net,
            (torch.zeros(1, 3, SIZE, SIZE),),
            str(tmp),
            input_names=["input.1"],
            opset_version=17,
            dynamo=False,
        )
    tmp.replace(out)
    net.train(was)
    return out
