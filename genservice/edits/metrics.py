"""Measures of the edit rules, shared by tests and ``bench/bench_edits.py``.

- ``recolor_scores``: CIEDE2000 between the mean CIELAB colour inside the mask (alpha >= 0.5)
  and the target; SSIM (data range 100) of CIELAB L inside the mask against the original's,
  after removing the intended global lightness shift (``alpha * (mean L' - mean L)``), so it
  scores the luminance structure and contrast, not the new lightness; the count of changed
  pixels outside the mask (alpha == 0).
- ``material_scores``: colour: CIEDE2000 between the mean CIELAB colour inside the mask and
  the texture's mean colour; frequency: the ratio of high-frequency energy (variance of
  ``L - gaussian(L, 2 px)``) inside the eroded mask away from the product's own dark lines
  (which the op keeps), edit / texture as laid (1 = same); shading:
  Pearson correlation, inside the mask, between the original's L and the lightness the edit
  added to the texture (``L_edit - L_texture``), both smoothed at the op's shading scale - so a
  texture's own large features (marble veins) do not count as shading, and an unshaded texture
  scores 0 (smoothing is normalised over the opaque pixels, alpha >= 0.999); changed pixels
  outside the mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image


def _lab(image: Image.Image) -> np.ndarray:
    from genservice.edits.recolor import srgb_to_lab

    return srgb_to_lab(np.asarray(image.convert("RGB")))


def outside_changed(before: Image.Image, after: Image.Image, alpha: np.ndarray) -> int:
    """Pixels with alpha == 0 whose bytes differ between ``before`` and ``after``."""
    a, b = np.asarray(before), np.asarray(after)
    if a.shape != b.shape:
        raise ValueError(f"after: expected shape {a.shape}, got {b.shape}")
    diff = (a != b).reshape(a.shape[0], a.shape[1], -1).any(axis=-1)
    return int((diff & (alpha == 0)).sum())


def recolor_scores(
    before: Image.Image, after: Image.Image, alpha: np.ndarray, target: tuple[int, int, int]
) -> dict[str, Any]:
    """``delta_e`` (float), ``ssim`` (float), ``outside_changed`` (int); see the module."""
    from skimage.color import deltaE_ciede2000
    from skimage.metrics import structural_similarity

    from genservice.edits.recolor import srgb_to_lab

    inside = alpha >= 0.5
    lab0, lab1 = _lab(before), _lab(after)
    t_lab = srgb_to_lab(np.array(target, np.float64))
    de = float(deltaE_ciede2000(lab1[inside].mean(axis=0), t_lab))
    l0, l1 = lab0[..., 0], lab1[..., 0]
    shift = float(l1[inside].mean() - l0[inside].mean())
    _, full = structural_similarity(l0, l1 - shift * alpha, data_range=100.0, full=True)
    return {
        "delta_e": round(de, 3),
        "ssim": round(float(full[inside].mean()), 4),
        "outside_changed": outside_changed(before, after, alpha),
    }


def _hf_energy(lum: np.ndarray, where: np.ndarray) -> float:
    from scipy import ndimage

    return float(np.var((lum - ndimage.gaussian_filter(lum, 2.0))[where]))


def material_scores(
    before: Image.Image, after: Image.Image, alpha: np.ndarray, laid: np.ndarray, sigma: float
) -> dict[str, Any]:
    """``delta_e``, ``hf_ratio``, ``shading_corr``, ``outside_changed``. ``laid`` is the
    texture as tiled over the image ``(H, W, 3)`` uint8, ``sigma`` the shading scale (px)."""
    from scipy import ndimage
    from skimage.color import deltaE_ciede2000

    from genservice.edits.recolor import srgb_to_lab

    inside = alpha >= 0.5
    from genservice.edits.material import seam_sigma, seams

    # Frequency content is measured away from the product's own lines (the op keeps those).
    lines = seams(np.asarray(before.convert("RGB")), seam_sigma(sigma)) < 1.0
    core = ndimage.binary_erosion(inside, iterations=4) & ~ndimage.binary_dilation(
        lines, iterations=2
    )
    lab0, lab1, labt = _lab(before), _lab(after), srgb_to_lab(laid)
    de = float(deltaE_ciede2000(lab1[inside].mean(axis=0), labt[inside].mean(axis=0)))
    hf = _hf_energy(lab1[..., 0], core) / max(_hf_energy(labt[..., 0], core), 1e-6)
    # Smoothed inside the opaque part only (normalised convolution), so the soft rim's blend
    # with the old backdrop is not mistaken for shading.
    solid = (alpha >= 0.999).astype(np.float64)
    den = np.maximum(ndimage.gaussian_filter(solid, sigma), 1e-6)
    s0 = (ndimage.gaussian_filter(lab0[..., 0] * solid, sigma) / den)[inside]
    s1 = (ndimage.gaussian_filter((lab1[..., 0] - labt[..., 0]) * solid, sigma) / den)[inside]
    corr = float(np.corrcoef(s0, s1)[0, 1]) if s1.std() > 0.1 and s0.std() > 0.1 else 0.0
    return {
        "delta_e": round(de, 3),
        "hf_ratio": round(hf, 3),
        "shading_corr": round(corr, 4),
        "outside_changed": outside_changed(before, after, alpha),
    }
