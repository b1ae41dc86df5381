"""Per-pixel fields of the demo renderer: unit grids, value noise, pattern intensity and
material texture (luminance multiplier + specular mix), each ``(s, s)`` float32."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image


@lru_cache(maxsize=8)
def unit_grid(s: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre unit coordinates ``(yy, xx)``, each ``(s, s)`` float32."""
    v = (np.arange(s, dtype=np.float32) + 0.5) / s
    yy, xx = np.meshgrid(v, v, indexing="ij")
    return yy, xx


def value_noise(rng: np.random.Generator, res: tuple[int, int], s: int) -> np.ndarray:
    """Smooth value noise in ``[-1, 1]``, shape ``(s, s)`` float32 (``res`` = grid rows, cols)."""
    g = rng.random(res, dtype=np.float32) * 2 - 1
    return np.asarray(
        Image.fromarray(g, "F").resize((s, s), Image.Resampling.BICUBIC), dtype=np.float32
    )


def pattern_field(name: str, rng: np.random.Generator, s: int) -> np.ndarray:
    """Pattern intensity in ``[0, 1]`` (1 = contrast colour), ``(s, s)`` float32."""
    yy, xx = unit_grid(s)
    if name == "solid":
        return np.zeros((s, s), np.float32)
    p = float(rng.uniform(0.085, 0.12))
    ph = float(rng.random())
    if name == "striped":
        return ((((yy / p) + ph) % 1.0) < 0.32).astype(np.float32)
    if name == "polka-dot":
        row = np.floor(yy / p + ph)
        fx = ((xx / p) + 0.5 * (row % 2) + ph) % 1.0 - 0.5
        fy = ((yy / p) + ph) % 1.0 - 0.5
        return ((fx * fx + fy * fy) < 0.3**2).astype(np.float32)
    if name == "checked":
        h = (((yy / p) + ph) % 1.0) < 0.4
        v = (((xx / p) + ph) % 1.0) < 0.4
        return np.where(h & v, 1.0, np.where(h | v, 0.5, 0.0)).astype(np.float32)
    if name == "zigzag":
        tri = np.abs(((xx / p) % 1.0) - 0.5)
        return ((((yy / p) + tri + ph) % 1.0) < 0.34).astype(np.float32)
    raise ValueError(f"pattern: unknown {name!r}")


def material_field(name: str, rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray]:
    """(luminance multiplier around 1, specular mix toward white in ``[0, 1]``), each ``(s, s)``."""
    yy, xx = unit_grid(s)
    zero = np.zeros((s, s), np.float32)
    if name == "cotton":
        mult = (
            1
            + 0.05 * value_noise(rng, (s // 2, s // 2), s)
            + 0.03 * np.sin(2 * np.pi * xx / 0.012) * np.sin(2 * np.pi * yy / 0.012)
        )
        return mult, zero
    if name == "denim":
        tw = np.sin(2 * np.pi * (xx + yy) / 0.022)
        mult = (
            1
            + 0.11 * tw
            + 0.07 * value_noise(rng, (6, 6), s)
            + 0.04 * value_noise(rng, (s // 2, s // 2), s)
        )
        return mult, zero
    if name == "wool":
        v = np.abs((xx / 0.045) % 1.0 - 0.5)
        ridge = np.sin(2 * np.pi * (yy / 0.04 + v))
        return 1 + 0.13 * ridge + 0.04 * value_noise(rng, (24, 24), s), zero
    if name == "leather":
        grain = value_noise(rng, (28, 28), s) + 0.5 * value_noise(rng, (64, 64), s)
        sheen = 0.18 * np.exp(-(((xx - 0.36) / 0.16) ** 2 + ((yy - 0.3) / 0.22) ** 2))
        return 1 + 0.08 * grain, sheen.astype(np.float32)
    if name == "canvas":
        w = np.sin(2 * np.pi * xx / 0.018) * np.sin(2 * np.pi * yy / 0.018)
        return 1 + 0.08 * w + 0.05 * value_noise(rng, (s // 3, s // 3), s), zero
    if name == "ceramic":
        x0 = float(rng.uniform(0.3, 0.38))
        spec = (
            0.55
            * np.exp(-(((xx - x0) / 0.025) ** 2))
            * (0.6 + 0.4 * np.exp(-(((yy - 0.45) / 0.3) ** 2)))
        )
        return 1 + 0.01 * value_noise(rng, (8, 8), s), spec.astype(np.float32)
    if name == "metal":
        streak = value_noise(rng, (s // 2, 3), s)
        bands = np.cos(2 * np.pi * (xx * 2.3 + float(rng.random())))
        spec = 0.3 * np.exp(-(((xx - 0.4) / 0.03) ** 2))
        return 1 + 0.12 * bands + 0.06 * streak, spec.astype(np.float32)
    if name == "wood":
        warp = 1.6 * value_noise(rng, (5, 5), s)
        grain = np.sin(2 * np.pi * (yy * 14 + xx * 1.5 + warp))
        return 1 + 0.12 * grain + 0.04 * value_noise(rng, (s // 4, s // 4), s), zero
    raise ValueError(f"material: unknown {name!r}")
