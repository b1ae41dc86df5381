"""Training data for the small CLIP: products, their renderers and attribute captions.

The products and renderers come from a :class:`ProductSource` (the demo world's:
:mod:`recsys.training.demo_source`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

#: Attribute keys a caption may mention, in the order they are encoded.
ATTRIBUTE_KEYS: tuple[str, ...] = ("colour", "pattern", "material", "style", "category")


@dataclass(frozen=True)
class ClipProduct:
    """A product used for CLIP training/evaluation: ``id`` and string attributes
    (at least ``category`` and ``colour``; ``pattern``, ``material``, ``style`` optional)."""

    id: int
    attributes: dict[str, str] = field(default_factory=dict)

    def attr(self, key: str) -> str:
        """The attribute ``key`` or ``""`` when absent."""
        return str(self.attributes.get(key, "") or "")


@dataclass
class ProductSource:
    """Where products and their images come from.

    ``studio(product, seed)`` renders the product on a plain background; ``scene(product,
    seed)`` renders it in a scene and returns ``(image, scene words or None)``.
    """

    name: str
    products: list[ClipProduct]
    studio: Callable[[ClipProduct, int], Image.Image]
    scene: Callable[[ClipProduct, int], tuple[Image.Image, str | None]]


def split_products(
    products: Sequence[ClipProduct], *, holdout_fraction: float, seed: int
) -> tuple[list[ClipProduct], list[ClipProduct]]:
    """Seeded (train, held-out) split; ``holdout_fraction`` in (0, 1)."""
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    order = sorted(products, key=lambda p: p.id)
    random.Random(seed).shuffle(order)
    n_hold = max(1, round(len(order) * holdout_fraction))
    return order[n_hold:], order[:n_hold]


# ---------------------------------------------------------------------------- captions

_WRAPPERS = (
    "a photo of a {}",
    "a {}",
    "a product photo of a {}",
    "{}",
    "a close-up photo of a {}",
    "a studio shot of a {}",
    "a picture of a {}",
    "an image of a {}",
)
_SCENE_WRAPPERS = ("a {} {}", "a photo of a {} {}", "a {}, {}")
#: Single-attribute captions, so that a bare term ("a mug", "something red", "vintage")
#: lands near the products that have it (zero-shot classification and style terms use these).
SINGLE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "category": ("a photo of a {}", "a {}", "a product photo of a {}", "an image of a {}"),
    "colour": ("something {}", "a {} product", "a {} object", "a {} item", "{}"),
    "style": ("a {} style product", "something {}", "a {} item", "{} style"),
    "material": ("something made of {}", "a {} product", "a {} item", "{}"),
    "pattern": ("a {} product", "something with a {} pattern", "a {} item", "{}"),
}
_SINGLE_WEIGHTS = {
    "category": 0.35,
    "colour": 0.25,
    "style": 0.14,
    "material": 0.13,
    "pattern": 0.13,
}


def _phrase(product: ClipProduct, rng: random.Random) -> tuple[str, set[str]]:
    """An attribute phrase such as ``"vintage red striped cotton t-shirt"`` and the keys used."""
    p = {"colour": 0.8, "pattern": 0.5, "material": 0.5, "style": 0.45, "category": 0.9}
    used = {k for k, prob in p.items() if product.attr(k) and rng.random() < prob}
    if not used & {"colour", "category"}:
        used.add(rng.choice(["colour", "category"]))
    words = [product.attr(k) for k in ("style", "colour", "pattern", "material") if k in used]
    words.append(product.attr("category") if "category" in used else "item")
    return " ".join(words), used


def make_caption(
    product: ClipProduct, *, rng: random.Random, scene: str | None = None
) -> tuple[str, set[str]]:
    """A random caption of ``product`` and the set of attribute keys it mentions."""
    if rng.random() < 0.3:
        keys = [k for k in _SINGLE_WEIGHTS if product.attr(k)]
        if keys:
            key = rng.choices(keys, weights=[_SINGLE_WEIGHTS[k] for k in keys])[0]
            return rng.choice(SINGLE_TEMPLATES[key]).format(product.attr(key)), {key}
    phrase, used = _phrase(product, rng)
    if scene and rng.random() < 0.6:
        return rng.choice(_SCENE_WRAPPERS).format(phrase, scene), used
    return rng.choice(_WRAPPERS).format(phrase), used


def full_caption(product: ClipProduct) -> str:
    """The deterministic caption naming every attribute (used for retrieval evaluation)."""
    words = [product.attr(k) for k in ("style", "colour", "pattern", "material", "category")]
    return "a photo of a " + " ".join(w for w in words if w)


class AttributeCodes:
    """Integer codes per attribute value, for the multi-positive contrastive target."""

    def __init__(self, products: Sequence[ClipProduct]) -> None:
        self.vocab: dict[str, dict[str, int]] = {k: {} for k in ATTRIBUTE_KEYS}
        for product in products:
            for key in ATTRIBUTE_KEYS:
                self.vocab[key].setdefault(product.attr(key), len(self.vocab[key]))

    def encode(self, product: ClipProduct) -> np.ndarray:
        """Codes of shape ``(len(ATTRIBUTE_KEYS),)`` int64 (unknown values get -1)."""
        return np.array(
            [self.vocab[k].get(product.attr(k), -1) for k in ATTRIBUTE_KEYS], dtype=np.int64
        )


def mention_mask(keys: set[str]) -> np.ndarray:
    """Bool ``(len(ATTRIBUTE_KEYS),)``: which attributes a caption mentions."""
    return np.array([k in keys for k in ATTRIBUTE_KEYS], dtype=bool)


def attribute_values(products: Sequence[ClipProduct], key: str) -> list[str]:
    """Sorted distinct non-empty values of attribute ``key``."""
    return sorted({p.attr(key) for p in products if p.attr(key)})


def describe(products: Sequence[ClipProduct]) -> dict[str, Any]:
    """Counts per attribute (for the model card)."""
    return {k: len(attribute_values(products, k)) for k in ATTRIBUTE_KEYS}
