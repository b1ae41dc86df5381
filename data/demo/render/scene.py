"""Procedural scene backdrops (settings under lighting) and products composed into them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from data.demo.attributes import (
    LIGHTING,
    SETTINGS,
)
from data.demo.render.textures import unit_grid


def _vgrad(
    h: int, w: int, top: Sequence[float], bottom: Sequence[float], y0: float = 0.0, y1: float = 1.0
) -> np.ndarray:
    """Vertical gradient ``(h, w, 3)`` float32 from ``top`` at ``y0`` to ``bottom`` at ``y1``."""
    t = np.clip((np.linspace(0, 1, h, dtype=np.float32) - y0) / max(y1 - y0, 1e-3), 0, 1)[
        :, None, None
    ]
    return np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t * np.ones(
        (1, w, 1), np.float32
    )


def _backdrop(setting: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """The backdrop ``(size, size, 3)`` float32 and the ground line (unit y) products stand on."""
    s = size
    img = Image.new("RGB", (s, s))
    d = ImageDraw.Draw(img)

    def u(v: float) -> float:
        return v * s

    def put(arr: np.ndarray) -> None:
        img.paste(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB"))

    jit = float(rng.uniform(-0.04, 0.04))
    if setting == "studio":
        tone = rng.choice(
            np.array(
                [[236, 234, 230], [226, 232, 238], [240, 230, 222], [222, 222, 226]], np.float32
            )
        )
        put(_vgrad(s, s, tone * 1.0, tone * 0.86))
        ground = 0.9
    elif setting == "beach":
        horizon = 0.48 + jit
        put(_vgrad(s, s, (120, 180, 235), (215, 235, 250), 0, horizon))
        d.rectangle((0, u(horizon), s, u(horizon + 0.12)), fill=(40, 120, 170))
        for k in range(4):
            y = u(horizon + 0.02 + 0.025 * k)
            d.line((0, y, s, y), fill=(170, 215, 230), width=max(1, s // 160))
        sand = _vgrad(s, s, (236, 214, 168), (214, 188, 140), horizon + 0.12, 1.0)
        arr = np.asarray(img, np.float32).copy()
        rows = slice(int(u(horizon + 0.12)), s)
        arr[rows] = sand[rows]
        put(arr)
        sx = float(rng.uniform(0.1, 0.9))
        d.ellipse((u(sx - 0.05), u(0.08), u(sx + 0.05), u(0.18)), fill=(255, 240, 190))
        ground = 0.92
    elif setting == "city street":
        put(_vgrad(s, s, (150, 180, 210), (205, 215, 225)))
        x = -0.05
        while x < 1.0:
            bw_ = float(rng.uniform(0.12, 0.22))
            top = float(rng.uniform(0.05, 0.4))
            c = int(rng.integers(70, 150))
            col = (c + int(rng.integers(0, 40)), c, c - int(rng.integers(0, 20)))
            d.rectangle((u(x), u(top), u(x + bw_), u(0.78)), fill=col)
            wy = top + 0.04
            while wy < 0.72:
                wx = x + 0.02
                while wx < x + bw_ - 0.04:
                    lit = rng.random() < 0.3
                    d.rectangle(
                        (u(wx), u(wy), u(wx + 0.025), u(wy + 0.035)),
                        fill=(235, 215, 140) if lit else (60, 70, 85),
                    )
                    wx += 0.045
                wy += 0.07
            x += bw_ + 0.01
        d.rectangle((0, u(0.78), s, s), fill=(120, 120, 124))
        d.rectangle((0, u(0.78), s, u(0.8)), fill=(175, 175, 170))
        ground = 0.93
    elif setting == "forest":
        put(_vgrad(s, s, (70, 120, 80), (35, 70, 40)))
        for _ in range(7):
            x = float(rng.uniform(0, 1))
            w_ = float(rng.uniform(0.03, 0.07))
            d.rectangle((u(x), u(0.05), u(x + w_), u(0.8)), fill=(80, 55, 35))
        for _ in range(28):
            x, y, r = (
                float(rng.uniform(0, 1)),
                float(rng.uniform(-0.05, 0.45)),
                float(rng.uniform(0.06, 0.14)),
            )
            g = int(rng.integers(90, 160))
            d.ellipse((u(x - r), u(y - r), u(x + r), u(y + r)), fill=(30, g, 50))
        d.rectangle((0, u(0.8), s, s), fill=(70, 95, 45))
        ground = 0.93
    elif setting == "living room":
        wall = rng.choice(
            np.array(
                [[226, 214, 196], [200, 214, 210], [232, 222, 214], [210, 205, 225]], np.float32
            )
        )
        put(_vgrad(s, s, wall, wall * 0.9))
        d.rectangle(
            (u(0.6 + jit), u(0.1), u(0.9 + jit), u(0.5)),
            fill=(200, 225, 240),
            outline=(250, 250, 250),
            width=max(1, s // 60),
        )
        d.rounded_rectangle(
            (u(0.02), u(0.5), u(0.5), u(0.72)), radius=int(u(0.04)), fill=(110, 90, 80)
        )
        d.rectangle((0, u(0.72), s, s), fill=(165, 120, 80))
        for k in range(6):
            d.line(
                (0, u(0.76 + 0.045 * k), s, u(0.76 + 0.045 * k)),
                fill=(140, 98, 62),
                width=max(1, s // 200),
            )
        d.ellipse((u(0.84), u(0.45), u(0.98), u(0.62)), fill=(60, 120, 60))
        ground = 0.93
    elif setting == "kitchen":
        put(np.full((s, s, 3), (236, 236, 230), np.float32))
        step = 0.08
        y = 0.0
        while y < 0.62:
            d.line((0, u(y), s, u(y)), fill=(200, 200, 196), width=1)
            y += step
        x = 0.0
        while x < 1:
            d.line((u(x), 0, u(x), u(0.62)), fill=(200, 200, 196), width=1)
            x += step
        d.rectangle((0, u(0.62), s, u(0.68)), fill=(90, 90, 96))
        d.rectangle((0, u(0.68), s, s), fill=(190, 170, 140))
        for k in range(5):
            d.line(
                (u(0.2 * k), u(0.68), u(0.2 * k), s), fill=(150, 130, 105), width=max(1, s // 160)
            )
        ground = 0.66
    elif setting == "mountains":
        put(_vgrad(s, s, (110, 160, 220), (220, 230, 240), 0, 0.6))
        for k in range(4):
            px, ph, pw = (
                float(rng.uniform(0, 1)),
                float(rng.uniform(0.15, 0.35)),
                float(rng.uniform(0.3, 0.5)),
            )
            c = 110 + 15 * k
            d.polygon(
                [(u(px - pw), u(0.62)), (u(px), u(ph)), (u(px + pw), u(0.62))],
                fill=(c - 20, c - 10, c + 10),
            )
            d.polygon(
                [(u(px - 0.06), u(ph + 0.06)), (u(px), u(ph)), (u(px + 0.06), u(ph + 0.06))],
                fill=(245, 245, 250),
            )
        d.rectangle((0, u(0.62), s, s), fill=(100, 140, 70))
        ground = 0.93
    elif setting == "desert":
        put(_vgrad(s, s, (240, 190, 120), (250, 225, 170), 0, 0.5))
        arr = np.asarray(img, np.float32).copy()
        yy, xx = unit_grid(s)
        dunes: list[tuple[tuple[int, int, int], float]] = [
            ((220, 170, 100), 0.5),
            ((205, 150, 85), 0.62),
            ((190, 135, 75), 0.75),
        ]
        for k, (dune_rgb, off) in enumerate(dunes):
            dune = off + 0.04 * np.sin(2 * np.pi * (xx * (1.2 + 0.3 * k) + float(rng.random())))
            arr[yy > dune] = dune_rgb
        put(arr)
        cx = float(rng.uniform(0.05, 0.25))
        d.rectangle((u(cx), u(0.35), u(cx + 0.04), u(0.7)), fill=(60, 120, 60))
        ground = 0.93
    else:
        raise ValueError(f"setting: expected one of {list(SETTINGS)}, got {setting!r}")
    return np.asarray(img, np.float32), ground


def _apply_lighting(
    arr: np.ndarray, lighting: str, rng: np.random.Generator, strength: float = 1.0
) -> np.ndarray:
    """Light ``arr`` ``(h, w, 3)`` float32 0-255; ``strength`` in [0, 1] scales the effect."""
    h, w, _ = arr.shape
    yy, xx = (
        unit_grid(h)
        if h == w
        else np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    )
    if lighting == "soft light":
        out = arr * 0.92 + 255 * 0.08
    elif lighting == "golden hour":
        side = float(rng.choice([0.0, 1.0]))
        glow = np.exp(-(((xx - side) / 0.6) ** 2 + ((yy - 0.3) / 0.5) ** 2))[..., None]
        out = arr * np.array([1.08, 0.95, 0.74], np.float32) + glow * np.array(
            [60, 30, 0], np.float32
        )
    elif lighting == "neon":
        g1 = np.exp(-(((xx - 0.15) / 0.3) ** 2 + ((yy - 0.3) / 0.3) ** 2))[..., None]
        g2 = np.exp(-(((xx - 0.85) / 0.3) ** 2 + ((yy - 0.4) / 0.3) ** 2))[..., None]
        out = (
            arr * 0.45
            + g1 * np.array([150, 20, 140], np.float32)
            + g2 * np.array([10, 130, 160], np.float32)
        )
    elif lighting == "overcast":
        grey = arr.mean(axis=2, keepdims=True)
        out = (arr * 0.55 + grey * 0.45) * np.array([0.95, 0.97, 1.0], np.float32)
    elif lighting == "spotlight":
        r = np.sqrt((xx - 0.5) ** 2 + (yy - 0.55) ** 2)[..., None]
        out = arr * (1.15 - 0.85 * np.clip(r / 0.6, 0, 1))
    elif lighting == "night":
        out = arr * 0.35 * np.array([0.8, 0.9, 1.3], np.float32)
    else:
        raise ValueError(f"lighting: expected one of {list(LIGHTING)}, got {lighting!r}")
    return np.clip(arr + (out - arr) * strength, 0, 255).astype(np.float32)


@dataclass(frozen=True)
class SceneOutput:
    """A rendered scene: ``image`` RGB, ``mask`` L (the placed product's alpha, same size) and
    ``box`` ``(x, y, w, h)`` in pixels of the product's visible pixels."""

    image: Image.Image
    mask: Image.Image
    box: tuple[int, int, int, int]


def _scene_rng(lighting: str, size: int, seed: int) -> np.random.Generator:
    """Check a scene's ``lighting`` and ``size``; its seeded generator (backdrop first)."""
    if lighting not in LIGHTING:
        raise ValueError(f"lighting: expected one of {list(LIGHTING)}, got {lighting!r}")
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size: expected an int >= 16, got {size!r}")
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5CE7E])


def compose_scene(
    rgba_product: Image.Image, *, setting: str, lighting: str, size: int = 128, seed: int
) -> SceneOutput:
    """The product cut-out placed in a procedural ``setting`` under ``lighting``, with its mask.

    The backdrop takes the full lighting effect; the product a mild one, so its colour stays
    readable. Deterministic given ``seed``.
    """
    if rgba_product.mode != "RGBA":
        raise ValueError(f"rgba_product: expected an RGBA image, got mode {rgba_product.mode!r}")
    rng = _scene_rng(lighting, size, seed)
    back, ground = _backdrop(setting, size, rng)
    scale = float(rng.uniform(0.5, 0.68))
    ps = max(8, round(size * scale))
    prod = rgba_product.resize((ps, ps), Image.Resampling.LANCZOS)
    cx = float(rng.uniform(0.4, 0.6))
    x0 = round(cx * size - ps / 2)
    y0 = round(min(ground, 0.97) * size - ps * 0.97)
    y0 = max(0, min(size - ps, y0))
    # Contact shadow: a blurred ellipse under the product.
    sh = Image.new("L", (size, size), 0)
    ImageDraw.Draw(sh).ellipse(
        (x0 + ps * 0.15, y0 + ps * 0.88, x0 + ps * 0.85, y0 + ps * 0.99), fill=150
    )
    blur = ImageFilter.GaussianBlur(max(1.0, size / 60))
    sh_arr = np.asarray(sh.filter(blur), np.float32)[..., None] / 255
    back = back * (1 - 0.5 * sh_arr)
    back = _apply_lighting(back, lighting, rng)
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    layer.paste(prod, (x0, y0))
    la = np.asarray(layer, np.float32)
    a = la[..., 3:4] / 255
    lit = _apply_lighting(la[..., :3], lighting, np.random.default_rng(0), strength=0.2)
    out = back * (1 - a) + lit * a
    mask = layer.getchannel("A")
    bb = mask.getbbox() or (0, 0, 0, 0)
    return SceneOutput(
        image=Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB"),
        mask=mask,
        box=(bb[0], bb[1], bb[2] - bb[0], bb[3] - bb[1]),
    )


def render_scene(
    rgba_product: Image.Image, *, setting: str, lighting: str, size: int = 128, seed: int
) -> Image.Image:
    """``compose_scene(...).image``: the product in a procedural scene, RGB ``size`` x ``size``."""
    return compose_scene(
        rgba_product, setting=setting, lighting=lighting, size=size, seed=seed
    ).image


def render_backdrop(setting: str, lighting: str, *, size: int = 64, seed: int) -> Image.Image:
    """A product-free backdrop: ``setting`` under ``lighting``, RGB ``size`` x ``size``
    (what :func:`compose_scene` draws behind the product, without it and its shadow)."""
    rng = _scene_rng(lighting, size, seed)
    back, _ = _backdrop(setting, size, rng)
    back = _apply_lighting(back, lighting, rng)
    return Image.fromarray(np.clip(back, 0, 255).astype(np.uint8), "RGB")
