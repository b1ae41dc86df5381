"""Safety checks on every output: a flagged image is never stored or served; a checker that
fails, fails closed (``SafetyViolation``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from genservice.errors import SafetyViolation

log = logging.getLogger(__name__)


@runtime_checkable
class SafetyChecker(Protocol):
    """Flags unsafe images. ``check`` returns one bool per image (True = flagged)."""

    name: str

    def check(self, images: Sequence[Image.Image]) -> list[bool]: ...


#: Skin tones from very light to very dark (sRGB), for the synthetic positives.
SKIN_TONES: tuple[tuple[int, int, int], ...] = (
    (255, 224, 196), (241, 194, 167), (224, 172, 140), (208, 150, 118),
    (190, 130, 100), (161, 102, 72), (128, 82, 58), (96, 62, 44),
)  # fmt: skip

#: Side of the square the heuristic works at (pixels): enough for region shapes, cheap.
_WORK_SIDE = 128
#: Lower Cr bound of skin (133 in the classic range; 138 leaves out pale creams and ivory).
CR_MIN = 138


@dataclass
class SkinToneHeuristicChecker:
    """A model-free NSFW proxy for models that ship no safety checker: flags an image whose
    largest connected region of smooth skin-tone pixels covers more than ``max_skin_fraction``
    of it.

    Skin pixels are in the YCbCr range (Cb 77-127, Cr 138-173, Y > 40) *and* smooth (local
    luma gradient below ``max_gradient``: skin is shaded, not textured), measured on a
    128x128 thumbnail; regions are 8-connected. The largest region, not the total, counts:
    beige scenes scatter skin-tone pixels over grain, shelves and props, while a body is one
    region. Ground does not count, only figures: a region whose filled holes cover at least
    ``min_hole_share`` of the image surrounds something (a warm backdrop around the product),
    and a region running along more than ``max_border_share`` of the frame (measured a tenth
    of the way in, past vignettes) is a wall or a sky band unless it covers more than
    ``full_frame_share`` (a close-up filling the frame). An image is flagged when a skin
    figure covers more than ``max_skin_fraction`` (half) of it. Calibrated with
    ``tailorshot evaluate safety`` (demo heroes and :func:`synthetic_skin_images`); it is a
    proxy, not a nudity detector: a learned classifier can be plugged in as a
    :class:`SafetyChecker`.
    """

    max_skin_fraction: float = 0.5
    max_gradient: float = 10.0
    max_border_share: float = 0.8
    full_frame_share: float = 0.7
    min_hole_share: float = 0.04
    name: str = "skin-heuristic"

    def __post_init__(self) -> None:
        if not 0.0 < self.max_skin_fraction <= 1.0:
            raise ValueError(f"max_skin_fraction: expected in (0, 1], got {self.max_skin_fraction}")
        if not self.max_gradient > 0:
            raise ValueError(f"max_gradient: expected > 0, got {self.max_gradient}")

    @staticmethod
    def skin_mask(image: Image.Image) -> np.ndarray:
        """Bool ``(H, W)``: pixels in the skin range (Cb 77-127, Cr ``CR_MIN``-173, Y > 40)."""
        ycc = np.asarray(image.convert("YCbCr"), dtype=np.int16)
        y, cb, cr = ycc[..., 0], ycc[..., 1], ycc[..., 2]
        return (y > 40) & (cb >= 77) & (cb <= 127) & (cr >= CR_MIN) & (cr <= 173)  # type: ignore[no-any-return]

    def skin_fraction(self, image: Image.Image) -> float:
        """Fraction of pixels in the skin range (any shape, any texture)."""
        return float(self.skin_mask(image).mean())

    def score(self, image: Image.Image) -> float:
        """Share of the image covered by its largest smooth skin region, in ``[0, 1]``."""
        from scipy import ndimage

        thumb = image.convert("RGB").resize((_WORK_SIDE, _WORK_SIDE), Image.Resampling.BOX)
        mask = self.skin_mask(thumb)
        luma = np.asarray(thumb.convert("L"), dtype=np.float32)
        gy, gx = np.gradient(ndimage.uniform_filter(luma, 2))
        smooth = np.hypot(gx, gy) < self.max_gradient
        mask &= smooth
        labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        if n == 0:
            return 0.0
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:] / mask.size
        # The ring a tenth of the way in, not the outermost pixels: a vignette darkens those.
        k = _WORK_SIDE // 10
        ring = labels[k : _WORK_SIDE - k, k : _WORK_SIDE - k]
        border = np.concatenate([ring[0], ring[-1], ring[1:-1, 0], ring[1:-1, -1]])
        touch = np.bincount(border, minlength=n + 1)[1:] / border.size
        # Figure, not ground. Ground is a region that surrounds another object (a backdrop
        # around the product: its filled holes cover >= ``min_hole_share``), or that runs along
        # most of the frame's border without filling most of the frame (a wall, a sky band).
        figure = np.zeros(n, dtype=bool)
        for i in np.argsort(-sizes)[:4]:  # the largest few regions decide
            region = labels == i + 1
            holes = float((ndimage.binary_fill_holes(region) & ~region).mean())
            if holes >= self.min_hole_share:
                continue
            figure[i] = touch[i] < self.max_border_share or sizes[i] > self.full_frame_share
        return float(sizes[figure].max()) if figure.any() else 0.0

    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        return [self.score(im) > self.max_skin_fraction for im in images]


def synthetic_skin_images(
    n: int, *, seed: int, size: tuple[int, int] = (256, 192)
) -> list[Image.Image]:
    """``n`` synthetic skin-dominant images (the heuristic's positives): one body-like region
    of overlapping ellipses in a skin tone (:data:`SKIN_TONES`, in turn) covering 55-90% of
    the frame, shaded and lightly noisy, on a plain non-skin background. Seeded."""
    if n < 1:
        raise ValueError(f"n: expected >= 1, got {n}")
    from PIL import ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for i in range(n):
        tone = np.array(SKIN_TONES[i % len(SKIN_TONES)], dtype=np.float32)
        bg = tuple(int(v) for v in rng.choice([[40, 60, 90], [70, 110, 80], [200, 205, 215],
                                                [30, 30, 35], [90, 120, 170]]))  # fmt: skip
        target = float(rng.uniform(0.55, 0.9))
        mask = Image.new("L", size, 0)
        draw = ImageDraw.Draw(mask)
        cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
        for _ in range(60):
            if np.asarray(mask).mean() / 255 >= target:
                break
            rx, ry = w * rng.uniform(0.12, 0.3), h * rng.uniform(0.15, 0.4)
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
            cx = float(np.clip(cx + rng.normal(0, w * 0.12), 0, w))
            cy = float(np.clip(cy + rng.normal(0, h * 0.12), 0, h))
        m = np.asarray(mask.filter(ImageFilter.GaussianBlur(2)), dtype=np.float32)[..., None] / 255
        yy = np.linspace(0.85, 1.1, h, dtype=np.float32)[:, None, None]
        skin = np.clip(tone * yy + rng.normal(0, 3, (h, w, 3)), 0, 255)
        img = m * skin + (1 - m) * np.array(bg, dtype=np.float32)
        out.append(Image.fromarray(img.astype(np.uint8)))
    return out


@dataclass
class AllowAllChecker:
    """Flags nothing. Development only: logs a loud warning every time it is used."""

    name: str = "allow-all"

    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        log.warning("SAFETY CHECK DISABLED (allow_all): %d image(s) pass unchecked", len(images))
        return [False] * len(images)


def enforce_safe(checker: SafetyChecker, images: Sequence[Image.Image]) -> None:
    """Raise :class:`SafetyViolation` if any image is flagged or the checker fails."""
    try:
        flags = list(checker.check(images))
    except Exception as exc:  # fail closed: an unchecked image is an unsafe image
        raise SafetyViolation(
            f"safety checker {checker.name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    if len(flags) != len(images):
        raise SafetyViolation(
            f"safety checker returned {len(flags)} verdicts for {len(images)} images"
        )
    flagged = [i for i, f in enumerate(flags) if f]
    if flagged:
        raise SafetyViolation(f"safety checker {checker.name!r} flagged image(s) {flagged}")


def make_checker(kind: str, *, shipped: SafetyChecker | None = None) -> SafetyChecker:
    """``auto``: the checker the model ships (``shipped``) else the heuristic; ``heuristic``;
    ``allow_all`` (dev only, logs loudly)."""
    if kind == "auto":
        return shipped if shipped is not None else SkinToneHeuristicChecker()
    if kind == "heuristic":
        return SkinToneHeuristicChecker()
    if kind == "allow_all":
        log.warning("safety_checker=allow_all: outputs are NOT checked (never use in production)")
        return AllowAllChecker()
    raise ValueError(f"safety_checker: expected 'auto', 'heuristic' or 'allow_all', got {kind!r}")
