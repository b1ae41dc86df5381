"""Captioned training samples from the demo catalog: studio shots and products in scenes.

Used to train the small CLIP (captions from ``caption_for``) and the small diffusion model
("products in scenes", captions from ``scene_caption``). Every sample is re-rendered with its
own seed, so the same product appears with slightly different proportions and pattern phase
(cheap augmentation); the same arguments always give the same samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from data.demo.attributes import (
    CATEGORY_MATERIALS,
    COLOUR_NAMES,
    LIGHTING,
    PATTERNS,
    SETTINGS,
    STYLE_NAMES,
    caption_for,
    scene_caption,
)
from data.demo.render import compose_scene, on_studio_background, render_product
from data.demo.world import DemoProduct


@dataclass(frozen=True)
class DemoSample:
    """One captioned image. ``mask`` is the product's alpha (L, same size as ``image``);
    ``setting`` / ``lighting`` are ``"studio"`` / ``"soft light"`` for studio shots."""

    sku: str
    category: str
    attributes: dict[str, str]
    setting: str
    lighting: str
    caption: str
    image: Image.Image
    mask: Image.Image


def _check(n: int, size: int, products: Sequence[DemoProduct]) -> None:
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n: expected an int >= 0, got {n!r}")
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size: expected an int >= 16, got {size!r}")
    if not products:
        raise ValueError("products: expected at least one product, got none")


def studio_samples(
    products: Sequence[DemoProduct], *, n: int, size: int = 128, seed: int
) -> Iterator[DemoSample]:
    """``n`` studio shots cycling through ``products`` (shuffled by ``seed``)."""
    _check(n, size, products)
    rng = np.random.default_rng([seed, 0x57D1])
    order = rng.permutation(len(products))
    for k in range(n):
        p = products[int(order[k % len(products)])]
        rgba = render_product(
            p.attributes, category=p.category, size=size, seed=int(rng.integers(2**31))
        )
        yield DemoSample(
            sku=p.sku,
            category=p.category,
            attributes=dict(p.attributes),
            setting="studio",
            lighting="soft light",
            caption=caption_for(p.attributes, p.category),
            image=on_studio_background(rgba),
            mask=rgba.getchannel("A"),
        )


def scene_samples(
    products: Sequence[DemoProduct],
    *,
    n: int,
    size: int = 128,
    seed: int,
    settings: Sequence[str] = SETTINGS,
    lighting: Sequence[str] = LIGHTING,
) -> Iterator[DemoSample]:
    """``n`` products placed in scenes; setting and lighting drawn uniformly per sample."""
    _check(n, size, products)
    bad = [s for s in settings if s not in SETTINGS] + [x for x in lighting if x not in LIGHTING]
    if bad or not settings or not lighting:
        raise ValueError(
            f"settings / lighting: expected non-empty subsets of {list(SETTINGS)} and "
            f"{list(LIGHTING)}, got unknown {bad}"
        )
    rng = np.random.default_rng([seed, 0x5CE5])
    order = rng.permutation(len(products))
    for k in range(n):
        p = products[int(order[k % len(products)])]
        setting = settings[int(rng.integers(len(settings)))]
        light = lighting[int(rng.integers(len(lighting)))]
        # Render the cut-out a little larger than the scene's product so it stays sharp.
        rgba = render_product(
            p.attributes, category=p.category, size=max(64, size), seed=int(rng.integers(2**31))
        )
        scene = compose_scene(
            rgba, setting=setting, lighting=light, size=size, seed=int(rng.integers(2**31))
        )
        yield DemoSample(
            sku=p.sku,
            category=p.category,
            attributes=dict(p.attributes),
            setting=setting,
            lighting=light,
            caption=scene_caption(p.attributes, p.category, setting=setting, lighting=light),
            image=scene.image,
            mask=scene.mask,
        )


@dataclass(frozen=True)
class MixedProduct:
    """One seeded demo product: ``rgba`` render (transparent background), ``studio`` the same
    on the studio backdrop (RGB), ``category`` and ``attributes``."""

    rgba: Image.Image
    studio: Image.Image
    category: str
    attributes: dict[str, str]

    @property
    def alpha(self) -> np.ndarray:
        """The render's own mask, ``(size, size)`` float32 in [0, 1]."""
        return np.asarray(self.rgba)[..., 3].astype(np.float32) / 255.0


def mixed_products(n: int, *, size: int, seed: int = 17) -> list[MixedProduct]:
    """``n`` seeded products cycling through every category, with colour, pattern, material
    and style drawn at random (for edit tests and benches)."""
    rng = np.random.default_rng(seed)
    cats = list(CATEGORY_MATERIALS)
    out = []
    for i in range(n):
        cat = cats[i % len(cats)]
        mats = CATEGORY_MATERIALS[cat]
        attrs = {
            "colour": COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))],
            "pattern": PATTERNS[rng.integers(len(PATTERNS))],
            "material": mats[rng.integers(len(mats))],
            "style": STYLE_NAMES[rng.integers(len(STYLE_NAMES))],
        }
        rgba = render_product(attrs, category=cat, size=size, seed=i)
        out.append(MixedProduct(rgba, on_studio_background(rgba), cat, attrs))
    return out
