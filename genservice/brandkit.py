"""A store's brand kit on heroes: font, colours, logo, price and call to action.

The kit is data (:class:`BrandKit`: the ``generation.brand_kit`` settings section or a JSON
file, by default ``<home>/brand_kit.json``); :func:`load_brand` resolves its files once
(font, logo image) into a :class:`Brand`, and :func:`draw_brand` paints it on a hero *before*
the product is pasted, so the product's pixels stay bit-exact (the fidelity rule). Pure
PIL/numpy (no torch).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont
from pydantic import BaseModel, Field, field_validator

#: The kit file read when no settings section is given (relative to the home folder).
BRAND_KIT_FILE = "brand_kit.json"

Box = tuple[int, int, int, int]  # x, y, width, height in pixels
Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]


def parse_colour(value: str) -> tuple[int, int, int, int]:
    """``#rgb``, ``#rrggbb``, ``#rrggbbaa`` or a CSS name -> RGBA bytes."""
    try:
        rgba = ImageColor.getcolor(value, "RGBA")
    except (ValueError, AttributeError) as exc:
        raise ValueError(
            f"expected a colour (#rrggbb, #rrggbbaa or a name), got {value!r}"
        ) from exc
    assert isinstance(rgba, tuple)
    return (int(rgba[0]), int(rgba[1]), int(rgba[2]), int(rgba[3]))


class BrandKit(BaseModel):
    """What the store's heroes carry. Colours are ``#rrggbb[aa]`` or CSS names; paths are
    absolute or relative to the home folder (a kit file: to its own folder first)."""

    model_config = {"extra": "forbid"}

    name: str = "default"
    #: A TrueType/OpenType file; None: DejaVu Sans Bold (matplotlib's), else Pillow's own.
    font: str | None = None
    headline_colour: str = "#141414"
    #: Panel behind the headline block (``#rrggbbaa``; alpha 0: no panel).
    panel_colour: str = "#ffffffc8"
    price_colour: str = "#141414"
    #: The call-to-action button's fill and its text.
    accent_colour: str = "#1f4fd1"
    cta_text_colour: str = "#ffffff"
    cta: str | None = "Shop now"
    show_price: bool = True
    #: ``{price}`` is the product's price (a float), ``{currency}`` the symbol.
    price_format: str = "{currency}{price:,.2f}"
    currency: str = "$"
    logo: str | None = None
    logo_position: Corner = "top-left"
    #: Logo height as a share of the hero's height.
    logo_height_frac: float = Field(default=0.14, gt=0.0, le=0.5)

    @field_validator(
        "headline_colour", "panel_colour", "price_colour", "accent_colour", "cta_text_colour"
    )
    @classmethod
    def _check_colour(cls, value: str) -> str:
        parse_colour(value)
        return value

    @field_validator("price_format")
    @classmethod
    def _check_price_format(cls, value: str) -> str:
        try:
            value.format(price=1234.5, currency="$")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"price_format: expected placeholders {{price}} and {{currency}}, got {value!r}"
            ) from exc
        return value

    def price_text(self, price: float | None) -> str | None:
        """The price as drawn, or None when not shown (no price, or ``show_price`` off)."""
        if not self.show_price or price is None or not math.isfinite(price):
            return None
        return self.price_format.format(price=price, currency=self.currency)


def read_brand_kit(path: str | Path) -> BrandKit:
    """A kit from a JSON file; relative ``font``/``logo`` resolve against the file's folder
    when that file exists there (so a kit folder can be moved as a whole)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"brand kit {str(p)!r}: expected a JSON object ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"brand kit {str(p)!r}: expected a JSON object, got {type(data).__name__}")
    for key in ("font", "logo"):
        ref = data.get(key)
        if isinstance(ref, str) and not Path(ref).is_absolute() and (p.parent / ref).is_file():
            data[key] = str((p.parent / ref).resolve())
    return BrandKit.model_validate(data)


def default_font_path() -> str | None:
    """DejaVu Sans Bold as shipped by matplotlib (found without importing it), else None."""
    spec = importlib.util.find_spec("matplotlib")
    for root in (spec.submodule_search_locations or []) if spec else []:
        cand = Path(root) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
        if cand.is_file():
            return str(cand)
    return None


@dataclass(frozen=True)
class Brand:
    """A kit with its files loaded: ``font_path`` (None: Pillow's default) and the logo."""

    kit: BrandKit
    font_path: str | None
    logo: Image.Image | None  # RGBA

    def font(self, size: int) -> Any:
        size = max(6, int(size))
        if self.font_path is not None:
            return ImageFont.truetype(self.font_path, size)
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow without FreeType: fixed-size bitmap font
            return ImageFont.load_default()


def _resolve(ref: str, home: Path) -> Path:
    p = Path(ref)
    return p if p.is_absolute() else home / p


def load_brand(kit: BrandKit, *, home: str | Path) -> Brand:
    """Resolve the kit's font and logo (relative paths against ``home``). Raises
    ``ValueError`` naming the field when a file is missing or unreadable."""
    home = Path(home)
    font_path = default_font_path()
    if kit.font:
        fp = _resolve(kit.font, home)
        try:
            ImageFont.truetype(str(fp), 12)
        except OSError as exc:
            raise ValueError(f"brand_kit.font: expected a TTF/OTF file, got {str(fp)!r}") from exc
        font_path = str(fp)
    logo = None
    if kit.logo:
        lp = _resolve(kit.logo, home)
        try:
            with Image.open(lp) as im:
                logo = im.convert("RGBA")
        except OSError as exc:
            raise ValueError(f"brand_kit.logo: expected an image file, got {str(lp)!r}") from exc
    return Brand(kit=kit, font_path=font_path, logo=logo)


def brand_kit_for(
    kit: BrandKit | None, kit_file: str | None, *, home: str | Path
) -> BrandKit | None:
    """The kit in use: the settings section, else ``kit_file`` (default
    ``<home>/brand_kit.json``) when it exists, else None (no brand kit: plain headlines)."""
    if kit is not None:
        return kit
    path = _resolve(kit_file, Path(home)) if kit_file else Path(home) / BRAND_KIT_FILE
    if kit_file and not path.is_file():
        raise ValueError(f"generation.brand_kit_file: expected a JSON file, got {str(path)!r}")
    return read_brand_kit(path) if path.is_file() else None


def brand_id(kit: BrandKit | None, kit_file: str | None = None, *, home: str | Path) -> str:
    """A short fingerprint of the kit in use (:func:`brand_kit_for`): its fields and its
    font and logo files (path, size, mtime); ``""`` without a kit. Briefs carry it, so a
    changed kit changes the brief hash and no hero with the old kit is served from a cache."""
    kit = brand_kit_for(kit, kit_file, home=home)
    if kit is None:
        return ""
    h = hashlib.sha256(kit.model_dump_json().encode())
    for ref in (kit.font, kit.logo):
        if ref:
            p = _resolve(ref, Path(home))
            st = p.stat() if p.is_file() else None
            h.update(f"|{p}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}".encode())
    return f"{kit.name}:{h.hexdigest()[:16]}"


@dataclass(frozen=True)
class BrandPlacement:
    """Where :func:`draw_brand` drew each element (``(x, y, w, h)``; None: not drawn)."""

    logo_box: Box | None = None
    headline_box: Box | None = None
    price_box: Box | None = None
    cta_box: Box | None = None


def _intersects(a: Box, b: Box) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _beside_or_below(box: Box, logo: Box, gap: int) -> Box:
    """``box`` shrunk clear of ``logo`` (which overlaps it), keeping the larger remainder:
    beside the logo (narrower) or above/below it (shorter)."""
    x, y, w, h = box
    lx, ly, lw, lh = logo
    if lx <= x + w / 2:  # logo on the left part: text to its right
        side = (lx + lw + gap, y, x + w - (lx + lw + gap), h)
    else:
        side = (x, y, lx - gap - x, h)
    if ly <= y + h / 2:  # logo at the top: text below it
        vert = (x, ly + lh + gap, w, y + h - (ly + lh + gap))
    else:
        vert = (x, y, w, ly - gap - y)
    best = max((side, vert), key=lambda b: max(0, b[2]) * max(0, b[3]))
    return (best[0], best[1], max(8, best[2]), max(8, best[3]))


def _corner_box(size: tuple[int, int], w: int, h: int, corner: str, margin: int) -> Box:
    W, H = size
    x = margin if corner.endswith("left") else W - margin - w
    y = margin if corner.startswith("top") else H - margin - h
    return (x, y, w, h)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: float) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


def _fit_lines(
    draw: ImageDraw.ImageDraw, brand: Brand, text: str, w: int, h: int, start: int
) -> tuple[Any, list[str], int]:
    """The largest font size (from ``start`` down) whose wrapped lines fit ``w`` x ``h``."""
    size = max(8, start)
    while True:
        font = brand.font(size)
        lines = _wrap(draw, text, font, w)
        widest = max(draw.textlength(ln, font=font) for ln in lines)
        if (len(lines) * size * 1.2 <= h and widest <= w) or size <= 8:
            return font, lines, size
        size = max(8, int(size * 0.88))


def draw_brand(
    image: Image.Image,
    brand: Brand,
    *,
    headline: str | None,
    price: float | None,
    text_box: Box | None,
    product_box: Box,
    margin: int | None = None,
) -> BrandPlacement:
    """Paint logo, headline, price and call to action on ``image`` (RGB, in place).

    The logo goes in the kit's corner. The headline block (headline, then a row with the
    price and the CTA button) fills ``text_box``, below the logo when they would overlap;
    without a text box, price and CTA sit in the bottom corner away from the product.
    The product is pasted afterwards by the caller, so its pixels are never touched.
    """
    kit = brand.kit
    W, H = image.size
    m = margin if margin is not None else max(4, round(min(W, H) * 0.04))
    draw = ImageDraw.Draw(image, "RGBA")
    logo_box: Box | None = None
    if brand.logo is not None:
        lh = max(4, round(H * kit.logo_height_frac))
        lw = max(1, round(brand.logo.width * lh / brand.logo.height))
        if lw > W // 3:  # a wide wordmark: at most a third of the width, aspect kept
            lw, lh = W // 3, max(1, round(brand.logo.height * (W // 3) / brand.logo.width))
        logo = brand.logo.resize((lw, lh), Image.Resampling.LANCZOS)
        logo_box = _corner_box((W, H), lw, lh, kit.logo_position, m)
        image.paste(logo, logo_box[:2], logo)
    price_text = kit.price_text(price)
    cta_text = kit.cta or None
    if not (headline or price_text or cta_text):
        return BrandPlacement(logo_box=logo_box)
    if text_box is None:
        # No headline area: a compact block in the bottom corner away from the product.
        bw, bh = round(W * (0.34 if W > H else 0.6)), round(H * (0.16 if W > H else 0.1))
        left = product_box[0] + product_box[2] / 2 > W / 2
        text_box = _corner_box((W, H), bw, bh, "bottom-left" if left else "bottom-right", m)
    x, y, w, h = text_box
    if logo_box is not None and _intersects(logo_box, text_box):
        x, y, w, h = _beside_or_below(text_box, logo_box, m // 2)
    if parse_colour(kit.panel_colour)[3] > 0:
        draw.rounded_rectangle(
            (x, y, x + w, y + h), radius=max(4, h // 12), fill=parse_colour(kit.panel_colour)
        )
    pad = max(2, round(min(w, h) * 0.06))
    ix, iy, iw, ih = x + pad, y + pad, w - 2 * pad, h - 2 * pad
    has_row = bool(price_text or cta_text)
    row_h = round(ih * (0.34 if headline else 1.0)) if has_row else 0
    headline_box: Box | None = None
    if headline:
        hh = ih - row_h - (pad if has_row else 0)
        font, lines, size = _fit_lines(draw, brand, headline, iw, hh, start=max(10, hh // 2))
        ty = iy + (hh - len(lines) * size * 1.2) / 2
        ink = parse_colour(kit.headline_colour)
        for ln in lines:
            draw.text((ix, ty), ln, font=font, fill=ink)
            ty += size * 1.2
        headline_box = (ix, iy, iw, hh)
    price_box: Box | None = None
    cta_box: Box | None = None
    if has_row:
        ry = iy + ih - row_h
        # One size for price and CTA: the button (1.8 x the text size high, text plus 1.4 x
        # the size wide) and the price side by side fit the row.
        size = max(8, round(row_h / 1.8))
        row = f"{price_text or ''}{cta_text or ''}"
        while size > 8 and draw.textlength(row, font=brand.font(size)) + size * 3 > iw:
            size = int(size * 0.9)
        font = brand.font(size)
        cx = ix
        if price_text:
            tw = round(draw.textlength(price_text, font=font))
            ink = parse_colour(kit.price_colour)
            draw.text((ix, ry + row_h / 2), price_text, font=font, fill=ink, anchor="lm")
            price_box = (ix, ry, tw, row_h)
            cx = ix + tw + round(size * 0.8)
        if cta_text:
            bh = min(row_h, round(size * 1.8))
            bw = min(round(draw.textlength(cta_text, font=font) + size * 1.4), ix + iw - cx)
            cta_box = (cx, ry + (row_h - bh) // 2, max(1, bw), bh)
            bx, by, bw, bh = cta_box
            fill = parse_colour(kit.accent_colour)
            draw.rounded_rectangle((bx, by, bx + bw, by + bh), radius=bh // 2, fill=fill)
            ink = parse_colour(kit.cta_text_colour)
            draw.text((bx + bw / 2, by + bh / 2), cta_text, font=font, fill=ink, anchor="mm")
    return BrandPlacement(logo_box, headline_box, price_box, cta_box)


def kit_colour_pixels(image: Image.Image, box: Box, colour: str, *, tol: int = 0) -> int:
    """Pixels of ``image`` inside ``box`` within ``tol`` of ``colour`` (RGB): how much of an
    element was drawn in the kit's colour (tests, docs)."""
    x, y, w, h = box
    arr = np.asarray(image.convert("RGB"))[y : y + h, x : x + w].astype(np.int16)
    want = np.array(parse_colour(colour)[:3], dtype=np.int16)
    return int((np.abs(arr - want).max(axis=-1) <= tol).sum())


__all__ = [
    "BRAND_KIT_FILE",
    "Brand",
    "BrandKit",
    "BrandPlacement",
    "brand_id",
    "brand_kit_for",
    "default_font_path",
    "draw_brand",
    "kit_colour_pixels",
    "load_brand",
    "parse_colour",
    "read_brand_kit",
]
