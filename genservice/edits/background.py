"""``background``: the product kept, a new studio backdrop (a colour, optionally a vertical
gradient) with a soft contact shadow; ``remove-background``: a transparent PNG.

Product rule: every pixel with alpha == 1 (fully inside the cut-out) is copied from the
source (bit-exact). Soft edge pixels are ``a * F + (1 - a) * backdrop`` with ``F`` the
foreground colour re-estimated without the old background
(``genservice.imaging.cutout.estimate_foreground``), so no halo of the old backdrop remains.
With ``prompt`` (text) or ``terms`` (readable style terms, e.g. a shopper's taste profile
resolved by the api layer) and a ``generator``, the backdrop is a generated scene instead
(``genservice.edits.scene.generated_background``: the hero path's scene, same product rule).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from PIL import Image

from genservice.edits.base import (
    EditResult,
    check_image,
    edit_metadata,
    parse_colour,
    resolve_mask,
    split_alpha,
)

_OPTIONS = (
    "studio=COLOUR (hex or name), gradient=0..40 (L units, top lighter), shadow=0..1; or "
    "prompt=TEXT | terms=[...] with generator= (a HeroGenerator), seed=, shadow="
)
_SCENE_KEYS = {"prompt", "terms", "generator", "seed", "progress", "should_cancel"}


def studio_backdrop(
    size: tuple[int, int], colour: tuple[int, int, int], gradient: float = 0.0
) -> np.ndarray:
    """``(H, W, 3)`` uint8 backdrop of ``colour``; with ``gradient`` > 0 the CIELAB lightness
    runs from about ``+gradient / 2`` at the top to ``-gradient / 2`` at the bottom and is
    exactly ``colour``'s on row ``H // 2``."""
    w, h = size
    base = np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()
    if gradient <= 0:
        return base
    from genservice.edits.recolor import lab_to_srgb, srgb_to_lab

    lab = srgb_to_lab(np.array(colour, np.float64))
    dl = gradient * (h // 2 - np.arange(h)) / h  # 0 at row h // 2
    rows = np.tile(lab, (h, 1))
    rows[:, 0] = np.clip(rows[:, 0] + dl, 0.0, 100.0)
    rows_rgb = lab_to_srgb(rows)
    return np.ascontiguousarray(np.broadcast_to(rows_rgb[:, None, :], (h, w, 3)))


def contact_shade(alpha: np.ndarray, darkness: float) -> np.ndarray:
    """Multiplier ``(H, W)`` float32 in [1 - darkness, 1]: a soft ellipse under the product's
    lowest opaque row (90 % of its width) plus a tight occlusion line at the contact."""
    from scipy import ndimage

    H, W = alpha.shape
    cols = np.flatnonzero(alpha.max(axis=0) > 0.5)
    rows = np.flatnonzero(alpha.max(axis=1) > 0.5)
    if cols.size == 0 or darkness <= 0:
        return np.ones((H, W), np.float32)
    ph = rows[-1] + 1 - rows[0]
    cx, half_w = (cols[0] + cols[-1] + 1) / 2, 0.45 * (cols[-1] + 1 - cols[0])
    base_y, half_h = rows[-1] + 1, max(2.0, 0.035 * ph)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    ell = np.clip(1.0 - ((xx - cx) / half_w) ** 2 - ((yy - base_y) / half_h) ** 2, 0, 1)
    ell = ndimage.gaussian_filter(ell, sigma=max(1.0, half_h * 0.6))
    foot = np.zeros((H, W), np.float32)
    fy0, fy1 = max(0, rows[-1] - max(1, ph // 40)), min(H, base_y + max(1, ph // 60))
    foot[fy0:fy1, cols[0] : cols[-1] + 1] = 1.0
    foot = ndimage.gaussian_filter(foot, sigma=max(1.0, ph / 120))
    shade = np.clip(0.8 * ell / max(float(ell.max()), 1e-6) + 0.6 * foot, 0, 1)
    return (1.0 - darkness * shade).astype(np.float32)


class Background:
    """The ``background`` edit (see the module docstring)."""

    name = "background"

    def apply(
        self,
        image: Image.Image,
        *,
        mask: np.ndarray | Image.Image | None = None,
        studio: str = "",
        gradient: float = 0.0,
        shadow: float = 0.35,
        **params: Any,
    ) -> EditResult:
        """``image`` with its background replaced by a studio backdrop of colour ``studio``;
        ``gradient`` (0-40, CIELAB L) lightens the top and darkens the bottom, ``shadow``
        (0-1) is the contact shadow's darkness. Returns RGB. With ``prompt`` or ``terms``
        (and ``generator``; optional ``seed``, ``progress``, ``should_cancel``) the backdrop
        is a generated scene (``genservice.edits.scene``)."""
        if "user_id" in params or "profile" in params:
            raise ValueError(
                "background: a taste profile is resolved to its approved style terms by the "
                f"api layer (pass terms=[...]); options: {_OPTIONS}"
            )
        if "prompt" in params or "terms" in params:
            return self._scene(image, mask, studio, gradient, shadow, params)
        if params:
            raise ValueError(f"background: unknown parameters {sorted(params)}; {_OPTIONS}")
        if not studio:
            raise ValueError(f"studio: expected a colour (hex or name), got nothing; {_OPTIONS}")
        if not 0.0 <= gradient <= 40.0:
            raise ValueError(f"gradient: expected in [0, 40] (CIELAB L), got {gradient}")
        if not 0.0 <= shadow <= 1.0:
            raise ValueError(f"shadow: expected in [0, 1], got {shadow}")
        from genservice.imaging.cutout import estimate_foreground

        src = check_image(image)
        colour = parse_colour(studio, "studio")
        alpha, method, t_mask = resolve_mask(src, mask)
        t0 = time.perf_counter()
        rgb, _ = split_alpha(src)
        back = studio_backdrop(src.size, colour, gradient).astype(np.float32)
        back *= contact_shade(alpha, shadow)[..., None]
        fg = estimate_foreground(rgb, alpha).astype(np.float32)
        a = alpha[..., None]
        out = np.clip(np.round(a * fg + (1.0 - a) * back), 0, 255).astype(np.uint8)
        opaque = alpha >= 1.0
        out[opaque] = rgb[opaque]  # the product itself: copied, never recomputed
        seconds = time.perf_counter() - t0
        p = {"studio": studio, "gradient": gradient, "shadow": shadow}
        return EditResult(
            image=Image.fromarray(out, "RGB"),
            mask=alpha,
            op=self.name,
            params=p,
            timings={"mask": round(t_mask, 4), "edit": round(seconds, 4)},
            metadata=edit_metadata(self.name, p, src, model="studio", mask_method=method),
        )

    def _scene(
        self,
        image: Image.Image,
        mask: np.ndarray | Image.Image | None,
        studio: str,
        gradient: float,
        shadow: float,
        params: dict[str, Any],
    ) -> EditResult:
        from genservice.edits.scene import generated_background

        unknown = set(params) - _SCENE_KEYS
        if unknown or studio or gradient:
            extra = sorted(
                unknown | ({"studio"} if studio else set()) | ({"gradient"} if gradient else set())
            )
            raise ValueError(f"background: a generated scene takes no {extra}; {_OPTIONS}")
        generator = params.get("generator")
        if generator is None:
            raise ValueError("background: a scene from a prompt or terms needs a generator")
        return generated_background(
            generator,
            image,
            mask=mask,
            prompt=params.get("prompt"),
            terms=params.get("terms"),
            seed=int(params.get("seed", 0)),
            shadow=shadow,
            progress=params.get("progress"),
            should_cancel=params.get("should_cancel"),
        )


class RemoveBackground:
    """The ``remove-background`` edit: RGBA at the source size, alpha from the cut-out,
    colours of soft edge pixels re-estimated without the old background."""

    name = "remove-background"

    def apply(
        self, image: Image.Image, *, mask: np.ndarray | Image.Image | None = None, **params: Any
    ) -> EditResult:
        """``image`` as an RGBA with the background transparent."""
        if params:
            raise ValueError(f"remove-background: takes no parameters, got {sorted(params)}")
        from genservice.imaging.cutout import estimate_foreground

        src = check_image(image)
        alpha, method, t_mask = resolve_mask(src, mask)
        t0 = time.perf_counter()
        rgb, _ = split_alpha(src)
        a8 = np.round(alpha * 255.0).astype(np.uint8)
        out = np.dstack([estimate_foreground(rgb, alpha), a8])
        out[a8 == 0, :3] = 0  # fully transparent pixels carry no old background
        seconds = time.perf_counter() - t0
        return EditResult(
            image=Image.fromarray(out, "RGBA"),
            mask=alpha,
            op=self.name,
            params={},
            timings={"mask": round(t_mask, 4), "edit": round(seconds, 4)},
            metadata=edit_metadata(self.name, {}, src, model="cutout", mask_method=method),
        )
