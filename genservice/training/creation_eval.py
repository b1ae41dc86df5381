"""``tailorshot evaluate creations``: new product images judged (issue 21).

* **Text**: one creation per held-out demo caption (the captions ``evaluate generator``
  holds out; never trained on), at the requested size: cut out, restored, on white. The
  independent colour/category judge (a small CNN trained on demo renders) sees the finished
  detail-page image box-reduced to 64 px; the raw diffusion output is judged too (what
  ``evaluate generator`` measures). ``max_product_upscale``: the largest plain enlargement of
  product pixels after restoration.
* **Sketches**: held-out demo products (never in the ControlNet's training) rendered in the
  studio; their sketch = the product's edges as black strokes on white
  (``derive_sketch``). Adherence = IoU of the created image's cut-out silhouette (native
  side, alpha > 0.5) with the sketch's filled outline, for the ControlNet and for the img2img
  fallback; text alone (no sketch) is the floor, the true silhouette's IoU the ceiling.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data.files import atomic_write_bytes
from genservice.creation import sketch as sk
from genservice.creation.pipeline import PRODUCT_FILL, Creator
from genservice.creation.request import parse_background
from genservice.imaging.cutout import mask_iou
from genservice.training.controlnet import render_pairs
from genservice.training.evaluate import ColourCategoryJudge, contact_sheet


@dataclass
class CreationEvalOutput:
    """Figures (fractions in [0, 1] unless named otherwise) and what produced them."""

    n: int
    size: int
    colour_match: float
    category_match: float
    colour_match_raw: float
    category_match_raw: float
    max_product_upscale: float
    cutout_none: float
    sketches: int
    sketch_iou_controlnet: float | None
    sketch_iou_img2img: float | None
    sketch_iou_text_only: float | None
    sketch_iou_true_silhouette: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _judge_side(images: Sequence[Image.Image], side: int = 64) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB").resize((side, side), Image.Resampling.BOX))
                     for im in images])  # fmt: skip


#: Share of the side a demo render's product spans (``compose_scene`` scales 0.5-0.68).
RENDER_FILL = 0.6


def _framed(image: Image.Image) -> Image.Image:
    """A detail-page image padded with its own background so the product spans
    :data:`RENDER_FILL` of the side, as in the renders the judge learned from."""
    side = round(image.width * PRODUCT_FILL / RENDER_FILL)
    canvas = Image.new("RGB", (side, side), image.getpixel((0, 0)))
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


def _diffuse_cached(
    creator: Creator,
    prompts: list[str],
    seeds: list[int],
    *,
    sketches: list[Image.Image] | None,
    mode: str,
    cache_dir: Path | None,
) -> list[Image.Image]:
    """``creator.diffuse`` of one chunk, kept as ``<cache_dir>/<sha256>.npz`` keyed by
    everything the pixels depend on (model, controlnet, steps, guidance, strength, scale,
    mode, prompts, seeds, sketch pixels), so a rerun only redoes what changed."""
    if cache_dir is None:
        imgs, _ = creator.diffuse(prompts, seeds, sketch=sketches, mode=mode)
        return imgs
    h = hashlib.sha256()
    cn_id = creator.controlnet_ref if creator.has_controlnet else None
    parts = [creator.model_id, str(cn_id), creator.steps, creator.guidance,
             creator.img2img_strength, creator.controlnet_scale, mode, prompts, seeds]  # fmt: skip
    h.update(json.dumps(parts).encode())
    for x in sketches or []:
        h.update(np.asarray(x.convert("RGB")).tobytes())
    f = cache_dir / f"{h.hexdigest()[:32]}.npz"
    if f.is_file():
        with np.load(f) as z:
            return [Image.fromarray(a) for a in z["images"]]
    imgs, _ = creator.diffuse(prompts, seeds, sketch=sketches, mode=mode)
    cache_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, images=np.stack([np.asarray(i) for i in imgs]))
    atomic_write_bytes(f, buf.getvalue())
    return imgs


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def evaluate_creations(
    *,
    creator: Creator,
    captions: Sequence[tuple[str, str, str]],
    judge: ColourCategoryJudge,
    size: int = 1080,
    sketches: int = 100,
    seed: int = 0,
    batch: int = 25,
    sheet_path: str | Path | None = None,
    progress: bool = True,
    cache_dir: str | Path | None = None,
) -> CreationEvalOutput:
    """``captions``: (caption, colour, category) held out from training. ``creator`` must have
    a ControlNet for the ControlNet figure (else it is None). ``cache_dir``: where diffusion
    outputs are kept between runs (None: nothing is kept)."""
    from tqdm import tqdm

    bg = parse_background("white")
    cdir = None if cache_dir is None else Path(cache_dir)
    n = len(captions)
    finals: list[Image.Image] = []
    natives: list[Image.Image] = []
    ups: list[float] = []
    methods: list[str] = []
    bar = tqdm(total=n, desc="text creations", disable=not progress)
    for r in _chunks(n, batch):
        prompts = [captions[i][0] for i in r]
        imgs = _diffuse_cached(
            creator, prompts, [seed + i for i in r], sketches=None, mode="auto", cache_dir=cdir
        )
        for im in imgs:
            final, _alpha, up, method = creator.finish(im, size=size, background=bg)
            finals.append(final)
            natives.append(im)
            ups.append(up)
            methods.append(method)
            bar.update(1)
    bar.close()
    col, cat = judge.predict(_judge_side(finals))
    rcol, rcat = judge.predict(_judge_side(natives))
    fcol, fcat = judge.predict(_judge_side([_framed(im) for im in finals]))
    colours = [c[1] for c in captions]
    cats = [c[2] for c in captions]

    def acc(a: list[str], b: list[str]) -> float:
        return float(np.mean([x == y for x, y in zip(a, b, strict=True)])) if a else 0.0

    out = CreationEvalOutput(
        n=n,
        size=size,
        colour_match=acc(col, colours),
        category_match=acc(cat, cats),
        colour_match_raw=acc(rcol, colours),
        category_match_raw=acc(rcat, cats),
        max_product_upscale=round(max(ups), 4) if ups else 0.0,
        cutout_none=float(np.mean([m == "none" for m in methods])) if methods else 0.0,
        sketches=sketches,
        sketch_iou_controlnet=None,
        sketch_iou_img2img=None,
        sketch_iou_text_only=None,
        sketch_iou_true_silhouette=None,
        extra={
            "seed": seed,
            "steps": creator.steps,
            "guidance": creator.guidance,
            "img2img_strength": creator.img2img_strength,
            "controlnet_scale": creator.controlnet_scale,
            "cutout_methods": {m: methods.count(m) for m in sorted(set(methods))},
            "judge": "small CNN trained on demo renders (evaluate generator's), 64 px",
            "colour_match_framed": acc(fcol, colours),
            "category_match_framed": acc(fcat, cats),
        },
    )
    sheet_rows: list[tuple[np.ndarray, str]] = [
        (np.asarray(finals[i].resize((128, 128), Image.Resampling.LANCZOS)), captions[i][0])
        for i in np.linspace(0, n - 1, min(12, n)).round().astype(int)
    ]
    if sketches:
        pairs = render_pairs(n=sketches, held_out=True, seed=seed + 1)
        side = creator.native_side()
        sk_imgs = [Image.fromarray(p.sketch) for p in pairs]
        outlines = [sk.filled_outline(s, side) for s in sk_imgs]
        out.sketch_iou_true_silhouette = float(
            np.mean([mask_iou(o, p.mask) for o, p in zip(outlines, pairs, strict=True)])
        )
        modes = ["img2img", "text"] + (["controlnet"] if creator.has_controlnet else [])
        per_mode: dict[str, list[Image.Image]] = {}
        for mode in modes:
            ious, made = [], []
            for r in tqdm(_chunks(len(pairs), batch), desc=f"sketch {mode}", disable=not progress):
                prompts = [pairs[i].caption for i in r]
                seeds = [seed + 1000 + i for i in r]
                batch_sketches = None if mode == "text" else [sk_imgs[i] for i in r]
                imgs = _diffuse_cached(
                    creator, prompts, seeds, sketches=batch_sketches, mode=mode, cache_dir=cdir
                )
                made.extend(imgs)
            for made_im, o in zip(made, outlines, strict=True):
                try:
                    alpha = creator.imaging.cut_out(made_im).alpha
                except ValueError:
                    alpha = np.zeros(o.shape, np.float32)
                ious.append(mask_iou(alpha, o))
            val = float(np.mean(ious))
            out.extra[f"sketch_iou_{mode}_ge_0.7"] = float(np.mean([v >= 0.7 for v in ious]))
            if mode == "controlnet":
                out.sketch_iou_controlnet = val
            elif mode == "img2img":
                out.sketch_iou_img2img = val
            else:
                out.sketch_iou_text_only = val
            per_mode[mode] = made
        for i in range(min(6, len(pairs))):
            up = Image.Resampling.NEAREST
            sheet_rows.append((np.asarray(sk_imgs[i].resize((128, 128), up)), "sketch"))
            for mode in ("controlnet", "img2img"):
                if mode in per_mode:
                    im = per_mode[mode][i].resize((128, 128), Image.Resampling.LANCZOS)
                    sheet_rows.append((np.asarray(im), f"{mode}: {pairs[i].caption}"))
    if sheet_path is not None:
        contact_sheet(
            np.stack([a for a, _ in sheet_rows]), [c for _, c in sheet_rows], sheet_path, scale=1
        )
    return out
