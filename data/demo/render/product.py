"""Product cut-outs: recognisable silhouettes per category, coloured, patterned,
textured by material, with a visible style cue; and the studio background.

Masks are drawn with Pillow on a 2x supersampled canvas and reduced to ``size`` for
anti-aliasing. Deterministic given ``seed``; a 128 px product takes a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

from data.demo.attributes import (
    COLOURS,
    srgb_to_lab,
    validate_attributes,
)
from data.demo.render.shapes import CREAM, DRAWERS, GOLD, SUPERSAMPLE, Fill, Pen, Shape
from data.demo.render.textures import material_field, pattern_field, unit_grid

_FRAME_COLOURS: dict[str, tuple[int, int, int]] = {
    "wood": (150, 100, 58),
    "metal": (168, 170, 176),
    "ceramic": (235, 232, 225),
    "leather": (52, 40, 34),
}


def contrast_colour(colour: str) -> tuple[int, int, int]:
    """The pattern colour for a body colour: a darker shade of light colours, a lighter tint
    of dark ones (same hue, so the product still reads as its colour)."""
    rgb = np.array(COLOURS[colour], dtype=np.float64)
    lightness = float(srgb_to_lab(rgb)[0])
    if lightness > 60:  # white, yellow, orange, pink: a mild shade, or they turn grey / brown
        out = rgb * 0.74
    elif lightness > 42:
        out = rgb * 0.64
    else:
        out = rgb + (255 - rgb) * (0.3 if colour == "black" else 0.42)
    return (int(out[0]), int(out[1]), int(out[2]))


def _accent_colour(colour: str) -> tuple[int, int, int]:
    """Sporty stripes and laces: white on everything but white (then near-black)."""
    return (36, 36, 40) if colour in ("white", "yellow") else (246, 246, 242)


def render_product(
    attributes: Mapping[str, str], *, category: str | None = None, size: int = 128, seed: int
) -> Image.Image:
    """Render one product as an RGBA cut-out (``size`` x ``size``, transparent background).

    ``attributes``: ``colour``, ``pattern``, ``material``, ``style`` and ``category`` (the
    category may be given as a keyword instead). Same inputs and ``seed`` give identical pixels.
    """
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size: expected an int >= 16, got {size!r}")
    cat = category if category is not None else attributes.get("category")
    if cat is None:
        raise ValueError("category: pass category=... or include 'category' in attributes")
    validate_attributes(attributes, cat)
    colour, pattern, material, style = (
        attributes[k] for k in ("colour", "pattern", "material", "style")
    )
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EED])
    # Masks are drawn by Pillow at 2x and box-reduced (anti-aliased edges, cheap, in C);
    # the per-pixel colour fields are computed at the output size.
    s = size
    k = float(rng.uniform(0.9, 1.0))
    # Drawings span about [0.04, 0.96]; shift only as far as the frame allows at this scale.
    room = max(0.0, 0.47 - 0.46 * k)
    pen = Pen(
        size * SUPERSAMPLE, k, float(rng.uniform(-room, room)), float(rng.uniform(-room, room))
    )

    def jitter(a: float, b: float) -> float:
        return float(rng.uniform(a, b))

    shape = DRAWERS[cat](pen, jitter)
    yy, xx = unit_grid(s)

    # Body fill: colour + pattern in a contrasting shade, times material texture and shading.
    base = np.array(COLOURS[colour], np.float32)
    alt = np.array(contrast_colour(colour), np.float32)
    pat = pattern_field(pattern, rng, s)[..., None]
    fill = base * (1 - pat) + alt * pat
    mult, spec = material_field(material, rng, s)
    if shape.cylinder is not None:
        c0, c1 = pen.tx(shape.cylinder[0]), pen.tx(shape.cylinder[1])
        u = np.clip((xx - c0) / max(c1 - c0, 1e-3), 0, 1)
        shade = 0.8 + 0.28 * np.sin(np.pi * np.clip(u * 1.1, 0, 1))
    else:
        shade = 1.05 - 0.16 * np.sqrt((xx - 0.35) ** 2 + (yy - 0.25) ** 2)
    lum = (mult * shade)[..., None]
    body_rgb = np.clip(fill * lum, 0, 255)
    body_rgb = body_rgb + (255 - body_rgb) * spec[..., None]

    def resolve(fill_spec: Fill) -> tuple[float, tuple[int, int, int] | None]:
        """(factor on the body fill, or a fixed colour)."""
        if isinstance(fill_spec, tuple):
            return 0.0, fill_spec
        if fill_spec == "body":
            return 1.0, None
        if fill_spec.startswith("shade:"):
            return float(fill_spec.split(":", 1)[1]), None
        if fill_spec == "frame":
            return (
                (1.0, None)
                if material == "ceramic"
                else (0.0, _FRAME_COLOURS.get(material, (60, 60, 64)))
            )
        if fill_spec == "sole":
            soles = {"white": (214, 214, 208), "black": (58, 58, 62)}
            return 0.0, soles.get(colour, (242, 242, 236))
        if fill_spec == "contrast":
            return 0.0, _accent_colour(colour)
        if fill_spec == "dial":
            b = base + (255 - base) * 0.82
            return 0.0, (int(b[0]), int(b[1]), int(b[2]))
        raise ValueError(f"fill: unknown {fill_spec!r}")

    canvas = _Canvas(s, body_rgb)
    for layer in shape.layers:
        factor, fixed = resolve(layer.fill)
        canvas.paint(layer.mask, fixed, factor=factor, is_body=layer.fill == "body")

    _style_cue(style, colour, shape, pen, rng, canvas)

    # Outline: darken the rim of the silhouette so it reads on any background.
    rgb, alpha = canvas.rgb, canvas.alpha
    px = max(1, round(size / 128))  # outline widths scale with the image
    edge = np.clip(alpha - _erode(alpha, px), 0, 1)[..., None]
    rgb *= 1 - 0.35 * edge
    if style == "luxury":
        gold_edge = np.clip(canvas.body - _erode(canvas.body, 2 * px), 0, 1)[..., None]
        rgb += (np.array(GOLD, np.float32) - rgb) * gold_edge

    out = np.dstack([np.clip(rgb, 0, 255), alpha * 255]).astype(np.uint8)
    img = Image.fromarray(out, "RGBA")
    if cat in ("sneaker", "handbag", "mug", "chair", "lamp") and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def _erode(a: np.ndarray, k: int) -> np.ndarray:
    """Grey erosion of ``a`` ``(h, w)`` float in [0, 1] by a ``(2k+1)`` square.

    Separable (row then column minimum, scipy): the same pixels as Pillow's square
    ``MinFilter`` but O(1) in ``k`` instead of O(k^2), which matters at delivery sizes (768 px
    renders use k = 6)."""
    from scipy import ndimage

    img = np.round(a * 255).astype(np.uint8)
    out = ndimage.minimum_filter(img, size=2 * k + 1, mode="nearest")
    return out.astype(np.float32) / 255.0


class _Canvas:
    """RGB + alpha accumulator; paints only inside each mask's bounding box (fast)."""

    def __init__(self, s: int, body_rgb: np.ndarray) -> None:
        self.rgb = np.zeros((s, s, 3), np.float32)
        self.alpha = np.zeros((s, s), np.float32)
        self.body = np.zeros((s, s), np.float32)  # where the body fill was painted
        self.body_rgb = body_rgb
        self.s = s

    def small(self, mask: Image.Image) -> Image.Image:
        """A supersampled pen mask reduced to the canvas size (box filter = anti-aliasing)."""
        return mask if mask.size[0] == self.s else mask.reduce(mask.size[0] // self.s)

    def small_array(self, mask: Image.Image) -> np.ndarray:
        """``small`` as float32 ``(s, s)`` in [0, 1]."""
        return np.asarray(self.small(mask), np.float32) / 255.0

    def paint(
        self,
        mask: Image.Image | np.ndarray,
        colour: tuple[int, int, int] | None,
        *,
        factor: float = 1.0,
        is_body: bool = False,
        opacity: float = 1.0,
    ) -> None:
        """Paint ``colour`` (or the body fill times ``factor``) where ``mask`` is set
        (an L image, or float ``(s, s)`` in [0, 1])."""
        if isinstance(mask, Image.Image):
            mask = self.small(mask)
            bbox = mask.getbbox()
            if bbox is None:
                return
            c0, r0, c1, r1 = bbox
            m = np.asarray(mask.crop(bbox), np.float32) * (opacity / 255.0)
        else:
            rows = np.flatnonzero(mask.any(axis=1))
            if rows.size == 0:
                return
            cols = np.flatnonzero(mask.any(axis=0))
            r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            m = mask[r0:r1, c0:c1] * opacity
        sub = self.rgb[r0:r1, c0:c1]
        if colour is None:
            v: np.ndarray = self.body_rgb[r0:r1, c0:c1] * factor
        else:
            v = np.asarray(colour, np.float32)
        sub += (v - sub) * m[..., None]
        np.maximum(self.alpha[r0:r1, c0:c1], m, out=self.alpha[r0:r1, c0:c1])
        if is_body:
            np.maximum(self.body[r0:r1, c0:c1], m, out=self.body[r0:r1, c0:c1])


def _style_cue(
    style: str, colour: str, shape: Shape, pen: Pen, rng: np.random.Generator, canvas: _Canvas
) -> None:
    """Draw the visible cue of ``style`` (see ``attributes.STYLES``) on ``canvas``."""
    s = canvas.s
    yy, _ = unit_grid(s)
    ax, ay = shape.accent
    body = canvas.body
    if style == "minimalist":
        return
    if style == "sporty":
        y, h = pen.ty(shape.band_y), pen.k
        stripes = ((yy > y) & (yy < y + 0.028 * h)) | ((yy > y + 0.05 * h) & (yy < y + 0.078 * h))
        canvas.paint(stripes * body, _accent_colour(colour))
        m, d = pen.new()
        d.line(
            pen.p([(ax - 0.05, ay - 0.01), (ax - 0.01, ay + 0.03), (ax + 0.06, ay - 0.04)]),
            fill=255,
            width=pen.w(0.02),
        )
        canvas.paint(canvas.small_array(m) * body, _accent_colour(colour))
        return
    if style == "vintage":
        # Worn finish: sparse light specks.
        speck = (rng.random((s, s)) < 0.03).astype(np.float32)
        canvas.paint(speck * body, CREAM, opacity=0.45)
        for r, col in ((0.065, (120, 84, 50)), (0.05, CREAM), (0.02, (120, 84, 50))):
            m, d = pen.new()
            d.ellipse(pen.box(ax - r, ay - r, ax + r, ay + r), fill=255)
            canvas.paint(m, col)
        return
    if style == "bohemian":
        y = shape.band_y
        yc = pen.ty(y)
        band = ((yy > yc) & (yy < yc + 0.06 * pen.k)).astype(np.float32) * body
        canvas.paint(band, (245, 236, 214))
        palette = [(222, 180, 60), (196, 58, 110), (40, 146, 146), (120, 70, 150)]
        for k, col in enumerate(palette):
            m, d = pen.new()
            x = 0.05 * k
            while x < 1.0:  # a row of diamonds, colours cycling every 4
                d.polygon(
                    pen.p(
                        [
                            (x, y + 0.03),
                            (x + 0.022, y + 0.006),
                            (x + 0.044, y + 0.03),
                            (x + 0.022, y + 0.054),
                        ]
                    ),
                    fill=255,
                )
                x += 0.2
            canvas.paint(canvas.small_array(m) * band, col)
        if shape.fringe is not None:
            x0, x1, fy = shape.fringe
            m, d = pen.new()
            x = x0 + 0.015
            while x < x1 - 0.01:
                d.line(pen.p([(x, fy - 0.01), (x, fy + 0.065)]), fill=255, width=pen.w(0.009))
                x += 0.028
            b = np.array(COLOURS[colour], np.float32) * 0.85
            canvas.paint(m, (int(b[0]), int(b[1]), int(b[2])))
        return
    if style == "luxury":
        for box, col in (
            ((-0.035, -0.035, 0.035, 0.035), GOLD),
            ((-0.015, -0.02, 0.005, 0.0), (250, 236, 170)),
        ):
            m, d = pen.new()
            d.ellipse(pen.box(ax + box[0], ay + box[1], ax + box[2], ay + box[3]), fill=255)
            canvas.paint(m, col)
        return
    raise ValueError(f"style: unknown {style!r}")


@lru_cache(maxsize=8)
def _studio_backdrop(w: int, h: int) -> Image.Image:
    """Light-grey vertical gradient, RGB ``w`` x ``h``."""
    grad = np.linspace(244, 230, h, dtype=np.float32)[:, None, None] * np.ones(
        (1, w, 3), np.float32
    )
    return Image.fromarray((grad * np.array([1.0, 1.0, 0.99], np.float32)).astype(np.uint8), "RGB")


_SHADOW_LUT = [int(v * 0.22) for v in range(256)]


def on_studio_background(rgba: Image.Image, *, shadow: bool = True) -> Image.Image:
    """An RGBA cut-out on a plain light-grey studio background with a soft shadow -> RGB."""
    if rgba.mode != "RGBA":
        raise ValueError(f"rgba: expected an RGBA image, got mode {rgba.mode!r}")
    w, h = rgba.size
    bg = _studio_backdrop(w, h).copy()
    if shadow:
        # Blur a 4x-reduced alpha (cheap), scale back, shift down-right, darken by 22 % at most.
        f = 4 if min(w, h) >= 64 else 1
        small = (
            rgba.getchannel("A").reduce(f).filter(ImageFilter.GaussianBlur(max(1.0, w / 50 / f)))
        )
        shifted = Image.new("L", (w, h), 0)
        shifted.paste(
            small.resize((w, h), Image.Resampling.BILINEAR), (round(w * 0.02), round(h * 0.03))
        )
        bg = Image.composite(Image.new("RGB", (w, h), (0, 0, 0)), bg, shifted.point(_SHADOW_LUT))
    bg.paste(rgba, (0, 0), rgba)
    return bg


# ---------------------------------------------------------------- scenes
