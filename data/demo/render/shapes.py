"""Category silhouettes of the demo renderer: a pen on supersampled L masks in unit
coordinates (x right, y down, ``[0, 1]``) and one drawer per category (``DRAWERS``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from data.demo.attributes import (
    CATEGORIES,
)

SUPERSAMPLE = 2
GOLD = (214, 172, 60)
CREAM = (238, 228, 200)
Point = tuple[float, float]
Fill = str | tuple[int, int, int]  # "body", "shade:<factor>" or a fixed RGB colour


@dataclass
class Layer:
    """One drawn part: a mask and how to fill it."""

    mask: Image.Image
    fill: Fill


@dataclass
class Shape:
    """What a category drawer produces (unit coordinates)."""

    layers: list[Layer] = field(default_factory=list)
    band_y: float = 0.7  # where a style band runs across the body
    accent: Point = (0.6, 0.3)  # where a badge or hardware goes
    fringe: tuple[float, float, float] | None = None  # (x0, x1, y): edge that tassels hang from
    cylinder: tuple[float, float] | None = None  # x-range shaded as a cylinder


class Pen:
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


def _tshirt(pen: Pen, j: Jitter) -> Shape:
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
    return Shape(
        layers=[Layer(body, "body"), Layer(collar, "shade:0.8"), Layer(seams, "shade:0.75")],
        band_y=0.68,
        accent=(0.61, 0.3),
        fringe=(0.5 - bw, 0.5 + bw, hem),
    )


def _hoodie(pen: Pen, j: Jitter) -> Shape:
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
    return Shape(
        layers=[
            Layer(body, "body"),
            Layer(hood_in, "shade:0.4"),
            Layer(trims, "shade:0.82"),
            Layer(pocket, "shade:0.6"),
            Layer(strings, (235, 235, 230)),
        ],
        band_y=0.5,
        accent=(0.6, 0.45),
        fringe=(0.5 - bw, 0.5 + bw, hem),
    )


def _dress(pen: Pen, j: Jitter) -> Shape:
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
    return Shape(
        layers=[Layer(body, "body"), Layer(belt, "shade:0.65"), Layer(hem_m, "shade:0.85")],
        band_y=0.72,
        accent=(0.5, 0.425),
        fringe=(0.5 - flare, 0.5 + flare, hem),
    )


def _sneaker(pen: Pen, j: Jitter) -> Shape:
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
    return Shape(
        layers=[
            Layer(body, "body"),
            Layer(toe, "shade:0.86"),
            Layer(heel, "shade:0.88"),
            Layer(collar, "shade:0.35"),
            Layer(sole, "sole"),
            Layer(sole_line, (150, 150, 150)),
            Layer(laces, "contrast"),
        ],
        band_y=0.5,
        accent=(0.3, 0.5),
        fringe=None,
    )


def _handbag(pen: Pen, j: Jitter) -> Shape:
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
    return Shape(
        layers=[
            Layer(body, "body"),
            Layer(flap, "shade:0.9"),
            Layer(flap_edge, "shade:0.6"),
            Layer(clasp, (170, 170, 176)),
        ],
        band_y=0.76,
        accent=(0.5, 0.66),
        fringe=(0.5 - wb, 0.5 + wb, 0.87),
    )


def _watch(pen: Pen, j: Jitter) -> Shape:
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
    return Shape(
        layers=[
            Layer(crown, (175, 175, 180)),
            Layer(body, "body"),
            Layer(holes, "shade:0.4"),
            Layer(bezel, "shade:0.72"),
            Layer(dial, "dial"),
            Layer(hands, (35, 35, 40)),
        ],
        band_y=0.16,
        accent=(0.5, 0.88),
        fringe=None,
        cylinder=(0.5 - r, 0.5 + r),
    )


def _mug(pen: Pen, j: Jitter) -> Shape:
    x0, x1, top, bot = 0.16, j(0.64, 0.68), j(0.2, 0.26), j(0.84, 0.88)
    body, d = pen.new()
    d.ellipse(pen.box(x1 - 0.1, top + 0.12, x1 + 0.2, bot - 0.16), outline=255, width=pen.w(0.06))
    d.rectangle(pen.box(x0, top + 0.04, x1, bot - 0.04), fill=255)
    d.ellipse(pen.box(x0, bot - 0.08, x1, bot), fill=255)
    d.ellipse(pen.box(x0, top, x1, top + 0.08), fill=255)
    inner, di = pen.new()
    di.ellipse(pen.box(x0 + 0.02, top + 0.01, x1 - 0.02, top + 0.07), fill=255)
    return Shape(
        layers=[Layer(body, "body"), Layer(inner, "shade:0.45")],
        band_y=0.62,
        accent=((x0 + x1) / 2, 0.48),
        fringe=None,
        cylinder=(x0, x1),
    )


def _lamp(pen: Pen, j: Jitter) -> Shape:
    tw, bw, sb = j(0.17, 0.21), j(0.3, 0.35), j(0.44, 0.48)
    stem, ds = pen.new()
    ds.rectangle(pen.box(0.48, sb - 0.02, 0.52, 0.84), fill=255)
    body, d = pen.new()
    d.polygon(pen.p([(0.5 - tw, 0.08), (0.5 + tw, 0.08), (0.5 + bw, sb), (0.5 - bw, sb)]), fill=255)
    d.ellipse(pen.box(0.31, 0.8, 0.69, 0.92), fill=255)
    rim, dr = pen.new()
    dr.line(pen.p([(0.5 - bw, sb - 0.01), (0.5 + bw, sb - 0.01)]), fill=255, width=pen.w(0.02))
    dr.line(pen.p([(0.5 - tw, 0.09), (0.5 + tw, 0.09)]), fill=255, width=pen.w(0.015))
    return Shape(
        layers=[Layer(stem, "frame"), Layer(body, "body"), Layer(rim, "shade:0.75")],
        band_y=0.32,
        accent=(0.5, 0.86),
        fringe=(0.5 - bw, 0.5 + bw, sb),
        cylinder=(0.5 - bw, 0.5 + bw),
    )


def _chair(pen: Pen, j: Jitter) -> Shape:
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
    return Shape(
        layers=[
            Layer(legs, "frame"),
            Layer(body, "body"),
            Layer(seat, "shade:0.92"),
            Layer(front, "shade:0.7"),
        ],
        band_y=0.3,
        accent=(0.5, 0.18),
        fringe=(0.5 - hw - 0.07, 0.5 + hw + 0.07, st + 0.12),
    )


DRAWERS: dict[str, Callable[[Pen, Jitter], Shape]] = {
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
assert set(DRAWERS) == set(CATEGORIES)
