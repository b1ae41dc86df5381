"""Product-preserving hero composition: cut-out, layout, canvas, paste-back, fidelity check,
headline and PNG metadata. Pure PIL/numpy/scipy (no torch)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from genservice.brief import Placement
from genservice.errors import FidelityError

#: The only metadata keys ever written (never a user id or other personal data).
METADATA_KEYS = ("model", "seed", "brief_hash", "product_box")
_PREFIX = "tailorshot:"


@dataclass(frozen=True)
class Cutout:
    """A product cut out of its background: RGBA cropped to the product, alpha 0 outside."""

    image: Image.Image  # RGBA

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


@dataclass(frozen=True)
class PlacedProduct:
    """The cut-out resized to its box on the hero: ``rgb`` (h, w, 3) uint8, ``mask`` (h, w)
    bool (True = product pixel), ``box`` = (x, y, w, h) in hero pixels."""

    rgb: np.ndarray
    mask: np.ndarray
    box: tuple[int, int, int, int]

    @property
    def box_str(self) -> str:
        return ",".join(str(v) for v in self.box)


@dataclass(frozen=True)
class Layout:
    """Where things go on the hero (pixels): the product box and the headline box (or None)."""

    product_box: tuple[int, int, int, int]
    text_box: tuple[int, int, int, int] | None
    margin: int


def cut_out(
    image: Image.Image,
    *,
    tolerance: float = 32.0,
    min_component_frac: float = 0.002,
    open_iterations: int = 1,
) -> Cutout:
    """Cut the product out of a studio shot.

    With an alpha channel that is not fully opaque, alpha is the mask. Otherwise the border
    colour (median of the outermost pixels) is the background: pixels within ``tolerance``
    (max channel difference, 0-255) that connect to the border (flood fill) are removed, then a
    morphological opening drops specks and components smaller than ``min_component_frac`` of
    the image go too. The result is cropped to the product's bounding box.
    """
    from scipy import ndimage

    if tolerance < 0:
        raise ValueError(f"tolerance: expected >= 0, got {tolerance}")
    rgba = image.convert("RGBA")
    arr = np.asarray(rgba)
    alpha = arr[..., 3]
    if image.mode in ("RGBA", "LA", "PA") and alpha.min() < 255:
        mask = alpha >= 128
    else:
        rgb = arr[..., :3].astype(np.int16)
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        bg = np.median(border, axis=0)
        near = np.abs(rgb - bg).max(axis=-1) <= tolerance
        labels, _ = ndimage.label(near)
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        background = np.isin(labels, edge[edge > 0])
        mask = ~background
        if open_iterations:
            mask = ndimage.binary_opening(
                mask, structure=np.ones((3, 3), dtype=bool), iterations=open_iterations
            )
        labels, n = ndimage.label(mask)
        if n:
            sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
            keep = np.flatnonzero(sizes >= max(1.0, min_component_frac * mask.size)) + 1
            mask = np.isin(labels, keep)
        # Holes inside the product that do not touch the border stay product (for example a
        # white logo on a white-background shot).
        mask = ndimage.binary_fill_holes(mask)
    if not mask.any():
        raise ValueError(
            f"image: expected a product distinguishable from its background, found none "
            f"(size {image.size}, tolerance {tolerance})"
        )
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    out = arr[y0:y1, x0:x1].copy()
    # Alpha-source images keep their soft edges; colour-keyed ones get a hard mask.
    out[..., 3] = np.where(mask[y0:y1, x0:x1], out[..., 3], 0)
    return Cutout(Image.fromarray(out, "RGBA"))


def plan_layout(
    placement: Placement,
    product_size: tuple[int, int],
    *,
    headline: bool = False,
    margin_frac: float = 0.06,
) -> Layout:
    """Product box and headline box for ``placement`` with safe margins.

    Banner: product on the right, headline on the left. Square and story: product centred
    (lower part when there is a headline), headline on top. The product keeps its aspect.
    """
    W, H = placement.size
    pw, ph = product_size
    if pw < 1 or ph < 1:
        raise ValueError(f"product_size: expected positive (w, h), got {product_size}")
    m = max(4, round(min(W, H) * margin_frac))
    text_box: tuple[int, int, int, int] | None = None
    if placement.aspect >= 1.3:  # wide: banner-like
        area = (W // 2 - m // 2, m, W - W // 2 - m // 2 - m, H - 2 * m)
        if headline:
            text_box = (m, m, W // 2 - 2 * m, H - 2 * m)
        else:
            area = (m + W // 8, m, W - 2 * m - W // 4, H - 2 * m)
    else:
        top = m
        if headline:
            text_h = round(H * (0.22 if placement.aspect < 0.8 else 0.2))
            text_box = (m, m, W - 2 * m, text_h)
            top = m + text_h + m // 2
        fill = 0.62 if placement.aspect < 0.8 else 0.72
        aw = round((W - 2 * m) * fill / 0.72)
        ah = H - top - m
        area = ((W - aw) // 2, top, aw, ah)
    ax, ay, aw, ah = area
    scale = min(aw / pw, ah / ph)
    bw, bh = max(1, math.floor(pw * scale)), max(1, math.floor(ph * scale))
    bx = ax + (aw - bw) // 2
    by = ay + (ah - bh) // 2
    return Layout(product_box=(bx, by, bw, bh), text_box=text_box, margin=m)


def place_cutout(cutout: Cutout, box: tuple[int, int, int, int]) -> PlacedProduct:
    """Resize the cut-out to the box (Lanczos on premultiplied alpha) and binarise its mask
    (alpha >= 128). The returned pixels are exactly what the hero will hold."""
    x, y, w, h = box
    if w < 1 or h < 1:
        raise ValueError(f"box: expected positive width and height, got {box}")
    resized = cutout.image.resize((w, h), Image.Resampling.LANCZOS)
    arr = np.asarray(resized)
    return PlacedProduct(rgb=arr[..., :3].copy(), mask=arr[..., 3] >= 128, box=(x, y, w, h))


def canvas_size(
    placement: Placement, *, native: int, multiple: int, max_side: int = 0
) -> tuple[int, int]:
    """Diffusion canvas ``(w, h)`` with the placement's aspect, about ``native**2`` pixels (or
    longest side ``max_side``), both sides multiples of ``multiple``."""
    if max_side > 0:
        s = max_side / max(placement.size)
        w, h = placement.width * s, placement.height * s
    else:
        s = math.sqrt(native * native / (placement.width * placement.height))
        w, h = placement.width * s, placement.height * s
    return (
        max(multiple, round(w / multiple) * multiple),
        max(multiple, round(h / multiple) * multiple),
    )


def inpaint_inputs(
    placed: PlacedProduct, placement: Placement, canvas: tuple[int, int], *, background: int = 200
) -> tuple[Image.Image, Image.Image]:
    """Init image and mask at canvas size: the product on a neutral ``background`` grey, mask
    white (repaint) everywhere except the product (black: keep)."""
    W, H = placement.size
    full = np.full((H, W, 3), background, dtype=np.uint8)
    keep = np.zeros((H, W), dtype=bool)
    x, y, w, h = placed.box
    region = full[y : y + h, x : x + w]
    region[placed.mask] = placed.rgb[placed.mask]
    keep[y : y + h, x : x + w] = placed.mask
    init = Image.fromarray(full, "RGB").resize(canvas, Image.Resampling.BICUBIC)
    mask = Image.fromarray(np.where(keep, 0, 255).astype(np.uint8), "L")
    mask = mask.resize(canvas, Image.Resampling.BILINEAR).point(lambda v: 255 if v > 127 else 0)
    return init, mask


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def draw_headline(image: Image.Image, text: str, box: tuple[int, int, int, int]) -> None:
    """Draw ``text`` (already sanitised) inside ``box`` on a translucent panel, in place;
    the font shrinks until the wrapped lines fit."""
    if not text:
        return
    x, y, w, h = box
    draw = ImageDraw.Draw(image, "RGBA")
    size = max(10, h // 4)
    lines: list[str] = [text]
    font: Any = _font(size)
    while size >= 10:
        font = _font(size)
        lines, line = [], ""
        for word in text.split():
            trial = f"{line} {word}".strip()
            if draw.textlength(trial, font=font) <= w * 0.9 or not line:
                line = trial
            else:
                lines.append(line)
                line = word
        if line:
            lines.append(line)
        widest = max(draw.textlength(ln, font=font) for ln in lines)
        if len(lines) * size * 1.25 <= h * 0.9 and widest <= w * 0.95:
            break
        size = int(size * 0.85)
    region = np.asarray(image.crop((x, y, x + w, y + h)).convert("L"), dtype=np.float32)
    dark_bg = float(region.mean()) < 128
    panel = (0, 0, 0, 110) if dark_bg else (255, 255, 255, 140)
    ink = (255, 255, 255, 255) if dark_bg else (20, 20, 20, 255)
    draw.rounded_rectangle((x, y, x + w, y + h), radius=max(4, size // 3), fill=panel)
    ty = y + (h - len(lines) * size * 1.25) / 2
    for ln in lines:
        draw.text((x + w * 0.05, ty), ln, font=font, fill=ink)
        ty += size * 1.25


def compose_hero(
    scene: Image.Image,
    placed: PlacedProduct,
    placement: Placement,
    *,
    headline: str | None = None,
    text_box: tuple[int, int, int, int] | None = None,
) -> Image.Image:
    """The hero at placement size: scene upscaled, headline drawn, product pixels pasted last
    (exactly the placed cut-out's, inside its mask)."""
    W, H = placement.size
    hero = scene.convert("RGB").resize((W, H), Image.Resampling.BICUBIC)
    if headline and text_box is not None:
        draw_headline(hero, headline, text_box)
    arr = np.asarray(hero).copy()
    x, y, w, h = placed.box
    if x < 0 or y < 0 or x + w > W or y + h > H:
        raise ValueError(f"placed.box: expected inside {W}x{H}, got {placed.box}")
    region = arr[y : y + h, x : x + w]
    region[placed.mask] = placed.rgb[placed.mask]
    return Image.fromarray(arr, "RGB")


def check_fidelity(image: Image.Image, placed: PlacedProduct) -> int:
    """Raise :class:`FidelityError` unless every product pixel of ``image`` equals the placed
    cut-out's; returns the number of pixels checked."""
    arr = np.asarray(image.convert("RGB"))
    x, y, w, h = placed.box
    region = arr[y : y + h, x : x + w]
    if region.shape[:2] != placed.mask.shape:
        raise FidelityError(f"product box {placed.box} falls outside the {image.size} image")
    got = region[placed.mask]
    want = placed.rgb[placed.mask]
    diff = np.any(got != want, axis=-1)
    if diff.any():
        raise FidelityError(
            f"product fidelity: {int(diff.sum())} of {len(diff)} product pixels changed"
        )
    return int(placed.mask.sum())


def hero_metadata(
    *, model: str, seed: int, brief_hash: str, box: tuple[int, int, int, int]
) -> dict[str, str]:
    """The metadata stored with a hero (model, seed, brief hash, product box ``x,y,w,h``)."""
    return {
        "model": str(model)[:256],
        "seed": str(int(seed)),
        "brief_hash": str(brief_hash),
        "product_box": ",".join(str(int(v)) for v in box),
    }


def png_info(metadata: dict[str, str]) -> PngInfo:
    """PNG text chunks for ``metadata``; only :data:`METADATA_KEYS` are allowed."""
    unknown = set(metadata) - set(METADATA_KEYS)
    if unknown:
        raise ValueError(f"metadata: only {METADATA_KEYS} may be stored, got {sorted(unknown)}")
    info = PngInfo()
    for k in METADATA_KEYS:
        if k in metadata:
            info.add_text(_PREFIX + k, str(metadata[k]))
    return info


def read_metadata(data: bytes | Image.Image) -> dict[str, str]:
    """Read our metadata back from PNG bytes / an opened image."""
    img = Image.open(io.BytesIO(data)) if isinstance(data, bytes) else data
    text = dict(getattr(img, "text", {}) or {})
    if not text and "exif" in img.info:
        import json

        exif = img.getexif()
        desc = exif.get(0x010E)
        if desc:
            return {k: str(v) for k, v in json.loads(desc).items() if k in METADATA_KEYS}
    return {k[len(_PREFIX) :]: v for k, v in text.items() if k.startswith(_PREFIX)}


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``"x,y,w,h"`` → tuple of ints."""
    parts = [int(p) for p in text.split(",")]
    if len(parts) != 4:
        raise ValueError(f"product_box: expected 'x,y,w,h', got {text!r}")
    return (parts[0], parts[1], parts[2], parts[3])
