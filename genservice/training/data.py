"""Training data for the small generator: demo products in scenes, with captions.

Samples are rendered once into an ``.npz`` cache (rendering is cheap; training reads arrays).
Two sources: ``demo`` (the demo world under ``data/demo``) and ``synthetic`` (coloured shapes
on plain backgrounds, used by the fast tests and when the demo world is unavailable).
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: RGB of the synthetic palette (also the fallback palette of the colour judge).
SYNTH_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "orange": (235, 130, 30),
    "yellow": (230, 205, 40),
    "green": (50, 160, 60),
    "blue": (40, 80, 210),
    "purple": (130, 50, 180),
    "pink": (235, 120, 170),
    "black": (25, 25, 25),
}
SYNTH_CATEGORIES = ("t-shirt", "mug", "lamp", "watch")
SYNTH_PATTERNS = ("solid", "striped")
SYNTH_SETTINGS: dict[str, tuple[int, int, int]] = {
    "studio": (235, 235, 235),
    "kitchen": (200, 185, 160),
    "street": (120, 120, 125),
}
SYNTH_LIGHTING = ("soft light", "bright light")


@dataclass
class SampleSet:
    """Rendered training samples. ``images``/``refs``: uint8 (N, S, S, 3); ``refs`` shows the
    same product in another scene (the IP-Adapter's reference). Attribute lists have length N."""

    images: np.ndarray
    refs: np.ndarray
    captions: list[str]
    colours: list[str]
    categories: list[str]
    patterns: list[str]
    settings: list[str]
    product_ids: list[int]
    source: str

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class EvalCaption:
    """A held-out caption and the attributes it names."""

    caption: str
    colour: str
    category: str
    pattern: str
    setting: str


@dataclass
class Dataset:
    """Training samples, the held-out evaluation captions, and the colour palette (RGB)."""

    train: SampleSet
    held_out: list[EvalCaption]
    palette: dict[str, tuple[int, int, int]]
    categories: list[str]


def make_caption(colour: str, pattern: str, category: str, setting: str) -> str:
    """Short caption in the style-vocabulary order: colour, pattern, category, setting."""
    pat = "" if pattern in ("solid", "plain", "") else f"{pattern} "
    return f"a {colour} {pat}{category} in a {setting}"


def hue_of(rgb: tuple[int, int, int]) -> float:
    """Hue in [0, 1) of an RGB triple (0..255)."""
    return colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0]


# ---------------------------------------------------------------- synthetic source


def _shape_mask(category: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean (size, size) silhouette of a synthetic product, jittered in place and scale."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    s = rng.uniform(0.85, 1.1)
    cx, cy = 0.5 + rng.uniform(-0.06, 0.06), 0.5 + rng.uniform(-0.06, 0.06)
    x, y = (xx - cx) / s, (yy - cy) / s
    if category == "t-shirt":
        body = (abs(x) < 0.2) & (abs(y) < 0.28)
        sleeves = (abs(x) < 0.34) & (y > -0.28) & (y < -0.1)
        return body | sleeves
    if category == "mug":
        cup = (abs(x + 0.05) < 0.2) & (abs(y) < 0.25)
        r = np.hypot(x - 0.2, y)
        return cup | ((r < 0.14) & (r > 0.07))
    if category == "lamp":
        shade = (y > -0.3) & (y < -0.05) & (abs(x) < 0.1 + (y + 0.3) * 0.6)
        pole = (abs(x) < 0.03) & (y >= -0.05) & (y < 0.25)
        base = (abs(x) < 0.18) & (y >= 0.25) & (y < 0.31)
        return shade | pole | base
    # watch: round face with a strap
    return (np.hypot(x, y) < 0.18) | ((abs(x) < 0.08) & (abs(y) < 0.38))


def _synthetic(
    n: int, size: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray], list[dict[str, str]], list[int]]:
    images, refs, attrs, pids = [], [], [], []
    colours = list(SYNTH_COLOURS)
    for i in range(n):
        a = {
            "colour": colours[rng.integers(len(colours))],
            "category": SYNTH_CATEGORIES[rng.integers(len(SYNTH_CATEGORIES))],
            "pattern": SYNTH_PATTERNS[rng.integers(len(SYNTH_PATTERNS))],
            "setting": list(SYNTH_SETTINGS)[rng.integers(len(SYNTH_SETTINGS))],
        }
        pair = []
        for setting in (a["setting"], list(SYNTH_SETTINGS)[rng.integers(len(SYNTH_SETTINGS))]):
            img = np.empty((size, size, 3), np.float32)
            img[:] = SYNTH_SETTINGS[setting]
            img += rng.normal(0, 4, img.shape)
            mask = _shape_mask(a["category"], size, rng)
            col = np.asarray(SYNTH_COLOURS[a["colour"]], np.float32)
            fill = np.broadcast_to(col, img.shape).copy()
            if a["pattern"] == "striped":
                stripe = (np.arange(size) // max(2, size // 16)) % 2 == 1
                fill[stripe] = fill[stripe] * 0.55 + 255 * 0.45
            img[mask] = fill[mask]
            pair.append(np.clip(img, 0, 255).astype(np.uint8))
        images.append(pair[0])
        refs.append(pair[1])
        attrs.append(a)
        pids.append(i)
    return images, refs, attrs, pids


# ---------------------------------------------------------------- demo-world source


def _demo(
    n: int, size: int, rng: np.random.Generator, seed: int
) -> tuple[
    list[np.ndarray],
    list[np.ndarray],
    list[dict[str, str]],
    list[int],
    dict[str, tuple[int, int, int]],
    list[str],
]:
    """Render ``n`` samples: random demo products, each in a random setting and lighting.

    Each sample also gets a reference render of the same product in another scene (for the
    IP-Adapter). The caption is the demo world's ``scene_caption``.
    """
    from data.demo import attributes as vocab
    from data.demo.render import render_product, render_scene
    from data.demo.world import build_world

    world = build_world(seed=seed)
    products = list(world.products)
    settings = list(vocab.SETTINGS)
    lighting = list(vocab.LIGHTING)
    images, refs, attrs, pids = [], [], [], []
    cutouts: dict[int, object] = {}
    for _ in range(n):
        k = int(rng.integers(len(products)))
        p = products[k]
        if k not in cutouts:
            # Render the cut-out at 2x and let render_scene downsample (crisper edges).
            cutouts[k] = render_product(p.attributes, category=p.category, size=2 * size, seed=k)
        s1, s2 = (settings[int(rng.integers(len(settings)))] for _ in range(2))
        l1, l2 = (lighting[int(rng.integers(len(lighting)))] for _ in range(2))
        sd1, sd2 = (int(rng.integers(2**31)) for _ in range(2))
        img = render_scene(cutouts[k], setting=s1, lighting=l1, size=size, seed=sd1)  # type: ignore[arg-type]
        ref = render_scene(cutouts[k], setting=s2, lighting=l2, size=size, seed=sd2)  # type: ignore[arg-type]
        images.append(np.asarray(img)[..., :3])
        refs.append(np.asarray(ref)[..., :3])
        attrs.append(
            {
                "colour": p.attributes["colour"],
                "category": p.category,
                "pattern": p.attributes.get("pattern", "solid"),
                "setting": s1,
                "caption": vocab.scene_caption(p.attributes, p.category, setting=s1, lighting=l1),
            }
        )
        pids.append(k)
    palette = {c: (int(r), int(g), int(b)) for c, (r, g, b) in vocab.COLOURS.items()}
    return images, refs, attrs, pids, palette, list(vocab.CATEGORIES)


def build_dataset(
    *, n: int, size: int = 64, seed: int = 0, source: str = "demo", n_held_out: int = 200
) -> Dataset:
    """Render ``n`` samples and hold out ``n_held_out`` caption strings (never trained on).

    ``source``: ``demo`` or ``synthetic``. Held-out captions are distinct strings; every
    training sample whose caption equals one of them is removed from the training set.
    """
    if source not in ("demo", "synthetic"):
        raise ValueError(f"source must be 'demo' or 'synthetic', got {source!r}")
    if n < 1 or size < 16:
        raise ValueError(f"n must be >= 1 and size >= 16, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    if source == "demo":
        images, refs, attrs, pids, palette, categories = _demo(n, size, rng, seed)
    else:
        images, refs, attrs, pids = _synthetic(n, size, rng)
        palette, categories = dict(SYNTH_COLOURS), list(SYNTH_CATEGORIES)
    caps = [
        a.get("caption") or make_caption(a["colour"], a["pattern"], a["category"], a["setting"])
        for a in attrs
    ]
    by_caption = dict(zip(caps, attrs, strict=True))
    unique = sorted(by_caption)
    k = min(n_held_out, len(unique) // 4)
    chosen = set(rng.choice(len(unique), size=k, replace=False).tolist()) if k else set()
    held = [unique[i] for i in sorted(chosen)]
    held_set = set(held)
    keep = [i for i, c in enumerate(caps) if c not in held_set]
    train = SampleSet(
        images=np.stack([images[i] for i in keep]),
        refs=np.stack([refs[i] for i in keep]),
        captions=[caps[i] for i in keep],
        colours=[attrs[i]["colour"] for i in keep],
        categories=[attrs[i]["category"] for i in keep],
        patterns=[attrs[i]["pattern"] for i in keep],
        settings=[attrs[i]["setting"] for i in keep],
        product_ids=[pids[i] for i in keep],
        source=source,
    )
    held_out = [
        EvalCaption(
            caption=c,
            colour=by_caption[c]["colour"],
            category=by_caption[c]["category"],
            pattern=by_caption[c]["pattern"],
            setting=by_caption[c]["setting"],
        )
        for c in held
    ]
    return Dataset(train=train, held_out=held_out, palette=palette, categories=categories)


def save_dataset(ds: Dataset, path: str | Path) -> Path:
    """Write ``ds`` to one ``.npz`` (arrays + JSON metadata)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    t = ds.train
    meta = {
        "captions": t.captions,
        "colours": t.colours,
        "categories": t.categories,
        "patterns": t.patterns,
        "settings": t.settings,
        "product_ids": t.product_ids,
        "source": t.source,
        "held_out": [e.__dict__ for e in ds.held_out],
        "palette": {k: list(v) for k, v in ds.palette.items()},
        "category_names": ds.categories,
    }
    tmp = p.with_name(p.name + ".tmp.npz")
    np.savez_compressed(tmp, images=t.images, refs=t.refs, meta=np.array(json.dumps(meta)))
    tmp.replace(p)
    return p


def load_dataset(path: str | Path) -> Dataset:
    """Read a dataset written by :func:`save_dataset`."""
    with np.load(Path(path)) as z:
        meta = json.loads(str(z["meta"]))
        images, refs = z["images"], z["refs"]
    train = SampleSet(
        images=images,
        refs=refs,
        captions=meta["captions"],
        colours=meta["colours"],
        categories=meta["categories"],
        patterns=meta["patterns"],
        settings=meta["settings"],
        product_ids=meta["product_ids"],
        source=meta["source"],
    )
    return Dataset(
        train=train,
        held_out=[EvalCaption(**e) for e in meta["held_out"]],
        palette={k: (int(v[0]), int(v[1]), int(v[2])) for k, v in meta["palette"].items()},
        categories=list(meta["category_names"]),
    )


def get_dataset(
    *, cache: str | Path, n: int, size: int = 64, seed: int = 0, source: str = "demo"
) -> Dataset:
    """Load ``cache`` if it exists, else build and save it."""
    p = Path(cache)
    if p.exists():
        return load_dataset(p)
    ds = build_dataset(n=n, size=size, seed=seed, source=source)
    save_dataset(ds, p)
    return ds
