"""Product-free scenes kept by brief hash, so a hero can be recomposed for another placement
without a new diffusion run (``genservice.recompose``).

The generator keeps the scene it generated for each brief (:meth:`SceneStore.keep`): on the
delivery path the backdrop at the model's native size, which never held the product; on the
classic path (inpainting around the product) the generated canvas with the product's pixels
filled from the surrounding backdrop (the same biharmonic fill that erases painted ghosts).
A scene is a small PNG, ``<root>/<hh>/<brief hash>.png``, written atomically; erasing a
brief's cache entry deletes its scene too (``api.services.privacy``).
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from data.files import atomic_write_bytes
from genservice.brief import Placement
from genservice.compose import PlacedProduct, remove_ghosts

log = logging.getLogger(__name__)
_HASH = re.compile(r"^[0-9a-f]{64}$")

__all__ = ["SceneInfo", "SceneStore", "product_free"]


@dataclass(frozen=True)
class SceneInfo:
    """What the delivery path did to a scene: native canvas ``(w, h)``, the share of it the
    ghost detector marked as painted product (filled when the path erases ghosts), the
    ground line (unit y), the scene before/after restoration, and ``marked``: bool (h, w) at
    ``native``'s size, the detector's regions as found (not grown; None when not judged)."""

    canvas: tuple[int, int]
    ghost_frac: float
    ground: float
    native: Image.Image
    delivered: Image.Image
    marked: np.ndarray | None = None


def product_free(scene: Image.Image, placed: PlacedProduct, placement: Placement) -> Image.Image:
    """``scene`` (any size, the placement's aspect) with the product of ``placed`` (box in
    placement pixels) filled from the backdrop around it: the mask is scaled to the scene,
    grown by two pixels and filled biharmonically (:func:`genservice.compose.remove_ghosts`)."""
    W, H = placement.size
    full = np.zeros((H, W), np.uint8)
    x, y, w, h = placed.box
    body = placed.mask if placed.alpha is None else placed.alpha > 0.0
    full[y : y + h, x : x + w][body] = 255
    mask = Image.fromarray(full, "L").resize(scene.size, Image.Resampling.BILINEAR)
    saliency = (np.asarray(mask, np.float32) / 255.0 > 0.0).astype(np.float32)
    clean, _ = remove_ghosts(scene, saliency, threshold=0.5, grow=2)
    return clean


class SceneStore:
    """Scenes by brief hash under ``root`` (created on first write). Thread- and process-safe:
    a scene is written to a temporary file and renamed into place."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, brief_hash: str) -> Path:
        """Where the scene of ``brief_hash`` lives (a 64-hex brief hash, else ValueError)."""
        if not _HASH.match(brief_hash):
            raise ValueError(f"brief_hash: expected 64 hex digits, got {brief_hash!r}")
        return self.root / brief_hash[:2] / f"{brief_hash}.png"

    def put(self, brief_hash: str, scene: Image.Image) -> Path:
        """Write ``scene`` (RGB PNG) for ``brief_hash``; returns its path."""
        buf = io.BytesIO()
        scene.convert("RGB").save(buf, format="PNG")
        return atomic_write_bytes(self.path(brief_hash), buf.getvalue())

    def keep(
        self,
        brief_hash: str,
        scene: Image.Image,
        placement: Placement,
        placed: PlacedProduct | None = None,
    ) -> bool:
        """Keep the generated ``scene`` of a brief; ``placed``: the product the scene holds
        (classic path), erased first. Never raises: a scene that cannot be kept only means a
        later recomposition is refused (logged). True when kept."""
        try:
            clean = scene if placed is None else product_free(scene, placed, placement)
            self.put(brief_hash, clean)
            return True
        except Exception as exc:  # the hero is fine without its scene
            log.warning("scene of brief %s not kept: %s", brief_hash[:12], exc)
            return False

    def get(self, brief_hash: str) -> Image.Image | None:
        """The scene of ``brief_hash`` (RGB), or None when none was kept."""
        path = self.path(brief_hash)
        if not path.is_file():
            return None
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")

    def exists(self, brief_hash: str) -> bool:
        """Whether a scene of ``brief_hash`` was kept (False for anything not a brief hash)."""
        return bool(_HASH.match(brief_hash)) and self.path(brief_hash).is_file()

    def delete(self, brief_hash: str) -> bool:
        """Delete the scene of ``brief_hash``; True when there was one (never one for a
        key that is not a brief hash)."""
        if not _HASH.match(brief_hash):
            return False
        try:
            self.path(brief_hash).unlink()
            return True
        except FileNotFoundError:
            return False
