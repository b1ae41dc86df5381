"""Training data for the small generator: demo products in scenes, with captions.

Samples are rendered once into an ``.npz`` cache (rendering is cheap; training reads arrays).
Two sources: ``demo`` (the demo world under ``data/demo``) and ``synthetic`` (coloured shapes
on plain backgrounds, used by the fast tests and when the demo world is unavailable).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.files import atomic_write

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


#: One sample's random choices: product, settings 1 and 2, lightings 1 and 2, seeds 1 and 2.
PlanRow = tuple[int, str, str, str, str, int, int]


def _render_pairs(plan: list[PlanRow], size: int, seed: int) -> Any:
    """Render (image, reference) uint8 pairs for ``plan`` rows ``(product, setting 1,
    setting 2, lighting 1, lighting 2, seed 1, seed 2)``; a process-pool task."""
    from data.demo.render import render_product, render_scene
    from data.demo.world import build_world

    products = list(build_world(seed=seed).products)
    cutouts: dict[int, object] = {}
    out = []
    for k, s1, s2, l1, l2, sd1, sd2 in plan:
        if k not in cutouts:
            # Render the cut-out at 2x and let render_scene downsample (crisper edges).
            p = products[k]
            cutouts[k] = render_product(p.attributes, category=p.category, size=2 * size, seed=k)
        img = render_scene(cutouts[k], setting=s1, lighting=l1, size=size, seed=sd1)  # type: ignore[arg-type]
        ref = render_scene(cutouts[k], setting=s2, lighting=l2, size=size, seed=sd2)  # type: ignore[arg-type]
        out.append((np.asarray(img)[..., :3], np.asarray(ref)[..., :3]))
    return out


def _demo(
    n: int, size: int, rng: np.random.Generator, seed: int, workers: int = 1
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
    IP-Adapter). The caption is the demo world's ``scene_caption``. All random choices are
    drawn first, in one order, so ``workers`` > 1 processes render the same pixels.
    """
    from data.demo import attributes as vocab
    from data.demo.world import build_world

    world = build_world(seed=seed)
    products = list(world.products)
    settings = list(vocab.SETTINGS)
    lighting = list(vocab.LIGHTING)
    attrs, pids = [], []
    plan: list[PlanRow] = []
    for _ in range(n):
        k = int(rng.integers(len(products)))
        p = products[k]
        s1, s2 = (settings[int(rng.integers(len(settings)))] for _ in range(2))
        l1, l2 = (lighting[int(rng.integers(len(lighting)))] for _ in range(2))
        sd1, sd2 = (int(rng.integers(2**31)) for _ in range(2))
        plan.append((k, s1, s2, l1, l2, sd1, sd2))
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
    if workers > 1 and n >= 64:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # Chunks sorted by product so each process renders few cut-outs; results are put
        # back in sample order.
        order = sorted(range(n), key=lambda i: plan[i][0])
        chunks = [order[i::workers] for i in range(workers)]
        pairs: list[Any] = [None] * n
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_render_pairs, [plan[i] for i in c], size, seed) for c in chunks]
            for c, f in zip(chunks, futures, strict=True):
                for i, pair in zip(c, f.result(), strict=True):
                    pairs[i] = pair
    else:
        pairs = _render_pairs(plan, size, seed)
    images = [a for a, _ in pairs]
    refs = [b for _, b in pairs]
    palette = {c: (int(r), int(g), int(b)) for c, (r, g, b) in vocab.COLOURS.items()}
    return images, refs, attrs, pids, palette, list(vocab.CATEGORIES)


def build_dataset(
    *,
    n: int,
    size: int = 64,
    seed: int = 0,
    source: str = "demo",
    n_held_out: int = 200,
    workers: int = 1,
) -> Dataset:
    """Render ``n`` samples and hold out ``n_held_out`` caption strings (never trained on).

    ``source``: ``demo`` or ``synthetic``. Held-out captions are distinct strings; every
    training sample whose caption equals one of them is removed from the training set.
    ``workers`` > 1 renders demo scenes in that many processes (same pixels).
    """
    if source not in ("demo", "synthetic"):
        raise ValueError(f"source must be 'demo' or 'synthetic', got {source!r}")
    if n < 1 or size < 16:
        raise ValueError(f"n must be >= 1 and size >= 16, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    if source == "demo":
        images, refs, attrs, pids, palette, categories = _demo(n, size, rng, seed, workers)
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


def downscale(images: np.ndarray, side: int) -> np.ndarray:
    """uint8 (N, S, S, 3) -> (N, side, side, 3) by box averaging (``S`` a multiple of
    ``side``); the input itself when already ``side``."""
    n, s = images.shape[0], images.shape[1]
    if s == side:
        return images
    if s % side:
        raise ValueError(f"images: expected a side that is a multiple of {side}, got {s}")
    f = s // side
    boxes = images.reshape(n, side, f, side, f, 3).astype(np.float32).mean(axis=(2, 4))
    return np.asarray(boxes.round().clip(0, 255).astype(np.uint8))


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

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:  # a file object: numpy would append ".npz" to a name
            np.savez_compressed(fh, images=t.images, refs=t.refs, meta=np.array(json.dumps(meta)))

    atomic_write(p, write)
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
    *,
    cache: str | Path,
    n: int,
    size: int = 64,
    seed: int = 0,
    source: str = "demo",
    workers: int | None = None,
) -> Dataset:
    """Load ``cache`` if it exists, else build and save it (``workers`` rendering processes;
    None: one per CPU core, at most 16)."""
    p = Path(cache)
    if p.exists():
        return load_dataset(p)
    if workers is None:
        workers = min(16, os.cpu_count() or 1)
    ds = build_dataset(n=n, size=size, seed=seed, source=source, workers=workers)
    save_dataset(ds, p)
    return ds
