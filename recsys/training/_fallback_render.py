"""A tiny procedural product renderer used only when ``data.demo`` is unavailable.

It lets the CLIP trainer and its tests run before (or without) the demo world: coloured
category silhouettes with a pattern overlay on a plain or scene-like background.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 30, 35),
    "orange": (240, 130, 20),
    "yellow": (240, 215, 40),
    "green": (40, 160, 60),
    "blue": (35, 80, 210),
    "purple": (130, 50, 170),
    "pink": (240, 120, 180),
    "brown": (120, 75, 40),
    "black": (25, 25, 25),
    "white": (245, 245, 245),
    "grey": (128, 128, 128),
}
CATEGORIES = ["t-shirt", "hoodie", "sneaker", "handbag", "mug", "lamp", "chair", "watch"]
PATTERNS = ["solid", "striped", "dotted", "checked"]
MATERIALS = ["cotton", "leather", "wool", "metal", "ceramic"]
STYLES = ["minimalist", "vintage", "sporty", "bohemian", "classic"]
SCENES = ["beach", "city street", "forest", "living room", "studio"]


@dataclass(frozen=True)
class FallbackProduct:
    """One fallback product: ``id`` and its attribute dict."""

    id: int
    attributes: dict[str, Any] = field(default_factory=dict)


def build_products(n: int, *, seed: int) -> list[FallbackProduct]:
    """``n`` products with random attributes (seeded)."""
    rng = random.Random(seed)
    return [
        FallbackProduct(
            id=i,
            attributes={
                "category": rng.choice(CATEGORIES),
                "colour": rng.choice(list(COLOURS)),
                "pattern": rng.choice(PATTERNS),
                "material": rng.choice(MATERIALS),
                "style": rng.choice(STYLES),
            },
        )
        for i in range(n)
    ]


def _silhouette(draw: ImageDraw.ImageDraw, category: str, s: int, fill: Any) -> None:
    u = s / 16
    if category == "t-shirt":
        draw.polygon(
            [(4 * u, 3 * u), (12 * u, 3 * u), (15 * u, 6 * u), (12 * u, 7 * u), (12 * u, 14 * u),
             (4 * u, 14 * u), (4 * u, 7 * u), (1 * u, 6 * u)],
            fill=fill,
        )  # fmt: skip
    elif category == "hoodie":
        draw.polygon(
            [(5 * u, 2 * u), (11 * u, 2 * u), (14 * u, 5 * u), (15 * u, 13 * u), (12 * u, 13 * u),
             (12 * u, 15 * u), (4 * u, 15 * u), (4 * u, 13 * u), (1 * u, 13 * u), (2 * u, 5 * u)],
            fill=fill,
        )  # fmt: skip
        draw.ellipse([6 * u, 1 * u, 10 * u, 5 * u], fill=fill)
    elif category == "sneaker":
        draw.polygon(
            [(1 * u, 11 * u), (3 * u, 7 * u), (7 * u, 8 * u), (11 * u, 10 * u), (15 * u, 11 * u),
             (15 * u, 13 * u), (1 * u, 13 * u)],
            fill=fill,
        )  # fmt: skip
    elif category == "handbag":
        draw.arc([5 * u, 2 * u, 11 * u, 9 * u], 180, 360, fill=fill, width=int(u))
        draw.rectangle([3 * u, 6 * u, 13 * u, 14 * u], fill=fill)
    elif category == "mug":
        draw.ellipse([10 * u, 6 * u, 15 * u, 11 * u], outline=fill, width=int(1.2 * u))
        draw.rectangle([3 * u, 4 * u, 11 * u, 14 * u], fill=fill)
    elif category == "lamp":
        draw.polygon([(5 * u, 2 * u), (11 * u, 2 * u), (13 * u, 7 * u), (3 * u, 7 * u)], fill=fill)
        draw.rectangle([7.5 * u, 7 * u, 8.5 * u, 13 * u], fill=fill)
        draw.rectangle([5 * u, 13 * u, 11 * u, 14 * u], fill=fill)
    elif category == "chair":
        draw.rectangle([4 * u, 2 * u, 6 * u, 14 * u], fill=fill)
        draw.rectangle([4 * u, 8 * u, 12 * u, 10 * u], fill=fill)
        draw.rectangle([10.5 * u, 10 * u, 12 * u, 14 * u], fill=fill)
    else:  # watch
        draw.rectangle([6.5 * u, 1 * u, 9.5 * u, 15 * u], fill=fill)
        draw.ellipse([4 * u, 4 * u, 12 * u, 12 * u], fill=fill)
        draw.ellipse([5.5 * u, 5.5 * u, 10.5 * u, 10.5 * u], fill=0)


def render(
    attributes: dict[str, Any], *, size: int = 128, seed: int = 0, scene: str | None = None
) -> Image.Image:
    """RGB image of ``size``x``size``: the product on a studio background or a ``scene``."""
    rng = random.Random(seed)
    colour = COLOURS[attributes["colour"]]
    if scene is None or scene == "studio":
        bg: tuple[int, int, int] = (236, 236, 236)
    else:
        bg = tuple(rng.randint(60, 200) for _ in range(3))  # type: ignore[assignment]
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    if scene not in (None, "studio"):
        for _ in range(6):
            x, y = rng.randint(0, size), rng.randint(0, size)
            r = rng.randint(size // 10, size // 3)
            shade = tuple(min(255, max(0, c + rng.randint(-40, 40))) for c in bg)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=shade)
    mask = Image.new("L", (size, size), 0)
    _silhouette(ImageDraw.Draw(mask), attributes["category"], size, 255)
    layer = Image.new("RGB", (size, size), colour)
    ld = ImageDraw.Draw(layer)
    dark = tuple(int(c * 0.45) for c in colour) if sum(colour) > 200 else (200, 200, 200)
    step = size // 10
    if attributes.get("pattern") == "striped":
        for y in range(0, size, step):
            ld.rectangle([0, y, size, y + step // 3], fill=dark)
    elif attributes.get("pattern") == "dotted":
        for y in range(0, size, step):
            for x in range(0, size, step):
                ld.ellipse([x, y, x + step // 3, y + step // 3], fill=dark)
    elif attributes.get("pattern") == "checked":
        for y in range(0, size, step):
            for x in range(0, size, step):
                if (x // step + y // step) % 2:
                    ld.rectangle([x, y, x + step, y + step], fill=dark)
    # Jitter placement slightly so views of one product differ.
    dx, dy = rng.randint(-size // 16, size // 16), rng.randint(-size // 16, size // 16)
    img.paste(layer, (dx, dy), mask)
    return img
