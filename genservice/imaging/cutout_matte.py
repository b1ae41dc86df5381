"""Masks and mattes for the product cut-out (``genservice.imaging.cutout``): cleaning the
network's binary mask (``clean_mask``: detached fragments go, real holes stay), the colour
guided filter that turns the blurry saliency into a soft alpha (``refine_alpha``,
``drop_slivers``), joining islands a thin part splits on a studio backdrop
(``bridge_islands``), foreground colours for soft edges (``estimate_foreground``) and the
border-colour flood fill for renders on a flat backdrop (``flood_alpha``)."""

from __future__ import annotations

import numpy as np
from PIL import Image

#: The saliency network's input side, px (its map's resolution).
_INPUT = 320
#: Detached mask islands smaller than this share of the largest island are dropped.
KEEP_ISLAND_FRAC = 0.25
#: Without colours, smaller islands are kept this close to the largest (of its bbox diagonal).
NEAR_GAP_FRAC = 0.08
#: Enclosed holes smaller than this share of the image are closed (noise, not a handle).
MIN_HOLE_FRAC = 0.0005
#: The flood fill treats enclosed backdrop-coloured regions at least this large as holes.
FLOOD_MIN_HOLE_FRAC = 0.002
#: An enclosed hole stays open only where the network's median saliency is below this.
MAX_HOLE_SALIENCY = 0.15
#: Max channel difference (0-255) from the border colour that counts as background (flood).
FLOOD_TOLERANCE = 32.0


def _resize_float(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``a`` ``(h, w)`` float32 resized bilinearly to ``size`` ``(W, H)``."""
    if a.shape[::-1] == tuple(size):
        return np.array(a, np.float32)
    img = Image.fromarray(np.asarray(a, np.float32), "F").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(img, np.float32)


def _border(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.float32)


def border_colour(rgb: np.ndarray) -> np.ndarray:
    """A studio render's backdrop: the median border colour of ``rgb``, float32 ``(3,)``."""
    return np.asarray(np.median(_border(rgb), axis=0), np.float32)


def border_flatness(rgb: np.ndarray, tolerance: float = FLOOD_TOLERANCE) -> float:
    """Share of border pixels of ``rgb`` ``(H, W, 3)`` uint8 within ``tolerance`` (max channel
    difference) of the border's median colour: 1.0 for a flat studio backdrop."""
    return float((np.abs(_border(rgb) - border_colour(rgb)).max(axis=-1) <= tolerance).mean())


def _colour_bins(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` ``(..., 3)`` uint8 -> bin index of a 8 x 8 x 8 colour histogram."""
    q = rgb.astype(np.int32) >> 5
    return (q[..., 0] << 6) | (q[..., 1] << 3) | q[..., 2]


def clean_mask(
    mask: np.ndarray,
    *,
    rgb: np.ndarray | None = None,
    saliency: np.ndarray | None = None,
    keep_island_frac: float = KEEP_ISLAND_FRAC,
    near_gap_frac: float = NEAR_GAP_FRAC,
    min_hole_frac: float = MIN_HOLE_FRAC,
) -> tuple[np.ndarray, int]:
    """Keep the largest island of ``mask`` ``(H, W)`` bool, islands at least
    ``keep_island_frac`` of its area, and islands at least 1 % of it that belong with it: with
    ``rgb`` ``(H, W, 3)`` uint8, those whose colours are more often the largest island's than
    the background's (8 x 8 x 8 histograms; a lamp's base, a bag's handle; not a patch of
    grass) within half its bounding-box diagonal; without ``rgb``, those within
    ``near_gap_frac`` of that diagonal. Enclosed holes smaller than ``min_hole_frac`` of the
    image are closed, and with ``saliency`` ``(H, W)`` so are holes whose median saliency is at
    least ``MAX_HOLE_SALIENCY``; the others (a handle's) stay open. Returns
    ``(mask, dropped)``."""
    from scipy import ndimage

    eight = np.ones((3, 3), bool)
    labels, n = ndimage.label(mask, structure=eight)
    dropped = 0
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        main = int(np.argmax(sizes)) + 1
        keep = set((np.flatnonzero(sizes >= keep_island_frac * sizes.max()) + 1).tolist())
        ys, xs = np.nonzero(labels == main)
        diag = float(np.hypot(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1))
        gap = ndimage.distance_transform_edt(labels != main)
        near = ndimage.minimum(gap, labels, index=np.arange(1, n + 1))
        p_fg: np.ndarray | None = None
        if rgb is not None:
            bins = _colour_bins(rgb)
            h_fg = np.bincount(bins[labels == main], minlength=512) / sizes[main - 1]
            bg = ~mask
            h_bg = np.bincount(bins[bg], minlength=512) / max(1, int(bg.sum()))
            p_fg = h_fg / np.maximum(h_fg + h_bg, 1e-9)
        for k in range(1, n + 1):
            if k in keep or sizes[k - 1] < 0.01 * sizes.max():
                continue
            if p_fg is not None:
                island = labels == k
                if near[k - 1] <= 0.5 * diag and float(p_fg[bins[island]].mean()) > 0.5:
                    keep.add(k)
            elif near[k - 1] <= near_gap_frac * diag:
                keep.add(k)
        dropped = n - len(keep)
        mask = np.isin(labels, sorted(keep))
    holes = ndimage.binary_fill_holes(mask) & ~mask
    if holes.any():
        hl, hn = ndimage.label(holes)
        hsizes = np.bincount(hl.ravel())[1:]
        close = hsizes < min_hole_frac * mask.size
        if saliency is not None:
            # A real hole (a handle's) is one the network calls background; an enclosed region
            # it is unsure of (a pale bodice inside a salient outline) is product.
            med = ndimage.median(saliency, hl, index=np.arange(1, hn + 1))
            close |= np.asarray(med) >= MAX_HOLE_SALIENCY
        if close.any():
            mask = mask | np.isin(hl, np.flatnonzero(close) + 1)
    return mask, dropped


def _box_sum(a: np.ndarray, r: int) -> np.ndarray:
    """Sum of ``a`` ``(H, W, ...)`` float32 over a ``(2r+1)`` square window, clipped at the
    edges (outside counts as zero); separable running means in C, any ``r``."""
    from scipy import ndimage

    k = 2 * r + 1
    size = (k, k) + (1,) * (a.ndim - 2)
    out = ndimage.uniform_filter(a.astype(np.float32), size=size, mode="constant")
    return np.asarray(out * np.float32(k * k), np.float32)


def _guided_coefficients(
    guide: np.ndarray, p: np.ndarray, r: int, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Window-averaged linear coefficients of the colour guided filter: ``(a (H, W, 3),
    b (H, W))`` such that the output is ``(a * guide).sum(-1) + b``."""
    n = _box_sum(np.ones(p.shape, np.float32), r)

    def mean(a: np.ndarray) -> np.ndarray:
        nn = n if a.ndim == 2 else n[..., None]
        return _box_sum(a, r) / nn

    mu_i = mean(guide)
    mu_p = mean(p)
    cov_ip = mean(guide * p[..., None]) - mu_i * mu_p[..., None]
    outer = guide[..., :, None] * guide[..., None, :]
    var_i = mean(outer.reshape(*p.shape, 9)).reshape(*p.shape, 3, 3)
    var_i = var_i - mu_i[..., :, None] * mu_i[..., None, :] + eps * np.eye(3, dtype=np.float32)
    a = np.linalg.solve(var_i, cov_ip[..., None])[..., 0]
    b = mu_p - (a * mu_i).sum(-1)
    return mean(a), mean(b)


def guided_filter(
    guide: np.ndarray, p: np.ndarray, r: int, eps: float, *, subsample: int = 1
) -> np.ndarray:
    """Colour guided filter (He, Sun, Tang 2010): ``guide`` ``(H, W, 3)`` float32 in [0, 1],
    ``p`` ``(H, W)`` float32; window radius ``r`` pixels, regulariser ``eps``. Returns
    ``(H, W)`` float32: ``p`` smoothed but with the guide's edges. ``subsample`` > 1 is the
    fast variant (He and Sun 2015): coefficients computed at 1/subsample resolution and
    resized back (they vary slowly), the output formed at full resolution."""
    if subsample <= 1:
        a, b = _guided_coefficients(guide, p, r, eps)
        return (a * guide).sum(-1) + b
    H, W = p.shape
    small = (max(1, W // subsample), max(1, H // subsample))
    g_small = np.stack([_resize_float(guide[..., c], small) for c in range(3)], axis=-1)
    a, b = _guided_coefficients(g_small, _resize_float(p, small), max(1, round(r / subsample)), eps)
    a_full = np.stack([_resize_float(a[..., c], (W, H)) for c in range(3)], axis=-1)
    return (a_full * guide).sum(-1) + _resize_float(b, (W, H))


def refine_alpha(
    rgb: np.ndarray, saliency: np.ndarray, *, eps: float = 1e-4
) -> tuple[np.ndarray, int]:
    """Soft alpha from a saliency map: ``rgb`` ``(H, W, 3)`` uint8, ``saliency`` ``(H, W)``
    float32 in [0, 1]. Returns ``(alpha (H, W) float32 in [0, 1], islands dropped)``.

    Inside the cleaned mask alpha is 1 and outside 0, except on a band along the boundary as
    wide as the saliency's own uncertainty (1.5 of its 320-px cells) where a guided filter of
    radius ``r`` = 0.5 % of the long side (at least 2 px) decides from the photo's edges.
    """
    from scipy import ndimage

    H, W = saliency.shape
    mask, dropped = clean_mask(saliency > 0.5, rgb=rgb, saliency=saliency)
    alpha = mask.astype(np.float32)
    if not mask.any():
        return alpha, dropped
    r = max(2, round(max(H, W) / 200))
    width = max(r, round(1.5 * max(H, W) / _INPUT))
    dist_out = ndimage.distance_transform_edt(~mask)
    band = (ndimage.distance_transform_edt(mask) <= width) & (dist_out <= width)
    ys, xs = np.nonzero(band)
    pad = width + r
    y0, y1 = max(0, ys.min() - pad), min(H, ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(W, xs.max() + pad + 1)
    # The filter's input is the saliency with dropped islands zeroed, so they cannot return.
    p = np.where(dist_out <= pad, saliency, 0.0)
    q = guided_filter(
        rgb[y0:y1, x0:x1].astype(np.float32) / 255.0,
        p[y0:y1, x0:x1].astype(np.float32),
        r,
        eps,
        subsample=max(1, r // 2),
    )
    sub = alpha[y0:y1, x0:x1]
    b = band[y0:y1, x0:x1]
    sub[b] = np.clip(q[b], 0.0, 1.0)
    return drop_slivers(alpha, mask), dropped


def drop_slivers(alpha: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The guided filter's output ``alpha`` ``(H, W)`` float32 cleaned against the mask it
    refined (``(H, W)`` bool): it can lift isolated band pixels over 0.5 (parts of
    ``alpha > 0.5`` without a mask pixel go), and it can cut a sliver off the mask along a thin
    neck (parts under 1 % of the largest, the smallest island ``clean_mask`` keeps, go too).
    Modifies and returns ``alpha``."""
    from scipy import ndimage

    labels, n = ndimage.label(alpha > 0.5, structure=np.ones((3, 3), bool))
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        keep = np.unique(labels[mask & (labels > 0)])
        keep = keep[sizes[keep] >= 0.01 * sizes.max()]
        alpha[(labels > 0) & ~np.isin(labels, keep)] = 0.0
    return alpha


def bridge_islands(rgb: np.ndarray, alpha: np.ndarray, *, gap: int = 4) -> np.ndarray:
    """On a flat studio backdrop, join islands of the cut-out that the product joins:
    U^2-Net-p misses thin parts (a lamp's stem, a chair's rail), leaving the shade and the
    base as two islands. ``rgb`` ``(H, W, 3)`` uint8, ``alpha`` ``(H, W)`` float32 ->
    ``alpha`` with each region of non-backdrop colour (``FLOOD_TOLERANCE`` from the border's
    median, and not the backdrop darkened by a shadow: the same chromaticity) that lies
    outside the mask and reaches, within ``gap`` px, two or more islands set to 1 (with the
    gap to them). A shadow touching one island is left alone."""
    from scipy import ndimage

    eight = np.ones((3, 3), bool)
    mask = alpha > 0.5
    labels, n = ndimage.label(mask, structure=eight)
    if n < 2:
        return alpha
    x = rgb.astype(np.float32)
    back = border_colour(rgb)
    # A shadow on the backdrop is the backdrop's colour darkened: same chromaticity.
    ratio = x.sum(-1) / max(float(back.sum()), 1.0)
    chroma = np.abs(
        x / np.maximum(x.sum(-1, keepdims=True), 1.0) - back / max(float(back.sum()), 1.0)
    )
    shadow = (chroma.max(axis=-1) < 0.006) & (ratio > 0.35)
    fore = (np.abs(x - back).max(axis=-1) > FLOOD_TOLERANCE) & ~shadow
    near = ndimage.binary_dilation(mask, iterations=gap)
    cand, m = ndimage.label(fore & ~near, structure=eight)
    out = alpha.copy()
    for k in range(1, m + 1):
        region = cand == k
        reach = ndimage.binary_dilation(region, iterations=2 * gap, mask=fore | near)
        touched = np.unique(labels[reach & mask])
        if len(touched) >= 2:
            out[reach & fore & ~mask] = 1.0
    return out


def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray, *, r: int = 0) -> np.ndarray:
    """Foreground colours for soft edges: ``rgb`` ``(H, W, 3)`` uint8, ``alpha`` ``(H, W)``
    float32 -> ``(H, W, 3)`` uint8 where pixels with 0 < alpha < 1 have the background's share
    of their colour removed. Local foreground / background colours are means over a window of
    radius ``r`` (default 1.25 % of the long side) of the pure foreground / background pixels
    (soft ones count a thousandth); then ``I = a F + (1 - a) B`` is solved for ``F`` where alpha
    is large enough, and the local foreground mean is used where it is not. Pixels with alpha 0
    or 1 keep their colour. Without it a soft edge pasted on a new scene keeps a rim of the old
    background (a brown halo of the table around the saucer)."""
    soft = (alpha > 0.0) & (alpha < 1.0)
    if not soft.any():
        return rgb.copy()
    ys, xs = np.nonzero(soft)
    H, W = alpha.shape
    r = r or max(4, round(max(H, W) / 80))
    y0, y1 = max(0, ys.min() - r), min(H, ys.max() + r + 1)
    x0, x1 = max(0, xs.min() - r), min(W, xs.max() + r + 1)
    img = rgb[y0:y1, x0:x1].astype(np.float32) / 255.0
    a = alpha[y0:y1, x0:x1, None].astype(np.float32)
    # Pure pixels (a >= 0.99, a <= 0.01) dominate the means wherever the window holds any.
    wf = (a >= 0.99) + 1e-3 * a**4
    wb = (a <= 0.01) + 1e-3 * (1.0 - a) ** 4
    f_mean = _box_sum(img * wf, r) / np.maximum(_box_sum(wf, r), 1e-6)
    b_mean = _box_sum(img * wb, r) / np.maximum(_box_sum(wb, r), 1e-6)
    solved = np.clip((img - (1.0 - a) * b_mean) / np.maximum(a, 1e-3), 0.0, 1.0)
    trust = np.clip((a - 0.1) / 0.3, 0.0, 1.0)  # solving divides by alpha: unstable when small
    fg = trust * solved + (1.0 - trust) * f_mean
    out = rgb.copy()
    sub = out[y0:y1, x0:x1]
    m = soft[y0:y1, x0:x1]
    sub[m] = np.round(fg[m] * 255.0).astype(np.uint8)
    return out


def flood_alpha(rgb: np.ndarray, *, tolerance: float = FLOOD_TOLERANCE) -> np.ndarray:
    """Border-colour key for renders on a flat backdrop: ``rgb`` ``(H, W, 3)`` uint8 ->
    ``(H, W)`` float32 alpha in {0, 1}. Pixels near the border's median colour that connect to
    the border are background, and so are enclosed background-coloured regions of at least
    ``FLOOD_MIN_HOLE_FRAC`` of the picture (a mug handle's hole), which
    ``genservice.compose.cut_out`` fills. The cost: a backdrop-coloured logo that large on
    the product would be cut out too; it is a fallback only."""
    from scipy import ndimage

    near = np.abs(rgb.astype(np.float32) - border_colour(rgb)).max(axis=-1) <= tolerance
    labels, _ = ndimage.label(near)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    sizes = np.bincount(labels.ravel())
    holes = np.flatnonzero(sizes >= FLOOD_MIN_HOLE_FRAC * near.size)
    background = np.isin(labels, np.union1d(edge, holes)) & near
    mask = ndimage.binary_opening(~background, structure=np.ones((3, 3), bool))
    mask, _ = clean_mask(mask)
    return mask.astype(np.float32)
