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


@dataclass
class SkinToneHeuristicChecker:
    """A crude, model-free NSFW proxy: flags an image when more than ``max_skin_fraction`` of
    its pixels fall in a YCbCr skin-tone range. For models that ship no safety checker; it
    over-flags beige scenes rather than under-flagging nudity (tune ``max_skin_fraction``)."""

    max_skin_fraction: float = 0.6
    name: str = "skin-heuristic"

    def __post_init__(self) -> None:
        if not 0.0 < self.max_skin_fraction <= 1.0:
            raise ValueError(f"max_skin_fraction: expected in (0, 1], got {self.max_skin_fraction}")

    def skin_fraction(self, image: Image.Image) -> float:
        """Fraction of pixels in the skin range (Cb 77-127, Cr 133-173, Y > 40)."""
        ycc = np.asarray(image.convert("YCbCr"), dtype=np.int16)
        y, cb, cr = ycc[..., 0], ycc[..., 1], ycc[..., 2]
        skin = (y > 40) & (cb >= 77) & (cb <= 127) & (cr >= 133) & (cr <= 173)
        return float(skin.mean())

    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        return [self.skin_fraction(im) > self.max_skin_fraction for im in images]


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
            f"safety checker {getattr(checker, 'name', type(checker).__name__)!r} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if len(flags) != len(images):
        raise SafetyViolation(
            f"safety checker returned {len(flags)} verdicts for {len(images)} images"
        )
    flagged = [i for i, f in enumerate(flags) if f]
    if flagged:
        raise SafetyViolation(
            f"safety checker {getattr(checker, 'name', '?')!r} flagged image(s) {flagged}"
        )


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
