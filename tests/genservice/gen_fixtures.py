"""Shared helpers for the generation tests (imported by name; not a conftest so the jobs tests
in this folder keep theirs). The tiny random pipeline is built once per test process."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from genservice.generator import HeroImaging

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _one_thread() -> None:
    # The models here are tiny: on a shared 2-core machine, intra-op threads only spin.
    import torch

    torch.set_num_threads(1)


_one_thread()

_MODEL_DIR: Path | None = None


def tiny_model_dir() -> Path:
    """A tiny random SD pipeline (with IP-Adapter) built once per process (seed 0)."""
    global _MODEL_DIR
    if _MODEL_DIR is None:
        from genservice.training.random_pipelines import build_tiny_pipeline

        root = Path(tempfile.mkdtemp(prefix="tailorshot-tiny-"))
        atexit.register(shutil.rmtree, root, True)
        _MODEL_DIR = build_tiny_pipeline(root / "sd-tiny", seed=0)
    return _MODEL_DIR


def product_image(size: int = 96, colour: tuple[int, int, int] = (200, 30, 40)) -> Image.Image:
    """A studio shot: a red rounded body with a handle on a near-white background (RGB)."""
    im = Image.new("RGB", (size, size), (248, 248, 246))
    d = ImageDraw.Draw(im)
    s = size / 96
    d.rounded_rectangle((24 * s, 18 * s, 66 * s, 80 * s), radius=int(8 * s), fill=colour)
    d.ellipse((60 * s, 36 * s, 84 * s, 62 * s), outline=colour, width=max(2, int(6 * s)))
    return im


def reference_image(colour: tuple[int, int, int], size: int = 48) -> Image.Image:
    """A flat-colour reference with a stripe (distinct content per colour)."""
    arr = np.zeros((size, size, 3), dtype=np.uint8)
    arr[:] = colour
    arr[size // 3 : size // 2] = 255 - np.array(colour, dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


def stub_imaging(
    record: dict[str, Any] | None = None,
    saliency: Callable[[Image.Image], np.ndarray] | None = None,
) -> HeroImaging:
    """Fast stand-ins for the learned image parts: colour-key cut-out, nearest-neighbour
    'restoration' (its (source, target) sizes appended to ``record["sr"]``), and ``saliency``
    ((H, W) float32 map of painted products; none by default)."""
    from genservice.compose import cut_out as colour_key
    from genservice.generator import HeroImaging

    class _Found:
        def __init__(self, image: Image.Image) -> None:
            self.cutout = colour_key(image)
            self.alpha = np.ones(image.size[::-1], np.float32)
            self.method = "flood"
            self.confidence = 1.0

    def sr(image: Image.Image, size: tuple[int, int]) -> Image.Image:
        if record is not None:
            record.setdefault("sr", []).append((image.size, size))
        return image.resize(size, Image.Resampling.NEAREST)

    def no_ghosts(image: Image.Image) -> np.ndarray:
        return np.zeros(image.size[::-1], np.float32)

    return HeroImaging(
        cut_out=_Found,
        upscale_product=sr,
        upscale_scene=sr,
        saliency=saliency or no_ghosts,
        shadow=True,
    )
