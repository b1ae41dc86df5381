"""``adjust``: brightness, contrast, saturation, sharpness and auto-exposure
(``genservice.imaging.adjust``) as one edit. With a mask the adjusted pixels are blended in by
alpha and everything outside the mask is copied (bit-exact); without one the whole image
changes."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from PIL import Image

from genservice.edits.base import (
    EditResult,
    blend_in_mask,
    check_image,
    edit_metadata,
    join_alpha,
    resolve_mask,
    split_alpha,
)
from genservice.imaging import adjust as ops


class Adjust:
    """The ``adjust`` edit; steps run in the order auto-exposure, brightness, contrast,
    saturation, sharpness (levels first, then look, then detail)."""

    name = "adjust"

    def apply(
        self,
        image: Image.Image,
        *,
        mask: np.ndarray | Image.Image | None = None,
        brightness: float = 1.0,
        contrast: float = 1.0,
        saturation: float = 1.0,
        sharpness: float = 0.0,
        auto_exposure: bool = False,
        **params: Any,
    ) -> EditResult:
        """Factors are 1 = unchanged (0-4); ``sharpness`` is the unsharp amount (0 = off)."""
        if params:
            raise ValueError(
                f"adjust: unknown parameters {sorted(params)}; expected brightness, contrast, "
                "saturation, sharpness, auto_exposure"
            )
        src = check_image(image)
        alpha, method, t_mask = (None, "", 0.0) if mask is None else resolve_mask(src, mask)
        t0 = time.perf_counter()
        out = src
        if auto_exposure:
            out = ops.auto_exposure(out)
        if brightness != 1.0:
            out = ops.brightness(out, brightness)
        if contrast != 1.0:
            out = ops.contrast(out, contrast)
        if saturation != 1.0:
            out = ops.saturation(out, saturation)
        if sharpness:
            out = ops.sharpness(out, sharpness)
        if alpha is not None:
            rgb, a_chan = split_alpha(src)
            out = join_alpha(blend_in_mask(rgb, split_alpha(out)[0], alpha), a_chan)
        seconds = time.perf_counter() - t0
        p = {
            "brightness": brightness,
            "contrast": contrast,
            "saturation": saturation,
            "sharpness": sharpness,
            "auto_exposure": auto_exposure,
        }
        timings = {"edit": round(seconds, 4)}
        if alpha is not None:
            timings["mask"] = round(t_mask, 4)
        return EditResult(
            image=out,
            mask=alpha,
            op=self.name,
            params=p,
            timings=timings,
            metadata=edit_metadata(self.name, p, src, model="pil-enhance", mask_method=method),
        )
