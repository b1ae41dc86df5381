"""The ``Edit`` interface shared by every edit op: the result record, masks, colours and the
PNG metadata an edit writes (op, parameters, source hash, model; never personal data).

Metadata follows ``genservice.metadata``'s convention (PNG text chunks prefixed
``tailorshot:``, so ``metadata.read_metadata`` reads them back) with its own allowed keys,
:data:`EDIT_METADATA_KEYS`; anything else is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageColor
from PIL.PngImagePlugin import PngInfo

from genservice import vocab
from genservice.metadata import PREFIX

#: The only keys an edit may store in its PNG (prefixed ``tailorshot:``).
EDIT_METADATA_KEYS = ("edit_op", "edit_params", "source_sha256", "model", "mask_method")


@dataclass(frozen=True)
class EditResult:
    """One edit's output.

    ``image``: the edited PIL image (RGB, or RGBA when the source or the op has alpha).
    ``mask``: the ``(H, W)`` float32 alpha in [0, 1] the edit used (source size), or None
    for whole-image ops (restore, adjust). ``op``: the op name. ``params``: the op's
    parameters as given (JSON-able). ``timings``: seconds per stage (``mask``, ``edit``).
    ``metadata``: the PNG text stored with the image (see :func:`edit_png_info`).
    """

    image: Image.Image
    mask: np.ndarray | None
    op: str
    params: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    def save(self, path: Any) -> None:
        """Write ``image`` as PNG with its metadata."""
        self.image.save(path, format="PNG", pnginfo=edit_png_info(self.metadata))


class Edit(Protocol):
    """An edit op: ``name`` (the registry key) and ``apply(image, mask=None, **params)``.

    ``mask`` is an optional ``(H, W)`` alpha (float in [0, 1], bool, or uint8 0-255, or an
    ``L`` image); ops that need one cut the product out when it is None.
    """

    name: str

    def apply(
        self, image: Image.Image, *, mask: np.ndarray | Image.Image | None = None, **params: Any
    ) -> EditResult: ...


def check_image(image: Any) -> Image.Image:
    """``image`` as RGB or RGBA; a clear error for anything else."""
    if not isinstance(image, Image.Image):
        raise ValueError(f"image: expected a PIL image, got {type(image).__name__}")
    if min(image.size) < 8:
        raise ValueError(f"image: expected at least 8 x 8 pixels, got {image.size}")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA")
    return image.convert("RGB")


def image_sha256(image: Image.Image) -> str:
    """SHA-256 of the image's mode, size and pixels (the source hash an edit records)."""
    h = hashlib.sha256(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def resolve_mask(
    image: Image.Image, mask: np.ndarray | Image.Image | None
) -> tuple[np.ndarray, str, float]:
    """The ``(H, W)`` float32 alpha an edit works inside, the method that made it and the
    seconds it took. A given ``mask`` is checked for size; otherwise the product is cut out
    (``genservice.imaging.cutout.cut_out_product``, the one segmenter)."""
    import time

    t0 = time.perf_counter()
    alpha, method = _whole_mask(image, mask)
    return alpha, method, time.perf_counter() - t0


def _whole_mask(
    image: Image.Image, mask: np.ndarray | Image.Image | None
) -> tuple[np.ndarray, str]:
    if mask is None:
        from genservice.imaging.cutout import cut_out_product

        res = cut_out_product(image)
        return res.alpha.astype(np.float32), res.method
    if isinstance(mask, Image.Image):
        arr = np.asarray(mask.convert("L"), np.float32) / 255.0
    else:
        arr = np.asarray(mask)
        if arr.dtype == bool:
            arr = arr.astype(np.float32)
        elif arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        else:
            arr = arr.astype(np.float32)
    w, h = image.size
    if arr.shape != (h, w):
        raise ValueError(f"mask: expected shape {(h, w)} (the image's H, W), got {arr.shape}")
    if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError("mask: expected values in [0, 1] (or uint8 0-255 / bool)")
    if not (arr > 0.5).any():
        raise ValueError("mask: expected at least one pixel with alpha > 0.5, got none")
    return arr, "given"


def parse_colour(value: str, arg: str = "colour") -> tuple[int, int, int]:
    """A colour from ``#rrggbb`` / ``#rgb`` hex, a demo-world colour name (``red``, ``teal``,
    ...) or a CSS colour name (``navy``) -> sRGB 0-255 tuple."""
    colours = vocab.colours()
    text = str(value).strip().lower()
    if text in colours:
        return colours[text]
    try:
        rgb = ImageColor.getrgb(text)
    except ValueError:
        raise ValueError(
            f"{arg}: expected #rrggbb hex or a colour name (e.g. {', '.join(colours)}, navy), "
            f"got {value!r}"
        ) from None
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def blend_in_mask(original: np.ndarray, edited: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``original`` / ``edited`` ``(H, W, 3)`` uint8, ``alpha`` ``(H, W)`` float32 ->
    ``alpha * edited + (1 - alpha) * original`` rounded, computed only on the mask's support
    (alpha > 0): every pixel outside it is copied, so it is bit-exact by construction."""
    out = original.copy()
    sup = alpha > 0.0
    a = alpha[sup][:, None]
    mixed = a * edited[sup].astype(np.float32) + (1.0 - a) * original[sup].astype(np.float32)
    out[sup] = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
    return out


def split_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB ``(H, W, 3)`` uint8 and the alpha channel ``(H, W)`` uint8 (None for RGB)."""
    arr = np.array(image)
    if image.mode == "RGBA":
        return np.ascontiguousarray(arr[..., :3]), arr[..., 3].copy()
    return arr, None


def join_alpha(rgb: np.ndarray, alpha: np.ndarray | None) -> Image.Image:
    """Inverse of :func:`split_alpha`."""
    if alpha is None:
        return Image.fromarray(rgb, "RGB")
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def edit_metadata(
    op: str, params: dict[str, Any], source: Image.Image, *, model: str, mask_method: str = ""
) -> dict[str, str]:
    """The PNG metadata of an edit: op, parameters (sorted JSON), source hash, model and how
    the mask was made. Only op parameters go in; no user ids or other personal data."""
    meta = {
        "edit_op": op,
        "edit_params": json.dumps(params, sort_keys=True, default=str)[:2048],
        "source_sha256": image_sha256(source),
        "model": str(model)[:256],
    }
    if mask_method:
        meta["mask_method"] = mask_method
    return meta


def edit_png_info(metadata: dict[str, str]) -> PngInfo:
    """PNG text chunks for ``metadata``; only :data:`EDIT_METADATA_KEYS` are allowed."""
    unknown = set(metadata) - set(EDIT_METADATA_KEYS)
    if unknown:
        raise ValueError(
            f"metadata: only {EDIT_METADATA_KEYS} may be stored, got {sorted(unknown)}"
        )
    info = PngInfo()
    for k in EDIT_METADATA_KEYS:
        if k in metadata:
            info.add_text(PREFIX + k, str(metadata[k]))
    return info
