"""Shared helpers for the generation tests (imported by name; not a conftest so the jobs tests
in this folder keep theirs). The tiny random pipeline is built once per test process."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

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
