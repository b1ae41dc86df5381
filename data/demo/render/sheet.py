"""Looking at renders: the dominant named colour of an object, contact sheets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from data.demo.attributes import (
    COLOUR_NAMES,
    nearest_colour_index,
)


def dominant_colour(image: Image.Image, mask: np.ndarray | None = None) -> str:
    """The named colour most pixels of the object are nearest to (CIELAB).

    Object pixels: ``alpha > 127`` for RGBA images, else ``mask`` (bool ``(h, w)``), else pixels
    that differ clearly from the median border colour (a plain background).
    """
    arr = np.asarray(image.convert("RGBA") if image.mode != "RGBA" else image, np.float32)
    if mask is None:
        if image.mode == "RGBA":
            mask = arr[..., 3] > 127
        else:
            border = np.concatenate([arr[0, :, :3], arr[-1, :, :3], arr[:, 0, :3], arr[:, -1, :3]])
            bg = np.median(border, axis=0)
            mask = np.abs(arr[..., :3] - bg).sum(axis=2) > 40
    pix = arr[..., :3][mask]
    if pix.size == 0:
        raise ValueError("image: no object pixels found (empty alpha or mask)")
    counts = np.bincount(nearest_colour_index(pix), minlength=len(COLOUR_NAMES))
    return COLOUR_NAMES[int(counts.argmax())]


def contact_sheet(
    images: Sequence[Image.Image],
    captions: Sequence[str] | None = None,
    *,
    cols: int = 8,
    cell: int = 160,
    caption_lines: int = 3,
    cell_height: int | None = None,
) -> Image.Image:
    """Tile ``images`` (any mode, fitted into ``cell`` x ``cell_height`` px, default square,
    aspect kept) into an RGB grid with wrapped captions.

    Returns RGB ``(cols * cell) x (rows * (cell_height + caption height))``.
    """
    import textwrap

    from PIL import ImageFont, ImageOps

    if not images:
        raise ValueError("images: expected at least one image, got none")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"captions: expected {len(images)} captions, got {len(captions)}")
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont
    try:
        font = ImageFont.load_default(size=max(9, cell // 14))
    except TypeError:  # Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    line_h = max(10, cell // 12)
    cap_h = caption_lines * line_h + 6 if captions is not None else 0
    ch = cell if cell_height is None else cell_height
    if ch < 16:
        raise ValueError(f"cell_height: expected >= 16 px, got {ch}")
    rows = (len(images) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cell, rows * (ch + cap_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    wrap = max(8, int(cell / (line_h * 0.52)))
    for i, img in enumerate(images):
        x, y = (i % cols) * cell, (i // cols) * (ch + cap_h)
        # Fit, never stretch: a banner or story hero keeps its aspect ratio in its cell.
        tile = ImageOps.contain(img.convert("RGBA"), (cell - 8, ch - 8), Image.Resampling.LANCZOS)
        bg = Image.new("RGBA", tile.size, (255, 255, 255, 255))
        ox, oy = (cell - 8 - tile.width) // 2, (ch - 8 - tile.height) // 2
        sheet.paste(Image.alpha_composite(bg, tile).convert("RGB"), (x + 4 + ox, y + 4 + oy))
        if captions is not None:
            for k, line in enumerate(textwrap.wrap(captions[i], wrap)[:caption_lines]):
                draw.text((x + 4, y + ch + 2 + k * line_h), line, fill=(40, 40, 40), font=font)
    return sheet
