"""Product-preserving hero composition: cut-out, layout, canvas, paste-back, fidelity check,
headline (PNG metadata: ``genservice.metadata``). Pure PIL/numpy/scipy (no torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from genservice.brandkit import Brand, draw_brand
from genservice.brief import Placement
from genservice.errors import FidelityError

#: The blending rule the fidelity check allows: one gain per channel for the whole product,
#: each within ``1 +/- MAX_GAIN_DEV`` and no two channels further apart than ``MAX_GAIN_SPREAD``
#: (a tint, never a hue change); the pixels are ``clip(round(source * gain))``.
MAX_GAIN_DEV = 0.15
MAX_GAIN_SPREAD = 0.12
#: Alpha at or above which a placed pixel is pure product (checked exactly); below it the
#: pixel is a soft edge blended with the scene.
CORE_ALPHA = 250 / 255


@dataclass(frozen=True)
class Cutout:
    """A product cut out of its background: RGBA cropped to the product, alpha 0 outside."""

    image: Image.Image  # RGBA

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


@dataclass(frozen=True)
class PlacedProduct:
    """The cut-out resized to its box on the hero: ``rgb`` (h, w, 3) uint8 (before any gain),
    ``mask`` (h, w) bool (True = product pixel, checked exactly), ``box`` = (x, y, w, h) in
    hero pixels. ``alpha`` (h, w) float32 in [0, 1], when given, makes the edge soft (pixels
    outside ``mask`` with alpha > 0 are blended); ``gain`` (3,) float per channel is the light
    match applied to every product pixel (see :func:`apply_gain`); ``upscale`` is how far the
    pasted pixels were enlarged from the image they were resampled from (1.0 = not at all)."""

    rgb: np.ndarray
    mask: np.ndarray
    box: tuple[int, int, int, int]
    alpha: np.ndarray | None = None
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    upscale: float = 1.0

    @property
    def gain_str(self) -> str:
        return ",".join(f"{g:.4f}" for g in self.gain)

    def with_gain(self, gain: tuple[float, float, float]) -> PlacedProduct:
        """The same placement with ``gain`` (validated against the blending rule)."""
        check_gain(gain)
        return PlacedProduct(self.rgb, self.mask, self.box, self.alpha, gain, self.upscale)


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


def place_cutout(
    cutout: Cutout, box: tuple[int, int, int, int], *, soft_edges: bool = False
) -> PlacedProduct:
    """Resize the cut-out to the box (Lanczos on premultiplied alpha). Hard edges (default):
    the mask is alpha >= 128 and pasted as is. ``soft_edges``: the mask is the opaque core
    (alpha >= :data:`CORE_ALPHA`) and the thinner alpha blends with the scene. The returned
    ``rgb`` inside ``mask`` is exactly what the hero will hold (times the gain)."""
    x, y, w, h = box
    if w < 1 or h < 1:
        raise ValueError(f"box: expected positive width and height, got {box}")
    src_w, src_h = cutout.size
    resized = cutout.image.resize((w, h), Image.Resampling.LANCZOS)
    arr = np.asarray(resized)
    upscale = max(w / src_w, h / src_h)
    if not soft_edges:
        return PlacedProduct(
            rgb=arr[..., :3].copy(), mask=arr[..., 3] >= 128, box=(x, y, w, h), upscale=upscale
        )
    alpha = arr[..., 3].astype(np.float32) / 255.0
    # The thin edge still carries the old background's colour (a light halo on a dark scene):
    # its colour comes from the nearest opaque pixel and the faintest alpha is dropped.
    alpha = np.clip((alpha - 0.1) / 0.9, 0.0, 1.0)
    rgb = arr[..., :3].copy()
    core = alpha >= CORE_ALPHA
    edge = (alpha > 0) & ~core
    if core.any() and edge.any():
        from scipy import ndimage

        _, (iy, ix) = ndimage.distance_transform_edt(~core, return_indices=True)
        rgb[edge] = rgb[iy[edge], ix[edge]]
    return PlacedProduct(
        rgb=rgb,
        mask=core,
        box=(x, y, w, h),
        alpha=alpha,
        upscale=upscale,
    )


def check_gain(gain: tuple[float, float, float] | np.ndarray) -> tuple[float, float, float]:
    """Validate ``gain`` (3 floats) against the blending rule; returns it as a tuple.

    Raises :class:`FidelityError` when a channel leaves ``1 +/- MAX_GAIN_DEV`` or the channels
    spread more than ``MAX_GAIN_SPREAD``.
    """
    g = np.asarray(gain, dtype=np.float64).reshape(-1)
    if g.shape != (3,) or not np.isfinite(g).all():
        raise FidelityError(f"product gain: expected 3 finite floats, got {gain!r}")
    if np.abs(g - 1.0).max() > MAX_GAIN_DEV + 1e-9:
        raise FidelityError(
            f"product gain: expected each channel within 1 +/- {MAX_GAIN_DEV}, got {g.tolist()}"
        )
    if g.max() - g.min() > MAX_GAIN_SPREAD + 1e-9:
        raise FidelityError(
            f"product gain: expected channels within {MAX_GAIN_SPREAD} of each other, "
            f"got {g.tolist()}"
        )
    return (float(g[0]), float(g[1]), float(g[2]))


def apply_gain(rgb: np.ndarray, gain: tuple[float, float, float]) -> np.ndarray:
    """``clip(round(rgb * gain))`` per channel: uint8 (..., 3) -> uint8 (..., 3)."""
    g = np.asarray(gain, dtype=np.float32)
    return np.clip(np.rint(rgb.astype(np.float32) * g), 0, 255).astype(np.uint8)


def parse_gain(text: str) -> tuple[float, float, float]:
    """``"r,g,b"`` -> validated gain tuple (see :func:`check_gain`)."""
    parts = [float(p) for p in text.split(",")]
    if len(parts) != 3:
        raise ValueError(f"product_gain: expected 'r,g,b', got {text!r}")
    return check_gain((parts[0], parts[1], parts[2]))


def match_gain(
    scene: Image.Image, placed: PlacedProduct, *, strength: float = 0.6
) -> tuple[float, float, float]:
    """A per-channel gain that tints the product towards the scene's light around its box.

    The light's colour is the scene's mean colour in a band around the box divided by its
    grey level; its level, the band's luminance against mid-grey. ``strength`` (0-1) is how
    far to follow; the result is clipped into the blending rule (:func:`check_gain`), so a
    neon scene tints the product a little but never changes its hue.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength: expected in [0, 1], got {strength}")
    arr = np.asarray(scene.convert("RGB"), dtype=np.float64)
    H, W = arr.shape[:2]
    x, y, w, h = placed.box
    pad = max(4, round(0.25 * max(w, h)))
    x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(W, x + w + pad), min(H, y + h + pad)
    band = np.ones((y1 - y0, x1 - x0), dtype=bool)
    band[y - y0 : y - y0 + h, x - x0 : x - x0 + w] = False
    pix = arr[y0:y1, x0:x1][band] if band.any() else arr.reshape(-1, 3)
    mean = pix.mean(axis=0) + 1.0
    tint = mean / mean.mean()
    level = (mean.mean() / 128.0) ** 0.5
    g = (tint * level) ** strength
    g = np.clip(g, 1 - MAX_GAIN_DEV, 1 + MAX_GAIN_DEV)
    # Pull the channels together until they fit the spread limit (keeps their mean).
    spread = g.max() - g.min()
    if spread > MAX_GAIN_SPREAD:
        g = g.mean() + (g - g.mean()) * (MAX_GAIN_SPREAD / spread) * 0.999
    return check_gain(np.round(g, 4))


def find_ground(scene: Image.Image, *, ghosts: np.ndarray | None = None) -> float:
    """Where products stand in ``scene``: a unit y (0 top, 1 bottom) on the scene's surface.

    The horizon is the row with the strongest change of mean colour in the middle band
    (0.3-0.85 of the height); the ground is below it: the bottom of the tallest removed
    ghost product (``ghosts``, bool (h, w) at the scene's size) when it stands below the
    horizon (the model puts products where surfaces are), else a fixed share of the floor
    between the horizon and the bottom edge.
    """
    arr = np.asarray(scene.convert("RGB"), dtype=np.float32)
    h = arr.shape[0]
    rows = arr.mean(axis=1)
    diff = np.abs(np.diff(rows, axis=0)).sum(axis=1)
    lo, hi = int(0.3 * h), max(int(0.3 * h) + 1, int(0.85 * h))
    horizon = (lo + int(np.argmax(diff[lo:hi]))) / h
    ground = horizon + 0.7 * (1.0 - horizon)
    if ghosts is not None and ghosts.any():
        ys = np.flatnonzero(ghosts.any(axis=1))
        bottom = (ys[-1] + 1) / h
        if bottom > horizon + 0.05:
            ground = bottom
    return float(min(max(ground, 0.55), 0.96))


def ghost_regions(
    saliency: np.ndarray, *, threshold: float = 0.5, grow: int = 2, min_area_frac: float = 0.0
) -> np.ndarray:
    """Bool (h, w): pixels of ``saliency`` above ``threshold`` in connected regions of at
    least ``min_area_frac`` of the image, grown by ``grow`` pixels (what
    :func:`remove_ghosts` fills)."""
    from scipy import ndimage

    mask = saliency > threshold
    if min_area_frac > 0 and mask.any():
        labels, _count = ndimage.label(mask)
        keep = np.bincount(labels.ravel()) >= min_area_frac * mask.size
        keep[0] = False
        mask = keep[labels]
    if grow > 0 and mask.any():
        mask = ndimage.binary_dilation(mask, iterations=grow)
    return mask


def remove_ghosts(
    scene: Image.Image,
    saliency: np.ndarray,
    *,
    threshold: float = 0.5,
    grow: int = 2,
    min_area_frac: float = 0.0,
) -> tuple[Image.Image, np.ndarray]:
    """Erase salient objects (products the diffusion model painted) from ``scene``.

    ``saliency``: float32 (h, w) in [0, 1] at the scene's size. Pixels above ``threshold``
    in connected regions of at least ``min_area_frac`` of the scene, grown by ``grow``
    pixels, are filled by biharmonic inpainting from the surrounding backdrop (the backdrops
    are smooth at the model's resolution). Returns the cleaned scene and the bool mask that
    was filled.
    """
    from skimage.restoration import inpaint_biharmonic

    arr = np.asarray(scene.convert("RGB"))
    if saliency.shape != arr.shape[:2]:
        raise ValueError(
            f"saliency: expected shape {arr.shape[:2]} (the scene's), got {saliency.shape}"
        )
    mask = ghost_regions(saliency, threshold=threshold, grow=grow, min_area_frac=min_area_frac)
    if not mask.any():
        return scene.convert("RGB"), mask
    if mask.mean() > 0.6:  # nothing left to inpaint from: keep the scene as it is
        return scene.convert("RGB"), np.zeros_like(mask)
    filled = inpaint_biharmonic(arr.astype(np.float64) / 255.0, mask, channel_axis=-1)
    out = np.where(mask[..., None], np.clip(filled * 255.0 + 0.5, 0, 255), arr).astype(np.uint8)
    return Image.fromarray(out, "RGB"), mask


def plan_scene_layout(
    placement: Placement,
    product_size: tuple[int, int],
    *,
    ground: float,
    headline: bool = False,
    margin_frac: float = 0.06,
    max_height_frac: float = 0.62,
    max_plain_scale: float | None = None,
    min_height_frac: float = 0.4,
) -> Layout:
    """Like :func:`plan_layout`, but the product stands on the scene's surface: its bottom
    sits at ``ground`` (unit y) and it is at most ``max_height_frac`` of the hero's height
    (the share products take in the scenes the model learned from).

    ``max_plain_scale`` (the path's largest plain enlargement, 1.25): the product is scaled
    beyond it (and so restored first) only as far as needed to reach ``min_height_frac`` of
    the height. Why: restoring a 500x640 catalog cut-out with Real-ESRGAN x4plus for a story
    costs minutes of CPU, and a product at 1.25x its 768-px photo already fills ~40 % of a
    1920-px story; a small source (a 300-px photo) is still restored to that share."""
    if not 0.0 < ground <= 1.0:
        raise ValueError(f"ground: expected a unit y in (0, 1], got {ground}")
    base = plan_layout(placement, product_size, headline=headline, margin_frac=margin_frac)
    H = placement.height
    m = base.margin
    bx, by, bw, _bh = base.product_box
    bottom = min(H - max(2, m // 3), round(ground * H))
    top_limit = by  # keeps clear of the headline and the top margin
    avail = bottom - top_limit
    scale = min(bw / product_size[0], min(avail, max_height_frac * H) / product_size[1])
    if max_plain_scale is not None and scale > max_plain_scale:
        scale = max(max_plain_scale, min(scale, min_height_frac * H / product_size[1]))
    w = max(1, math.floor(product_size[0] * scale))
    h = max(1, math.floor(product_size[1] * scale))
    x = bx + (bw - w) // 2
    return Layout(product_box=(x, bottom - h, w, h), text_box=base.text_box, margin=m)


def contact_shadow(
    scene: Image.Image, placed: PlacedProduct, *, darkness: float = 0.45
) -> Image.Image:
    """Darken the surface under the product: a soft ellipse centred under its lowest opaque
    row (about 90 % of its width, 7 % of its height tall) plus a tight occlusion line right
    at the contact, multiplying the scene by at most ``1 - darkness``. Returns a new RGB."""
    from scipy import ndimage

    if not 0.0 <= darkness <= 1.0:
        raise ValueError(f"darkness: expected in [0, 1], got {darkness}")
    arr = np.asarray(scene.convert("RGB"), dtype=np.float32)
    H, W = arr.shape[:2]
    x, y, _w, h = placed.box
    body = placed.alpha if placed.alpha is not None else placed.mask.astype(np.float32)
    cols = np.flatnonzero(body.max(axis=0) > 0.5)
    rows = np.flatnonzero(body.max(axis=1) > 0.5)
    if cols.size == 0:
        return scene.convert("RGB")
    cx = x + (cols[0] + cols[-1] + 1) / 2
    half_w = 0.45 * (cols[-1] + 1 - cols[0])
    base_y = y + rows[-1] + 1
    half_h = max(2.0, 0.035 * h)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    ell = np.clip(1.0 - ((xx - cx) / half_w) ** 2 - ((yy - base_y) / half_h) ** 2, 0, 1)
    ell = ndimage.gaussian_filter(ell, sigma=max(1.0, half_h * 0.6))
    # Contact occlusion: the product's own footprint, a few pixels below its base, blurred.
    foot = np.zeros((H, W), np.float32)
    fy0 = max(0, y + rows[-1] - max(1, h // 40))
    foot[fy0 : min(H, base_y + max(1, h // 60)), x + cols[0] : x + cols[-1] + 1] = 1.0
    foot = ndimage.gaussian_filter(foot, sigma=max(1.0, h / 120))
    shade = np.clip(0.8 * ell / max(float(ell.max()), 1e-6) + 0.6 * foot, 0, 1)
    out = arr * (1.0 - darkness * shade[..., None])
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")


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


def scene_canvas(placement: Placement, *, native: int, multiple: int) -> tuple[int, int]:
    """Canvas ``(w, h)`` for a scene at the model's native scale: the short side is ``native``
    (what the model learned), the long side follows the placement's aspect, rounded up to a
    multiple of ``multiple`` (crop the excess with :func:`crop_to_aspect`)."""
    if native < multiple:
        raise ValueError(f"native: expected >= multiple ({multiple}), got {native}")
    a = placement.aspect
    if a >= 1:
        w = math.ceil(native * a / multiple) * multiple
        return (w, native)
    h = math.ceil(native / a / multiple) * multiple
    return (native, h)


def crop_to_aspect(image: Image.Image, aspect: float) -> Image.Image:
    """Centre crop of ``image`` to width / height ``aspect`` (no resampling)."""
    w, h = image.size
    if w / h > aspect:
        nw = max(1, round(h * aspect))
        x0 = (w - nw) // 2
        return image.crop((x0, 0, x0 + nw, h))
    nh = max(1, round(w / aspect))
    y0 = (h - nh) // 2
    return image.crop((0, y0, w, y0 + nh))


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
    shadow: bool = False,
    brand: Brand | None = None,
    price: float | None = None,
) -> Image.Image:
    """The hero at placement size: scene (enlarged bicubically only when it is not at the
    placement's size yet; the delivery path restores it first), optional contact shadow,
    headline drawn (with a ``brand`` kit: its logo, font, colours, ``price`` and call to
    action, see ``genservice.brandkit.draw_brand``), product pasted last: inside
    ``placed.mask`` exactly ``apply_gain(placed.rgb, placed.gain)``, soft edges blended by
    ``placed.alpha``."""
    W, H = placement.size
    hero = scene.convert("RGB")
    if hero.size != (W, H):
        hero = hero.resize((W, H), Image.Resampling.BICUBIC)
    x, y, w, h = placed.box
    if x < 0 or y < 0 or x + w > W or y + h > H:
        raise ValueError(f"placed.box: expected inside {W}x{H}, got {placed.box}")
    if shadow:
        hero = contact_shadow(hero, placed)
    if brand is not None:
        draw_brand(
            hero, brand, headline=headline, price=price, text_box=text_box, product_box=placed.box
        )
    elif headline and text_box is not None:
        draw_headline(hero, headline, text_box)
    arr = np.asarray(hero).copy()
    region = arr[y : y + h, x : x + w]
    product = apply_gain(placed.rgb, placed.gain)
    if placed.alpha is not None:
        a = placed.alpha[..., None]
        blend = region.astype(np.float32) * (1 - a) + product.astype(np.float32) * a
        region[...] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    region[placed.mask] = product[placed.mask]
    return Image.fromarray(arr, "RGB")


def check_fidelity(image: Image.Image, placed: PlacedProduct) -> int:
    """Raise :class:`FidelityError` unless the product was kept by the blending rule: its gain
    passes :func:`check_gain` and every product pixel (``placed.mask``) of ``image`` equals
    ``apply_gain(placed.rgb, placed.gain)`` exactly (no per-pixel repaint can pass). Returns
    the number of pixels checked."""
    check_gain(placed.gain)
    arr = np.asarray(image.convert("RGB"))
    x, y, w, h = placed.box
    region = arr[y : y + h, x : x + w]
    if region.shape[:2] != placed.mask.shape:
        raise FidelityError(f"product box {placed.box} falls outside the {image.size} image")
    got = region[placed.mask]
    want = apply_gain(placed.rgb[placed.mask], placed.gain)
    diff = np.any(got != want, axis=-1)
    if diff.any():
        raise FidelityError(
            f"product fidelity: {int(diff.sum())} of {len(diff)} product pixels changed"
        )
    return int(placed.mask.sum())
