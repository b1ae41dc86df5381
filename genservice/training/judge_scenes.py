"""Seeded demo renders the hero-scene judges learn from: square scenes (``demo_scenes``) and
native banner / story canvases (``canvas_scenes``) squeezed as the ghost detector judges them
(``squeeze``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from genservice.judges import JUDGE_SIZE


@dataclass(frozen=True)
class SceneSet:
    """Demo renders for the judges: ``images`` uint8 (N, S, S, 3), ``masks`` bool (N, S, S)
    (product pixels; all False for backdrops), ``settings`` / ``lightings`` int64 (N,) indices
    into ``genservice.vocab.settings()`` / ``lighting()``."""

    images: np.ndarray
    masks: np.ndarray
    settings: np.ndarray
    lightings: np.ndarray


def demo_scenes(
    n: int, *, size: int = JUDGE_SIZE, seed: int, product_share: float = 0.6
) -> SceneSet:
    """``n`` seeded demo renders: ``product_share`` of them a demo product in a scene
    (``compose_scene``), the rest product-free backdrops (``render_backdrop``)."""
    from data.demo.attributes import LIGHTING, SETTINGS
    from data.demo.render import compose_scene, render_backdrop, render_product
    from data.demo.world import build_world

    if n < 1:
        raise ValueError(f"n: expected >= 1, got {n}")
    rng = np.random.default_rng([seed, 0x6405])
    products = list(build_world(seed=seed, n_products=60, n_users=1).products)
    cut: dict[int, Image.Image] = {}
    images = np.zeros((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), bool)
    st = rng.integers(0, len(SETTINGS), n)
    li = rng.integers(0, len(LIGHTING), n)
    has = rng.random(n) < product_share
    for i in range(n):
        sd = int(rng.integers(0, 2**31))
        if has[i]:
            k = int(rng.integers(0, len(products)))
            if k not in cut:
                p = products[k]
                cut[k] = render_product(p.attributes, category=p.category, size=2 * size, seed=k)
            sc = compose_scene(
                cut[k], setting=SETTINGS[st[i]], lighting=LIGHTING[li[i]], size=size, seed=sd
            )
            images[i] = np.asarray(sc.image)
            masks[i] = np.asarray(sc.mask) >= 128
        else:
            images[i] = np.asarray(
                render_backdrop(SETTINGS[st[i]], LIGHTING[li[i]], size=size, seed=sd)
            )
    return SceneSet(images, masks, st.astype(np.int64), li.astype(np.int64))


#: Native canvases (w, h) of the non-square placements at the scene model's 64-px scale
#: (``genservice.compose.scene_canvas``, multiple 8) and the aspect each is cropped to.
CANVASES: dict[str, tuple[tuple[int, int], float]] = {
    "banner": ((128, 64), 1200 / 628),
    "story": ((64, 120), 1080 / 1920),
}


@dataclass(frozen=True)
class CanvasSet:
    """Demo renders on a non-square canvas at native size: ``images`` uint8 (N, H, W, 3),
    ``masks`` bool (N, H, W) (product pixels; all False for backdrops)."""

    canvas: str
    images: np.ndarray
    masks: np.ndarray


def canvas_scenes(
    n: int, *, canvas: str, seed: int, product_share: float = 0.4, resize_share: float = 0.5
) -> CanvasSet:
    """``n`` seeded renders on the native ``canvas`` (``CANVASES``), from a square render at
    the canvas's long side, either (``resize_share`` of them) Lanczos-resized to the canvas —
    as the scene model learned its non-square backdrops (``training.scene_model.backdrop_set``)
    — or cut to it (a story: a full-height strip; a banner: a full-width band of rows), so
    backdrop parts (sofas, sea bands, neon, windows, cacti) keep their own proportions on that
    canvas. ``product_share`` of them hold a demo product; in a cut one it is made smaller
    (padded above and beside, 1.3-2.2x) to fit the short side and the cut is centred on it.
    Why: the detector judges such a scene squeezed to a square (``GhostDetector.probability``),
    which squashes the backdrop parts into shapes it never saw in square renders — the story
    canvas drew most false marks."""
    from data.demo.attributes import LIGHTING, SETTINGS
    from data.demo.render import compose_scene, render_backdrop, render_product
    from data.demo.world import build_world

    if canvas not in CANVASES:
        raise ValueError(f"canvas: expected one of {sorted(CANVASES)}, got {canvas!r}")
    (w, h), _aspect = CANVASES[canvas]
    size = max(w, h)
    rng = np.random.default_rng([seed, 0xCA27, len(canvas)])
    products = list(build_world(seed=seed, n_products=60, n_users=1).products)
    cut: dict[int, Image.Image] = {}
    images = np.zeros((n, h, w, 3), np.uint8)
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        resize = rng.random() < resize_share
        st = SETTINGS[int(rng.integers(0, len(SETTINGS)))]
        li = LIGHTING[int(rng.integers(0, len(LIGHTING)))]
        sd = int(rng.integers(0, 2**31))
        if rng.random() < product_share:
            k = int(rng.integers(0, len(products)))
            if k not in cut:
                p = products[k]
                cut[k] = render_product(p.attributes, category=p.category, size=128, seed=k)
            prod = cut[k]
            if not resize:
                big = round(128 * float(rng.uniform(1.3, 2.2)))
                prod = Image.new("RGBA", (big, big), (0, 0, 0, 0))
                prod.paste(cut[k], ((big - 128) // 2, big - 128))
            sc = compose_scene(prod, setting=st, lighting=li, size=size, seed=sd)
            img, mask = sc.image, sc.mask
            cx, cy = sc.box[0] + sc.box[2] / 2, sc.box[1] + sc.box[3] / 2
        else:
            img = render_backdrop(st, li, size=size, seed=sd)
            mask = Image.new("L", (size, size), 0)
            cx, cy = rng.uniform(w / 2, size - w / 2), rng.uniform(h / 2, size - h / 2)
        if resize:
            images[i] = np.asarray(img.resize((w, h), Image.Resampling.LANCZOS))
            masks[i] = np.asarray(mask.resize((w, h), Image.Resampling.BILINEAR)) >= 128
            continue
        x0 = int(np.clip(round(cx - w / 2), 0, size - w))
        y0 = int(np.clip(round(cy - h / 2), 0, size - h))
        images[i] = np.asarray(img)[y0 : y0 + h, x0 : x0 + w]
        masks[i] = np.asarray(mask)[y0 : y0 + h, x0 : x0 + w] >= 128
    return CanvasSet(canvas, images, masks)


def squeeze(images: np.ndarray, masks: np.ndarray, canvas: str) -> tuple[np.ndarray, np.ndarray]:
    """Native canvas renders as the detector judges them: cropped to the placement's aspect
    (centre), squeezed to a square of the short side (Lanczos; masks bilinear > 0.5).
    uint8 (N, S, S, 3), bool (N, S, S)."""
    from genservice.compose import crop_to_aspect

    aspect = CANVASES[canvas][1]
    s = min(images.shape[1:3])
    xi = np.zeros((len(images), s, s, 3), np.uint8)
    xm = np.zeros((len(images), s, s), bool)
    for i, (img, m) in enumerate(zip(images, masks, strict=True)):
        im = crop_to_aspect(Image.fromarray(img), aspect)
        xi[i] = np.asarray(im.resize((s, s), Image.Resampling.LANCZOS))
        mm = crop_to_aspect(Image.fromarray((m * 255).astype(np.uint8)), aspect)
        xm[i] = np.asarray(mm.resize((s, s), Image.Resampling.BILINEAR)) > 127
    return xi, xm
