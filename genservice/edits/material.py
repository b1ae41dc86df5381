"""``material``: a texture (an image file, or a named one) laid inside the product's mask and
modulated by the product's own shading; outside the mask the pixels are copied (bit-exact).

Named textures: ``brick``, ``grass``, ``gravel`` (scikit-image's greyscale samples, tinted
with a typical colour) and procedural, seeded ``leather``, ``denim``, ``wood``, ``marble``.

Shading rule: in linear light, ``out = texture * clip(S / mean S, SHADE_MIN, SHADE_MAX) **
strength`` where ``S`` is the product's luminance Y smoothed inside the mask (Gaussian, sigma
:data:`SHADE_SIGMA_FRAC` of the mask's bounding-box diagonal, normalised so the background
does not bleed in): the broad shading carries over; the old texture and print (stripes, a
logo) do not, except its fine dark lines (``seams``: outlines, seams, a pocket), which
darken the material as they darkened the product (normalised so the mean colour stays the
texture's). The texture is resized so one tile spans
``scale`` x the mask's longer side (at 1 one tile covers the product), mirror-tiled beyond.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from genservice.edits.base import (
    EditResult,
    blend_in_mask,
    check_image,
    edit_metadata,
    join_alpha,
    resolve_mask,
    split_alpha,
)
from genservice.edits.parts import narrow_to_part

#: Shading is smoothed by this share of the mask's bounding-box diagonal.
SHADE_SIGMA_FRAC = 0.04
#: The shading multiplier is clipped to this range (a white print on a dark shirt would glow).
SHADE_MIN, SHADE_MAX = 0.3, 1.5
#: Fine dark lines (seams, outlines) are found at this share of the bounding-box diagonal and
#: darken the material by at most 1 - SEAM_MIN.
SEAM_SIGMA_FRAC = 0.006
SEAM_MIN = 0.45
#: Only pixels this much darker than their surroundings count as lines (a pattern's soft
#: boundaries, a polka dot's rim, do not).
SEAM_START = 0.8
#: scikit-image samples (greyscale) and the colour each is tinted with (sRGB).
SAMPLE_TINTS: dict[str, tuple[int, int, int]] = {
    "brick": (158, 78, 54),
    "grass": (86, 128, 52),
    "gravel": (150, 142, 128),
}
PROCEDURAL = ("leather", "denim", "wood", "marble")
TEXTURE_NAMES: tuple[str, ...] = (*SAMPLE_TINTS, *PROCEDURAL)


def _to_linear(rgb: np.ndarray) -> np.ndarray:
    c = rgb.astype(np.float32) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _to_srgb(lin: np.ndarray) -> np.ndarray:
    c = np.clip(lin, 0.0, 1.0)
    enc = np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)
    return np.clip(np.round(enc * 255.0), 0, 255).astype(np.uint8)


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise ``(size, size)`` float32 in about [-1, 1] from a ``cells`` grid."""
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    img = Image.fromarray(grid, "F").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, np.float32) / max(float(np.abs(grid).max()), 1e-6)


def procedural_texture(name: str, *, size: int = 512, seed: int = 0) -> np.ndarray:
    """A seeded procedural texture ``(size, size, 3)`` uint8: leather, denim, wood, marble."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x7E47])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if name == "leather":  # blotchy grain: mid + fine noise over a brown
        v = 0.6 * _noise(rng, size, 24) + 0.4 * _noise(rng, size, 96)
        base, amp = np.array([112, 64, 38], np.float32), 0.22
    elif name == "denim":  # diagonal twill over indigo, with fine thread noise
        twill = np.sin(2 * np.pi * (xx + yy) * size / 14.0)  # still visible shrunk 4x
        v = 0.6 * twill + 0.4 * rng.standard_normal((size, size)).astype(np.float32) * 0.6
        base, amp = np.array([52, 74, 122], np.float32), 0.25
    elif name == "wood":  # wavy grain lines along x
        warp = 0.08 * _noise(rng, size, 6)
        v = np.sin(2 * np.pi * (yy + warp) * 22.0) + 0.3 * _noise(rng, size, 64)
        base, amp = np.array([164, 116, 72], np.float32), 0.18
    elif name == "marble":  # white with grey veins: |sin| of a turbulent coordinate
        turb = _noise(rng, size, 4) + 0.5 * _noise(rng, size, 12) + 0.25 * _noise(rng, size, 32)
        vein = np.abs(np.sin(2 * np.pi * (xx * 2.0 + yy + 0.9 * turb)))
        v = vein**0.35 * 2.0 - 1.0
        base, amp = np.array([214, 212, 206], np.float32), 0.12
    else:
        raise ValueError(f"texture: expected one of {list(PROCEDURAL)}, got {name!r}")
    out = base * (1.0 + amp * np.clip(v, -1.5, 1.5))[..., None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def load_texture(texture: str | Path | Image.Image, *, seed: int = 0) -> np.ndarray:
    """A texture ``(h, w, 3)`` uint8 from a PIL image, a file path or a name in
    :data:`TEXTURE_NAMES`."""
    if isinstance(texture, Image.Image):
        return np.asarray(texture.convert("RGB"))
    name = str(texture)
    if name in SAMPLE_TINTS:
        import skimage.data

        grey = getattr(skimage.data, name)().astype(np.float32)
        tint = np.array(SAMPLE_TINTS[name], np.float32)
        return np.clip(np.round(tint * (grey / grey.mean())[..., None]), 0, 255).astype(np.uint8)
    if name in PROCEDURAL:
        return procedural_texture(name, seed=seed)
    path = Path(name)
    if not path.is_file():
        raise ValueError(
            f"texture: expected an image file or one of {list(TEXTURE_NAMES)}, got {name!r}"
        )
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def tile_texture(tex: np.ndarray, shape: tuple[int, int], tile: int) -> np.ndarray:
    """``tex`` resized to ``tile`` px on its longer side, mirror-tiled to ``shape`` (H, W)."""
    h, w = tex.shape[:2]
    f = tile / max(h, w)
    nw, nh = max(2, round(w * f)), max(2, round(h * f))
    small = np.asarray(Image.fromarray(tex).resize((nw, nh), Image.Resampling.LANCZOS))
    # Mirror tiling: [t, flip(t)] repeats without seams.
    cell = np.concatenate([small, small[:, ::-1]], axis=1)
    cell = np.concatenate([cell, cell[::-1]], axis=0)
    reps = (-(-shape[0] // cell.shape[0]), -(-shape[1] // cell.shape[1]), 1)
    return np.tile(cell, reps)[: shape[0], : shape[1]]


def shading(rgb: np.ndarray, alpha: np.ndarray, sigma: float) -> np.ndarray:
    """The product's shading ``(H, W)`` float32: luminance Y smoothed inside the mask
    (normalised convolution), divided by its mean over alpha >= 0.5."""
    from scipy import ndimage

    lum = _to_linear(rgb) @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    w = (alpha >= 0.5).astype(np.float32)
    num = ndimage.gaussian_filter(lum * w, sigma)
    den = ndimage.gaussian_filter(w, sigma)
    smooth = np.where(den > 1e-3, num / np.maximum(den, 1e-3), lum)
    mean = float(lum[w > 0].mean()) if w.any() else float(lum.mean())
    return (smooth / max(mean, 1e-4)).astype(np.float32)


def seam_sigma(shade_sigma: float) -> float:
    """The seam scale (px) that goes with the shading scale ``shade_sigma`` (px)."""
    return max(1.0, SEAM_SIGMA_FRAC * shade_sigma / SHADE_SIGMA_FRAC)


def seams(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """The product's fine dark lines ``(H, W)`` float32 in [SEAM_MIN, 1]: luminance over its
    Gaussian (``sigma`` px) divided by SEAM_START, kept only below 1 (clearly darker).
    Outlines, seams, a clasp's edge and a pocket carry over onto the new material; bright
    prints do not."""
    from scipy import ndimage

    lum = _to_linear(rgb) @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    ratio = lum / np.maximum(ndimage.gaussian_filter(lum, sigma), 1e-4)
    return np.clip(ratio / SEAM_START, SEAM_MIN, 1.0).astype(np.float32)


def mask_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of the pixels with alpha > 0."""
    ys, xs = np.nonzero(alpha > 0)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def layout(alpha: np.ndarray, scale: float) -> tuple[tuple[int, int, int, int], int, float]:
    """Where the texture goes for mask ``alpha``: the box ``(y0, y1, x0, x1)``, the tile size
    (px) and the shading sigma (px)."""
    y0, y1, x0, x1 = mask_box(alpha)
    tile = max(8, round(scale * max(y1 - y0, x1 - x0)))
    sigma = max(1.0, SHADE_SIGMA_FRAC * float(np.hypot(y1 - y0, x1 - x0)))
    return (y0, y1, x0, x1), tile, sigma


def laid_texture(tex: np.ndarray, alpha: np.ndarray, scale: float) -> np.ndarray:
    """The texture as the op lays it, over the whole image ``(H, W, 3)`` uint8 (zeros outside
    the mask's box); for measuring what the edit kept of it."""
    (y0, y1, x0, x1), tile, _ = layout(alpha, scale)
    out = np.zeros((*alpha.shape, 3), np.uint8)
    out[y0:y1, x0:x1] = tile_texture(tex, (y1 - y0, x1 - x0), tile)
    return out


class Material:
    """The ``material`` edit (see the module docstring)."""

    name = "material"

    def apply(
        self,
        image: Image.Image,
        *,
        mask: np.ndarray | Image.Image | None = None,
        texture: str | Path | Image.Image = "",
        scale: float = 1.0,
        strength: float = 1.0,
        seed: int = 0,
        part: str = "",
        **params: Any,
    ) -> EditResult:
        """``image`` with ``texture`` inside the mask. ``scale`` (> 0) sizes the tile,
        ``strength`` in [0, 2] is how strongly the product's shading modulates it, ``seed``
        picks the procedural textures' noise; ``part`` narrows the mask to a part of the
        product (``genservice.edits.parts``)."""
        if params:
            raise ValueError(
                f"material: unknown parameters {sorted(params)}; expected texture, scale, "
                "strength, seed, part"
            )
        if isinstance(texture, str) and not texture:
            raise ValueError(f"texture: expected a file or one of {list(TEXTURE_NAMES)}")
        if not 0.05 <= scale <= 20.0:
            raise ValueError(f"scale: expected in [0.05, 20], got {scale}")
        if not 0.0 <= strength <= 2.0:
            raise ValueError(f"strength: expected in [0, 2], got {strength}")
        src = check_image(image)
        tex = load_texture(texture, seed=seed)
        alpha, method, t_mask = resolve_mask(src, mask)
        if part:
            alpha, method = narrow_to_part(src, alpha, method, part)
        t0 = time.perf_counter()
        rgb, a_chan = split_alpha(src)
        (y0, y1, x0, x1), tile, sigma = layout(alpha, scale)
        region = (slice(y0, y1), slice(x0, x1))
        tiled = tile_texture(tex, (y1 - y0, x1 - x0), tile)
        shade = shading(rgb[region], alpha[region], sigma)
        lines = seams(rgb[region], seam_sigma(sigma))
        solid = alpha[region] >= 0.5
        lines /= float(lines[solid].mean()) if solid.any() else 1.0  # keep the mean colour
        mult = np.clip(shade, SHADE_MIN, SHADE_MAX) ** strength * lines**strength
        lin = _to_linear(tiled) * mult[..., None]
        edited = rgb.copy()
        edited[region] = _to_srgb(lin)
        out = blend_in_mask(rgb, edited, alpha)
        seconds = time.perf_counter() - t0
        tname = texture if texture in TEXTURE_NAMES else "image"
        if isinstance(texture, (str, Path)) and texture not in TEXTURE_NAMES:
            tname = Path(texture).name  # the file name only, not where it lives
        p = {"texture": str(tname), "scale": scale, "strength": strength, "seed": seed}
        if part:
            p["part"] = part
        return EditResult(
            image=join_alpha(out, a_chan),
            mask=alpha,
            op=self.name,
            params=p,
            timings={"mask": round(t_mask, 4), "edit": round(seconds, 4)},
            metadata=edit_metadata(self.name, p, src, model="texture-shading", mask_method=method),
        )
