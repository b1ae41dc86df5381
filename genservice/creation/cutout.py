"""The cut-out of a created image (issue 21).

Creations are asked for as studio shots (``request.studio_prompt``), so most come back on a
plain, nearly flat backdrop. U^2-Net-p (``genservice.imaging.cutout``) alone drops thin parts
of such small, soft generations (a lamp's pole and base, chair legs, a mug's handle) and a
colour key alone keeps the contact shadow. :func:`creation_alpha` joins them by a stated
rule, logged, never silently:

* the backdrop is flat (at least ``MIN_STUDIO_FLATNESS`` of the border within
  ``FLOOD_TOLERANCE`` of its median colour): ``studio`` = U^2-Net-p's alpha joined (max) with
  a soft colour key against the border colour, where the key ignores shadow pixels (the
  backdrop darkened with its own hue: channel ratios to the backdrop within
  ``SHADOW_RATIO_SPREAD`` of each other and their mean in ``SHADOW_RATIO``), keeping only the
  key's regions that touch U^2-Net-p's product (or the largest one when U^2-Net-p found none),
  then the shadow pixels removed from the joined alpha (U^2-Net-p keeps them too);
* otherwise U^2-Net-p's cut-out as it is (``u2netp``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

#: The colour key is used only when this share of the border is the backdrop's colour.
MIN_STUDIO_FLATNESS = 0.9
#: Max channel difference (0-255) from the backdrop: below ``KEY_LOW`` background, above
#: ``KEY_HIGH`` product, linear between (a soft edge for a soft generation).
KEY_LOW, KEY_HIGH = 14.0, 40.0
#: Inside a shape guide's silhouette (a creation started from its category's guide,
#: ``creation.shape_guide``) a softer key is joined: the product stands there, and its pale or
#: thin parts (a white lamp shade, a bag's handle, chair legs) differ from the backdrop by less
#: than ``KEY_LOW``. Checked on training captions (``--captions validation``, guide 0.5):
#: category 0.90 -> 0.91 (200 captions; colour 0.945 both), 0.89 -> 0.91 (100; colour 0.93 ->
#: 0.92): a small gain, within the captions' noise; 4-12, 8-20, 10-24 and a guide grown by
#: 1-3 pixels gave the same.
GUIDE_KEY_LOW, GUIDE_KEY_HIGH = 6.0, 16.0
#: A shadow darkens the backdrop keeping its hue: channel ratios within this of each other ...
SHADOW_RATIO_SPREAD = 0.07
#: ... and their mean in this range (darker than a shadow is product: a black bag).
SHADOW_RATIO = (0.45, 0.97)


@dataclass(frozen=True)
class CreationCut:
    """``alpha``: ``(H, W)`` float32 in [0, 1]; ``method``: ``studio`` | ``u2netp`` |
    ``none``; ``flatness``: share of the border with the backdrop colour; ``reason``: the
    rule that chose the method."""

    alpha: np.ndarray
    method: str
    flatness: float
    reason: str


def shadow_mask(rgb: np.ndarray, backdrop: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: pixels that are the backdrop darkened without a hue of their own."""
    ratio = rgb.astype(np.float32) / np.maximum(backdrop, 1.0)
    spread = ratio.max(-1) - ratio.min(-1)
    mean = ratio.mean(-1)
    return (spread <= SHADOW_RATIO_SPREAD) & (mean >= SHADOW_RATIO[0]) & (mean <= SHADOW_RATIO[1])


def key_alpha(
    rgb: np.ndarray, backdrop: np.ndarray, low: float = KEY_LOW, high: float = KEY_HIGH
) -> np.ndarray:
    """Soft colour key: ``(H, W)`` float32, 0 up to ``low`` (max channel difference from the
    backdrop's colour), 1 at ``high`` or more, linear between; shadows 0."""
    d = np.abs(rgb.astype(np.float32) - backdrop).max(-1)
    a = np.clip((d - low) / (high - low), 0.0, 1.0)
    a[shadow_mask(rgb, backdrop)] = 0.0
    return a.astype(np.float32)


def creation_alpha(
    rgb: np.ndarray, u2_alpha: np.ndarray | None, guide: np.ndarray | None = None
) -> CreationCut:
    """The rule above for a created image ``rgb`` ``(H, W, 3)`` uint8 and U^2-Net-p's alpha
    of it (``(H, W)`` float32; None when U^2-Net-p found no product). ``guide``: bool
    ``(H, W)``, the shape guide the image was started from (None: none); on a flat backdrop
    the soft key at ``GUIDE_KEY_LOW``-``GUIDE_KEY_HIGH`` (shadows 0) is joined inside it."""
    from scipy import ndimage

    from genservice.imaging.cutout import border_colour, border_flatness

    flat = border_flatness(rgb)
    if flat < MIN_STUDIO_FLATNESS:
        if u2_alpha is None:
            return CreationCut(
                np.zeros(rgb.shape[:2], np.float32), "none", flat, "no flat backdrop, no u2netp"
            )
        reason = f"backdrop not flat ({flat:.2f} < {MIN_STUDIO_FLATNESS}): u2netp alone"
        return CreationCut(np.asarray(u2_alpha, np.float32), "u2netp", flat, reason)
    backdrop = border_colour(rgb)
    key = key_alpha(rgb, backdrop)
    labels, n = ndimage.label(key > 0.5, structure=np.ones((3, 3), bool))
    if u2_alpha is not None and (u2_alpha > 0.5).any():
        touching = np.unique(labels[(u2_alpha > 0.5) & (labels > 0)])
        alpha = np.maximum(np.asarray(u2_alpha, np.float32), key * np.isin(labels, touching))
        # U^2-Net-p often keeps the contact shadow: it goes here too.
        alpha[shadow_mask(rgb, backdrop)] = 0.0
        reason = f"flat backdrop ({flat:.2f}): u2netp joined with the colour key"
    elif n:
        sizes = np.bincount(labels.ravel())[1:]
        alpha = key * (labels == int(np.argmax(sizes)) + 1)
        reason = f"flat backdrop ({flat:.2f}), u2netp found nothing: the key's largest region"
    else:
        return CreationCut(
            np.zeros(rgb.shape[:2], np.float32), "none", flat, "flat backdrop, nothing on it"
        )
    # Soft key pixels around the kept regions stay (a soft edge); detached ones go, and so do
    # specks the shadow's removal cut off (under a tenth of the largest region).
    solid, k = ndimage.label(alpha > 0.5, structure=np.ones((3, 3), bool))
    if k > 1:
        sizes = np.bincount(solid.ravel())[1:]
        solid = np.isin(solid, np.flatnonzero(sizes >= 0.1 * sizes.max()) + 1)
    grown = ndimage.binary_dilation(solid > 0, iterations=2)
    alpha = np.where(grown, alpha, 0.0).astype(np.float32)
    if guide is not None:
        soft = key_alpha(rgb, backdrop, GUIDE_KEY_LOW, GUIDE_KEY_HIGH)
        alpha = np.maximum(alpha, soft * np.asarray(guide, bool)).astype(np.float32)
        reason += "; the softer key joined inside the shape guide"
    if not (alpha > 0.5).any():
        return CreationCut(alpha, "none", flat, reason + "; nothing left without the shadow")
    log.info("creation cut-out: studio (%s)", reason)
    return CreationCut(alpha, "studio", flat, reason)


__all__ = [
    "GUIDE_KEY_HIGH",
    "GUIDE_KEY_LOW",
    "KEY_HIGH",
    "KEY_LOW",
    "MIN_STUDIO_FLATNESS",
    "CreationCut",
    "creation_alpha",
    "key_alpha",
    "shadow_mask",
]
