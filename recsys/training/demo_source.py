"""CLIP training products from the demo world (``data.demo``): its catalog, rendered in the
studio and in scenes."""

from __future__ import annotations

import random

from PIL import Image

from data.demo.attributes import LIGHTING, SETTING_PHRASES, SETTINGS
from data.demo.render import on_studio_background, render_product, render_scene
from data.demo.world import build_world
from recsys.training.clip_data import ClipProduct, ProductSource

__all__ = ["SOURCES", "demo_source", "load_source"]

#: Names :func:`load_source` accepts ("auto" is the demo world, kept for old configs).
SOURCES: tuple[str, ...] = ("auto", "demo")


def demo_source(*, seed: int = 0, size: int = 128) -> ProductSource:
    """The demo world's products (world ``seed``; the catalog does not depend on shoppers),
    rendered ``size`` px square by ``data.demo.render``."""
    world = build_world(seed=seed, n_users=1, weeks=1)
    products = [
        ClipProduct(id=i, attributes={"category": p.category, **p.attributes})
        for i, p in enumerate(world.products)
    ]
    settings = [s for s in SETTINGS if s != "studio"]

    def cutout(product: ClipProduct, s: int) -> Image.Image:
        return render_product(product.attributes, size=size, seed=s)

    def studio(product: ClipProduct, s: int) -> Image.Image:
        return on_studio_background(cutout(product, s))

    def scene(product: ClipProduct, s: int) -> tuple[Image.Image, str | None]:
        rng = random.Random(s)
        setting, lighting = rng.choice(settings), rng.choice(LIGHTING)
        img = render_scene(
            cutout(product, s), setting=setting, lighting=lighting, size=size, seed=s
        )
        words = SETTING_PHRASES.get(setting, f"in a {setting}")
        return img, (f"{words}, {lighting}" if rng.random() < 0.5 else words)

    return ProductSource("demo", products, studio, scene)


def load_source(name: str = "auto", *, seed: int = 0) -> ProductSource:
    """The products source called ``name`` (one of :data:`SOURCES`)."""
    if name not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)}, got {name!r}")
    return demo_source(seed=seed)
