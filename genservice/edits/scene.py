"""``background`` from a generated scene: the product kept, a new scene from a text prompt or
from readable style terms (a shopper's taste profile, resolved to approved terms by the api
layer; no user id ever reaches this module).

The scene is the hero path's (``genservice.generator.HeroGenerator``): the same prompt
builder and :func:`~genservice.generator.backdrop_prompt` (a product-free scene prompt),
:meth:`~genservice.generator.HeroGenerator.scene_request` (the model's native scale, the
seed), :meth:`~genservice.generator.HeroGenerator.deliver_scene` (products the model painted
erased, the ground line found, restored to the image's size by the restoration model), the
hero's contact shadow and paste-back (``genservice.compose``) and its safety check.

One step is the edit's own: the hero moves the product onto the scene's ground, an edit
keeps the product where it is (its edge stays where it was), so the scene's rows are
remapped instead (:func:`stand_on`) to put its ground line under the product's base.

Product rule (the hero's): every pixel of the cut-out's core (``compose.place_cutout`` with
soft edges: alpha rescaled ``(a - 0.1) / 0.9`` at least ``compose.CORE_ALPHA``, i.e. a >= 0.982)
is the source pixel, bit-exact (checked by ``compose.check_fidelity``); the thin edge takes
the nearest core pixel's colour and blends with the scene.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from genservice.backends.base import CancelFn, ProgressFn
from genservice.edits.base import (
    EditResult,
    check_image,
    edit_metadata,
    resolve_mask,
    split_alpha,
)

if TYPE_CHECKING:
    from genservice.compose import PlacedProduct
    from genservice.generator import HeroGenerator

#: At most this many terms (phrases) describe a scene; each at most this many characters.
MAX_SCENE_TERMS = 8
MAX_TERM_CHARS = 48
#: Default contact shadow darkness (``compose.contact_shadow``'s).
SCENE_SHADOW = 0.45
#: Most a scene's part above or below its ground line is stretched or squeezed to bring the
#: ground under the product (:func:`stand_on`).
MAX_STRETCH = 1.5


def scene_terms(prompt: str | None = None, terms: Sequence[str] | None = None) -> list[str]:
    """The scene's readable style terms, most important first: ``terms`` as given, or the
    comma-separated phrases of ``prompt``. Each is sanitised for a prompt
    (``genservice.prompts.sanitize_text``: a phrase holding a blocked word is dropped whole),
    duplicates dropped, at most :data:`MAX_SCENE_TERMS`. ValueError for both or neither
    given, or when nothing usable is left."""
    from genservice.prompts import sanitize_text

    if (prompt is None) == (terms is None):
        raise ValueError("background: expected exactly one of prompt (text) or terms (a list)")
    raw = [str(t) for t in terms] if terms is not None else str(prompt).split(",")
    out: list[str] = []
    for phrase in raw:
        clean = sanitize_text(phrase, max_chars=MAX_TERM_CHARS).lower()
        if clean and clean not in out:
            out.append(clean)
    if not out:
        what = "terms" if terms is not None else "prompt"
        raise ValueError(
            f"{what}: expected scene words (e.g. 'beach, golden hour'), got nothing usable "
            f"from {raw[:MAX_SCENE_TERMS]!r}"
        )
    return out[:MAX_SCENE_TERMS]


def product_base(alpha: np.ndarray) -> int:
    """The row just below the product's lowest opaque pixel (alpha > 0.5), in pixels."""
    rows = np.flatnonzero((alpha > 0.5).any(axis=1))
    if rows.size == 0:
        raise ValueError("mask: expected at least one pixel with alpha > 0.5, got none")
    return int(rows[-1]) + 1


def stand_on(
    scene: np.ndarray, ground: float, base: float, *, max_stretch: float = MAX_STRETCH
) -> np.ndarray:
    """``scene`` ``(H, W, 3)`` uint8 with its rows remapped piecewise-linearly so that its
    ground line (unit y ``ground``) lands on unit y ``base`` (the product's base): rows above
    the ground are stretched or squeezed into ``[0, base]``, the floor below into
    ``[base, 1]``; the top and bottom edges stay. Neither part is stretched or squeezed by
    more than ``max_stretch`` (a floor stretched 3x turns into vertical streaks): beyond it
    the scene row under the base is the one nearest to ``ground`` within that bound. Linear
    interpolation between rows."""
    if not (0.0 < ground < 1.0 and 0.0 < base <= 1.0):
        raise ValueError(f"ground, base: expected unit y in (0, 1), got {ground}, {base}")
    if max_stretch < 1.0:
        raise ValueError(f"max_stretch: expected >= 1, got {max_stretch}")
    lo, hi = base / max_stretch, min(base * max_stretch, 1.0)
    if base < 1.0:
        lo = max(lo, 1.0 - (1.0 - base) * max_stretch)
        hi = min(hi, 1.0 - (1.0 - base) / max_stretch)
    ground = float(np.clip(ground, lo, hi))
    h = scene.shape[0]
    t = (np.arange(h, dtype=np.float64) + 0.5) / h
    if base >= 1.0:
        s = t * ground / base
    else:
        s = np.where(t <= base, t * ground / base, ground + (t - base) * (1 - ground) / (1 - base))
    src = np.clip(s * h - 0.5, 0.0, h - 1.0)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, h - 1)
    w = (src - lo)[:, None, None].astype(np.float32)
    rows = scene[lo].astype(np.float32) * (1 - w) + scene[hi].astype(np.float32) * w
    return np.clip(np.round(rows), 0, 255).astype(np.uint8)


def place_in_situ(image: Image.Image, alpha: np.ndarray) -> PlacedProduct:
    """The product of ``image`` (alpha ``(H, W)`` float32) as the hero places a cut-out
    (``compose.place_cutout`` with soft edges), at the size and position it has: no
    resampling, so its core pixels are the source's; the thin edge takes the colour of the
    nearest core pixel (no rim of the old backdrop)."""
    from genservice.compose import Cutout, place_cutout

    rgb, _ = split_alpha(image)
    ys, xs = np.nonzero(alpha > 1.0 / 255.0)
    if ys.size == 0:
        raise ValueError("mask: expected at least one pixel with alpha > 0, got none")
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    a8 = np.round(alpha * 255.0).astype(np.uint8)
    rgba = np.dstack([rgb, a8])[y0:y1, x0:x1]
    cut = Cutout(Image.fromarray(np.ascontiguousarray(rgba), "RGBA"))
    return place_cutout(cut, (x0, y0, x1 - x0, y1 - y0), soft_edges=True)


def generated_background(
    generator: HeroGenerator,
    image: Image.Image,
    *,
    mask: np.ndarray | Image.Image | None = None,
    prompt: str | None = None,
    terms: Sequence[str] | None = None,
    seed: int = 0,
    shadow: float = SCENE_SHADOW,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> EditResult:
    """``image`` (RGB/RGBA, sides 16-4096 px) on a new scene from ``prompt`` (text) or
    ``terms`` (readable style terms, most important first), generated by ``generator`` with
    ``seed``; ``shadow`` (0-1) is the contact shadow's darkness. Returns RGB at the source
    size. Raises ValueError for bad input, ``GenerationError`` when the generator has no
    delivery path, ``SafetyViolation`` for a flagged image and ``JobCancelled``."""
    from genservice.brief import CreativeBrief, Placement, ProductRef, StyleTerm
    from genservice.compose import check_fidelity, compose_hero, contact_shadow
    from genservice.errors import GenerationError
    from genservice.safety import enforce_safe

    if not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise ValueError(f"seed: expected an int in [0, 2**31), got {seed!r}")
    if not 0.0 <= shadow <= 1.0:
        raise ValueError(f"shadow: expected in [0, 1], got {shadow}")
    words = scene_terms(prompt, terms)
    src = check_image(image)
    w, h = src.size
    if not (16 <= w <= 4096 and 16 <= h <= 4096):
        raise ValueError(f"image: expected sides of 16-4096 px for a scene, got {src.size}")
    if generator.imaging is None:
        raise GenerationError("background: this generator has no scene delivery path")
    alpha, method, t_mask = resolve_mask(src, mask)
    t0 = time.perf_counter()
    placement = Placement("edit", w, h)
    # A product-free brief: only the scene's words; the weights keep the given order.
    style = tuple(StyleTerm(t, float(len(words) - i)) for i, t in enumerate(words))
    brief = CreativeBrief(
        product=ProductRef(id="edit", title="product", image="edit"),
        placement=placement,
        style_terms=style,
        seed=seed,
    )
    built = generator.prompt_builder.build(brief)
    request = generator.scene_request(brief, built)
    t1 = time.perf_counter()
    drawer = generator.scene_backend  # the scene model (the hero's model when none is set)
    out = drawer.generate(request, progress=progress, should_cancel=should_cancel)
    t2 = time.perf_counter()
    info, _ghosts = generator.deliver_scene(out.image, placement)
    base = product_base(alpha)
    scene = stand_on(np.asarray(info.delivered.convert("RGB")), info.ground, base / h)
    t3 = time.perf_counter()
    placed = place_in_situ(src, alpha)
    backdrop = Image.fromarray(scene, "RGB")
    if shadow > 0:
        backdrop = contact_shadow(backdrop, placed, darkness=shadow)
    result = compose_hero(backdrop, placed, placement)
    check_fidelity(result, placed)
    enforce_safe(generator.safety, [result])  # a flagged scene is never returned
    t4 = time.perf_counter()
    # What was used: the sanitised words (a blocked phrase never reaches the metadata).
    given: dict[str, Any] = {"prompt": ", ".join(words)} if prompt is not None else {"terms": words}
    params = {**given, "seed": seed, "shadow": shadow, "scene_prompt": request.prompt}
    return EditResult(
        image=result,
        mask=alpha,
        op="background",
        params=params,
        timings={
            "mask": round(t_mask, 4),
            "prompt": round(t1 - t0, 4),
            "generate": round(t2 - t1, 4),
            "deliver": round(t3 - t2, 4),
            "compose": round(t4 - t3, 4),
            "edit": round(t4 - t0, 4),
        },
        metadata=edit_metadata(
            "background", params, src, model=drawer.model_id, mask_method=method
        ),
    )
