"""Parts of a product (``--mask-part``): a sub-mask of the product's mask, so ``recolor`` and
``material`` edit only that part. Generic (no per-category segmenter), two kinds:

* **colour regions** inside the product (pixels with alpha >= 0.5):
  ``colour:COLOUR[:DE]`` = pixels within CIEDE2000 ``DE`` (default :data:`DEFAULT_DELTA_E`)
  of ``COLOUR`` (hex or name); ``dominant`` / ``secondary`` = the largest / second-largest
  colour cluster: k-means (k = :data:`N_CLUSTERS`, seeded) in CIELAB with lightness at half
  weight (shading moves L more than hue), then clusters whose centres lie closer than
  :data:`MERGE_DISTANCE` merged (one colour under light and shadow stays one part);
* **geometric bands** of the product's bounding box: ``top``, ``bottom``, ``left``,
  ``right``, optionally with the band's share ``:F`` in (0, 1] (default 0.5); and the
  aliases in :data:`ALIASES` (footwear: ``sole`` = the bottom 15 %, ``upper`` = the rest;
  measured on the demo sneakers, whose sole is about that share of their height).

The part is hard inside the product (a pixel is in or out) and keeps the product's soft
alpha at its outline, so the edit's rule holds: outside the part nothing changes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from genservice.edits.base import parse_colour

#: Default CIEDE2000 tolerance of ``colour:`` parts.
DEFAULT_DELTA_E = 20.0
#: k-means clusters before merging, the merge distance (weighted CIELAB units), the seed and
#: the most pixels the clustering looks at (all pixels are labelled afterwards).
N_CLUSTERS = 4
MERGE_DISTANCE = 18.0
SEED = 0
MAX_SAMPLES = 20_000
#: Lightness weight of the clustering space (a and b weigh 1).
L_WEIGHT = 0.5
BANDS = ("top", "bottom", "left", "right")
#: Named parts -> their generic definition.
ALIASES = {"sole": "bottom:0.15", "upper": "top:0.85"}

PART_HELP = (
    "colour:COLOUR[:DE] (pixels within CIEDE2000 DE, default 20), dominant, secondary "
    "(largest / second colour cluster), top|bottom|left|right[:F] (band share, default 0.5), "
    "sole, upper"
)


def _labels(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seeded k-means of ``lab`` ``(N, 3)`` in the weighted space, close centres merged.
    Returns labels ``(N,)`` (0 = most pixels) and centres ``(K, 3)`` (weighted space)."""
    from scipy.cluster.vq import kmeans2

    x = lab * np.array([L_WEIGHT, 1.0, 1.0])
    step = max(1, -(-len(x) // MAX_SAMPLES))
    sample = x[::step]
    k = min(N_CLUSTERS, len(np.unique(np.round(sample, 1), axis=0)))
    if k <= 1:
        return np.zeros(len(x), np.int64), sample.mean(axis=0, keepdims=True)
    centres, _ = kmeans2(sample, k, minit="++", seed=SEED)
    centres = list(centres)
    merged = True
    while merged and len(centres) > 1:  # merge the closest pair while it is close enough
        merged = False
        lab_s = np.argmin(((sample[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        counts = np.bincount(lab_s, minlength=len(centres))
        c = np.array(centres)
        d = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1)) + np.eye(len(c)) * 1e9
        i, j = np.unravel_index(np.argmin(d), d.shape)
        if d[i, j] < MERGE_DISTANCE:
            w = counts[[i, j]].astype(np.float64) + 1e-9
            centres[i] = (c[i] * w[0] + c[j] * w[1]) / w.sum()
            del centres[j]
            merged = True
    c = np.array(centres)
    labels = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
    order = np.argsort(-np.bincount(labels, minlength=len(c)), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[labels], c[order]


def _fraction(text: str, spec: str) -> float:
    try:
        f = float(text)
    except ValueError:
        raise ValueError(f"mask_part: expected a band share in (0, 1] in {spec!r}") from None
    if not 0.0 < f <= 1.0:
        raise ValueError(f"mask_part: expected a band share in (0, 1], got {f} in {spec!r}")
    return f


def check_part(spec: str) -> tuple[str, str]:
    """``spec`` checked without an image: ``(kind, argument)`` with aliases resolved, the
    colour, tolerance and band share validated. ValueError naming ``mask_part`` otherwise."""
    text = str(spec).strip().lower()
    text = ALIASES.get(text, text)
    name, _, arg = text.partition(":")
    if name in BANDS:
        if arg:
            _fraction(arg, spec)
        return name, arg
    if name in ("colour", "color"):
        colour_text, _, de_text = arg.partition(":")
        if not colour_text:
            raise ValueError(f"mask_part: expected colour:COLOUR[:DE], got {spec!r}")
        parse_colour(colour_text, "mask_part")
        try:
            tol = float(de_text) if de_text else DEFAULT_DELTA_E
        except ValueError:
            raise ValueError(f"mask_part: expected a number DE in {spec!r}") from None
        if not 0.0 < tol <= 100.0:
            raise ValueError(f"mask_part: expected DE in (0, 100], got {tol}")
        return "colour", arg
    if name in ("dominant", "secondary") and not arg:
        return name, ""
    raise ValueError(f"mask_part: expected one of {PART_HELP}; got {spec!r}")


def part_mask(rgb: np.ndarray, alpha: np.ndarray, spec: str) -> np.ndarray:
    """The part ``spec`` (see the module docstring) of the product: ``rgb`` ``(H, W, 3)``
    uint8, ``alpha`` ``(H, W)`` float32 in [0, 1] (the product's mask) -> ``(H, W)`` float32:
    ``alpha`` on the part's pixels, 0 elsewhere. ValueError for an unknown spec, or a part
    with no pixel (the message says which)."""
    name, arg = check_part(spec)
    inside = alpha >= 0.5
    if not inside.any():
        raise ValueError("mask: expected at least one pixel with alpha >= 0.5, got none")
    sel = np.zeros(alpha.shape, bool)
    if name in BANDS:
        share = float(arg) if arg else 0.5
        ys, xs = np.nonzero(inside)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        h, w = y1 - y0, x1 - x0
        if name == "top":
            sel[y0 : y0 + max(1, round(share * h))] = True
        elif name == "bottom":
            sel[y1 - max(1, round(share * h)) :] = True
        elif name == "left":
            sel[:, x0 : x0 + max(1, round(share * w))] = True
        else:
            sel[:, x1 - max(1, round(share * w)) :] = True
    elif name == "colour":
        from skimage.color import deltaE_ciede2000

        colour_text, _, de_text = arg.partition(":")
        target = srgb_to_lab(np.array(parse_colour(colour_text, "mask_part"), np.float64))
        tol = float(de_text) if de_text else DEFAULT_DELTA_E
        lab = srgb_to_lab(rgb[inside])
        sel[inside] = deltaE_ciede2000(lab, np.broadcast_to(target, lab.shape)) <= tol
    else:
        labels, _ = _labels(srgb_to_lab(rgb[inside]))
        want = 0 if name == "dominant" else 1
        if want > labels.max():
            raise ValueError(
                "mask_part: 'secondary' expected a second colour in the product, found one"
            )
        sel[inside] = labels == want
    if name not in BANDS:
        # The soft outline (0 < alpha < 0.5) follows the nearest inside pixel's part, so a
        # recoloured part has no rim of its old colour.
        from scipy import ndimage

        _, (iy, ix) = ndimage.distance_transform_edt(~inside, return_indices=True)
        rim = (alpha > 0.0) & ~inside
        sel[rim] = sel[iy[rim], ix[rim]]
    part = np.where(sel, alpha, 0.0).astype(np.float32)
    if not (part >= 0.5).any():
        raise ValueError(f"mask_part: the part {spec!r} has no pixel of the product")
    return part


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 ``(..., 3)`` -> CIELAB (D65) float64 ``(..., 3)``."""
    from skimage.color import rgb2lab

    return np.asarray(rgb2lab(np.asarray(rgb, np.float64) / 255.0), np.float64)


def narrow_to_part(
    image: Image.Image, alpha: np.ndarray, method: str, part: str
) -> tuple[np.ndarray, str]:
    """The product's mask ``alpha`` narrowed to ``part`` of ``image`` (:func:`part_mask`) and
    the mask method naming it (``"<method>+part:<part>"``)."""
    rgb = np.asarray(image.convert("RGB"))
    return part_mask(rgb, alpha, part), f"{method}+part:{part}"[:128]
