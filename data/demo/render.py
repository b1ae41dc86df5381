"""Procedural product renderer: recognisable silhouettes per category, coloured, patterned,
textured by material, with a visible style cue; plus studio and scene backdrops.

Everything is drawn with Pillow and numpy on a 2x supersampled canvas in unit coordinates
(x right, y down, ``[0, 1]``) and reduced to ``size`` for anti-aliasing. Deterministic given
``seed``; a 128 px product takes a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from data.demo.attributes import (
    CATEGORIES,
    COLOUR_NAMES,
    COLOURS,
    LIGHTING,
    SETTINGS,
    nearest_colour_index,
    srgb_to_lab,
    validate_attributes,
)

SUPERSAMPLE = 2
GOLD = (214, 172, 60)
CREAM = (238, 228, 200)
Point = tuple[float, float]
Fill = str | tuple[int, int, int]  # "body", "shade:<factor>" or a fixed RGB colour


@dataclass
class _Layer:
    """One drawn part: a mask and how to fill it."""

    mask: Image.Image
    fill: Fill


@dataclass
class _Shape:
    """What a category drawer produces (unit coordinates)."""

    layers: list[_Layer] = field(default_factory=list)
    band_y: float = 0.7  # where a style band runs across the body
    accent: Point = (0.6, 0.3)  # where a badge or hardware goes
    fringe: tuple[float, float, float] | None = None  # (x0, x1, y): edge that tassels hang from
    cylinder: tuple[float, float] | None = None  # x-range shaded as a cylinder


class _Pen:
    """Draws on L masks with unit coordinates, placed by a scale ``k`` about the centre and a
    shift ``(dx, dy)`` (per-product jitter; scale + shift keep ellipses ellipses)."""

    def __init__(self, s: int, k: float = 1.0, dx: float = 0.0, dy: float = 0.0) -> None:
        self.s = s
        self.k, self.dx, self.dy = k, dx, dy

    def tx(self, x: float) -> float:
        """Unit x of the drawing -> unit x on the canvas."""
        return 0.5 + (x - 0.5) * self.k + self.dx

    def ty(self, y: float) -> float:
        """Unit y of the drawing -> unit y on the canvas."""
        return 0.5 + (y - 0.5) * self.k + self.dy

    def new(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        m = Image.new("L", (self.s, self.s), 0)
        return m, ImageDraw.Draw(m)

    def p(self, pts: Sequence[Point]) -> list[tuple[float, float]]:
        return [(self.tx(x) * self.s, self.ty(y) * self.s) for x, y in pts]

    def box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        return (
            self.tx(x0) * self.s,
            self.ty(y0) * self.s,
            self.tx(x1) * self.s,
            self.ty(y1) * self.s,
        )

    def w(self, width: float) -> int:
        return max(1, round(width * self.k * self.s))


def _mirror(left: Sequence[Point]) -> list[Point]:
    """A symmetric outline from its left half (top-centre first, going down)."""
    return list(left) + [(1.0 - x, y) for x, y in reversed(left)]


Jitter = Callable[[float, float], float]


def _chaikin(pts: Sequence[Point], rounds: int, keep: tuple[int, ...] = ()) -> list[Point]:
    """Round a closed polygon's corners by Chaikin subdivision; vertices in ``keep`` stay sharp."""
    out = list(pts)
    sharp = {out[i] for i in keep}
    for _ in range(rounds):
        nxt: list[Point] = []
        n = len(out)
        for i in range(n):
            p, q = out[i], out[(i + 1) % n]
            if p in sharp:
                nxt.append(p)
            else:
                nxt.append((0.75 * p[0] + 0.25 * q[0], 0.75 * p[1] + 0.25 * q[1]))
            if q not in sharp:
                nxt.append((0.25 * p[0] + 0.75 * q[0], 0.25 * p[1] + 0.75 * q[1]))
        out = nxt
    return out


def _tshirt(pen: _Pen, j: Jitter) -> _Shape:
    sw, bw, sl, hem = j(0.19, 0.22), j(0.19, 0.22), j(0.13, 0.17), j(0.86, 0.9)
    left = [
        (0.42, 0.13),
        (0.5 - sw - 0.02, 0.16),
        (0.5 - sw - 0.02 - sl, 0.30),
        (0.5 - sw - 0.02 - sl * 0.45, 0.41),
        (0.5 - bw, 0.35),
        (0.5 - bw, hem),
    ]
    body, d = pen.new()
    d.polygon(pen.p(_mirror(left)), fill=255)
    d.ellipse(pen.box(0.415, 0.07, 0.585, 0.21), fill=0)
    collar, dc = pen.new()
    dc.arc(pen.box(0.405, 0.06, 0.595, 0.22), 0, 180, fill=255, width=pen.w(0.02))
    seams, ds = pen.new()
    for sx in (1, -1):
        x_in = 0.5 + sx * (sw + 0.02 - 0.0)
        ds.line(pen.p([(x_in, 0.16), (0.5 + sx * bw, 0.36)]), fill=255, width=pen.w(0.008))
    return _Shape(
        layers=[_Layer(body, "body"), _Layer(collar, "shade:0.8"), _Layer(seams, "shade:0.75")],
        band_y=0.68,
        accent=(0.61, 0.3),
        fringe=(0.5 - bw, 0.5 + bw, hem),
    )


def _hoodie(pen: _Pen, j: Jitter) -> _Shape:
    sw, bw, hem = j(0.19, 0.22), j(0.2, 0.23), j(0.88, 0.91)
    left = [
        (0.44, 0.2),
        (0.5 - sw, 0.22),
        (0.5 - sw - 0.14, 0.76),
        (0.5 - sw - 0.06, 0.79),
        (0.5 - bw, 0.42),
        (0.5 - bw, hem),
    ]
    body, d = pen.new()
    d.polygon(pen.p(_mirror(left)), fill=255)
    d.ellipse(pen.box(0.33, 0.05, 0.67, 0.33), fill=255)
    hood_in, dh = pen.new()
    dh.ellipse(pen.box(0.41, 0.1, 0.59, 0.3), fill=255)
    trims, dt = pen.new()
    dt.rectangle(pen.box(0.5 - bw, hem - 0.04, 0.5 + bw, hem), fill=255)
    for sx in (1, -1):  # ribbed cuffs
        a = (0.5 + sx * (sw + 0.14), 0.76)
        b = (0.5 + sx * (sw + 0.06), 0.79)
        c = (0.5 + sx * (sw + 0.065), 0.74)
        e = (0.5 + sx * (sw + 0.13), 0.715)
        dt.polygon(pen.p([a, b, c, e]), fill=255)
    pocket, dp = pen.new()
    dp.polygon(
        pen.p([(0.37, 0.6), (0.63, 0.6), (0.68, 0.8), (0.32, 0.8)]), outline=255, width=pen.w(0.01)
    )
    strings, dst = pen.new()
    for x in (0.46, 0.54):
        dst.line(pen.p([(x, 0.28), (x - 0.005, 0.45)]), fill=255, width=pen.w(0.01))
    return _Shape(
        layers=[
            _Layer(body, "body"),
            _Layer(hood_in, "shade:0.4"),
            _Layer(trims, "shade:0.82"),
            _Layer(pocket, "shade:0.6"),
            _Layer(strings, (235, 235, 230)),
        ],
        band_y=0.5,
        accent=(0.6, 0.45),
        fringe=(0.5 - bw, 0.5 + bw, hem),
    )


def _dress(pen: _Pen, j: Jitter) -> _Shape:
    waist, flare, hem = j(0.1, 0.12), j(0.29, 0.34), j(0.9, 0.93)
    left = [(0.44, 0.16), (0.37, 0.18), (0.39, 0.3), (0.5 - waist, 0.42), (0.5 - flare, hem)]
    body, d = pen.new()
    d.polygon(pen.p(_mirror(left)), fill=255)
    d.ellipse(pen.box(0.43, 0.11, 0.57, 0.23), fill=0)
    for x in (0.385, 0.585):  # straps
        d.rectangle(pen.box(x, 0.05, x + 0.03, 0.19), fill=255)
    belt, db = pen.new()
    db.rectangle(pen.box(0.35, 0.405, 0.65, 0.445), fill=255)
    hem_m, dh = pen.new()
    dh.polygon(
        pen.p(
            [
                (0.5 - flare, hem),
                (0.5 - flare + 0.01, hem - 0.035),
                (0.5 + flare - 0.01, hem - 0.035),
                (0.5 + flare, hem),
            ]
        ),
        fill=255,
    )
    return _Shape(
        layers=[_Layer(body, "body"), _Layer(belt, "shade:0.65"), _Layer(hem_m, "shade:0.85")],
        band_y=0.72,
        accent=(0.5, 0.425),
        fringe=(0.5 - flare, 0.5 + flare, hem),
    )


def _sneaker(pen: _Pen, j: Jitter) -> _Shape:
    top = j(0.2, 0.25)
    toe_h = j(0.44, 0.48)
    # Side view, toe to the right: heel counter, collar dip, tongue, laced vamp, rounded toe.
    upper = [
        (0.1, 0.68),
        (0.08, top + 0.2),
        (0.1, top + 0.07),
        (0.16, top + 0.04),
        (0.3, top + 0.1),
        (0.38, top - 0.02),
        (0.46, top - 0.04),
        (0.5, top + 0.02),
        (0.62, top + 0.13),
        (0.76, toe_h - 0.01),
        (0.86, toe_h + 0.02),
        (0.92, toe_h + 0.06),
        (0.95, 0.6),
        (0.95, 0.68),
    ]
    upper = _chaikin(upper, 2, keep=(0, len(upper) - 1))
    body, d = pen.new()
    d.polygon(pen.p(upper), fill=255)
    collar, dc = pen.new()
    dc.polygon(
        pen.p([(0.16, top + 0.07), (0.3, top + 0.12), (0.37, top + 0.04), (0.3, top + 0.16)]),
        fill=255,
    )
    toe, dt = pen.new()
    dt.chord(pen.box(0.74, toe_h - 0.02, 1.0, 0.82), 180, 360, fill=255)
    toe_clip, dtc = pen.new()
    dtc.polygon(pen.p(upper), fill=255)
    toe = Image.fromarray(np.minimum(np.asarray(toe), np.asarray(toe_clip)), "L")
    heel, dh = pen.new()
    dh.polygon(pen.p([(0.1, 0.68), (0.08, top + 0.24), (0.2, top + 0.26), (0.22, 0.68)]), fill=255)
    sole, ds = pen.new()
    ds.rounded_rectangle(pen.box(0.06, 0.655, 0.97, 0.75), radius=pen.w(0.045), fill=255)
    sole_line, dl = pen.new()
    dl.line(pen.p([(0.09, 0.71), (0.95, 0.71)]), fill=255, width=pen.w(0.01))
    laces, dla = pen.new()
    for i in range(4):  # short strokes across the lacing
        cx, cy = 0.48 + i * 0.05, top + 0.05 + i * 0.048
        stroke = [(cx - 0.02, cy + 0.024), (cx + 0.024, cy - 0.02)]
        dla.line(pen.p(stroke), fill=255, width=pen.w(0.018))
    return _Shape(
        layers=[
            _Layer(body, "body"),
            _Layer(toe, "shade:0.86"),
            _Layer(heel, "shade:0.88"),
            _Layer(collar, "shade:0.35"),
            _Layer(sole, "sole"),
            _Layer(sole_line, (150, 150, 150)),
            _Layer(laces, "contrast"),
        ],
        band_y=0.5,
        accent=(0.3, 0.5),
        fringe=None,
    )


def _handbag(pen: _Pen, j: Jitter) -> _Shape:
    top, hh, wb = j(0.4, 0.44), j(0.22, 0.28), j(0.36, 0.4)
    body, d = pen.new()
    d.arc(pen.box(0.3, top - hh, 0.7, top + hh * 0.6), 180, 360, fill=255, width=pen.w(0.045))
    d.polygon(
        pen.p([(0.5 - wb + 0.07, top), (0.5 + wb - 0.07, top), (0.5 + wb, 0.87), (0.5 - wb, 0.87)]),
        fill=255,
    )
    flap, df = pen.new()
    df.polygon(
        pen.p(
            [
                (0.5 - wb + 0.07, top),
                (0.5 + wb - 0.07, top),
                (0.5 + wb - 0.045, 0.6),
                (0.5, 0.67),
                (0.5 - wb + 0.045, 0.6),
            ]
        ),
        fill=255,
    )
    flap_edge, de = pen.new()
    de.line(
        pen.p([(0.5 - wb + 0.045, 0.6), (0.5, 0.67), (0.5 + wb - 0.045, 0.6)]),
        fill=255,
        width=pen.w(0.012),
    )
    clasp, dcl = pen.new()
    dcl.rounded_rectangle(pen.box(0.47, 0.635, 0.53, 0.69), radius=pen.w(0.01), fill=255)
    return _Shape(
        layers=[
            _Layer(body, "body"),
            _Layer(flap, "shade:0.9"),
            _Layer(flap_edge, "shade:0.6"),
            _Layer(clasp, (170, 170, 176)),
        ],
        band_y=0.76,
        accent=(0.5, 0.66),
        fringe=(0.5 - wb, 0.5 + wb, 0.87),
    )


def _watch(pen: _Pen, j: Jitter) -> _Shape:
    r = j(0.19, 0.22)
    body, d = pen.new()
    d.polygon(pen.p([(0.37, 0.03), (0.63, 0.03), (0.66, 0.4), (0.34, 0.4)]), fill=255)
    d.polygon(pen.p([(0.34, 0.6), (0.66, 0.6), (0.63, 0.97), (0.37, 0.97)]), fill=255)
    d.ellipse(pen.box(0.5 - r, 0.5 - r, 0.5 + r, 0.5 + r), fill=255)
    holes, dh = pen.new()
    for y in (0.75, 0.81, 0.87):
        dh.ellipse(pen.box(0.49, y - 0.01, 0.51, y + 0.01), fill=255)
    bezel, db = pen.new()
    db.ellipse(pen.box(0.5 - r, 0.5 - r, 0.5 + r, 0.5 + r), outline=255, width=pen.w(0.035))
    crown, dcr = pen.new()
    dcr.rectangle(pen.box(0.5 + r - 0.005, 0.475, 0.5 + r + 0.04, 0.525), fill=255)
    dial, dd = pen.new()
    rd = r - 0.045
    dd.ellipse(pen.box(0.5 - rd, 0.5 - rd, 0.5 + rd, 0.5 + rd), fill=255)
    hands, dha = pen.new()
    for k in range(12):
        a = 2 * np.pi * k / 12
        x, y = 0.5 + 0.8 * rd * np.sin(a), 0.5 - 0.8 * rd * np.cos(a)
        dha.ellipse(pen.box(x - 0.008, y - 0.008, x + 0.008, y + 0.008), fill=255)
    dha.line(pen.p([(0.5, 0.5), (0.5, 0.5 - 0.7 * rd)]), fill=255, width=pen.w(0.014))
    dha.line(pen.p([(0.5, 0.5), (0.5 + 0.45 * rd, 0.5 + 0.2 * rd)]), fill=255, width=pen.w(0.018))
    return _Shape(
        layers=[
            _Layer(crown, (175, 175, 180)),
            _Layer(body, "body"),
            _Layer(holes, "shade:0.4"),
            _Layer(bezel, "shade:0.72"),
            _Layer(dial, "dial"),
            _Layer(hands, (35, 35, 40)),
        ],
        band_y=0.16,
        accent=(0.5, 0.88),
        fringe=None,
        cylinder=(0.5 - r, 0.5 + r),
    )


def _mug(pen: _Pen, j: Jitter) -> _Shape:
    x0, x1, top, bot = 0.16, j(0.64, 0.68), j(0.2, 0.26), j(0.84, 0.88)
    body, d = pen.new()
    d.ellipse(pen.box(x1 - 0.1, top + 0.12, x1 + 0.2, bot - 0.16), outline=255, width=pen.w(0.06))
    d.rectangle(pen.box(x0, top + 0.04, x1, bot - 0.04), fill=255)
    d.ellipse(pen.box(x0, bot - 0.08, x1, bot), fill=255)
    d.ellipse(pen.box(x0, top, x1, top + 0.08), fill=255)
    inner, di = pen.new()
    di.ellipse(pen.box(x0 + 0.02, top + 0.01, x1 - 0.02, top + 0.07), fill=255)
    return _Shape(
        layers=[_Layer(body, "body"), _Layer(inner, "shade:0.45")],
        band_y=0.62,
        accent=((x0 + x1) / 2, 0.48),
        fringe=None,
        cylinder=(x0, x1),
    )


def _lamp(pen: _Pen, j: Jitter) -> _Shape:
    tw, bw, sb = j(0.17, 0.21), j(0.3, 0.35), j(0.44, 0.48)
    stem, ds = pen.new()
    ds.rectangle(pen.box(0.48, sb - 0.02, 0.52, 0.84), fill=255)
    body, d = pen.new()
    d.polygon(pen.p([(0.5 - tw, 0.08), (0.5 + tw, 0.08), (0.5 + bw, sb), (0.5 - bw, sb)]), fill=255)
    d.ellipse(pen.box(0.31, 0.8, 0.69, 0.92), fill=255)
    rim, dr = pen.new()
    dr.line(pen.p([(0.5 - bw, sb - 0.01), (0.5 + bw, sb - 0.01)]), fill=255, width=pen.w(0.02))
    dr.line(pen.p([(0.5 - tw, 0.09), (0.5 + tw, 0.09)]), fill=255, width=pen.w(0.015))
    return _Shape(
        layers=[_Layer(stem, "frame"), _Layer(body, "body"), _Layer(rim, "shade:0.75")],
        band_y=0.32,
        accent=(0.5, 0.86),
        fringe=(0.5 - bw, 0.5 + bw, sb),
        cylinder=(0.5 - bw, 0.5 + bw),
    )


def _chair(pen: _Pen, j: Jitter) -> _Shape:
    bt, st, hw = j(0.06, 0.1), j(0.5, 0.53), j(0.21, 0.24)
    legs, dl = pen.new()
    for x in (0.5 - hw - 0.06, 0.5 + hw + 0.01):
        dl.rectangle(pen.box(x, st + 0.1, x + 0.05, 0.95), fill=255)
    for x in (0.5 - hw + 0.04, 0.5 + hw - 0.08):
        dl.rectangle(pen.box(x, st + 0.1, x + 0.04, 0.87), fill=255)
    body, d = pen.new()
    d.rounded_rectangle(pen.box(0.5 - hw, bt, 0.5 + hw, st + 0.02), radius=pen.w(0.06), fill=255)
    seat, dse = pen.new()
    dse.polygon(
        pen.p(
            [
                (0.5 - hw - 0.04, st),
                (0.5 + hw + 0.04, st),
                (0.5 + hw + 0.07, st + 0.11),
                (0.5 - hw - 0.07, st + 0.11),
            ]
        ),
        fill=255,
    )
    front, df = pen.new()
    df.rectangle(pen.box(0.5 - hw - 0.07, st + 0.09, 0.5 + hw + 0.07, st + 0.12), fill=255)
    return _Shape(
        layers=[
            _Layer(legs, "frame"),
            _Layer(body, "body"),
            _Layer(seat, "shade:0.92"),
            _Layer(front, "shade:0.7"),
        ],
        band_y=0.3,
        accent=(0.5, 0.18),
        fringe=(0.5 - hw - 0.07, 0.5 + hw + 0.07, st + 0.12),
    )


_DRAWERS: dict[str, Callable[[_Pen, Jitter], _Shape]] = {
    "t-shirt": _tshirt,
    "hoodie": _hoodie,
    "dress": _dress,
    "sneaker": _sneaker,
    "handbag": _handbag,
    "watch": _watch,
    "mug": _mug,
    "lamp": _lamp,
    "chair": _chair,
}
assert set(_DRAWERS) == set(CATEGORIES)


@lru_cache(maxsize=8)
def _grid(s: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre unit coordinates ``(yy, xx)``, each ``(s, s)`` float32."""
    v = (np.arange(s, dtype=np.float32) + 0.5) / s
    yy, xx = np.meshgrid(v, v, indexing="ij")
    return yy, xx


def _noise(rng: np.random.Generator, res: tuple[int, int], s: int) -> np.ndarray:
    """Smooth value noise in ``[-1, 1]``, shape ``(s, s)`` float32 (``res`` = grid rows, cols)."""
    g = rng.random(res, dtype=np.float32) * 2 - 1
    return np.asarray(
        Image.fromarray(g, "F").resize((s, s), Image.Resampling.BICUBIC), dtype=np.float32
    )


def _pattern(name: str, rng: np.random.Generator, s: int) -> np.ndarray:
    """Pattern intensity in ``[0, 1]`` (1 = contrast colour), ``(s, s)`` float32."""
    yy, xx = _grid(s)
    if name == "solid":
        return np.zeros((s, s), np.float32)
    p = float(rng.uniform(0.085, 0.12))
    ph = float(rng.random())
    if name == "striped":
        return ((((yy / p) + ph) % 1.0) < 0.32).astype(np.float32)
    if name == "polka-dot":
        row = np.floor(yy / p + ph)
        fx = ((xx / p) + 0.5 * (row % 2) + ph) % 1.0 - 0.5
        fy = ((yy / p) + ph) % 1.0 - 0.5
        return ((fx * fx + fy * fy) < 0.3**2).astype(np.float32)
    if name == "checked":
        h = (((yy / p) + ph) % 1.0) < 0.4
        v = (((xx / p) + ph) % 1.0) < 0.4
        return np.where(h & v, 1.0, np.where(h | v, 0.5, 0.0)).astype(np.float32)
    if name == "zigzag":
        tri = np.abs(((xx / p) % 1.0) - 0.5)
        return ((((yy / p) + tri + ph) % 1.0) < 0.34).astype(np.float32)
    raise ValueError(f"pattern: unknown {name!r}")


def _material(name: str, rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray]:
    """(luminance multiplier around 1, specular mix toward white in ``[0, 1]``), each ``(s, s)``."""
    yy, xx = _grid(s)
    zero = np.zeros((s, s), np.float32)
    if name == "cotton":
        mult = (
            1
            + 0.05 * _noise(rng, (s // 2, s // 2), s)
            + 0.03 * np.sin(2 * np.pi * xx / 0.012) * np.sin(2 * np.pi * yy / 0.012)
        )
        return mult, zero
    if name == "denim":
        tw = np.sin(2 * np.pi * (xx + yy) / 0.022)
        mult = (
            1 + 0.11 * tw + 0.07 * _noise(rng, (6, 6), s) + 0.04 * _noise(rng, (s // 2, s // 2), s)
        )
        return mult, zero
    if name == "wool":
        v = np.abs((xx / 0.045) % 1.0 - 0.5)
        ridge = np.sin(2 * np.pi * (yy / 0.04 + v))
        return 1 + 0.13 * ridge + 0.04 * _noise(rng, (24, 24), s), zero
    if name == "leather":
        grain = _noise(rng, (28, 28), s) + 0.5 * _noise(rng, (64, 64), s)
        sheen = 0.18 * np.exp(-(((xx - 0.36) / 0.16) ** 2 + ((yy - 0.3) / 0.22) ** 2))
        return 1 + 0.08 * grain, sheen.astype(np.float32)
    if name == "canvas":
        w = np.sin(2 * np.pi * xx / 0.018) * np.sin(2 * np.pi * yy / 0.018)
        return 1 + 0.08 * w + 0.05 * _noise(rng, (s // 3, s // 3), s), zero
    if name == "ceramic":
        x0 = float(rng.uniform(0.3, 0.38))
        spec = (
            0.55
            * np.exp(-(((xx - x0) / 0.025) ** 2))
            * (0.6 + 0.4 * np.exp(-(((yy - 0.45) / 0.3) ** 2)))
        )
        return 1 + 0.01 * _noise(rng, (8, 8), s), spec.astype(np.float32)
    if name == "metal":
        streak = _noise(rng, (s // 2, 3), s)
        bands = np.cos(2 * np.pi * (xx * 2.3 + float(rng.random())))
        spec = 0.3 * np.exp(-(((xx - 0.4) / 0.03) ** 2))
        return 1 + 0.12 * bands + 0.06 * streak, spec.astype(np.float32)
    if name == "wood":
        warp = 1.6 * _noise(rng, (5, 5), s)
        grain = np.sin(2 * np.pi * (yy * 14 + xx * 1.5 + warp))
        return 1 + 0.12 * grain + 0.04 * _noise(rng, (s // 4, s // 4), s), zero
    raise ValueError(f"material: unknown {name!r}")


_FRAME_COLOURS: dict[str, tuple[int, int, int]] = {
    "wood": (150, 100, 58),
    "metal": (168, 170, 176),
    "ceramic": (235, 232, 225),
    "leather": (52, 40, 34),
}


def contrast_colour(colour: str) -> tuple[int, int, int]:
    """The pattern colour for a body colour: a darker shade of light colours, a lighter tint
    of dark ones (same hue, so the product still reads as its colour)."""
    rgb = np.array(COLOURS[colour], dtype=np.float64)
    lightness = float(srgb_to_lab(rgb)[0])
    if lightness > 60:  # white, yellow, orange, pink: a mild shade, or they turn grey / brown
        out = rgb * 0.74
    elif lightness > 42:
        out = rgb * 0.64
    else:
        out = rgb + (255 - rgb) * (0.3 if colour == "black" else 0.42)
    return (int(out[0]), int(out[1]), int(out[2]))


def _accent_colour(colour: str) -> tuple[int, int, int]:
    """Sporty stripes and laces: white on everything but white (then near-black)."""
    return (36, 36, 40) if colour in ("white", "yellow") else (246, 246, 242)


def render_product(
    attributes: Mapping[str, str], *, category: str | None = None, size: int = 128, seed: int
) -> Image.Image:
    """Render one product as an RGBA cut-out (``size`` x ``size``, transparent background).

    ``attributes``: ``colour``, ``pattern``, ``material``, ``style`` and ``category`` (the
    category may be given as a keyword instead). Same inputs and ``seed`` give identical pixels.
    """
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size: expected an int >= 16, got {size!r}")
    cat = category if category is not None else attributes.get("category")
    if cat is None:
        raise ValueError("category: pass category=... or include 'category' in attributes")
    validate_attributes(attributes, cat)
    colour, pattern, material, style = (
        attributes[k] for k in ("colour", "pattern", "material", "style")
    )
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EED])
    # Masks are drawn by Pillow at 2x and box-reduced (anti-aliased edges, cheap, in C);
    # the per-pixel colour fields are computed at the output size.
    s = size
    k = float(rng.uniform(0.9, 1.0))
    # Drawings span about [0.04, 0.96]; shift only as far as the frame allows at this scale.
    room = max(0.0, 0.47 - 0.46 * k)
    pen = _Pen(
        size * SUPERSAMPLE, k, float(rng.uniform(-room, room)), float(rng.uniform(-room, room))
    )

    def jitter(a: float, b: float) -> float:
        return float(rng.uniform(a, b))

    shape = _DRAWERS[cat](pen, jitter)
    yy, xx = _grid(s)

    # Body fill: colour + pattern in a contrasting shade, times material texture and shading.
    base = np.array(COLOURS[colour], np.float32)
    alt = np.array(contrast_colour(colour), np.float32)
    pat = _pattern(pattern, rng, s)[..., None]
    fill = base * (1 - pat) + alt * pat
    mult, spec = _material(material, rng, s)
    if shape.cylinder is not None:
        c0, c1 = pen.tx(shape.cylinder[0]), pen.tx(shape.cylinder[1])
        u = np.clip((xx - c0) / max(c1 - c0, 1e-3), 0, 1)
        shade = 0.8 + 0.28 * np.sin(np.pi * np.clip(u * 1.1, 0, 1))
    else:
        shade = 1.05 - 0.16 * np.sqrt((xx - 0.35) ** 2 + (yy - 0.25) ** 2)
    lum = (mult * shade)[..., None]
    body_rgb = np.clip(fill * lum, 0, 255)
    body_rgb = body_rgb + (255 - body_rgb) * spec[..., None]

    def resolve(fill_spec: Fill) -> tuple[float, tuple[int, int, int] | None]:
        """(factor on the body fill, or a fixed colour)."""
        if isinstance(fill_spec, tuple):
            return 0.0, fill_spec
        if fill_spec == "body":
            return 1.0, None
        if fill_spec.startswith("shade:"):
            return float(fill_spec.split(":", 1)[1]), None
        if fill_spec == "frame":
            return (
                (1.0, None)
                if material == "ceramic"
                else (0.0, _FRAME_COLOURS.get(material, (60, 60, 64)))
            )
        if fill_spec == "sole":
            soles = {"white": (214, 214, 208), "black": (58, 58, 62)}
            return 0.0, soles.get(colour, (242, 242, 236))
        if fill_spec == "contrast":
            return 0.0, _accent_colour(colour)
        if fill_spec == "dial":
            b = base + (255 - base) * 0.82
            return 0.0, (int(b[0]), int(b[1]), int(b[2]))
        raise ValueError(f"fill: unknown {fill_spec!r}")

    canvas = _Canvas(s, body_rgb)
    for layer in shape.layers:
        factor, fixed = resolve(layer.fill)
        canvas.paint(layer.mask, fixed, factor=factor, is_body=layer.fill == "body")

    _style_cue(style, colour, shape, pen, rng, canvas)

    # Outline: darken the rim of the silhouette so it reads on any background.
    rgb, alpha = canvas.rgb, canvas.alpha
    px = max(1, round(size / 128))  # outline widths scale with the image
    edge = np.clip(alpha - _erode(alpha, px), 0, 1)[..., None]
    rgb *= 1 - 0.35 * edge
    if style == "luxury":
        gold_edge = np.clip(canvas.body - _erode(canvas.body, 2 * px), 0, 1)[..., None]
        rgb += (np.array(GOLD, np.float32) - rgb) * gold_edge

    out = np.dstack([np.clip(rgb, 0, 255), alpha * 255]).astype(np.uint8)
    img = Image.fromarray(out, "RGBA")
    if cat in ("sneaker", "handbag", "mug", "chair", "lamp") and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def _erode(a: np.ndarray, k: int) -> np.ndarray:
    """Grey erosion of ``a`` ``(h, w)`` float in [0, 1] by a ``(2k+1)`` square.

    Separable (row then column minimum, scipy): the same pixels as Pillow's square
    ``MinFilter`` but O(1) in ``k`` instead of O(k^2), which matters at delivery sizes (768 px
    renders use k = 6)."""
    from scipy import ndimage

    img = np.round(a * 255).astype(np.uint8)
    out = ndimage.minimum_filter(img, size=2 * k + 1, mode="nearest")
    return out.astype(np.float32) / 255.0


class _Canvas:
    """RGB + alpha accumulator; paints only inside each mask's bounding box (fast)."""

    def __init__(self, s: int, body_rgb: np.ndarray) -> None:
        self.rgb = np.zeros((s, s, 3), np.float32)
        self.alpha = np.zeros((s, s), np.float32)
        self.body = np.zeros((s, s), np.float32)  # where the body fill was painted
        self.body_rgb = body_rgb
        self.s = s

    def small(self, mask: Image.Image) -> Image.Image:
        """A supersampled pen mask reduced to the canvas size (box filter = anti-aliasing)."""
        return mask if mask.size[0] == self.s else mask.reduce(mask.size[0] // self.s)

    def small_array(self, mask: Image.Image) -> np.ndarray:
        """``small`` as float32 ``(s, s)`` in [0, 1]."""
        return np.asarray(self.small(mask), np.float32) / 255.0

    def paint(
        self,
        mask: Image.Image | np.ndarray,
        colour: tuple[int, int, int] | None,
        *,
        factor: float = 1.0,
        is_body: bool = False,
        opacity: float = 1.0,
    ) -> None:
        """Paint ``colour`` (or the body fill times ``factor``) where ``mask`` is set
        (an L image, or float ``(s, s)`` in [0, 1])."""
        if isinstance(mask, Image.Image):
            mask = self.small(mask)
            bbox = mask.getbbox()
            if bbox is None:
                return
            c0, r0, c1, r1 = bbox
            m = np.asarray(mask.crop(bbox), np.float32) * (opacity / 255.0)
        else:
            rows = np.flatnonzero(mask.any(axis=1))
            if rows.size == 0:
                return
            cols = np.flatnonzero(mask.any(axis=0))
            r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            m = mask[r0:r1, c0:c1] * opacity
        sub = self.rgb[r0:r1, c0:c1]
        if colour is None:
            v: np.ndarray = self.body_rgb[r0:r1, c0:c1] * factor
        else:
            v = np.asarray(colour, np.float32)
        sub += (v - sub) * m[..., None]
        np.maximum(self.alpha[r0:r1, c0:c1], m, out=self.alpha[r0:r1, c0:c1])
        if is_body:
            np.maximum(self.body[r0:r1, c0:c1], m, out=self.body[r0:r1, c0:c1])


def _style_cue(
    style: str, colour: str, shape: _Shape, pen: _Pen, rng: np.random.Generator, canvas: _Canvas
) -> None:
    """Draw the visible cue of ``style`` (see ``attributes.STYLES``) on ``canvas``."""
    s = canvas.s
    yy, _ = _grid(s)
    ax, ay = shape.accent
    body = canvas.body
    if style == "minimalist":
        return
    if style == "sporty":
        y, h = pen.ty(shape.band_y), pen.k
        stripes = ((yy > y) & (yy < y + 0.028 * h)) | ((yy > y + 0.05 * h) & (yy < y + 0.078 * h))
        canvas.paint(stripes * body, _accent_colour(colour))
        m, d = pen.new()
        d.line(
            pen.p([(ax - 0.05, ay - 0.01), (ax - 0.01, ay + 0.03), (ax + 0.06, ay - 0.04)]),
            fill=255,
            width=pen.w(0.02),
        )
        canvas.paint(canvas.small_array(m) * body, _accent_colour(colour))
        return
    if style == "vintage":
        # Worn finish: sparse light specks.
        speck = (rng.random((s, s)) < 0.03).astype(np.float32)
        canvas.paint(speck * body, CREAM, opacity=0.45)
        for r, col in ((0.065, (120, 84, 50)), (0.05, CREAM), (0.02, (120, 84, 50))):
            m, d = pen.new()
            d.ellipse(pen.box(ax - r, ay - r, ax + r, ay + r), fill=255)
            canvas.paint(m, col)
        return
    if style == "bohemian":
        y = shape.band_y
        yc = pen.ty(y)
        band = ((yy > yc) & (yy < yc + 0.06 * pen.k)).astype(np.float32) * body
        canvas.paint(band, (245, 236, 214))
        palette = [(222, 180, 60), (196, 58, 110), (40, 146, 146), (120, 70, 150)]
        for k, col in enumerate(palette):
            m, d = pen.new()
            x = 0.05 * k
            while x < 1.0:  # a row of diamonds, colours cycling every 4
                d.polygon(
                    pen.p(
                        [
                            (x, y + 0.03),
                            (x + 0.022, y + 0.006),
                            (x + 0.044, y + 0.03),
                            (x + 0.022, y + 0.054),
                        ]
                    ),
                    fill=255,
                )
                x += 0.2
            canvas.paint(canvas.small_array(m) * band, col)
        if shape.fringe is not None:
            x0, x1, fy = shape.fringe
            m, d = pen.new()
            x = x0 + 0.015
            while x < x1 - 0.01:
                d.line(pen.p([(x, fy - 0.01), (x, fy + 0.065)]), fill=255, width=pen.w(0.009))
                x += 0.028
            b = np.array(COLOURS[colour], np.float32) * 0.85
            canvas.paint(m, (int(b[0]), int(b[1]), int(b[2])))
        return
    if style == "luxury":
        for box, col in (
            ((-0.035, -0.035, 0.035, 0.035), GOLD),
            ((-0.015, -0.02, 0.005, 0.0), (250, 236, 170)),
        ):
            m, d = pen.new()
            d.ellipse(pen.box(ax + box[0], ay + box[1], ax + box[2], ay + box[3]), fill=255)
            canvas.paint(m, col)
        return
    raise ValueError(f"style: unknown {style!r}")


@lru_cache(maxsize=8)
def _studio_backdrop(w: int, h: int) -> Image.Image:
    """Light-grey vertical gradient, RGB ``w`` x ``h``."""
    grad = np.linspace(244, 230, h, dtype=np.float32)[:, None, None] * np.ones(
        (1, w, 3), np.float32
    )
    return Image.fromarray((grad * np.array([1.0, 1.0, 0.99], np.float32)).astype(np.uint8), "RGB")


_SHADOW_LUT = [int(v * 0.22) for v in range(256)]


def on_studio_background(rgba: Image.Image, *, shadow: bool = True) -> Image.Image:
    """An RGBA cut-out on a plain light-grey studio background with a soft shadow -> RGB."""
    if rgba.mode != "RGBA":
        raise ValueError(f"rgba: expected an RGBA image, got mode {rgba.mode!r}")
    w, h = rgba.size
    bg = _studio_backdrop(w, h).copy()
    if shadow:
        # Blur a 4x-reduced alpha (cheap), scale back, shift down-right, darken by 22 % at most.
        f = 4 if min(w, h) >= 64 else 1
        small = (
            rgba.getchannel("A").reduce(f).filter(ImageFilter.GaussianBlur(max(1.0, w / 50 / f)))
        )
        shifted = Image.new("L", (w, h), 0)
        shifted.paste(
            small.resize((w, h), Image.Resampling.BILINEAR), (round(w * 0.02), round(h * 0.03))
        )
        bg = Image.composite(Image.new("RGB", (w, h), (0, 0, 0)), bg, shifted.point(_SHADOW_LUT))
    bg.paste(rgba, (0, 0), rgba)
    return bg


# ---------------------------------------------------------------- scenes


def _vgrad(
    h: int, w: int, top: Sequence[float], bottom: Sequence[float], y0: float = 0.0, y1: float = 1.0
) -> np.ndarray:
    """Vertical gradient ``(h, w, 3)`` float32 from ``top`` at ``y0`` to ``bottom`` at ``y1``."""
    t = np.clip((np.linspace(0, 1, h, dtype=np.float32) - y0) / max(y1 - y0, 1e-3), 0, 1)[
        :, None, None
    ]
    return np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t * np.ones(
        (1, w, 1), np.float32
    )


def _backdrop(setting: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """The backdrop ``(size, size, 3)`` float32 and the ground line (unit y) products stand on."""
    s = size
    img = Image.new("RGB", (s, s))
    d = ImageDraw.Draw(img)

    def u(v: float) -> float:
        return v * s

    def put(arr: np.ndarray) -> None:
        img.paste(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB"))

    jit = float(rng.uniform(-0.04, 0.04))
    if setting == "studio":
        tone = rng.choice(
            np.array(
                [[236, 234, 230], [226, 232, 238], [240, 230, 222], [222, 222, 226]], np.float32
            )
        )
        put(_vgrad(s, s, tone * 1.0, tone * 0.86))
        ground = 0.9
    elif setting == "beach":
        horizon = 0.48 + jit
        put(_vgrad(s, s, (120, 180, 235), (215, 235, 250), 0, horizon))
        d.rectangle((0, u(horizon), s, u(horizon + 0.12)), fill=(40, 120, 170))
        for k in range(4):
            y = u(horizon + 0.02 + 0.025 * k)
            d.line((0, y, s, y), fill=(170, 215, 230), width=max(1, s // 160))
        sand = _vgrad(s, s, (236, 214, 168), (214, 188, 140), horizon + 0.12, 1.0)
        arr = np.asarray(img, np.float32).copy()
        rows = slice(int(u(horizon + 0.12)), s)
        arr[rows] = sand[rows]
        put(arr)
        sx = float(rng.uniform(0.1, 0.9))
        d.ellipse((u(sx - 0.05), u(0.08), u(sx + 0.05), u(0.18)), fill=(255, 240, 190))
        ground = 0.92
    elif setting == "city street":
        put(_vgrad(s, s, (150, 180, 210), (205, 215, 225)))
        x = -0.05
        while x < 1.0:
            bw_ = float(rng.uniform(0.12, 0.22))
            top = float(rng.uniform(0.05, 0.4))
            c = int(rng.integers(70, 150))
            col = (c + int(rng.integers(0, 40)), c, c - int(rng.integers(0, 20)))
            d.rectangle((u(x), u(top), u(x + bw_), u(0.78)), fill=col)
            wy = top + 0.04
            while wy < 0.72:
                wx = x + 0.02
                while wx < x + bw_ - 0.04:
                    lit = rng.random() < 0.3
                    d.rectangle(
                        (u(wx), u(wy), u(wx + 0.025), u(wy + 0.035)),
                        fill=(235, 215, 140) if lit else (60, 70, 85),
                    )
                    wx += 0.045
                wy += 0.07
            x += bw_ + 0.01
        d.rectangle((0, u(0.78), s, s), fill=(120, 120, 124))
        d.rectangle((0, u(0.78), s, u(0.8)), fill=(175, 175, 170))
        ground = 0.93
    elif setting == "forest":
        put(_vgrad(s, s, (70, 120, 80), (35, 70, 40)))
        for _ in range(7):
            x = float(rng.uniform(0, 1))
            w_ = float(rng.uniform(0.03, 0.07))
            d.rectangle((u(x), u(0.05), u(x + w_), u(0.8)), fill=(80, 55, 35))
        for _ in range(28):
            x, y, r = (
                float(rng.uniform(0, 1)),
                float(rng.uniform(-0.05, 0.45)),
                float(rng.uniform(0.06, 0.14)),
            )
            g = int(rng.integers(90, 160))
            d.ellipse((u(x - r), u(y - r), u(x + r), u(y + r)), fill=(30, g, 50))
        d.rectangle((0, u(0.8), s, s), fill=(70, 95, 45))
        ground = 0.93
    elif setting == "living room":
        wall = rng.choice(
            np.array(
                [[226, 214, 196], [200, 214, 210], [232, 222, 214], [210, 205, 225]], np.float32
            )
        )
        put(_vgrad(s, s, wall, wall * 0.9))
        d.rectangle(
            (u(0.6 + jit), u(0.1), u(0.9 + jit), u(0.5)),
            fill=(200, 225, 240),
            outline=(250, 250, 250),
            width=max(1, s // 60),
        )
        d.rounded_rectangle(
            (u(0.02), u(0.5), u(0.5), u(0.72)), radius=int(u(0.04)), fill=(110, 90, 80)
        )
        d.rectangle((0, u(0.72), s, s), fill=(165, 120, 80))
        for k in range(6):
            d.line(
                (0, u(0.76 + 0.045 * k), s, u(0.76 + 0.045 * k)),
                fill=(140, 98, 62),
                width=max(1, s // 200),
            )
        d.ellipse((u(0.84), u(0.45), u(0.98), u(0.62)), fill=(60, 120, 60))
        ground = 0.93
    elif setting == "kitchen":
        put(np.full((s, s, 3), (236, 236, 230), np.float32))
        step = 0.08
        y = 0.0
        while y < 0.62:
            d.line((0, u(y), s, u(y)), fill=(200, 200, 196), width=1)
            y += step
        x = 0.0
        while x < 1:
            d.line((u(x), 0, u(x), u(0.62)), fill=(200, 200, 196), width=1)
            x += step
        d.rectangle((0, u(0.62), s, u(0.68)), fill=(90, 90, 96))
        d.rectangle((0, u(0.68), s, s), fill=(190, 170, 140))
        for k in range(5):
            d.line(
                (u(0.2 * k), u(0.68), u(0.2 * k), s), fill=(150, 130, 105), width=max(1, s // 160)
            )
        ground = 0.66
    elif setting == "mountains":
        put(_vgrad(s, s, (110, 160, 220), (220, 230, 240), 0, 0.6))
        for k in range(4):
            px, ph, pw = (
                float(rng.uniform(0, 1)),
                float(rng.uniform(0.15, 0.35)),
                float(rng.uniform(0.3, 0.5)),
            )
            c = 110 + 15 * k
            d.polygon(
                [(u(px - pw), u(0.62)), (u(px), u(ph)), (u(px + pw), u(0.62))],
                fill=(c - 20, c - 10, c + 10),
            )
            d.polygon(
                [(u(px - 0.06), u(ph + 0.06)), (u(px), u(ph)), (u(px + 0.06), u(ph + 0.06))],
                fill=(245, 245, 250),
            )
        d.rectangle((0, u(0.62), s, s), fill=(100, 140, 70))
        ground = 0.93
    elif setting == "desert":
        put(_vgrad(s, s, (240, 190, 120), (250, 225, 170), 0, 0.5))
        arr = np.asarray(img, np.float32).copy()
        yy, xx = _grid(s)
        dunes: list[tuple[tuple[int, int, int], float]] = [
            ((220, 170, 100), 0.5),
            ((205, 150, 85), 0.62),
            ((190, 135, 75), 0.75),
        ]
        for k, (dune_rgb, off) in enumerate(dunes):
            dune = off + 0.04 * np.sin(2 * np.pi * (xx * (1.2 + 0.3 * k) + float(rng.random())))
            arr[yy > dune] = dune_rgb
        put(arr)
        cx = float(rng.uniform(0.05, 0.25))
        d.rectangle((u(cx), u(0.35), u(cx + 0.04), u(0.7)), fill=(60, 120, 60))
        ground = 0.93
    else:
        raise ValueError(f"setting: expected one of {list(SETTINGS)}, got {setting!r}")
    return np.asarray(img, np.float32), ground


def _apply_lighting(
    arr: np.ndarray, lighting: str, rng: np.random.Generator, strength: float = 1.0
) -> np.ndarray:
    """Light ``arr`` ``(h, w, 3)`` float32 0-255; ``strength`` in [0, 1] scales the effect."""
    h, w, _ = arr.shape
    yy, xx = (
        _grid(h)
        if h == w
        else np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    )
    if lighting == "soft light":
        out = arr * 0.92 + 255 * 0.08
    elif lighting == "golden hour":
        side = float(rng.choice([0.0, 1.0]))
        glow = np.exp(-(((xx - side) / 0.6) ** 2 + ((yy - 0.3) / 0.5) ** 2))[..., None]
        out = arr * np.array([1.08, 0.95, 0.74], np.float32) + glow * np.array(
            [60, 30, 0], np.float32
        )
    elif lighting == "neon":
        g1 = np.exp(-(((xx - 0.15) / 0.3) ** 2 + ((yy - 0.3) / 0.3) ** 2))[..., None]
        g2 = np.exp(-(((xx - 0.85) / 0.3) ** 2 + ((yy - 0.4) / 0.3) ** 2))[..., None]
        out = (
            arr * 0.45
            + g1 * np.array([150, 20, 140], np.float32)
            + g2 * np.array([10, 130, 160], np.float32)
        )
    elif lighting == "overcast":
        grey = arr.mean(axis=2, keepdims=True)
        out = (arr * 0.55 + grey * 0.45) * np.array([0.95, 0.97, 1.0], np.float32)
    elif lighting == "spotlight":
        r = np.sqrt((xx - 0.5) ** 2 + (yy - 0.55) ** 2)[..., None]
        out = arr * (1.15 - 0.85 * np.clip(r / 0.6, 0, 1))
    elif lighting == "night":
        out = arr * 0.35 * np.array([0.8, 0.9, 1.3], np.float32)
    else:
        raise ValueError(f"lighting: expected one of {list(LIGHTING)}, got {lighting!r}")
    return np.clip(arr + (out - arr) * strength, 0, 255).astype(np.float32)


@dataclass(frozen=True)
class SceneOutput:
    """A rendered scene: ``image`` RGB, ``mask`` L (the placed product's alpha, same size) and
    ``box`` ``(x, y, w, h)`` in pixels of the product's visible pixels."""

    image: Image.Image
    mask: Image.Image
    box: tuple[int, int, int, int]


def compose_scene(
    rgba_product: Image.Image, *, setting: str, lighting: str, size: int = 128, seed: int
) -> SceneOutput:
    """The product cut-out placed in a procedural ``setting`` under ``lighting``, with its mask.

    The backdrop takes the full lighting effect; the product a mild one, so its colour stays
    readable. Deterministic given ``seed``.
    """
    if rgba_product.mode != "RGBA":
        raise ValueError(f"rgba_product: expected an RGBA image, got mode {rgba_product.mode!r}")
    if lighting not in LIGHTING:
        raise ValueError(f"lighting: expected one of {list(LIGHTING)}, got {lighting!r}")
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size: expected an int >= 16, got {size!r}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5CE7E])
    back, ground = _backdrop(setting, size, rng)
    scale = float(rng.uniform(0.5, 0.68))
    ps = max(8, round(size * scale))
    prod = rgba_product.resize((ps, ps), Image.Resampling.LANCZOS)
    cx = float(rng.uniform(0.4, 0.6))
    x0 = round(cx * size - ps / 2)
    y0 = round(min(ground, 0.97) * size - ps * 0.97)
    y0 = max(0, min(size - ps, y0))
    # Contact shadow: a blurred ellipse under the product.
    sh = Image.new("L", (size, size), 0)
    ImageDraw.Draw(sh).ellipse(
        (x0 + ps * 0.15, y0 + ps * 0.88, x0 + ps * 0.85, y0 + ps * 0.99), fill=150
    )
    blur = ImageFilter.GaussianBlur(max(1.0, size / 60))
    sh_arr = np.asarray(sh.filter(blur), np.float32)[..., None] / 255
    back = back * (1 - 0.5 * sh_arr)
    back = _apply_lighting(back, lighting, rng)
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    layer.paste(prod, (x0, y0))
    la = np.asarray(layer, np.float32)
    a = la[..., 3:4] / 255
    lit = _apply_lighting(la[..., :3], lighting, np.random.default_rng(0), strength=0.2)
    out = back * (1 - a) + lit * a
    mask = layer.getchannel("A")
    bb = mask.getbbox() or (0, 0, 0, 0)
    return SceneOutput(
        image=Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB"),
        mask=mask,
        box=(bb[0], bb[1], bb[2] - bb[0], bb[3] - bb[1]),
    )


def render_scene(
    rgba_product: Image.Image, *, setting: str, lighting: str, size: int = 128, seed: int
) -> Image.Image:
    """``compose_scene(...).image``: the product in a procedural scene, RGB ``size`` x ``size``."""
    return compose_scene(
        rgba_product, setting=setting, lighting=lighting, size=size, seed=seed
    ).image


def render_backdrop(setting: str, lighting: str, *, size: int = 64, seed: int) -> Image.Image:
    """A product-free backdrop: ``setting`` under ``lighting``, RGB ``size`` x ``size``
    (what :func:`compose_scene` draws behind the product, without it and its shadow)."""
    if lighting not in LIGHTING:
        raise ValueError(f"lighting: expected one of {list(LIGHTING)}, got {lighting!r}")
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size: expected an int >= 16, got {size!r}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5CE7E])
    back, _ = _backdrop(setting, size, rng)
    back = _apply_lighting(back, lighting, rng)
    return Image.fromarray(np.clip(back, 0, 255).astype(np.uint8), "RGB")


def dominant_colour(image: Image.Image, mask: np.ndarray | None = None) -> str:
    """The named colour most pixels of the object are nearest to (CIELAB).

    Object pixels: ``alpha > 127`` for RGBA images, else ``mask`` (bool ``(h, w)``), else pixels
    that differ clearly from the median border colour (a plain background).
    """
    arr = np.asarray(image.convert("RGBA") if image.mode != "RGBA" else image, np.float32)
    if mask is None:
        if image.mode == "RGBA":
            mask = arr[..., 3] > 127
        else:
            border = np.concatenate([arr[0, :, :3], arr[-1, :, :3], arr[:, 0, :3], arr[:, -1, :3]])
            bg = np.median(border, axis=0)
            mask = np.abs(arr[..., :3] - bg).sum(axis=2) > 40
    pix = arr[..., :3][mask]
    if pix.size == 0:
        raise ValueError("image: no object pixels found (empty alpha or mask)")
    counts = np.bincount(nearest_colour_index(pix), minlength=len(COLOUR_NAMES))
    return COLOUR_NAMES[int(counts.argmax())]


def contact_sheet(
    images: Sequence[Image.Image],
    captions: Sequence[str] | None = None,
    *,
    cols: int = 8,
    cell: int = 160,
    caption_lines: int = 3,
) -> Image.Image:
    """Tile ``images`` (any mode, fitted into ``cell`` px, aspect kept) into an RGB grid with
    wrapped captions.

    Returns RGB ``(cols * cell) x (rows * (cell + caption height))``.
    """
    import textwrap

    from PIL import ImageFont, ImageOps

    if not images:
        raise ValueError("images: expected at least one image, got none")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"captions: expected {len(images)} captions, got {len(captions)}")
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont
    try:
        font = ImageFont.load_default(size=max(9, cell // 14))
    except TypeError:  # Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    line_h = max(10, cell // 12)
    cap_h = caption_lines * line_h + 6 if captions is not None else 0
    rows = (len(images) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cell, rows * (cell + cap_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    wrap = max(8, int(cell / (line_h * 0.52)))
    for i, img in enumerate(images):
        x, y = (i % cols) * cell, (i // cols) * (cell + cap_h)
        # Fit, never stretch: a banner or story hero keeps its aspect ratio in a square cell.
        tile = ImageOps.contain(img.convert("RGBA"), (cell - 8, cell - 8), Image.Resampling.LANCZOS)
        bg = Image.new("RGBA", tile.size, (255, 255, 255, 255))
        ox, oy = (cell - 8 - tile.width) // 2, (cell - 8 - tile.height) // 2
        sheet.paste(Image.alpha_composite(bg, tile).convert("RGB"), (x + 4 + ox, y + 4 + oy))
        if captions is not None:
            for k, line in enumerate(textwrap.wrap(captions[i], wrap)[:caption_lines]):
                draw.text((x + 4, y + cell + 2 + k * line_h), line, fill=(40, 40, 40), font=font)
    return sheet
