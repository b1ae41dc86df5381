"""Training pictures for the product cut-out refiner (``tailorshot train cutout``).

Every sample is a 320 x 320 RGB picture (the saliency network's input size), its known
product mask and U^2-Net-p's own saliency of it. Kinds, all seeded:

* ``composite``: a demo product (a world of seed ``WORLD_SEED``, not heroeval's 0) rendered at
  a random scale and place on a background that heroeval never uses: scikit-image photographs
  with subjects of their own (a cameraman, a motorcycle, a clock, coins...), procedural demo
  backdrops, crops of other products' studio renders, value noise, gradients and flat colours;
* ``studio``: a demo product on its studio backdrop, as the demo catalog shows it;
* ``distill``: real photographs of objects (``DISTILL_PHOTOS``) with no product pasted; the
  target is the original U^2-Net-p mask, so the refiner keeps cutting real product photos as
  the original did.

heroeval's ``PHOTOS`` (coffee, chelsea, astronaut, rocket, brick, grass, gravel) never appear:
they are the measure's backgrounds, and ``coffee`` is the hand-drawn-mask test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from genservice.training.heroeval import PHOTOS as HELD_OUT_PHOTOS

#: Demo world seed of the training products (heroeval's cases use seed 0).
WORLD_SEED = 7
#: Render seeds of training products start here (heroeval uses 0..n and 1000..1000+n).
RENDER_SEED_BASE = 500_000
#: Side of every sample, px (the saliency network's input).
SIZE = 320
#: scikit-image pictures used as backgrounds (none of heroeval's).
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
    "microaneurysms",
    "horse",
    "colorwheel",
    "logo",
    "checkerboard",
)
#: Real photographs of objects whose original U^2-Net-p mask is the distillation target.
DISTILL_PHOTOS = ("stereo_motorcycle", "clock", "camera", "logo", "coins")

assert not set(BACKGROUND_PHOTOS + DISTILL_PHOTOS) & set(HELD_OUT_PHOTOS)


@dataclass(frozen=True)
class CutoutSample:
    """``image`` ``(320, 320, 3)`` uint8, ``mask`` ``(320, 320)`` float32 target in [0, 1],
    ``kind`` ``"composite"`` | ``"studio"`` | ``"distill"``."""

    image: np.ndarray
    mask: np.ndarray
    kind: str


@cache
def _skimage_photo(name: str) -> np.ndarray:
    """A scikit-image picture as ``(H, W, 3)`` uint8 (grey repeated, alpha dropped)."""
    import skimage.data

    arr = getattr(skimage.data, name)()
    if name == "stereo_motorcycle":
        arr = arr[0]
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


def _random_crop(arr: np.ndarray, rng: np.random.Generator, size: int) -> Image.Image:
    """A random square crop (40-100 % of the short side), maybe mirrored, at ``size``."""
    h, w = arr.shape[:2]
    s = int(min(h, w) * rng.uniform(0.4, 1.0))
    y = int(rng.integers(0, h - s + 1))
    x = int(rng.integers(0, w - s + 1))
    img = Image.fromarray(arr[y : y + s, x : x + s]).resize((size, size), Image.Resampling.LANCZOS)
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img


def _procedural(rng: np.random.Generator, size: int) -> Image.Image:
    """Value noise, a gradient, a flat colour or a demo backdrop, ``size`` px RGB."""
    from data.demo.attributes import LIGHTING, SETTINGS
    from data.demo.render.scene import render_backdrop
    from data.demo.render.textures import value_noise

    pick = rng.random()
    if pick < 0.4:
        s = SETTINGS[int(rng.integers(len(SETTINGS)))]
        light = LIGHTING[int(rng.integers(len(LIGHTING)))]
        low = int(rng.choice([64, 96, 128]))
        back = render_backdrop(s, light, size=low, seed=int(rng.integers(2**31)))
        return back.resize((size, size), Image.Resampling.BICUBIC)
    if pick < 0.7:
        res = int(rng.integers(2, 12))
        noise = np.stack([value_noise(rng, (res, res), size) for _ in range(3)], axis=-1)
        lo, hi = rng.uniform(0, 120, 3), rng.uniform(130, 255, 3)
        return Image.fromarray(np.clip(lo + noise * (hi - lo), 0, 255).astype(np.uint8))
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    if pick < 0.85:
        t = np.linspace(0.0, 1.0, size)[:, None, None]
        grad = c0 + t * (c1 - c0)
        return Image.fromarray(np.broadcast_to(grad, (size, size, 3)).astype(np.uint8))
    return Image.new("RGB", (size, size), tuple(int(v) for v in c0))


class SampleMaker:
    """Seeded maker of training samples; ``saliency(image)`` is the original U^2-Net-p
    ``(320, 320)`` map (used for distillation targets)."""

    def __init__(
        self, saliency: Callable[[Image.Image], np.ndarray], *, n_products: int = 240
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

    def make(self, rng: np.random.Generator) -> CutoutSample:
        """One sample: 60 % composite, 20 % studio, 20 % distill."""
        from data.demo.render import on_studio_background

        pick = rng.random()
        # Pictures are made at heroeval's 384 px and reduced as the cut-out reduces them.
        big = 384
        if pick < 0.2:
            name = DISTILL_PHOTOS[int(rng.integers(len(DISTILL_PHOTOS)))]
            img = _random_crop(_skimage_photo(name), rng, big)
            small = img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
            target = np.asarray(self.saliency(img), np.float32)
            return CutoutSample(np.asarray(small), target, "distill")
        if pick < 0.4:
            rgba = self._render(rng, big)
            img = on_studio_background(rgba)
            mask = np.asarray(rgba.getchannel("A")) >= 128
            kind = "studio"
        else:
            q = rng.random()
            if q < 0.5:
                name = BACKGROUND_PHOTOS[int(rng.integers(len(BACKGROUND_PHOTOS)))]
                img = _random_crop(_skimage_photo(name), rng, big)
            elif q < 0.65:
                # Another product's studio render, cropped: a background with an object in it.
                other = on_studio_background(self._render(rng, big))
                img = _random_crop(np.asarray(other), rng, big)
            else:
                img = _procedural(rng, big)
            ps = int(big * rng.uniform(0.3, 0.85))
            rgba = self._render(rng, ps)
            px = int(rng.integers(0, big - ps + 1))
            py = int(rng.integers(0, big - ps + 1))
            img.paste(rgba, (px, py), rgba)
            mask = np.zeros((big, big), bool)
            mask[py : py + ps, px : px + ps] = np.asarray(rgba.getchannel("A")) >= 128
            kind = "composite"
        small = img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
        m = Image.fromarray(mask.astype(np.float32), "F").resize((SIZE, SIZE), Image.Resampling.BOX)
        return CutoutSample(np.asarray(small), np.asarray(m, np.float32), kind)


def make_shard(maker: SampleMaker, n: int, *, seed: int) -> dict[str, np.ndarray]:
    """``n`` samples from ``default_rng([seed, 0xC07])`` as arrays: ``images`` ``(n, 320, 320,
    3)`` uint8, ``masks`` and ``saliency`` ``(n, 320, 320)`` uint8 (0-255), ``kinds`` str."""
    rng = np.random.default_rng([seed, 0xC07])
    images, masks, sal, kinds = [], [], [], []
    for _ in range(n):
        s = maker.make(rng)
        images.append(s.image)
        masks.append(np.round(s.mask * 255).astype(np.uint8))
        sal.append(np.round(maker.saliency(Image.fromarray(s.image)) * 255).astype(np.uint8))
        kinds.append(s.kind)
    return {
        "images": np.stack(images),
        "masks": np.stack(masks),
        "saliency": np.stack(sal),
        "kinds": np.array(kinds),
    }


def save_shard(path: Path, shard: dict[str, np.ndarray]) -> None:
    """Write ``shard`` (``make_shard``'s arrays) to ``path`` (.npz) atomically."""
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(
        tmp,
        images=shard["images"],
        masks=shard["masks"],
        saliency=shard["saliency"],
        kinds=shard["kinds"],
    )
    tmp.replace(path)
