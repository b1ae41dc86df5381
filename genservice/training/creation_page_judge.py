"""The page judge of ``tailorshot evaluate creations`` (issue 21): ``evaluate generator``'s
judge recipe trained on the demo scenes plus true renders shown as detail pages, and the
detail-page helpers the evaluation shares with it."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from genservice.creation.page import on_background, product_box
from genservice.training.evaluate import ColourCategoryJudge


def _judge_side(images: Sequence[Image.Image], side: int = 64) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB").resize((side, side), Image.Resampling.BOX))
                     for im in images])  # fmt: skip


def _true_cutout_page(render: np.ndarray, mask: np.ndarray, size: int) -> Image.Image:
    """A true render cut out by its true mask, placed as ``Creator.finish`` places a product
    (plain resampling, no restoration): the judge's ceiling on detail-page geometry."""
    ys, xs = np.nonzero(mask)
    rgba = np.dstack([render, (mask * 255).astype(np.uint8)])
    cut = Image.fromarray(
        np.ascontiguousarray(rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]), "RGBA"
    )
    box = product_box(cut.size, size)
    return on_background(cut.resize(box, Image.Resampling.LANCZOS), size, (255, 255, 255))


# ----------------------------------------------------------------------------- page judge

#: Where ``fit_page_judge`` keeps its judge (under the evaluation's work folder).
PAGE_JUDGE_FILE = "page_judge.pt"


@functools.lru_cache(maxsize=2)
def _world_products(world_seed: int) -> tuple[Any, ...]:
    from data.demo.world import build_world

    return tuple(build_world(seed=world_seed).products)


def page_judge_samples(
    n: int, *, seed: int, side: int = 64, held_out: bool = False, world_seed: int = 0
) -> tuple[np.ndarray, list[str], list[str]]:
    """``n`` true demo renders shown as detail pages (never generated images): a product's
    RGBA cut-out (``render_product``; training products, or the held-out ones, world index a
    multiple of 10) scaled so its longer side spans 0.35-0.95 of ``side``, placed anywhere it
    fits, brightness jittered, a soft contact shadow under it a third of the time, on white
    (half), a light grey or a random studio colour. Returns uint8 ``(n, side, side, 3)``,
    colours and categories."""
    from data.demo.render import render_product
    from genservice.training.controlnet import held_out_product

    products = _world_products(world_seed)
    pool = [k for k in range(len(products)) if held_out_product(k) == held_out]
    rng = np.random.default_rng(seed)
    cuts: dict[int, Image.Image] = {}
    images, colours, cats = [], [], []
    for _ in range(n):
        k = int(pool[int(rng.integers(len(pool)))])
        p = products[k]
        if k not in cuts:
            im = render_product(p.attributes, category=p.category, size=2 * side, seed=k)
            bbox = im.getchannel("A").getbbox()
            cuts[k] = im.crop(bbox) if bbox else im
        cut = cuts[k]
        span = float(rng.uniform(0.35, 0.95)) * side
        f = span / max(cut.size)
        w, h = max(1, round(cut.width * f)), max(1, round(cut.height * f))
        small = cut.resize((w, h), Image.Resampling.LANCZOS)
        arr = np.asarray(small, np.float32)
        arr[..., :3] *= float(rng.uniform(0.75, 1.15))
        small = Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGBA")
        r = float(rng.random())
        if r < 0.5:
            bg: tuple[int, ...] = (255, 255, 255)
        elif r < 0.75:
            g = int(rng.integers(170, 256))
            bg = (g, g, g)
        else:
            bg = tuple(int(v) for v in rng.integers(110, 256, 3))
        canvas = Image.new("RGBA", (side, side), (*bg, 255))
        x = int(rng.integers(0, side - w + 1))
        y = int(rng.integers(0, side - h + 1))
        if rng.random() < 1 / 3:
            shadow = np.zeros((side, side), np.float32)
            yy, xx = np.mgrid[0:side, 0:side]
            cx, cy = x + w / 2, min(side - 1, y + h)
            shadow = np.exp(-(((xx - cx) / (0.5 * w + 1)) ** 2 + ((yy - cy) / (0.08 * h + 1)) ** 2))
            base = np.asarray(canvas, np.float32)
            base[..., :3] *= 1 - 0.5 * shadow[..., None]
            canvas = Image.fromarray(base.clip(0, 255).astype(np.uint8), "RGBA")
        canvas.alpha_composite(small, (x, y))
        images.append(np.asarray(canvas.convert("RGB")))
        colours.append(p.attributes["colour"])
        cats.append(p.category)
    return np.stack(images), colours, cats


def fit_page_judge(
    *,
    work_dir: Path,
    dataset: Any,
    n_pages: int = 6000,
    steps: int = 900,
    seed: int = 0,
    progress: bool = True,
) -> tuple[ColourCategoryJudge, dict[str, Any]]:
    """The detail-page judge (kept at ``work_dir/page_judge.pt``): ``evaluate generator``'s
    judge architecture and recipe trained on the same demo scenes (``dataset.train`` images
    and refs) *plus* ``n_pages`` true renders shown as detail pages
    (:func:`page_judge_samples`, training products only), so it names a product's colour
    and category wherever it stands, at any scale, on a plain ground. Never trained on
    generated images. Also returns its held-out accuracy: detail pages of the held-out
    products (world index a multiple of 10, never in its pages) and those products' true
    cut-outs centred as ``Creator.finish`` places them."""
    from genservice.training.controlnet import render_pairs

    path = work_dir / PAGE_JUDGE_FILE
    tr = dataset.train
    if path.exists():
        judge = ColourCategoryJudge.load(path)
    else:
        pages, pcol, pcat = page_judge_samples(n_pages, seed=seed + 21)
        judge = ColourCategoryJudge(colours=list(dataset.palette), categories=dataset.categories)
        judge.fit(
            np.concatenate([tr.images, tr.refs, pages]),
            [*tr.colours, *tr.colours, *pcol],
            [*tr.categories, *tr.categories, *pcat],
            steps=steps,
            seed=seed,
            work_dir=work_dir / "page_judge_run",
            progress=progress,
        )
        work_dir.mkdir(parents=True, exist_ok=True)
        judge.save(path)
    hp, hcol, hcat = page_judge_samples(400, seed=seed + 23, held_out=True)
    true = render_pairs(n=120, held_out=True, seed=seed + 11)
    tpages = [_true_cutout_page(p.render, p.mask, 256) for p in true]
    c1, k1 = judge.predict(hp)
    c2, k2 = judge.predict(_judge_side(tpages))
    c3, k3 = judge.predict(np.stack([p.render for p in true]))

    def acc(a: list[str], b: list[str]) -> float:
        return round(float(np.mean([x == y for x, y in zip(a, b, strict=True)])), 4)

    held = {
        "held_out_pages": {"n": len(hcol), "colour": acc(c1, hcol), "category": acc(k1, hcat)},
        "held_out_true_cutouts_centred": {
            "n": len(true),
            "colour": acc(c2, [p.colour for p in true]),
            "category": acc(k2, [p.category for p in true]),
        },
        "held_out_studio_renders": {
            "n": len(true),
            "colour": acc(c3, [p.colour for p in true]),
            "category": acc(k3, [p.category for p in true]),
        },
    }
    return judge, held
