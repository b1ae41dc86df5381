"""``restore``: learned super-resolution (``genservice.imaging.restore``, Real-ESRGAN via
torch, imported lazily there) with optional denoising and auto-exposure, as an edit."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from genservice.edits.base import EditResult, check_image, edit_metadata


class Restore:
    """The ``restore`` edit: the whole image is enlarged (no mask)."""

    name = "restore"

    def apply(
        self,
        image: Image.Image,
        *,
        mask: np.ndarray | Image.Image | None = None,
        scale: int = 4,
        denoise: bool = False,
        auto_exposure: bool = False,
        progress: Callable[[int, int], None] | None = None,
        **params: Any,
    ) -> EditResult:
        """``image`` enlarged ``scale`` (2 or 4) times; ``progress(done, total)`` per tile."""
        from genservice.imaging.restore import DEFAULT_MODEL, restore

        if params:
            raise ValueError(
                f"restore: unknown parameters {sorted(params)}; expected scale, denoise, "
                "auto_exposure"
            )
        if mask is not None:
            raise ValueError("mask: restore works on the whole image; pass mask=None")
        src = check_image(image)
        t0 = time.perf_counter()
        out = restore(
            src, scale=scale, denoise=denoise, auto_exposure=auto_exposure, progress=progress
        )
        seconds = time.perf_counter() - t0
        p = {"scale": scale, "denoise": denoise, "auto_exposure": auto_exposure}
        return EditResult(
            image=out,
            mask=None,
            op=self.name,
            params=p,
            timings={"edit": round(seconds, 4)},
            metadata=edit_metadata(self.name, p, src, model=DEFAULT_MODEL),
        )
