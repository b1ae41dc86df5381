"""The metadata stored with a hero image: PNG text chunks ``tailorshot:<key>`` (or an EXIF
description for JPEG/WebP), only the allowed keys, never personal data."""

from __future__ import annotations

import io

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from genservice.compose import check_gain

#: The only metadata keys ever written (never a user id or other personal data).
#: ``product_gain`` ("r,g,b") is written only when the product's light was matched to the scene.
METADATA_KEYS = ("model", "seed", "brief_hash", "product_box", "product_gain")
#: Prefix of our PNG text chunks (edits write theirs with it too, so one reader finds both).
PREFIX = "tailorshot:"


def hero_metadata(
    *,
    model: str,
    seed: int,
    brief_hash: str,
    box: tuple[int, int, int, int],
    gain: tuple[float, float, float] | None = None,
) -> dict[str, str]:
    """The metadata stored with a hero (model, seed, brief hash, product box ``x,y,w,h``, and
    the product's per-channel gain ``r,g,b`` when it is not 1)."""
    meta = {
        "model": str(model)[:256],
        "seed": str(int(seed)),
        "brief_hash": str(brief_hash),
        "product_box": ",".join(str(int(v)) for v in box),
    }
    if gain is not None and tuple(gain) != (1.0, 1.0, 1.0):
        meta["product_gain"] = ",".join(f"{float(g):.4f}" for g in check_gain(gain))
    return meta


def png_info(metadata: dict[str, str]) -> PngInfo:
    """PNG text chunks for ``metadata``; only :data:`METADATA_KEYS` are allowed."""
    unknown = set(metadata) - set(METADATA_KEYS)
    if unknown:
        raise ValueError(f"metadata: only {METADATA_KEYS} may be stored, got {sorted(unknown)}")
    info = PngInfo()
    for k in METADATA_KEYS:
        if k in metadata:
            info.add_text(PREFIX + k, str(metadata[k]))
    return info


def read_metadata(data: bytes | Image.Image) -> dict[str, str]:
    """Read our metadata back from PNG bytes / an opened image."""
    img = Image.open(io.BytesIO(data)) if isinstance(data, bytes) else data
    text = dict(getattr(img, "text", {}) or {})
    if not text and "exif" in img.info:
        import json

        exif = img.getexif()
        desc = exif.get(0x010E)
        if desc:
            return {k: str(v) for k, v in json.loads(desc).items() if k in METADATA_KEYS}
    return {k[len(PREFIX) :]: v for k, v in text.items() if k.startswith(PREFIX)}


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``"x,y,w,h"`` → tuple of ints."""
    parts = [int(p) for p in text.split(",")]
    if len(parts) != 4:
        raise ValueError(f"product_box: expected 'x,y,w,h', got {text!r}")
    return (parts[0], parts[1], parts[2], parts[3])
