"""Training of the hero-scene judges (``genservice.judges``) on seeded demo renders.

Re-train with ``train_judges(out_dir, seed=0)``; the weights ship in ``data/models/hero-judges``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from genservice import vocab
from genservice.judges import (
    GhostDetector,
    GhostNet,
    SettingJudge,
    SettingNet,
    to_tensor,
)
from genservice.training.judge_scenes import (
    CANVASES,
    SceneSet,
    canvas_scenes,
    demo_scenes,
    squeeze,
)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip, blur (down/up-sampling) and noise half the batch: generated scenes are softer
    and noisier than renders."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    soft = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear")
    blur = torch.rand(b, generator=gen) < 0.5
    x = torch.where(blur[:, None, None, None], soft, x)
    noise = torch.randn(x.shape, generator=gen) * 0.06
    noisy = torch.rand(b, generator=gen) < 0.5
    return torch.where(noisy[:, None, None, None], x + noise, x)


def style_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mimic a small diffusion model's rendering of a scene, per image with probability
    0.8: down/up-sampling by 1.5-4x, a Gaussian blur (sigma 0.3-1.5 px), blocky smoothing
    (4x4 means mixed in, as a JPEG-like codec flattens texture), colour / contrast /
    brightness jitter and noise (sigma 0-0.1). ``x``: (B, 3, S, S) in [-1, 1].

    Why: the detector learned crisp renders; on a scene model's soft, blurry backdrops it
    took windows, tiles, sofas and neon glows for products. Both products-in-scenes and
    product-free backdrops get the same treatment, so softness alone says nothing."""
    b, _, s, _ = x.shape
    u = torch.rand(b, 8, generator=gen)
    out = x
    # down/up-sampling
    f = 1.5 + 2.5 * u[:, 0]
    small = [
        F.interpolate(
            F.interpolate(out[i : i + 1], size=max(8, int(s / float(f[i]))), mode="area"),
            size=s,
            mode="bilinear",
            align_corners=False,
        )
        for i in range(b)
    ]
    out = torch.where((u[:, 1] < 0.6)[:, None, None, None], torch.cat(small), out)
    # Gaussian blur
    sig = 0.3 + 1.2 * u[:, 2]
    r = torch.arange(-3, 4, dtype=torch.float32)
    k1 = torch.exp(-(r[None] ** 2) / (2 * sig[:, None] ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)
    k2 = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(3, 0)[:, None]
    blurred = F.conv2d(
        F.pad(out.reshape(1, 3 * b, s, s), (3, 3, 3, 3), mode="replicate"), k2, groups=3 * b
    ).reshape(b, 3, s, s)
    out = torch.where((u[:, 3] < 0.5)[:, None, None, None], blurred, out)
    # blocky smoothing (JPEG-like)
    blocks = F.interpolate(F.avg_pool2d(out, 4), scale_factor=4, mode="nearest")
    out = torch.where((u[:, 4] < 0.25)[:, None, None, None], 0.6 * out + 0.4 * blocks, out)
    # colour, contrast, brightness
    gain = 1 + 0.15 * (torch.rand(b, 3, 1, 1, generator=gen) * 2 - 1)
    contrast = (0.7 + 0.5 * u[:, 5])[:, None, None, None]
    bright = (0.2 * (u[:, 6] * 2 - 1))[:, None, None, None]
    mean = out.mean((1, 2, 3), keepdim=True)
    out = ((out - mean) * contrast + mean) * gain + bright
    out = out + torch.randn(out.shape, generator=gen) * (0.1 * u[:, 7])[:, None, None, None]
    keep = torch.rand(b, generator=gen) < 0.2
    return torch.where(keep[:, None, None, None], x, out.clamp(-1, 1))


#: The scene model's VAE (the same bytes as sd-tiny's): what a generated scene passes through.
SCENE_VAE = Path(__file__).resolve().parents[2] / "data" / "models" / "sd-tiny-scenes" / "vae"


@torch.no_grad()
def vae_smear(
    images: np.ndarray,
    *,
    latent_noise: tuple[float, float] = (0.0, 0.0),
    seed: int = 0,
    vae_dir: str | Path = SCENE_VAE,
    batch_size: int = 64,
) -> np.ndarray:
    """``images`` uint8 (N, S, S, 3) through the scene model's VAE: encoded (latent mean),
    Gaussian noise of sigma U(``latent_noise``) x the latents' std added per image, decoded;
    uint8 (N, S, S, 3).

    Why: a generated scene is a decoded latent; the VAE smears renders the way the scene model
    smears its scenes (mosaic textures, pink floor blotches, soft glows). Renders only, never
    generator (diffusion) output."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(vae_dir)).eval()
    gen = torch.Generator().manual_seed(seed)
    out = np.empty_like(images)
    for i in range(0, len(images), batch_size):
        x = to_tensor(images[i : i + batch_size])
        lat = vae.encode(x).latent_dist.mean
        lo, hi = latent_noise
        sig = lo + (hi - lo) * torch.rand(len(x), generator=gen)
        lat = lat + torch.randn(lat.shape, generator=gen) * sig[:, None, None, None] * lat.std()
        y = vae.decode(lat).sample.clamp(-1, 1)
        out[i : i + batch_size] = ((y.permute(0, 2, 3, 1) + 1) * 127.5).round().byte().numpy()
    return out


def product_kept(original: np.ndarray, smeared: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Bool (N,): the product still stands out after smearing: its pixels moved less (mean
    absolute RGB change) than half their contrast to the 4-px ring of backdrop around them.
    True for product-free images. Why: the VAE sometimes dissolves a dark product into its
    backdrop; labelling such a blob a product would teach the detector to mark backdrops."""
    from scipy import ndimage

    keep = np.ones(len(original), bool)
    for i, m in enumerate(masks):
        if not m.any():
            continue
        ring = ndimage.binary_dilation(m, iterations=4) & ~m
        o, s = original[i].astype(np.float32), smeared[i].astype(np.float32)
        contrast = np.abs(o[m].mean(0) - o[ring].mean(0)).sum() if ring.any() else 0.0
        moved = np.abs(o[m] - s[m]).sum(1).mean()
        keep[i] = moved < 0.5 * contrast
    return keep


#: Latent noise ranges (x the latents' std) of the smeared training variants.
SMEAR_NOISE = ((0.0, 0.0), (0.15, 0.45))


def _fit(
    net: nn.Module,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool,
) -> list[float]:
    """Seeded AdamW loop: ``loss_fn(batch_indices)`` per step; returns the losses."""
    from tqdm import tqdm

    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    losses: list[float] = []
    net.train()
    for step in tqdm(range(steps), desc="judge", disable=not progress):
        gen = torch.Generator().manual_seed(seed * 100_003 + step)
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        loss = loss_fn(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    net.eval()
    return losses


def fit_ghost_detector(
    data: SceneSet,
    *,
    steps: int = 700,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    smeared: Sequence[np.ndarray] = (),
    smear_share: float = 0.5,
    dilations: tuple[int, ...] = (2, 4),
) -> tuple[GhostDetector, list[float]]:
    """Train a ghost detector on ``data`` (images and product masks); returns it and the
    losses. ``smeared``: variants of ``data.images`` (same shape and order, e.g.
    ``vae_smear``); each batch image is one of them (uniformly) with probability
    ``smear_share`` where its product survived (``product_kept``), then ``style_augment``.
    ``dilations``: the net's context convolutions (``GhostNet``)."""
    torch.manual_seed(seed)
    net = GhostNet(dilations=dilations)
    x = to_tensor(data.images)
    y = torch.from_numpy(data.masks).float()[:, None]
    xs = [to_tensor(v) for v in smeared]
    ok = [torch.from_numpy(product_kept(data.images, v, data.masks)) for v in smeared]

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(int(idx.sum()))
        b, t = x[idx], y[idx]
        if xs:
            pick = torch.randint(0, len(xs), (len(idx),), generator=gen)
            use = torch.rand(len(idx), generator=gen) < smear_share
            for k, v in enumerate(xs):
                sel = use & (pick == k) & ok[k][idx]
                b = torch.where(sel[:, None, None, None], v[idx], b)
        flip = torch.rand(len(idx), generator=gen) < 0.5
        b = torch.where(flip[:, None, None, None], b.flip(-1), b)
        t = torch.where(flip[:, None, None, None], t.flip(-1), t)
        b = style_augment(b, gen)
        return F.binary_cross_entropy_with_logits(net(b), t, pos_weight=torch.tensor(2.0))

    losses = _fit(
        net, loss_fn, len(x), steps=steps, batch_size=batch_size, lr=4e-3, seed=seed,
        progress=progress,
    )  # fmt: skip
    return GhostDetector(net), losses


def fit_setting_judge(
    data: SceneSet,
    *,
    steps: int = 700,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> tuple[SettingJudge, list[float]]:
    """Train a setting judge on ``data`` (64 x 64 images with setting and lighting labels);
    returns it and the losses."""
    torch.manual_seed(seed)
    net = SettingNet(len(vocab.settings()), len(vocab.lighting()))
    x = to_tensor(data.images)
    ys = torch.from_numpy(data.settings)
    yl = torch.from_numpy(data.lightings)

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(int(idx.sum()))
        ls, ll = net(_augment(x[idx], gen))
        return F.cross_entropy(ls, ys[idx]) + F.cross_entropy(ll, yl[idx])

    losses = _fit(
        net, loss_fn, len(x), steps=steps, batch_size=batch_size, lr=3e-3, seed=seed,
        progress=progress,
    )  # fmt: skip
    return SettingJudge(net), losses


def accuracy(predicted: Sequence[str], expected: Sequence[str]) -> float:
    """Share of equal pairs (0.0 for empty input)."""
    if len(predicted) != len(expected):
        raise ValueError(f"expected: {len(predicted)} labels, got {len(expected)}")
    return sum(p == e for p, e in zip(predicted, expected, strict=True)) / max(1, len(expected))


def _ghost_figures(ghost: GhostDetector, images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Mean IoU on renders with a product, marked pixel share on product-free ones and the
    share of product-free ones with >= 0.5 % of pixels marked (the hero measure's floor)."""
    ious, fp = [], []
    for img, m in zip(images, masks, strict=True):
        p = ghost.probability(Image.fromarray(img)) > 0.5
        if m.any():
            ious.append(float((p & m).sum() / max(1, (p | m).sum())))
        else:
            fp.append(float(p.mean()))
    return {
        "iou": round(float(np.mean(ious)), 4),
        "false_positive_px": round(float(np.mean(fp)), 4),
        "backdrops_marked": round(float(np.mean([f >= 0.005 for f in fp])), 4),
    }


#: Share of each non-square canvas among the extra canvas renders (``canvas_share``).
CANVAS_SPLIT = (("banner", 0.4), ("story", 0.6))


def ghost_training_data(
    train: SceneSet,
    *,
    seed: int,
    smear: bool = True,
    canvas_share: float = 0.5,
    canvas_product_share: float = 0.6,
) -> tuple[SceneSet, list[np.ndarray]]:
    """The ghost detector's training set: ``train`` plus ``canvas_share`` x ``len(train)``
    renders on the banner / story canvases (``canvas_scenes``, ``CANVAS_SPLIT``), squeezed as
    the detector judges them (``squeeze``); and with ``smear`` its VAE variants
    (``SMEAR_NOISE``; canvas renders are smeared at their native size, then squeezed).
    ``canvas_product_share``: share of the canvas renders that hold a product. Setting /
    lighting labels of the canvas renders are 0 (the detector does not use them)."""
    smeared = (
        [
            vae_smear(train.images, latent_noise=nz, seed=seed + k)
            for k, nz in enumerate(SMEAR_NOISE)
        ]
        if smear
        else []
    )
    imgs, masks = [train.images], [train.masks]
    for ci, (c, share) in enumerate(CANVAS_SPLIT):
        n = round(len(train.images) * canvas_share * share)
        if n < 1:
            continue
        cs = canvas_scenes(n, canvas=c, seed=seed, product_share=canvas_product_share)
        sq, sm = squeeze(cs.images, cs.masks, c)
        imgs.append(sq)
        masks.append(sm)
        for k, nz in enumerate(SMEAR_NOISE if smear else ()):
            v = vae_smear(cs.images, latent_noise=nz, seed=seed + 100 + 10 * ci + k)
            smeared[k] = np.concatenate([smeared[k], squeeze(v, cs.masks, c)[0]])
    n_all = sum(len(i) for i in imgs)
    pad = np.zeros(n_all - len(train.images), np.int64)
    data = SceneSet(
        np.concatenate(imgs),
        np.concatenate(masks),
        np.concatenate([train.settings, pad]),
        np.concatenate([train.lightings, pad]),
    )
    return data, smeared


def ghost_test_sets(
    test: SceneSet, *, seed: int, n_canvas: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Held-out sets for the ghost figures, name -> (images uint8, masks bool): the test
    renders plain, through ``style_augment`` (fixed seed) and through the scene VAE (latent
    noise 0.15-0.45); and ``n_canvas`` renders per non-square canvas (``canvas_scenes`` of
    ``seed``), cropped to the placement's aspect at native size (the detector squeezes them
    itself), plain and through the VAE (smeared at native size). ``seed``: the training seed
    (the canvas renders are of ``seed + 1``, as ``test`` should be)."""
    from genservice.compose import crop_to_aspect

    styled = style_augment(to_tensor(test.images), torch.Generator().manual_seed(seed + 12345))
    styled_u8 = ((styled.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    sets = {
        "test_renders": (test.images, test.masks),
        "styled_test_renders": (styled_u8, test.masks),
        "vae_test_renders": (
            vae_smear(test.images, latent_noise=SMEAR_NOISE[-1], seed=seed + 54321),
            test.masks,
        ),
    }
    for ci, (c, _share) in enumerate(CANVAS_SPLIT if n_canvas > 0 else ()):
        cs = canvas_scenes(n_canvas, canvas=c, seed=seed + 1)
        v = vae_smear(cs.images, latent_noise=SMEAR_NOISE[-1], seed=seed + 54322 + ci)
        aspect = CANVASES[c][1]

        def crop(a: np.ndarray, aspect: float = aspect) -> np.ndarray:
            return np.stack([np.asarray(crop_to_aspect(Image.fromarray(x), aspect)) for x in a])

        m = crop((cs.masks * 255).astype(np.uint8)) > 127
        sets[f"{c}_test_renders"] = (crop(cs.images), m)
        sets[f"vae_{c}_test_renders"] = (crop(v), m)
    return sets


def ghost_figures(
    ghost: GhostDetector, sets: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, float]:
    """``ghost_<figure>_on_<set>`` for each held-out set (``_ghost_figures``)."""
    return {
        f"ghost_{k}_on_{name}": v
        for name, (imgs, masks) in sets.items()
        for k, v in _ghost_figures(ghost, imgs, masks).items()
    }


def train_judges(
    out_dir: str | Path,
    *,
    n_train: int = 3000,
    n_test: int = 400,
    steps: int = 700,
    seed: int = 0,
    progress: bool = True,
    setting: bool = True,
    smear: bool = True,
    canvas_share: float = 0.5,
    canvas_product_share: float = 0.6,
    dilations: tuple[int, ...] = (2, 4, 8),
) -> dict[str, Any]:
    """Train the ghost detector (and, with ``setting``, the setting judge) on seeded demo
    renders, check them on renders of another seed, save ``ghost.pt`` (and ``setting.pt``) in
    ``out_dir``; returns the figures (JSON-ready). The ghost figures are given on the held-out
    sets of ``ghost_test_sets`` (``n_test`` square renders, ``n_test // 2`` per non-square
    canvas). With ``smear`` the detector also learns from the training renders through the
    scene VAE (``SMEAR_NOISE``: plain and noisy); ``canvas_share``: extra renders on the
    banner / story canvases, squeezed (``ghost_training_data``; 0: square renders only, the
    recipe before 2026-11-28 13:40), ``canvas_product_share`` of them hold a product;
    ``dilations``: the detector's context convolutions (``GhostNet``). The defaults with
    ``setting=False, steps=1200`` reproduce the shipped ``ghost.pt``."""
    import time

    from data.demo.attributes import LIGHTING, SETTINGS

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train = demo_scenes(n_train, seed=seed)
    test = demo_scenes(n_test, seed=seed + 1)
    data, smeared = ghost_training_data(
        train,
        seed=seed,
        smear=smear,
        canvas_share=canvas_share,
        canvas_product_share=canvas_product_share,
    )
    t1 = time.perf_counter()
    ghost, g_losses = fit_ghost_detector(
        data, steps=steps, seed=seed, progress=progress, smeared=smeared, dilations=dilations
    )
    ghost.save(out / "ghost.pt")
    fig: dict[str, Any] = {
        "seed": seed,
        "n_train": n_train,
        "n_train_canvas": len(data.images) - n_train,
        "n_test": n_test,
        "steps": steps,
        "smear": smear,
        "render_s": round(t1 - t0, 1),
        "ghost_loss_last50": round(float(np.mean(g_losses[-50:])), 4),
    }
    if setting:
        judge, s_losses = fit_setting_judge(train, steps=steps, seed=seed, progress=progress)
        judge.save(out / "setting.pt")
        fig["setting_loss_last50"] = round(float(np.mean(s_losses[-50:])), 4)
    fig["train_s"] = round(time.perf_counter() - t1, 1)
    fig.update(ghost_figures(ghost, ghost_test_sets(test, seed=seed, n_canvas=n_test // 2)))
    if setting:
        ps, pl = judge.predict(test.images)
        fig["setting_accuracy_on_test_renders"] = round(
            accuracy(ps, [SETTINGS[k] for k in test.settings]), 4
        )
        fig["lighting_accuracy_on_test_renders"] = round(
            accuracy(pl, [LIGHTING[k] for k in test.lightings]), 4
        )
    return fig


#: Logit biases tried by ``calibrate_bias`` (0 first).
BIAS_GRID = (0.0, -0.5, -1.0, -1.5, -2.0, -2.5, -3.0)


def calibrate_bias(
    ghost: GhostDetector,
    sets: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    grid: Sequence[float] = BIAS_GRID,
    max_iou_loss: float = 0.02,
) -> tuple[float, dict[float, dict[str, float]]]:
    """The most negative logit bias of ``grid`` whose mean IoU on every held-out set of
    ``sets`` (``ghost_test_sets``) stays within ``max_iou_loss`` of the unbiased detector's;
    and the figures per bias tried. Chosen on held-out renders only (never on generated
    scenes). ``ghost.bias`` is left as it was."""
    keep = ghost.bias
    table: dict[float, dict[str, float]] = {}
    best = 0.0
    try:
        for b in grid:
            ghost.bias = float(b)
            table[float(b)] = fig = ghost_figures(ghost, sets)
            base = table[float(grid[0])]
            ok = all(fig[k] >= base[k] - max_iou_loss for k in fig if k.startswith("ghost_iou_on_"))
            if ok and b < best:
                best = float(b)
    finally:
        ghost.bias = keep
    return best, table
