"""The demo world's vocabulary: categories, colours, patterns, materials, styles, scenes.

Every other area (CLIP captions, style terms, prompts, the click model) reads these
constants, so names are lower-case English words that read well inside a caption.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: The bundled vocabulary files (colours, scene words) shared with genservice.vocab.
VOCAB_DIR = Path(__file__).resolve().parents[1] / "vocab"


def _vocab(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VOCAB_DIR / name).read_text(encoding="utf-8"))
    return data


# Category -> category group. An "interest" of a simulated shopper is a (colour, group) pair.
CATEGORY_GROUPS: dict[str, str] = {
    "t-shirt": "apparel",
    "hoodie": "apparel",
    "dress": "apparel",
    "sneaker": "accessories",
    "handbag": "accessories",
    "watch": "accessories",
    "mug": "home",
    "lamp": "home",
    "chair": "home",
}
CATEGORIES: tuple[str, ...] = tuple(CATEGORY_GROUPS)
GROUPS: tuple[str, ...] = ("apparel", "accessories", "home")

# Clearly distinct named colours (sRGB 0-255, data/vocab/colours.json). Hues are spread so
# that the nearest-colour classification in CIELAB (``nearest_colour``) separates them even
# under shading.
COLOURS: dict[str, tuple[int, int, int]] = {
    name: (int(r), int(g), int(b)) for name, (r, g, b) in _vocab("colours.json")["colours"].items()
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

# Patterns are drawn on the product body in a contrasting shade of the same colour.
PATTERNS: tuple[str, ...] = ("solid", "striped", "polka-dot", "checked", "zigzag")

# Material -> the visible texture cue the renderer draws.
MATERIALS: dict[str, str] = {
    "cotton": "fine woven texture",
    "denim": "diagonal twill lines",
    "wool": "chunky knit ridges",
    "leather": "blotchy grain with a soft sheen",
    "canvas": "coarse square weave",
    "ceramic": "smooth glaze with a bright highlight",
    "metal": "brushed streaks with banded reflections",
    "wood": "wavy grain lines",
}
MATERIAL_NAMES: tuple[str, ...] = tuple(MATERIALS)

# Which materials make sense for which category (the first is the most common).
CATEGORY_MATERIALS: dict[str, tuple[str, ...]] = {
    "t-shirt": ("cotton", "wool", "denim"),
    "hoodie": ("cotton", "wool", "denim"),
    "dress": ("cotton", "denim", "wool"),
    "sneaker": ("leather", "canvas", "denim"),
    "handbag": ("leather", "canvas", "denim"),
    "watch": ("metal", "leather"),
    "mug": ("ceramic", "metal"),
    "lamp": ("metal", "ceramic", "wood"),
    "chair": ("wood", "metal", "leather"),
}

# Style -> the visible cue the renderer draws.
STYLES: dict[str, str] = {
    "minimalist": "clean surfaces, thin outline, no decoration",
    "sporty": "two contrasting racing stripes and a chevron mark",
    "vintage": "a round cream badge and a worn, speckled finish",
    "bohemian": "a multicoloured embroidered band and fringe tassels",
    "luxury": "gold trim along the edges and gold hardware",
}
STYLE_NAMES: tuple[str, ...] = tuple(STYLES)

# Scene vocabulary for "products in scenes" (backdrops drawn by ``render_scene``): the
# setting and lighting facets of data/vocab/style_terms.json.
SETTINGS: tuple[str, ...] = tuple(_vocab("style_terms.json")["facets"]["setting"]["terms"])
LIGHTING: tuple[str, ...] = tuple(_vocab("style_terms.json")["facets"]["lighting"]["terms"])

ATTRIBUTE_KEYS: tuple[str, ...] = ("colour", "pattern", "material", "style")

# Base price (EUR) per category; the world scales it by material and style.
CATEGORY_PRICES: dict[str, float] = {
    "t-shirt": 19.0,
    "hoodie": 45.0,
    "dress": 55.0,
    "sneaker": 79.0,
    "handbag": 95.0,
    "watch": 149.0,
    "mug": 12.0,
    "lamp": 59.0,
    "chair": 129.0,
}


def validate_attributes(attributes: Mapping[str, str], category: str) -> None:
    """Raise ``ValueError`` naming the offending key when a product's attributes are unknown."""
    if category not in CATEGORY_GROUPS:
        raise ValueError(f"category: expected one of {list(CATEGORIES)}, got {category!r}")
    allowed: dict[str, tuple[str, ...]] = {
        "colour": COLOUR_NAMES,
        "pattern": PATTERNS,
        "material": MATERIAL_NAMES,
        "style": STYLE_NAMES,
    }
    for key, values in allowed.items():
        if key not in attributes:
            raise ValueError(f"attributes: missing key {key!r} (got keys {sorted(attributes)})")
        if attributes[key] not in values:
            raise ValueError(
                f"attributes[{key!r}]: expected one of {list(values)}, got {attributes[key]!r}"
            )


def caption_for(attributes: Mapping[str, str], category: str) -> str:
    """A product caption from its attributes.

    Example: ``"a red striped cotton t-shirt, minimalist style"``.
    """
    colour = attributes.get("colour", "")
    pattern = attributes.get("pattern", "")
    material = attributes.get("material", "")
    words = " ".join(w for w in (colour, pattern, material, category) if w)
    caption = f"an {words}" if words[:1] in "aeiou" and words else f"a {words}"
    style = attributes.get("style")
    if style:
        caption += f", {style} style"
    return caption


#: How a caption places a product in a setting ("a red mug on a beach").
SETTING_PHRASES: dict[str, str] = dict(_vocab("scene_phrases.json")["setting_phrases"])


def scene_caption(
    attributes: Mapping[str, str], category: str, *, setting: str, lighting: str
) -> str:
    """A caption for a product in a scene, e.g. ``"a red striped cotton t-shirt, minimalist style,
    on a beach, golden hour"``."""
    where = SETTING_PHRASES.get(setting, f"in a {setting} setting")
    return f"{caption_for(attributes, category)}, {where}, {lighting}"


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB ``(..., 3)`` uint8 or float 0-255 -> CIELAB ``(..., 3)`` float64 (D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array(
        [
            [0.4124564, 0.3575761, 0.1804375],
            [0.2126729, 0.7151522, 0.0721750],
            [0.0193339, 0.1191920, 0.9503041],
        ]
    )
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    lab = np.empty_like(f)
    lab[..., 0] = 116 * f[..., 1] - 16
    lab[..., 1] = 500 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200 * (f[..., 1] - f[..., 2])
    return lab


_COLOUR_LAB = srgb_to_lab(np.array(list(COLOURS.values()), dtype=np.float64))


def nearest_colour_index(rgb: np.ndarray) -> np.ndarray:
    """Index into ``COLOUR_NAMES`` of the nearest named colour in CIELAB.

    ``rgb``: ``(..., 3)`` values 0-255; returns an int64 array of shape ``(...)``.
    """
    lab = srgb_to_lab(rgb)
    d = ((lab[..., None, :] - _COLOUR_LAB) ** 2).sum(axis=-1)
    return np.asarray(d.argmin(axis=-1), dtype=np.int64)


def nearest_colour(rgb: tuple[int, int, int] | np.ndarray) -> str:
    """The named colour nearest to one sRGB triple (0-255)."""
    return COLOUR_NAMES[int(nearest_colour_index(np.asarray(rgb, dtype=np.float64)[None])[0])]
