"""Category shape guides (issue 21): a text-only creation whose category is known starts from
the category's typical silhouette, as if the merchant had drawn a rough filled sketch of it.

The guide of a category is a statistic of the *training* products' studio renders
(``genservice.training.controlnet.render_pairs(held_out=False)``; products whose world index
is a multiple of 10 are held out and never used): each render's silhouette is cropped to its
bounding box and stretched onto a ``CANON`` x ``CANON`` grid, the per-pixel median is taken
(a pixel is in the guide when at least half the silhouettes cover it), and the result is put
back at the median box of those renders (width, height, horizontal centre, bottom: products
stand on the ground). Aligning before the median keeps thin parts (a lamp's pole, chair legs,
a bag's handle) that a median of the unaligned masks blurs away.

The guides are computed once (``genservice.training.shape_guides``, ~1 min CPU) and shipped as
``shape_guides.json`` beside this module (bit-packed masks, the product ids used).
The creator turns a guide into a sketch (:func:`guide_sketch`: the silhouette in black on
white) and runs its sketch path from it at ``GUIDE_STRENGTH``: a high strength, so that
colour, material and detail come from the text and only the rough shape and place from the
guide.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

#: The shipped guides (``python -m genservice.training.shape_guides`` rewrites them).
GUIDES_FILE = Path(__file__).with_name("shape_guides.json")
#: Side of the grid the aligned silhouettes are stretched onto before the median.
CANON = 64
#: Share of the noise schedule redone from the guide (the sketch path's ``strength``). Chosen
#: on *training* captions (``evaluate creations --captions validation``; never the held-out
#: ones), page judge colour / category on 200 captions: no guide 0.905 / 0.81; ControlNet
#: path at 0.4 0.955 / 0.87, 0.5 0.945 / 0.90, 0.6 0.90 / 0.885. On 100 captions (no guide
#: 0.92 / 0.86): 0.4 0.99 / 0.88, 0.5 0.94 / 0.89, 0.6 0.89 / 0.88, 0.7 0.85 / 0.87, 0.8
#: 0.87 / 0.83; img2img at 0.6 0.94 / 0.87. Above 0.8 the backdrop turns dark and busy. 0.5
#: redoes half the schedule: stripes, shading and material are drawn by the model; the
#: start's flat fill is the text's named colour.
GUIDE_STRENGTH = 0.5
#: The sketch path the guide goes through, as a request's ``sketch_mode``: ``auto`` = the
#: ControlNet path when a ControlNet is configured, else the img2img fallback.
GUIDE_MODE = "auto"


def _held_out(k: int) -> bool:
    # The ControlNet's and the evaluation's held-out rule (world index a multiple of 10),
    # stated here so that this module does not import the training package.
    return k % 10 == 0


def silhouette_guide(masks: Sequence[np.ndarray], side: int, canon: int = CANON) -> np.ndarray:
    """bool ``(side, side)``: the median silhouette of bool ``(S, S)`` ``masks`` (each
    non-empty): bounding boxes stretched onto ``canon`` x ``canon`` (nearest), per-pixel
    mean >= 0.5, box-resampled to the median box width and height and placed at the median
    box centre (x) and bottom (y), scaled from ``S`` to ``side``."""
    if not masks:
        raise ValueError("silhouette_guide: expected at least one mask")
    grids, ws, hs, cxs, bottoms = [], [], [], [], []
    src = masks[0].shape[0]
    for m in masks:
        ys, xs = np.nonzero(m)
        if not len(ys):
            raise ValueError("silhouette_guide: an empty mask")
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        crop = Image.fromarray(np.asarray(m[y0:y1, x0:x1], np.uint8) * 255)
        grids.append(np.asarray(crop.resize((canon, canon), Image.Resampling.NEAREST)) > 127)
        ws.append(x1 - x0)
        hs.append(y1 - y0)
        cxs.append((x0 + x1) / 2)
        bottoms.append(y1)
    f = side / src
    w = max(1, min(side, round(float(np.median(ws)) * f)))
    h = max(1, min(side, round(float(np.median(hs)) * f)))
    mean = np.mean(grids, axis=0).astype(np.float32)
    box = np.asarray(Image.fromarray(mean).resize((w, h), Image.Resampling.BOX)) >= 0.5
    x0 = min(max(0, round(float(np.median(cxs)) * f - w / 2)), side - w)
    y0 = min(max(0, round(float(np.median(bottoms)) * f) - h), side - h)
    out = np.zeros((side, side), bool)
    out[y0 : y0 + h, x0 : x0 + w] = box
    return out


def find_category(text: str, categories: Iterable[str]) -> str | None:
    """The category ``text`` names as a word (a plural "s" allowed; the earliest one when it
    names several), or None. ``"two red T-Shirts"`` -> ``t-shirt``."""
    low = str(text).lower()
    best: tuple[int, str] | None = None
    for c in categories:
        m = re.search(rf"(?<![a-z\-]){re.escape(c.lower())}s?(?![a-z\-])", low)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), c)
    return None if best is None else best[1]


def guide_sketch(mask: np.ndarray, side: int) -> Image.Image:
    """The guide as the sketch path sees it: the silhouette (grown by one pixel, since
    ``sketch.filled_outline`` takes a stroke's outer pixel off) in black on white, RGB
    ``side`` x ``side`` (``mask`` resized nearest when its side differs)."""
    m = np.asarray(mask, bool)
    if m.shape[0] != side:
        m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((side, side))) > 127
    grown = ndimage.binary_dilation(m, iterations=1)
    g = np.where(grown, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([g, g, g], -1), "RGB")


def guide_mask(sketch: Image.Image, side: int) -> np.ndarray:
    """bool ``(side, side)``: the silhouette of a :func:`guide_sketch` (its dark pixels)."""
    grey = sketch.convert("L")
    if grey.size != (side, side):
        grey = grey.resize((side, side), Image.Resampling.NEAREST)
    return np.asarray(grey) < 128


@dataclass(frozen=True)
class ShapeGuides:
    """Per category a bool ``(side, side)`` guide; ``products``: the world indices of the
    renders they were computed from (never a held-out one); ``counts``: renders per category."""

    side: int
    masks: dict[str, np.ndarray]
    products: tuple[int, ...]
    counts: dict[str, int]

    def __post_init__(self) -> None:
        bad = sorted(k for k in self.products if _held_out(k))
        if bad:
            raise ValueError(f"shape guides: held-out products used: {bad[:5]}")

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(sorted(self.masks))

    def category_of(self, text: str, category: str | None = None) -> str | None:
        """The guided category of a request: ``category`` when given (None when it has no
        guide: a merchant's category is not second-guessed), else the one ``text`` names."""
        if category is not None and category.strip():
            c = category.strip().lower()
            return c if c in self.masks else None
        return find_category(text, self.masks)

    def sketch(self, category: str | None, side: int) -> Image.Image | None:
        """:func:`guide_sketch` of ``category``'s guide at ``side`` (None: no guide)."""
        if category is None or category not in self.masks:
            return None
        return guide_sketch(self.masks[category], side)

    def to_json(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "method": "bbox-aligned per-pixel median of training products' studio-render "
            "silhouettes, placed at their median box (genservice.creation.shape_guide)",
            "products": list(self.products),
            "counts": self.counts,
            "masks": {
                c: base64.b64encode(np.packbits(m.ravel()).tobytes()).decode()
                for c, m in sorted(self.masks.items())
            },
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ShapeGuides:
        side = int(d["side"])
        masks = {
            c: np.unpackbits(np.frombuffer(base64.b64decode(v), np.uint8))[: side * side]
            .reshape(side, side)
            .astype(bool)
            for c, v in d["masks"].items()
        }
        counts = {str(k): int(v) for k, v in d.get("counts", {}).items()}
        return cls(side, masks, tuple(int(k) for k in d["products"]), counts)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return p

    @classmethod
    def load(cls, path: str | Path) -> ShapeGuides:
        return cls.from_json(json.loads(Path(path).read_text()))


def build_guides(pairs: Sequence[Any], side: int = 64) -> ShapeGuides:
    """Guides from render pairs (``.product``, ``.category``, ``.mask``); ValueError when one
    is of a held-out product."""
    used = sorted({int(p.product) for p in pairs})
    bad = [k for k in used if _held_out(k)]
    if bad:
        raise ValueError(f"build_guides: held-out products among the renders: {bad[:5]}")
    by_cat: dict[str, list[np.ndarray]] = {}
    for p in pairs:
        by_cat.setdefault(p.category, []).append(np.asarray(p.mask, bool))
    masks = {c: silhouette_guide(ms, side) for c, ms in sorted(by_cat.items())}
    return ShapeGuides(side, masks, tuple(used), {c: len(ms) for c, ms in sorted(by_cat.items())})


@functools.lru_cache(maxsize=1)
def shipped_guides() -> ShapeGuides | None:
    """The guides shipped beside this module (None when the file is missing)."""
    return ShapeGuides.load(GUIDES_FILE) if GUIDES_FILE.is_file() else None


__all__ = [
    "CANON",
    "GUIDES_FILE",
    "GUIDE_MODE",
    "GUIDE_STRENGTH",
    "ShapeGuides",
    "build_guides",
    "find_category",
    "guide_mask",
    "guide_sketch",
    "shipped_guides",
    "silhouette_guide",
]
