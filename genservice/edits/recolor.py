"""``recolor``: the product (inside its mask) to a named colour or hex, keeping its shading,
pattern and texture. Works in CIELAB (scikit-image, imported lazily here).

The rule, for the pixels with alpha > 0 (statistics over alpha >= 0.5):

- lightness: ``L' = L_t + k (L - mean L)`` - the mean lands on the target's ``L_t`` and every
  pixel keeps its offset from the mean (the luminance detail); for very light or dark targets
  ``L_t`` may move up to :data:`MAX_L_SLACK` (3x for neutral targets) towards the
  middle to make room for the detail.
  ``k`` = 1 unless the 1st-99th percentile range would leave [0, 100] around ``L_t``; then
  ``k`` shrinks to fit, never below :data:`MIN_DETAIL`; what still overflows rolls off
  smoothly within :data:`KNEE` of 0 / 100 (``soft_clip``: monotone, the detail's order stays);
- chroma: ``(a', b') = (a_t, b_t) * r`` with ``r = (C + C0) / (mean C + C0)`` clipped to
  [0, :data:`MAX_CHROMA_RATIO`] - every pixel takes the target hue, with its chroma relative to
  the product's mean (a white stripe on a red shirt stays near white; a saturated part stays
  saturated). The mean (a', b') is the target's.

LAB -> sRGB: out-of-gamut colours lose chroma at constant L and hue (``lab_to_srgb``); a and b
are then boosted (at most three times, 2x each) until the mean chroma is the target's again.
Finally ``alpha * recoloured + (1 - alpha) * source`` on the mask's support only: outside the
mask the pixels are copied (bit-exact), the soft edge blends by alpha so the edge stays where
it was.
"""

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
    parse_colour,
    resolve_mask,
    split_alpha,
)
from genservice.edits.parts import narrow_to_part

#: Luminance detail is never scaled below this share (clipping takes the rest).
MIN_DETAIL = 0.8
#: Lightness within this of 0 or 100 is rolled off smoothly rather than clipped.
KNEE = 6.0
#: The mean lightness may miss the target's by this much (CIELAB L) to keep the detail: at
#: the extremes (white, black) that costs at most about 3 of CIEDE2000.
MAX_L_SLACK = 4.0
#: Chroma offset that keeps the ratio stable for near-grey products.
C0 = 8.0
#: A pixel's chroma is at most this multiple of the target's.
MAX_CHROMA_RATIO = 1.6


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB ``(..., 3)`` uint8 or 0-255 float -> CIELAB ``(..., 3)`` float64 (D65)."""
    from skimage.color import rgb2lab

    return np.asarray(rgb2lab(np.asarray(rgb, np.float64) / 255.0))


_WHITE = np.array([0.95047, 1.0, 1.08883])
_XYZ_TO_RGB = np.array(
    [
        [3.2404542, -1.5371385, -0.4985314],
        [-0.9692660, 1.8760108, 0.0415560],
        [0.0556434, -0.2040259, 1.0572252],
    ]
)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB ``(N, 3)`` -> sRGB ``(N, 3)`` uint8. Out-of-gamut colours keep their lightness
    and hue and lose chroma (bisection on a chroma scale, 8 steps, tested in linear light)
    instead of clipping each channel, which would change their lightness and flatten the
    shading."""

    def to_lin(x: np.ndarray) -> np.ndarray:
        """Linear sRGB, unclipped (CIELAB D65 -> XYZ -> linear); in gamut iff in [0, 1]."""
        fy = (x[:, 0] + 16.0) / 116.0
        f = np.column_stack([fy + x[:, 1] / 500.0, fy, fy - x[:, 2] / 200.0])
        xyz = np.where(f > 6 / 29, f * f * f, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE
        return np.asarray(xyz @ _XYZ_TO_RGB.T)

    def inside(lin: np.ndarray) -> np.ndarray:
        return np.asarray(((lin >= -1e-4) & (lin <= 1.0 + 1e-4)).all(axis=-1))

    lin = to_lin(lab)
    bad = ~inside(lin)
    if bad.any():
        # The gamut test needs no gamma (monotone), so the bisection stays cheap at 1024 px.
        sub = lab[bad]
        lo = np.zeros(len(sub))
        hi = np.ones(len(sub))
        for _ in range(8):
            mid = (lo + hi) / 2
            ok = inside(to_lin(np.column_stack([sub[:, 0], sub[:, 1] * mid, sub[:, 2] * mid])))
            lo = np.where(ok, mid, lo)
            hi = np.where(ok, hi, mid)
        lin[bad] = to_lin(np.column_stack([sub[:, 0], sub[:, 1] * lo, sub[:, 2] * lo]))
    c = np.clip(lin, 0.0, 1.0)
    rgb = np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def soft_clip(x: np.ndarray, knee: float = KNEE) -> np.ndarray:
    """Lightness ``x`` (any float) into [0, 100]: identity on [knee, 100 - knee], a tanh
    roll-off beyond, so clipped tails keep their ordering (detail) instead of going flat."""
    hi, lo = 100.0 - knee, knee
    out = x.copy()
    up, dn = x > hi, x < lo
    out[up] = hi + knee * np.tanh((x[up] - hi) / knee)
    out[dn] = lo - knee * np.tanh((lo - x[dn]) / knee)
    return out


def recolor_lab(lab: np.ndarray, target_lab: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The rule of this module on pixels ``lab`` ``(N, 3)``; ``weights`` ``(N,)`` bool marks
    the pixels the statistics use. Returns ``(N, 3)`` float64 LAB."""
    stat = lab[weights] if weights.any() else lab
    L, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    mean_l = float(stat[:, 0].mean())
    lo, hi = np.percentile(stat[:, 0], [1.0, 99.0])
    lt = float(target_lab[0])
    # Room for the detail: the mean may sit up to MAX_L_SLACK from L_t, towards the middle.
    room_lo, room_hi = mean_l - lo + KNEE / 2, 100.0 - KNEE / 2 - (hi - mean_l)
    # Neutral targets (white, black, grey) have no chroma to lose: they get 3x the slack.
    t_chroma = float(np.hypot(target_lab[1], target_lab[2]))
    slack = MAX_L_SLACK * (3.0 - 2.0 * min(t_chroma / 20.0, 1.0))
    if room_lo <= room_hi:
        lt = float(np.clip(np.clip(lt, room_lo, room_hi), lt - slack, lt + slack))
    k = 1.0
    if hi > mean_l:
        k = min(k, (100.0 - lt) / (hi - mean_l))
    if lo < mean_l:
        k = min(k, lt / (mean_l - lo))
    k = float(np.clip(k, MIN_DETAIL, 1.0))
    new_l = soft_clip(lt + k * (L - mean_l))
    chroma = np.hypot(a, b)
    mean_c = float(np.hypot(stat[:, 1], stat[:, 2]).mean())
    ratio = np.clip((chroma + C0) / (mean_c + C0), 0.0, MAX_CHROMA_RATIO)
    return np.stack([new_l, target_lab[1] * ratio, target_lab[2] * ratio], axis=-1)


class Recolor:
    """The ``recolor`` edit (see the module docstring for the rule)."""

    name = "recolor"

    def apply(
        self,
        image: Image.Image,
        *,
        mask: np.ndarray | Image.Image | None = None,
        colour: str = "",
        part: str = "",
        **params: Any,
    ) -> EditResult:
        """``image`` (RGB/RGBA) with the masked product recoloured to ``colour`` (hex or
        name); ``part`` narrows the mask to a part of the product (``genservice.edits.parts``).
        Returns an :class:`EditResult` of the same size and mode."""
        if params:
            raise ValueError(f"recolor: unknown parameters {sorted(params)}; expected colour, part")
        if not colour:
            raise ValueError("colour: expected #rrggbb hex or a colour name, got nothing")
        src = check_image(image)
        target = parse_colour(colour)
        alpha, method, t_mask = resolve_mask(src, mask)
        if part:
            alpha, method = narrow_to_part(src, alpha, method, part)
        t0 = time.perf_counter()
        rgb, a_chan = split_alpha(src)
        sup = alpha > 0.0
        lab = srgb_to_lab(rgb[sup])
        t_lab = srgb_to_lab(np.array(target, np.float64))
        inner = alpha[sup] >= 0.5
        new = recolor_lab(lab, t_lab, inner)
        # The gamut takes chroma from light / dark pixels of saturated targets: boost a and b
        # so the mean chroma after the gamut mapping is the target's (three times, at most 2x
        # each). The factor is found on a fixed subsample (<= 40k pixels: fast at 1024 px).
        t_c = float(np.hypot(t_lab[1], t_lab[2]))
        sample = new[inner] if inner.any() else new
        sample = sample[:: max(1, -(-len(sample) // 40_000))].copy()
        boost = 1.0
        for _ in range(3):
            got = srgb_to_lab(lab_to_srgb(sample)).mean(axis=0)
            got_c = float(np.hypot(got[1], got[2]))
            if t_c < 1.0 or got_c >= 0.97 * t_c:
                break
            step = min(t_c / max(got_c, 1e-3), 2.0)
            sample[:, 1:] *= step
            boost *= step
        new[:, 1:] *= boost
        pix = lab_to_srgb(new)
        edited = rgb.copy()
        edited[sup] = pix
        out = blend_in_mask(rgb, edited, alpha)
        seconds = time.perf_counter() - t0
        p = {"colour": colour, "rgb": "#{:02x}{:02x}{:02x}".format(*target)}
        if part:
            p["part"] = part
        return EditResult(
            image=join_alpha(out, a_chan),
            mask=alpha,
            op=self.name,
            params=p,
            timings={"mask": round(t_mask, 4), "edit": round(seconds, 4)},
            metadata=edit_metadata(self.name, p, src, model="lab-recolor", mask_method=method),
        )
