"""Classic image adjustments (no learning): brightness, contrast, saturation, sharpness,
automatic exposure and a denoising pass. PIL in, PIL out; RGBA keeps its alpha untouched.
scikit-image is imported lazily, here only (for ``denoise``)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter


def _split(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    if not isinstance(image, Image.Image):
        raise ValueError(f"image: expected a PIL image, got {type(image).__name__}")
    if image.mode == "RGBA":
        return image.convert("RGB"), image.getchannel("A")
    return image.convert("RGB"), None


def _join(rgb: Image.Image, alpha: Image.Image | None) -> Image.Image:
    if alpha is None:
        return rgb
    out = rgb.convert("RGBA")
    out.putalpha(alpha)
    return out


def _factor(name: str, value: float) -> float:
    if not 0.0 <= value <= 4.0:
        raise ValueError(f"{name}: expected a factor in [0, 4] (1 = unchanged), got {value}")
    return float(value)


def brightness(image: Image.Image, factor: float) -> Image.Image:
    """Multiply brightness by ``factor`` (1 = unchanged, 0 = black)."""
    rgb, a = _split(image)
    return _join(ImageEnhance.Brightness(rgb).enhance(_factor("factor", factor)), a)


def contrast(image: Image.Image, factor: float) -> Image.Image:
    """Scale contrast about the mean grey by ``factor`` (1 = unchanged, 0 = flat grey)."""
    rgb, a = _split(image)
    return _join(ImageEnhance.Contrast(rgb).enhance(_factor("factor", factor)), a)


def saturation(image: Image.Image, factor: float) -> Image.Image:
    """Scale colour saturation by ``factor`` (1 = unchanged, 0 = greyscale)."""
    rgb, a = _split(image)
    return _join(ImageEnhance.Color(rgb).enhance(_factor("factor", factor)), a)


def sharpness(image: Image.Image, amount: float = 0.5, radius: float = 1.5) -> Image.Image:
    """Unsharp mask: add ``amount`` (0-4) times the detail above a Gaussian of ``radius``
    pixels, with a threshold of 2 grey levels so flat areas keep their noise level."""
    rgb, a = _split(image)
    if radius <= 0:
        raise ValueError(f"radius: expected > 0 pixels, got {radius}")
    pct = round(_factor("amount", amount) * 100)
    return _join(rgb.filter(ImageFilter.UnsharpMask(radius=radius, percent=pct, threshold=2)), a)


def auto_exposure(
    image: Image.Image,
    *,
    clip: float = 0.5,
    target_mid: float = 0.45,
    max_gain: float = 2.0,
) -> Image.Image:
    """Levels and gamma from the luminance histogram: the ``clip`` % darkest and brightest
    pixels map to black and white (stretch at most ``max_gain``), then a gamma moves the median
    luminance towards ``target_mid`` (in [0, 1]; gamma kept in [0.6, 1.6]). One curve for all
    channels, so hues are kept. Already well-exposed pictures change little."""
    rgb, a = _split(image)
    if not 0.0 <= clip < 10.0:
        raise ValueError(f"clip: expected a percentage in [0, 10), got {clip}")
    if not 0.05 <= target_mid <= 0.95:
        raise ValueError(f"target_mid: expected in [0.05, 0.95], got {target_mid}")
    arr = np.asarray(rgb, np.float32) / 255.0
    lum = arr @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    lo, hi = np.percentile(lum, [clip, 100.0 - clip])
    span = max(float(hi - lo), 1.0 / max_gain)
    lo = min(float(lo), 1.0 - span)
    stretched = np.clip((arr - lo) / span, 0.0, 1.0)
    mid = float(np.median(np.clip((lum - lo) / span, 1e-4, 1.0)))
    gamma = float(np.clip(np.log(target_mid) / np.log(max(min(mid, 0.999), 1e-4)), 0.6, 1.6))
    out = np.power(stretched, gamma)
    return _join(Image.fromarray(np.round(out * 255.0).astype(np.uint8), "RGB"), a)


def noise_sigma(arr: np.ndarray) -> float:
    """Gaussian noise sigma of ``arr`` ``(H, W, C)`` float in [0, 1], by Immerkaer's (1996)
    Laplacian-difference estimator, averaged over channels (edges bias it up a little)."""
    from scipy import ndimage

    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    h, w = arr.shape[:2]
    if min(h, w) < 3:
        return 0.0
    total = sum(
        float(np.abs(ndimage.convolve(arr[..., c], kernel)[1:-1, 1:-1]).sum())
        for c in range(arr.shape[2])
    )
    return total * float(np.sqrt(np.pi / 2)) / (6.0 * (w - 2) * (h - 2) * arr.shape[2])


def denoise(image: Image.Image, *, strength: float = 0.8) -> Image.Image:
    """Non-local-means denoising (scikit-image, fast mode) with the filter strength set to
    ``strength`` times the estimated noise sigma; a clean picture is barely touched."""
    from skimage.restoration import denoise_nl_means

    rgb, a = _split(image)
    if not 0.0 < strength <= 3.0:
        raise ValueError(f"strength: expected in (0, 3], got {strength}")
    arr = np.asarray(rgb, np.float32) / 255.0
    sigma = noise_sigma(arr)
    if sigma < 1e-3:
        return image
    out = denoise_nl_means(
        arr,
        h=strength * sigma,
        sigma=sigma,
        patch_size=5,
        patch_distance=6,
        fast_mode=True,
        channel_axis=-1,
    )
    return _join(Image.fromarray(np.round(np.clip(out, 0, 1) * 255.0).astype(np.uint8)), a)
