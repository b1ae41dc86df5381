"""Training pictures for the product cut-out (``tailorshot train cutout``).

Every sample is a 320 x 320 RGB picture (the saliency network's input size) and its known
product mask. Kinds, all seeded:

* ``composite``: a demo product (a world of seed ``WORLD_SEED``, not heroeval's 0) rendered at
  a random scale and place on a background that heroeval never uses: other photographs
  (``BACKGROUND_PHOTOS``: scikit-image's camera, motorcycle, clock, coins..., scikit-learn's
  two sample photos, matplotlib's portrait), randomly cropped, mirrored, re-coloured (grey
  pictures tinted or kept grey, colour ones with channels permuted and gains changed), fine
  grey noise textures, demo scene backdrops, gradients and flat colours;
* ``studio``: a demo product on its studio backdrop, as the demo catalog shows it;
* ``empty``: a background with no product; the product network's target is all zero (a real
  photo with no demo product must not gain one);
* ``distill`` (validation only, needs the original network): real photographs of objects
  (``DISTILL_PHOTOS``) whose target is the original U^2-Net-p mask, so the served model is
  checked to keep cutting real product photos as the original did.

heroeval's ``PHOTOS`` (coffee, chelsea, astronaut, rocket, brick, grass, gravel) and
scikit-image's ``cat`` (the same photograph as ``chelsea``) never appear: they are the
measure's backgrounds, and ``coffee`` is the hand-drawn-mask test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from genservice.training.heroeval import PHOTOS

#: Pictures the training data never uses: the measure's photos, and ``cat`` (= ``chelsea``).
HELD_OUT_PHOTOS = (*PHOTOS, "cat")
#: Demo world seed of the training products (heroeval's cases use seed 0).
WORLD_SEED = 7
#: Render seeds of training products start here (heroeval uses 0..n and 1000..1000+n).
RENDER_SEED_BASE = 500_000
#: Side of every sample, px (the saliency network's input).
SIZE = 320
#: Pictures are made at heroeval's size and reduced as the cut-out reduces them.
MAKE_SIZE = 384
#: The held-out shard both cut-out trainers score on: ``(kinds, n, seed)`` for ``make_shard``
#: (composites, studio renders, real photos whose target is U^2-Net-p's own map).
FUSION_VAL = (("composite", "composite", "composite", "studio", "distill"), 100, 20_000)
#: Background photographs: scikit-image names, ``sklearn:`` and ``matplotlib:`` sample photos.
BACKGROUND_PHOTOS = (
    "camera",
    "stereo_motorcycle",
    "clock",
    "coins",
    "moon",
    "page",
    "text",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "cell",
    "horse",
    "colorwheel",
    "logo",
    "checkerboard",
    "shepp_logan_phantom",
    "sklearn:china",
    "sklearn:flower",
    "matplotlib:grace_hopper",
)
#: Real photographs of objects whose original U^2-Net-p mask is the distillation target.
DISTILL_PHOTOS = (
    "stereo_motorcycle",
    "clock",
    "camera",
    "logo",
    "coins",
    "matplotlib:grace_hopper",
    "sklearn:flower",
)

assert not {n.split(":")[-1] for n in BACKGROUND_PHOTOS + DISTILL_PHOTOS} & set(HELD_OUT_PHOTOS)


@dataclass(frozen=True)
class CutoutSample:
    """``image`` ``(320, 320, 3)`` uint8, ``mask`` ``(320, 320)`` float32 target in [0, 1],
    ``kind`` ``"composite"`` | ``"studio"`` | ``"empty"`` | ``"distill"``."""

    image: np.ndarray
    mask: np.ndarray
    kind: str


def _as_rgb8(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


@cache
def load_photo(name: str) -> np.ndarray:
    """A background photograph as ``(H, W, 3)`` uint8 (grey repeated, alpha dropped):
    a scikit-image ``skimage.data`` name, ``sklearn:china|flower`` or
    ``matplotlib:grace_hopper`` (all inside installed wheels). Refuses the measure's."""
    if name.split(":")[-1] in HELD_OUT_PHOTOS:
        raise ValueError(f"name: {name!r} is one of the measure's photographs")
    if name.startswith("sklearn:"):
        from sklearn.datasets import load_sample_image

        return _shrink(_as_rgb8(load_sample_image(name.split(":")[1] + ".jpg")))
    if name.startswith("matplotlib:"):
        import matplotlib.cbook

        path = matplotlib.cbook.get_sample_data(name.split(":")[1] + ".jpg", asfileobj=False)
        return _shrink(_as_rgb8(np.asarray(Image.open(str(path)).convert("RGB"))))
    import skimage.data

    arr = getattr(skimage.data, name)()
    if name == "stereo_motorcycle":
        arr = arr[0]
    return _shrink(_as_rgb8(arr))


def _shrink(arr: np.ndarray, side: int = 640) -> np.ndarray:
    """``arr`` reduced so its long side is at most ``side`` (crops stay cheap to resize)."""
    h, w = arr.shape[:2]
    if max(h, w) <= side:
        return arr
    size = (round(w * side / max(h, w)), round(h * side / max(h, w)))
    return np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.LANCZOS))


def _recolour(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter so the product's colours are not a give-away: a grey picture is kept grey
    (half the time: the measure has grey textures) or mapped onto a two-colour ramp; a colour
    one gets its channels permuted and per-channel gains; both get a random gamma."""
    x = arr.astype(np.float32) / 255.0
    grey = bool(np.ptp(arr.astype(np.int16), axis=-1).max() < 8)
    if grey:
        if rng.random() < 0.5:
            c0, c1 = rng.uniform(0, 0.6, 3), rng.uniform(0.4, 1.0, 3)
            x = c0 + x[..., :1] * (c1 - c0)
    else:
        x = x[..., rng.permutation(3)] * rng.uniform(0.75, 1.25, 3)
    x = np.clip(x, 0.0, 1.0) ** rng.uniform(0.7, 1.4)
    return np.round(x * 255.0).astype(np.uint8)


def _random_crop(arr: np.ndarray, rng: np.random.Generator, size: int) -> Image.Image:
    """A random square crop (30-100 % of the short side), maybe mirrored, at ``size``."""
    h, w = arr.shape[:2]
    s = max(8, int(min(h, w) * rng.uniform(0.3, 1.0)))
    y = int(rng.integers(0, h - s + 1))
    x = int(rng.integers(0, w - s + 1))
    img = Image.fromarray(arr[y : y + s, x : x + s]).resize((size, size), Image.Resampling.LANCZOS)
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img


def _procedural(rng: np.random.Generator, size: int) -> Image.Image:
    """Fine grey noise (a stand-in for gravel, grass, brick), value noise, a demo backdrop, a
    gradient or a flat colour, ``size`` px RGB."""
    from data.demo.attributes import LIGHTING, SETTINGS
    from data.demo.render.scene import render_backdrop
    from data.demo.render.textures import value_noise

    pick = rng.random()
    if pick < 0.3:
        # Several octaves of grey noise with random sharp stripes: stone, grass, paving.
        res = int(rng.integers(24, 96))
        field = value_noise(rng, (res, res), size) + 0.5 * value_noise(
            rng, (2 * res, 2 * res), size
        )
        if rng.random() < 0.4:
            yy = np.arange(size, dtype=np.float32)[:, None]
            period = float(rng.uniform(12, 40))
            field = field - 1.2 * (((yy + rng.uniform(0, period)) % period) < 2.5)
        lo, hi = float(rng.uniform(0, 90)), float(rng.uniform(140, 255))
        v = lo + (field - field.min()) / max(float(np.ptp(field)), 1e-6) * (hi - lo)
        return Image.fromarray(np.repeat(v[..., None], 3, axis=2).astype(np.uint8))
    if pick < 0.55:
        s = SETTINGS[int(rng.integers(len(SETTINGS)))]
        light = LIGHTING[int(rng.integers(len(LIGHTING)))]
        low = int(rng.choice([64, 96, 128]))
        back = render_backdrop(s, light, size=low, seed=int(rng.integers(2**31)))
        return back.resize((size, size), Image.Resampling.BICUBIC)
    if pick < 0.8:
        res = int(rng.integers(2, 12))
        noise = np.stack([value_noise(rng, (res, res), size) for _ in range(3)], axis=-1)
        dark, bright = rng.uniform(0, 120, 3), rng.uniform(130, 255, 3)
        mix = dark + (noise + 1) / 2 * (bright - dark)
        return Image.fromarray(np.clip(mix, 0, 255).astype(np.uint8))
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    if pick < 0.92:
        t = np.linspace(0.0, 1.0, size)[:, None, None]
        grad = c0 + t * (c1 - c0)
        return Image.fromarray(np.broadcast_to(grad, (size, size, 3)).astype(np.uint8))
    return Image.new("RGB", (size, size), tuple(int(v) for v in c0))


class SampleMaker:
    """Seeded maker of training samples. ``saliency(image)``, when given, is the original
    U^2-Net-p ``(320, 320)`` map (needed only for ``distill`` samples)."""

    def __init__(
        self,
        saliency: Callable[[Image.Image], np.ndarray] | None = None,
        *,
        n_products: int = 240,
    ) -> None:
        from data.demo.world import build_world

        self.saliency = saliency
        self.products = list(
            build_world(seed=WORLD_SEED, n_products=n_products, n_users=1).products
        )

    def _render(self, rng: np.random.Generator, size: int) -> Image.Image:
        from data.demo.render import render_product

        p = self.products[int(rng.integers(len(self.products)))]
        seed = RENDER_SEED_BASE + int(rng.integers(10**6))
        return render_product(p.attributes, category=p.category, size=size, seed=seed)

    def _photo_crop(self, rng: np.random.Generator, size: int) -> Image.Image:
        name = BACKGROUND_PHOTOS[int(rng.integers(len(BACKGROUND_PHOTOS)))]
        crop = _random_crop(load_photo(name), rng, size)
        return Image.fromarray(_recolour(np.asarray(crop), rng))

    def background(self, rng: np.random.Generator, size: int = MAKE_SIZE) -> Image.Image:
        """A product-free background: 55 % a re-coloured photo crop, else procedural; 55 % of
        them get one to three salient subjects of their own (``distractor``), as the measure's
        photos have a cup, a cat, an astronaut."""
        img = self._photo_crop(rng, size) if rng.random() < 0.55 else _procedural(rng, size)
        if rng.random() < 0.55:
            for _ in range(int(rng.integers(1, 4))):
                self.distractor(rng, img)
        return img

    def distractor(self, rng: np.random.Generator, img: Image.Image) -> None:
        """Paste onto ``img`` an object-like subject that is not a demo product: a shape (an
        ellipse, a rounded box, a polygon, a ring, a stack of two ellipses like a cup on a
        saucer) filled with a photo crop or a flat colour, lit by a gradient (so it looks
        solid), with a soft shadow half the time."""
        from PIL import ImageDraw, ImageFilter

        size = img.size[0]
        w, h = (int(size * v) for v in rng.uniform(0.2, 0.85, 2))
        shape = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(shape)
        pick = rng.random()
        if pick < 0.3:
            draw.ellipse((0, 0, w - 1, h - 1), fill=255)
        elif pick < 0.5:
            draw.rounded_rectangle(
                (0, 0, w - 1, h - 1), radius=int(min(w, h) * rng.uniform(0, 0.4)), fill=255
            )
        elif pick < 0.75:
            k = int(rng.integers(3, 9))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = rng.uniform(0.5, 1.0, k)
            pts = [
                (
                    float((0.5 + 0.5 * r * np.cos(a)) * (w - 1)),
                    float((0.5 + 0.5 * r * np.sin(a)) * (h - 1)),
                )
                for a, r in zip(ang, rad, strict=True)
            ]
            draw.polygon(pts, fill=255)
        elif pick < 0.85:
            draw.ellipse((0, 0, w - 1, h - 1), fill=255)
            t = float(rng.uniform(0.2, 0.35))
            draw.ellipse((int(w * t), int(h * t), int(w * (1 - t)), int(h * (1 - t))), fill=0)
        else:
            draw.ellipse((0, int(h * 0.6), w - 1, h - 1), fill=255)
            draw.rounded_rectangle(
                (int(w * 0.2), 0, int(w * 0.8), int(h * 0.8)), radius=int(w * 0.1), fill=255
            )
        if rng.random() < 0.6:
            fill = np.asarray(self._photo_crop(rng, max(w, h)).resize((w, h)), np.float32)
        else:
            fill = np.broadcast_to(rng.uniform(0, 255, 3).astype(np.float32), (h, w, 3)).copy()
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        tilt = float(rng.uniform(0, 2 * np.pi))
        ramp = (np.cos(tilt) * xx / w + np.sin(tilt) * yy / h + 1.0) / 2.0
        light = float(rng.uniform(0.5, 0.9)) + float(rng.uniform(0.2, 0.7)) * ramp
        fill = np.clip(fill * light[..., None], 0, 255).astype(np.uint8)
        shape = shape.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 2.5))))
        x0, y0 = (
            int(rng.integers(-w // 4, size - 3 * w // 4 + 1)),
            int(rng.integers(-h // 4, size - 3 * h // 4 + 1)),
        )
        if rng.random() < 0.5:
            dark = Image.new("RGB", (w, h), (0, 0, 0))
            soft = shape.filter(ImageFilter.GaussianBlur(float(rng.uniform(4, 12))))
            soft = soft.point(lambda v: int(v * 0.45))
            dx, dy = (int(v) for v in rng.integers(-size // 30, size // 30 + 1, 2))
            img.paste(dark, (x0 + dx, y0 + abs(dy)), soft)
        img.paste(Image.fromarray(fill), (x0, y0), shape)

    def make(self, rng: np.random.Generator, kind: str | None = None) -> CutoutSample:
        """One sample of ``kind`` (default: 72 % composite, 18 % studio, 10 % empty)."""
        from data.demo.render import on_studio_background

        big = MAKE_SIZE
        if kind is None:
            pick = rng.random()
            kind = "composite" if pick < 0.72 else "studio" if pick < 0.9 else "empty"
        if kind == "distill":
            if self.saliency is None:
                raise ValueError("distill samples need the original network's saliency")
            name = DISTILL_PHOTOS[int(rng.integers(len(DISTILL_PHOTOS)))]
            small = _random_crop(load_photo(name), rng, SIZE)
            target = np.asarray(self.saliency(small), np.float32)
            return CutoutSample(np.asarray(small), target, "distill")
        if kind == "studio":
            rgba = self._render(rng, big)
            img = on_studio_background(rgba)
            mask = np.asarray(rgba.getchannel("A")) >= 128
        elif kind == "empty":
            img = self.background(rng)
            mask = np.zeros((big, big), bool)
        elif kind == "composite":
            img = self.background(rng)
            ps = int(big * rng.uniform(0.3, 0.85))
            rgba = self._render(rng, ps)
            px = int(rng.integers(0, big - ps + 1))
            py = int(rng.integers(0, big - ps + 1))
            img.paste(rgba, (px, py), rgba)
            mask = np.zeros((big, big), bool)
            mask[py : py + ps, px : px + ps] = np.asarray(rgba.getchannel("A")) >= 128
        else:
            raise ValueError(f"kind: expected composite|studio|empty|distill, got {kind!r}")
        small = img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
        m = Image.fromarray(mask.astype(np.float32), "F").resize((SIZE, SIZE), Image.Resampling.BOX)
        return CutoutSample(np.asarray(small), np.asarray(m, np.float32), kind)

    def batch(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` fresh samples of the default mix, half of them mirrored: ``(images (n, 320,
        320, 3) uint8, masks (n, 320, 320) float32)``."""
        samples = [self.make(rng) for _ in range(n)]
        images = np.stack([s.image for s in samples])
        masks = np.stack([s.mask for s in samples])
        flip = rng.random(n) < 0.5  # the renderer draws most products facing one way
        images[flip], masks[flip] = images[flip, :, ::-1], masks[flip, :, ::-1]
        return images, masks


def make_shard(
    maker: SampleMaker, n: int, *, seed: int, kinds: tuple[str, ...] | None = None
) -> dict[str, np.ndarray]:
    """``n`` samples from ``default_rng([seed, 0xC07])`` as arrays: ``images`` ``(n, 320, 320,
    3)`` uint8, ``masks`` ``(n, 320, 320)`` uint8 (0-255), ``kinds`` str; with ``kinds`` the
    kinds cycle through that list, else the default mix. With the maker's ``saliency`` also
    ``saliency`` ``(n, 320, 320)`` uint8: the original network's map of each picture."""
    rng = np.random.default_rng([seed, 0xC07])
    images, masks, sal, kind_list = [], [], [], []
    for i in range(n):
        s = maker.make(rng, kinds[i % len(kinds)] if kinds else None)
        images.append(s.image)
        masks.append(np.round(s.mask * 255).astype(np.uint8))
        if maker.saliency is not None:
            sal.append(np.round(maker.saliency(Image.fromarray(s.image)) * 255).astype(np.uint8))
        kind_list.append(s.kind)
    out = {"images": np.stack(images), "masks": np.stack(masks), "kinds": np.array(kind_list)}
    if sal:
        out["saliency"] = np.stack(sal)
    return out


def save_shard(path: Path, shard: dict[str, np.ndarray]) -> None:
    """Write ``shard`` (``make_shard``'s arrays) to ``path`` (.npz) atomically."""
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **shard)  # type: ignore[arg-type]
    tmp.replace(path)
