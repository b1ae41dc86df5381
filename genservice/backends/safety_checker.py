"""diffusers' Stable Diffusion safety checker (shipped in a model folder) as a ``SafetyChecker``."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


class DiffusersSafetyChecker:
    """diffusers' ``StableDiffusionSafetyChecker`` behind the ``SafetyChecker`` protocol."""

    name = "diffusers"

    def __init__(self, checker: Any, feature_extractor: Any, device: str = "cpu") -> None:
        self._checker = checker.to(device).eval()
        self._fe = feature_extractor
        self._device = device
        self._lock = threading.Lock()

    @classmethod
    def from_folder(cls, path: str, *, device: str = "cpu") -> DiffusersSafetyChecker | None:
        """The checker a model folder ships (``safety_checker/``), or None when it has none."""
        index = Path(path) / "model_index.json"
        if not index.is_file():
            return None
        entry = json.loads(index.read_text()).get("safety_checker")
        if not entry or entry[0] is None or not (Path(path) / "safety_checker").is_dir():
            return None
        from diffusers.pipelines.stable_diffusion.safety_checker import (
            StableDiffusionSafetyChecker,
        )
        from transformers import CLIPImageProcessor

        checker = StableDiffusionSafetyChecker.from_pretrained(path, subfolder="safety_checker")
        fe = CLIPImageProcessor.from_pretrained(path, subfolder="feature_extractor")
        return cls(checker, fe, device=device)

    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        """True for each flagged image."""
        import torch

        arrays = np.stack(
            [np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]
        )
        clip_input = self._fe([im.convert("RGB") for im in images], return_tensors="pt")
        with self._lock, torch.no_grad():
            dtype = next(self._checker.parameters()).dtype
            _, flags = self._checker(
                images=arrays, clip_input=clip_input.pixel_values.to(self._device, dtype)
            )
        return [bool(f) for f in flags]
