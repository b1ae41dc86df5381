"""Sketches: the control map a ControlNet sees, the filled outline a sketch means, the
img2img start image of the fallback, and ControlNet loading (hub id, folder, single file).

A sketch is any picture with dark strokes on a light ground (a line drawing) or a rough
colour sketch. Both go through one operator, :func:`edge_map` (Sobel edges of luminance,
thresholded): the ControlNet shipped here was trained on that operator applied to demo
renders, so a drawn outline and a render's outline look alike to it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

#: Strength of the img2img fallback (no ControlNet): the share of the noise schedule redone.
#: The start is the sketch's filled outline in the description's colour, so a low strength
#: keeps the outline and the model still redraws shading, shadow and pattern. Chosen on 24
#: validation sketches of training products (never the measured ones): silhouette IoU 0.693
#: at 0.4, 0.669 at 0.5, 0.653 at 0.6 (grey start: 0.624 at 0.5, 0.575 at 0.6).
IMG2IMG_STRENGTH = 0.4
#: The ControlNet path (a ControlNet configured): start from the same filled outline as the
#: fallback, redo this share of the noise schedule, and condition every step on the sketch's
#: edges at ``CONTROLNET_SCALE`` (None: from pure noise, the ControlNet alone). Tuned on 48
#: validation sketches of training products (``bench/controlnet_tune.py``; never
#: the evaluation's held-out ones; the ControlNet saw these products in training, so its
#: figures there flatter it): silhouette IoU from noise 0.443; from the outline at scale 1.0
#: 0.769 (0.4), 0.711 (0.5), 0.682 (0.6), 0.627 (0.7), 0.583 (0.8); at scale 1.5 0.712
#: (0.5), 0.671 (0.6). The img2img fallback on the same sketches: 0.767 (0.4), 0.808 (0.3);
#: ControlNet at 0.3: 0.803. 0.4 is kept, the fallback's strength: a lower one keeps the
#: flat start more and redraws less (the same trade for both paths), and at equal strength
#: the ControlNet adds no more than +0.002.
CONTROLNET_STRENGTH: float | None = 0.4
CONTROLNET_SCALE = 1.0
#: What ``sketch_mode="auto"`` picks when a ControlNet is configured.
AUTO_SKETCH_MODE = "controlnet"
#: Edge threshold on the Sobel magnitude of luminance in [0, 1].
EDGE_THRESHOLD = 0.15
#: Luminance of the img2img start image's backdrop and of an uncoloured sketch's fill.
_BACKDROP = 236
_FILL = 128


def _luma(image: Image.Image, side: int) -> np.ndarray:
    rgb = image.convert("RGBA")
    flat = Image.new("RGBA", rgb.size, (255, 255, 255, 255))
    flat.alpha_composite(rgb)  # transparent sketches count as drawn on white
    small = flat.convert("L").resize((side, side), Image.Resampling.BOX)
    return np.asarray(small, np.float32) / 255.0


def edge_map(image: Image.Image, side: int) -> np.ndarray:
    """bool ``(side, side)``: edges of ``image`` (Sobel magnitude of luminance, thresholded)."""
    y = _luma(image, side)
    gx = ndimage.sobel(y, axis=1, mode="nearest")
    gy = ndimage.sobel(y, axis=0, mode="nearest")
    return np.asarray(np.hypot(gx, gy) / 4.0 > EDGE_THRESHOLD)


def control_image(image: Image.Image, side: int) -> Image.Image:
    """The ControlNet's conditioning: white edges on black, RGB ``side`` x ``side``."""
    e = (edge_map(image, side) * 255).astype(np.uint8)
    return Image.fromarray(np.stack([e, e, e], -1), "RGB")


def derive_sketch(image: Image.Image, side: int) -> Image.Image:
    """A line drawing derived from a picture (how the evaluation and the ControlNet's training
    make "sketches" of renders): its edges as black strokes on white, RGB ``side`` x ``side``.
    Give it the product on a plain light ground (a cut-out composited on white)."""
    e = edge_map(image, side)
    g = np.where(e, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([g, g, g], -1), "RGB")


def filled_outline(image: Image.Image, side: int) -> np.ndarray:
    """bool ``(side, side)``: what the sketch outlines, filled: its dark strokes (or, for a
    colour sketch without any, its edges), closed by one pixel, holes filled, eroded by one
    pixel. An empty sketch gives an empty mask."""
    base = _dark_strokes(image, side)
    if base.sum() < 0.002 * side * side:
        base = edge_map(image, side)
    closed = ndimage.binary_closing(base, iterations=1, border_value=0)
    filled = ndimage.binary_fill_holes(closed | base)
    # A stroke straddles the outline: drop its outer half (one pixel at ``side``).
    return np.asarray(ndimage.binary_erosion(filled, iterations=1))


def _dark_strokes(image: Image.Image, side: int) -> np.ndarray:
    return np.asarray(_luma(image, side) < 0.5)


def prompt_colour(prompt: str) -> tuple[int, int, int] | None:
    """sRGB of the first named colour (the bundled vocabulary's) the prompt has as a word, or
    None (``"a red leather handbag"`` -> red's sRGB)."""
    from genservice import vocab

    named = vocab.colours()
    words = re.findall(r"[a-z]+", str(prompt).lower())
    for w in words:
        if w in named:
            return named[w]
    return None


def init_image(
    image: Image.Image, side: int, colour: tuple[int, int, int] | None = None
) -> Image.Image:
    """The img2img fallback's start: the sketch's filled outline on a light studio backdrop,
    keeping the sketch's own colours inside it; where it is uncoloured, ``colour`` (the
    description's named colour, :func:`prompt_colour`) or grey. A start already in the asked
    colour lets a lower strength keep the outline without the colour staying grey."""
    mask = filled_outline(image, side)
    rgb = np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BOX), np.float32)
    sat = rgb.max(-1) - rgb.min(-1)
    plain = np.array(colour if colour is not None else (_FILL,) * 3, np.float32)
    fill = np.where((sat > 40)[..., None], rgb, plain)
    out = np.where(mask[..., None], fill, float(_BACKDROP))
    return Image.fromarray(out.clip(0, 255).astype(np.uint8), "RGB")


# ----------------------------------------------------------------------------- ControlNet

#: File suffixes of a single-file ControlNet.
SINGLE_FILE_SUFFIXES = (".safetensors",)


def load_controlnet(ref: str | Path, *, config: str | Path | None = None, dtype: Any = None) -> Any:
    """A diffusers ``ControlNetModel`` from a folder (``config.json`` + weights), a single
    ``.safetensors`` file (diffusers or original layout; its architecture from ``config``, a
    folder holding ``config.json``, default: the file's folder) or a hub id (honours
    ``HF_HUB_OFFLINE``)."""
    from diffusers import ControlNetModel

    kwargs: dict[str, Any] = {} if dtype is None else {"torch_dtype": dtype}
    path = Path(ref)
    if path.is_dir():
        return ControlNetModel.from_pretrained(str(path), **kwargs)
    if path.is_file():
        if path.suffix not in SINGLE_FILE_SUFFIXES:
            raise ValueError(f"controlnet: expected a .safetensors file, got {path.name!r}")
        cfg = Path(config) if config is not None else path.parent
        if not (cfg / "config.json").is_file():
            raise ValueError(
                f"controlnet: a single file needs its config folder (config.json), none in {cfg}"
            )
        return ControlNetModel.from_single_file(
            str(path), config=str(cfg), local_files_only=True, **kwargs
        )
    if str(ref).count("/") != 1:
        raise ValueError(
            f"controlnet: expected a folder, a .safetensors file or a hub id, got {ref}"
        )
    return ControlNetModel.from_pretrained(str(ref), **kwargs)


def save_controlnet_single_file(controlnet: Any, path: str | Path) -> Path:
    """Write ``controlnet``'s weights as one ``.safetensors`` file (diffusers key layout)."""
    from safetensors.torch import save_file

    from data.files import atomic_write

    p = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in controlnet.state_dict().items()}
    atomic_write(p, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    return p
