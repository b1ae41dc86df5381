"""``tailorshot evaluate creations``: new product images judged (issue 21).

* **Text**: one creation per held-out demo caption (the captions ``evaluate generator``
  holds out; never trained on), made as the product makes it: the caption through
  ``creation_prompt`` (its setting and lighting -> "in a photo studio"), cut out, put on
  white in the creator's framing (``native`` by default) and restored to the requested size.
  The page judge (:func:`fit_page_judge`) sees each finished page as it is; the scene judge's
  figures (re-framed like its renders for ``centred`` pages), the raw diffusion output's and
  a ceiling (true renders cut out by their true masks) are reported beside it.
  ``max_product_upscale``: the largest plain enlargement of product pixels after
  restoration. :func:`validation_captions` gives *training* captions for checking the
  creator's choices without the held-out ones. Diffusion outputs are cached (``cache_dir``),
  so a rerun only redoes what changed.
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
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data.files import atomic_write_bytes
from genservice.creation import sketch as sk
from genservice.creation.pipeline import PRODUCT_FILL, Creator
from genservice.creation.request import CreationRequest, creation_prompt, parse_background
from genservice.imaging.cutout import mask_iou
from genservice.training.controlnet import render_pairs
from genservice.training.creation_page_judge import (  # re-exported: the page judge lived here
    PAGE_JUDGE_FILE,
    _judge_side,
    _true_cutout_page,
    fit_page_judge,
    page_judge_samples,
)
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


@dataclass(frozen=True)
class RenderFrame:
    """Where a product sits in the renders the judge learned from (64-px demo scenes):
    ``span`` its bounding box's longer side over the image side (median), ``cx``/``cy`` its
    box centre over the side (means)."""

    span: float
    cx: float
    cy: float


def render_frame(masks: Sequence[np.ndarray]) -> RenderFrame:
    """:class:`RenderFrame` of bool ``(S, S)`` product masks."""
    spans, cxs, cys = [], [], []
    for m in masks:
        ys, xs = np.nonzero(m)
        side = m.shape[0]
        spans.append(max(np.ptp(ys) + 1, np.ptp(xs) + 1) / side)
        cxs.append((xs.min() + xs.max() + 1) / 2 / side)
        cys.append((ys.min() + ys.max() + 1) / 2 / side)
    return RenderFrame(float(np.median(spans)), float(np.mean(cxs)), float(np.mean(cys)))


def framed(image: Image.Image, frame: RenderFrame, fill: float = PRODUCT_FILL) -> Image.Image:
    """A detail-page image (product centred, longer side ``fill`` of the side) re-framed on a
    larger canvas of its own background so the product spans ``frame.span`` and sits where
    the judge's renders put it. The judge is a CNN whose category head learned *where*
    products stand (measured: true renders cut out by their true masks and centred are
    named right 9% of the time, at their own place 89%); this gives it the input it can read
    without changing the image's pixels or the judge."""
    side = max(image.width, round(image.width * fill / frame.span))
    canvas = Image.new("RGB", (side, side), image.getpixel((0, 0)))
    x = min(max(0, round(frame.cx * side - image.width / 2)), side - image.width)
    y = min(max(0, round(frame.cy * side - image.height / 2)), side - image.height)
    canvas.paste(image.convert("RGB"), (x, y))
    return canvas


def cache_key(
    creator: Creator,
    prompts: list[str],
    seeds: list[int],
    *,
    sketches: list[Image.Image] | None,
    mode: str,
    strength: float | None = None,
) -> str:
    """What one chunk's pixels depend on, hashed: model, steps, guidance, prompts, seeds and,
    with sketches, the conditioning used (ControlNet and its scale, or img2img strength)
    and the sketches' pixels."""
    parts: list[Any] = [creator.model_id, creator.steps, creator.guidance, prompts, seeds]
    if sketches is not None:
        used = creator.sketch_mode(mode)
        parts += [used, creator.img2img_strength if used == "img2img" else None]
        if used == "controlnet":
            ref = Path(str(creator.controlnet_ref))
            files = sorted(ref.glob("*.safetensors")) if ref.is_dir() else [ref]
            # The weights' sizes and times: retrained weights in the same folder are new.
            stamp = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists()]
            parts += [str(ref), stamp, creator.controlnet_scale]
            if creator.controlnet_strength is not None:  # keys of from-noise runs unchanged
                parts += [creator.controlnet_strength]
        if strength is not None:  # a stated strength (shape guides); earlier keys unchanged
            parts += ["strength", strength]
    h = hashlib.sha256(json.dumps(parts).encode())
    for x in sketches or []:
        h.update(np.asarray(x.convert("RGB")).tobytes())
    return h.hexdigest()[:32]


def _diffuse_cached(
    creator: Creator,
    prompts: list[str],
    seeds: list[int],
    *,
    sketches: list[Image.Image] | None,
    mode: str,
    cache_dir: Path | None,
    strength: float | None = None,
) -> list[Image.Image]:
    """``creator.diffuse`` of one chunk, kept as ``<cache_dir>/<sha256>.npz`` keyed by
    everything the pixels depend on (model, controlnet, steps, guidance, strength, scale,
    mode, prompts, seeds, sketch pixels), so a rerun only redoes what changed."""
    if cache_dir is None:
        imgs, _ = creator.diffuse(prompts, seeds, sketch=sketches, mode=mode, strength=strength)
        return imgs
    key = cache_key(creator, prompts, seeds, sketches=sketches, mode=mode, strength=strength)
    f = cache_dir / f"{key}.npz"
    if f.is_file():
        with np.load(f) as z:
            return [Image.fromarray(a) for a in z["images"]]
    imgs, _ = creator.diffuse(prompts, seeds, sketch=sketches, mode=mode, strength=strength)
    cache_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, images=np.stack([np.asarray(i) for i in imgs]))
    atomic_write_bytes(f, buf.getvalue())
    return imgs


def _span(alpha: np.ndarray) -> float:
    """The product's bounding-box longer side over the image side (alpha > 0.5; 1 if none)."""
    ys, xs = np.nonzero(alpha > 0.5)
    if not len(ys):
        return 1.0
    return float(max(np.ptp(ys) + 1, np.ptp(xs) + 1) / max(alpha.shape))


def validation_captions(
    train: Any, held_out: Sequence[Any], n: int, *, seed: int = 0
) -> list[tuple[str, str, str]]:
    """``n`` distinct *training* captions as (caption, colour, category), seeded: where the
    creator's choices (prompt, cut-out, framing) are checked before the held-out figure, so
    the held-out captions are never tuned on. ``train``: a ``SampleSet``; ``held_out``: the
    ``EvalCaption`` list, none of whose captions is returned (ValueError if one would be)."""
    held = {h.caption for h in held_out}
    seen: dict[str, tuple[str, str, str]] = {}
    for c, col, cat in zip(train.captions, train.colours, train.categories, strict=True):
        seen.setdefault(c, (c, col, cat))
    pool = sorted(seen)
    rng = np.random.default_rng(seed)
    out = [seen[pool[i]] for i in sorted(rng.choice(len(pool), min(n, len(pool)), replace=False))]
    if any(c[0] in held for c in out):
        raise ValueError("validation_captions: a held-out caption is among the training ones")
    return out


def pick_captions(held_out: Sequence[Any], n: int, spread: bool = False) -> list[Any]:
    """The ``n`` held-out captions an evaluation uses: the first ``n``, or with ``spread``
    every ``len // n``-th (the list is sorted by caption, so its first ones share a colour)."""
    items = list(held_out)
    if n <= 0:
        return []
    return items[:: max(1, len(items) // n)][:n] if spread else items[:n]


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def sketch_adherence(
    creator: Creator,
    pairs: Sequence[Any],
    *,
    mode: str,
    seed: int,
    batch: int = 25,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> tuple[list[float], list[Image.Image]]:
    """Per pair (``render_pairs``' ``SketchPair``: ``.sketch``, ``.caption``): the IoU of the
    created image's cut-out silhouette (native side, alpha > 0.5) with the sketch's filled
    outline, and the created images. ``mode``: ``controlnet`` | ``img2img`` | ``text`` (no
    sketch: the floor); image i from seed ``seed + i``."""
    from tqdm import tqdm

    side = creator.native_side()
    sk_imgs = [Image.fromarray(p.sketch) for p in pairs]
    outlines = [sk.filled_outline(s, side) for s in sk_imgs]
    made: list[Image.Image] = []
    for r in tqdm(_chunks(len(pairs), batch), desc=f"sketch {mode}", disable=not progress):
        prompts = [pairs[i].caption for i in r]
        seeds = [seed + i for i in r]
        batch_sketches = None if mode == "text" else [sk_imgs[i] for i in r]
        made.extend(
            _diffuse_cached(
                creator, prompts, seeds, sketches=batch_sketches, mode=mode, cache_dir=cache_dir
            )
        )
    ious = []
    for made_im, o in zip(made, outlines, strict=True):
        try:
            alpha = creator.imaging.cut_out(made_im).alpha
        except ValueError:
            alpha = np.zeros(o.shape, np.float32)
        ious.append(float(mask_iou(alpha, o)))
    return ious, made


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
    sketch_modes: Sequence[str] = ("img2img", "text", "controlnet"),
    page_judge: ColourCategoryJudge | None = None,
    page_judge_accuracy: dict[str, Any] | None = None,
    training_captions: Collection[str] | None = None,
) -> CreationEvalOutput:
    """``captions``: (caption, colour, category) held out from training. ``creator`` must have
    a ControlNet for the ControlNet figure (else it is None). ``cache_dir``: where diffusion
    outputs are kept between runs (None: nothing is kept). ``sketch_modes``: which of
    ``img2img``, ``text`` (the floor) and ``controlnet`` the sketches are created with.
    ``page_judge`` (:func:`fit_page_judge`): when given, ``colour_match``/``category_match``
    are its verdicts on the finished pages as they are (box-reduced to 64 px, no re-framing)
    and the scene judge's (``judge``) figures move to ``extra["scene_judge"]``;
    ``page_judge_accuracy``: its own held-out accuracy, reported beside them. Each caption is
    created as the product creates it: through ``creation_prompt`` (its setting and lighting
    replaced by "in a photo studio"); ``training_captions``: the generator's training
    captions, to count rewritten prompts that are one of them (reported; 0 keeps the
    held-out figure held out)."""
    from tqdm import tqdm

    bg = parse_background("white")
    cdir = None if cache_dir is None else Path(cache_dir)
    n = len(captions)
    finals: list[Image.Image] = []
    natives: list[Image.Image] = []
    ups: list[float] = []
    methods: list[str] = []
    spans: list[float] = []
    bar = tqdm(total=n, desc="text creations", disable=not progress)
    all_prompts = [creation_prompt(c[0]) for c in captions]
    # As the product does: a caption whose category has a shape guide starts from it.
    guides = [creator.guide_for(CreationRequest(text=c[0], n=1, size=size)) for c in captions]
    for r in _chunks(n, batch):
        got: dict[int, Image.Image] = {}
        for guided in (False, True):
            idx = [i for i in r if (guides[i] is not None) == guided]
            if idx:
                made = _diffuse_cached(
                    creator,
                    [all_prompts[i] for i in idx],
                    [seed + i for i in idx],
                    sketches=[guides[i] for i in idx] if guided else None,  # type: ignore[misc]
                    mode=creator.guide_mode if guided else "auto",
                    strength=creator.guide_strength if guided else None,
                    cache_dir=cdir,
                )
                got.update(zip(idx, made, strict=True))
        for i in r:
            im = got[i]
            final, alpha, up, method = creator.finish(im, size=size, background=bg, guide=guides[i])
            spans.append(_span(alpha))
            finals.append(final)
            natives.append(im)
            ups.append(up)
            methods.append(method)
            bar.update(1)
    bar.close()
    # Where the judge's renders put a product (studio renders of training products).
    ref_pairs = render_pairs(n=120, held_out=False, seed=seed + 7)
    frame = render_frame([p.mask for p in ref_pairs])

    def judged(images: list[Image.Image]) -> tuple[list[str], list[str]]:
        if not images:
            return [], []
        return judge.predict(_judge_side(images))

    # The scene judge's re-framing assumes a centred product at PRODUCT_FILL.
    centred = creator.framing == "centred"
    col, cat = judged([framed(im, frame) for im in finals] if centred else finals)
    acol, acat = judged(finals)
    rcol, rcat = judged(natives)
    colours = [c[1] for c in captions]
    cats = [c[2] for c in captions]
    # The ceiling: true renders of held-out products through the same geometry and framing.
    true = render_pairs(n=120, held_out=True, seed=seed + 11)
    tpages = [_true_cutout_page(p.render, p.mask, min(size, 256)) for p in true]
    tcol, tcat = judged([framed(im, frame) for im in tpages])
    tacol, tacat = judged(tpages)

    def acc(a: list[str], b: list[str]) -> float:
        return float(np.mean([x == y for x, y in zip(a, b, strict=True)])) if a else 0.0

    scene = {
        "colour_framed": acc(col, colours),
        "category_framed": acc(cat, cats),
        "colour_as_is": acc(acol, colours),
        "category_as_is": acc(acat, cats),
        "colour_raw": acc(rcol, colours),
        "category_raw": acc(rcat, cats),
    }
    main_col, main_cat = scene["colour_framed"], scene["category_framed"]
    raw_col, raw_cat = scene["colour_raw"], scene["category_raw"]
    page: dict[str, Any] = {}
    if page_judge is not None and finals:
        pc, pk = page_judge.predict(_judge_side(finals))
        qc, qk = page_judge.predict(_judge_side(natives))
        main_col, main_cat = acc(pc, colours), acc(pk, cats)
        raw_col, raw_cat = acc(qc, colours), acc(qk, cats)
        tc, tk = page_judge.predict(_judge_side(tpages))
        page = {
            "judge": "page judge (fit_page_judge): evaluate generator's judge recipe on the "
            "same demo scenes plus true renders shown as detail pages (any place, scale, plain "
            "ground); sees each finished page as it is",
            "held_out_accuracy": page_judge_accuracy,
            "ceiling_true_cutouts": {
                "colour": acc(tc, [p.colour for p in true]),
                "category": acc(tk, [p.category for p in true]),
            },
        }
    out = CreationEvalOutput(
        n=n,
        size=size,
        colour_match=main_col,
        category_match=main_cat,
        colour_match_raw=raw_col,
        category_match_raw=raw_cat,
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
            "controlnet_strength": creator.controlnet_strength,
            "auto_sketch_mode": creator.auto_sketch_mode,
            "cutout_methods": {m: methods.count(m) for m in sorted(set(methods))},
            "framing": creator.framing,
            "shape_guide": {
                "guided": sum(g is not None for g in guides),
                "strength": creator.guide_strength,
                "mode": creator.sketch_mode(creator.guide_mode),
            },
            "product_span_median": round(float(np.median(spans)), 4) if spans else None,
            "product_span_p10_p90": [round(float(v), 4) for v in np.percentile(spans, [10, 90])]
            if spans
            else None,
            "prompt": "creation_prompt(caption): setting and lighting -> 'in a photo studio'",
            "prompts_in_training": None
            if training_captions is None
            else sum(p in set(training_captions) for p in all_prompts),
            "judge": "small CNN trained on demo renders (evaluate generator's), 64 px; it sees "
            "each detail page re-framed like its renders (render_frame)",
            "render_frame": asdict(frame),
            "scene_judge": scene,
            "page_judge": page or None,
            "colour_match_as_is": acc(acol, colours),
            "category_match_as_is": acc(acat, cats),
            "ceiling_true_cutouts": {
                "n": len(true),
                "colour_framed": acc(tcol, [p.colour for p in true]),
                "category_framed": acc(tcat, [p.category for p in true]),
                "colour_as_is": acc(tacol, [p.colour for p in true]),
                "category_as_is": acc(tacat, [p.category for p in true]),
            },
        },
    )
    sheet_rows: list[tuple[np.ndarray, str]] = [
        (np.asarray(finals[i].resize((128, 128), Image.Resampling.LANCZOS)), captions[i][0])
        for i in (np.linspace(0, n - 1, min(12, n)).round().astype(int) if n else [])
    ]
    if sketches:
        pairs = render_pairs(n=sketches, held_out=True, seed=seed + 1)
        side = creator.native_side()
        sk_imgs = [Image.fromarray(p.sketch) for p in pairs]
        outlines = [sk.filled_outline(s, side) for s in sk_imgs]
        out.sketch_iou_true_silhouette = float(
            np.mean([mask_iou(o, p.mask) for o, p in zip(outlines, pairs, strict=True)])
        )
        bad = set(sketch_modes) - {"img2img", "text", "controlnet"}
        if bad:
            raise ValueError(f"sketch_modes: expected img2img, text, controlnet; got {bad}")
        modes = [m for m in sketch_modes if m != "controlnet" or creator.has_controlnet]
        per_mode: dict[str, list[Image.Image]] = {}
        for mode in modes:
            ious, made = sketch_adherence(
                creator,
                pairs,
                mode=mode,
                seed=seed + 1000,
                batch=batch,
                cache_dir=cdir,
                progress=progress,
            )
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


__all__ = [
    "PAGE_JUDGE_FILE",
    "CreationEvalOutput",
    "cache_key",
    "evaluate_creations",
    "fit_page_judge",
    "page_judge_samples",
    "pick_captions",
    "sketch_adherence",
    "validation_captions",
]
