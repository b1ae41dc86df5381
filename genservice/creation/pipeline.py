"""``Creator``: a product description (and optionally a sketch) -> N candidate detail-page
images. Text-to-image with the configured checkpoint (ControlNet or img2img from a sketch, or,
for a text of a known category, from that category's shape guide, ``creation.shape_guide``),
asked for a studio shot -> cut-out (U^2-Net-p joined with a colour key on a flat backdrop,
``creation.cutout``) -> on a clean background, the generated framing kept (or centred) ->
learned restoration to the requested size -> image safety -> PNG marked as generated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from genservice.backends.base import CancelFn, ProgressFn
from genservice.config import DEFAULT_MODEL, GenerationConfig
from genservice.creation import sketch as sk
from genservice.creation.page import (
    DIGITAL_SOURCE_TYPE,
    PRODUCT_FILL,
    creation_metadata,
    encode_png,
    is_generated,
    on_background,
    plain_enlargement,
    product_box,
)
from genservice.creation.request import CreationRejected, CreationRequest, parse_background
from genservice.creation.shape_guide import (
    GUIDE_MODE,
    GUIDE_STRENGTH,
    ShapeGuides,
    guide_mask,
    shipped_guides,
)
from genservice.errors import JobCancelled
from genservice.safety import SafetyChecker, enforce_safe, make_checker

log = logging.getLogger(__name__)

#: How far a product's pixels may be enlarged by plain resampling after restoration.
MAX_PRODUCT_UPSCALE = 1.25
#: How a product is framed on the page: ``native`` keeps the generated framing (the product
#: where and as large as the model drew it: about half the side for the embedded model's
#: studio shots), ``centred`` fits its crop into ``PRODUCT_FILL`` of the side.
FRAMINGS = ("native", "centred")
#: The default framing: measured in README "New product images" (a soft 64-px generation
#: enlarged to 0.8 of the page is named right far less often than at its own scale).
DEFAULT_FRAMING = "native"
#: The shipped ControlNet of the embedded model (used when ``model`` is the default one).
DEFAULT_CONTROLNET = "data/models/controlnet-tiny"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class PutImages(Protocol):
    """Where candidates go (an image store's ``put``: bytes -> content key)."""

    def put(self, data: bytes, content_type: str) -> str: ...


@dataclass
class CreationImaging:
    """The learned collaborators: ``cut_out(image)`` -> object with ``.cutout.image`` (RGBA,
    cropped) and ``.alpha`` ((H, W) float32 at the source size) and ``.method``;
    ``upscale(image, (w, h))`` -> learned restoration to that size that enlarges plainly at
    most ``max_upscale``."""

    cut_out: Callable[[Image.Image], Any]
    upscale: Callable[[Image.Image, tuple[int, int]], Image.Image]
    max_upscale: float = MAX_PRODUCT_UPSCALE

    @classmethod
    def default(cls) -> CreationImaging:
        """U^2-Net-p cut-out; the compact realesr-animevideov3 x4 network (generated images
        are smooth; it is far faster than x4plus on CPU)."""
        from genservice.imaging.cutout import cut_out_product, default_model
        from genservice.imaging.restore import default_restorer, upscale_to

        model = default_model()
        restorer = default_restorer("realesr-animevideov3-x4")
        return cls(
            cut_out=lambda im: cut_out_product(im, model=model),
            upscale=lambda im, size: upscale_to(
                im, size, restorer=restorer, max_plain_upscale=MAX_PRODUCT_UPSCALE
            ),
        )


@dataclass
class Candidate:
    """One created image. ``image``: RGB ``size`` x ``size``; ``native``: the diffusion output
    (RGB, native side); ``alpha``: the cut-out's alpha at the native side; ``product_upscale``:
    how far product pixels were enlarged by plain resampling after restoration; ``key``: the
    image store key (None without a store); ``png``: the encoded file."""

    seed: int
    image: Image.Image
    native: Image.Image
    alpha: np.ndarray
    product_upscale: float
    cutout_method: str
    metadata: dict[str, str]
    png: bytes
    key: str | None = None


@dataclass
class CreationOutput:
    """The candidates of one request, the prompt used, the conditioning (``source``) and
    per-stage timings (seconds)."""

    candidates: list[Candidate]
    prompt: str
    source: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.candidates if c.key is not None]


class Creator:
    """Creates product images. ``load_pipeline()`` returns the text-to-image diffusers
    pipeline (e.g. ``DiffusersBackend.load``); ``controlnet``: a loaded ``ControlNetModel``
    or a zero-argument loader (None: sketches use the img2img fallback)."""

    def __init__(
        self,
        *,
        load_pipeline: Callable[[], Any],
        safety: SafetyChecker,
        imaging: CreationImaging,
        model_id: str,
        store: PutImages | None = None,
        controlnet: Any = None,
        steps: int = 20,
        guidance: float = 5.0,
        controlnet_scale: float = sk.CONTROLNET_SCALE,
        img2img_strength: float = sk.IMG2IMG_STRENGTH,
        controlnet_strength: float | None = sk.CONTROLNET_STRENGTH,
        controlnet_ref: str | None = None,
        auto_sketch_mode: str = sk.AUTO_SKETCH_MODE,
        framing: str = DEFAULT_FRAMING,
        shape_guides: ShapeGuides | None = None,
        guide_strength: float = GUIDE_STRENGTH,
        guide_mode: str = GUIDE_MODE,
    ) -> None:
        self._load = load_pipeline
        self.safety = safety
        self.imaging = imaging
        self.model_id = model_id
        self.store = store
        self._controlnet = controlnet
        self.steps = steps
        self.guidance = guidance
        self.controlnet_scale = controlnet_scale
        self.img2img_strength = img2img_strength
        #: ControlNet path: share of the noise schedule redone from the sketch's filled
        #: outline (the img2img fallback's start), conditioned on the sketch's edges all along;
        #: None: from pure noise (the ControlNet alone).
        self.controlnet_strength = controlnet_strength
        #: What ``sketch_mode="auto"`` picks when a ControlNet is configured (the path that
        #: measured best, ``sketch.AUTO_SKETCH_MODE``).
        if auto_sketch_mode not in ("controlnet", "img2img"):
            raise ValueError(
                f"auto_sketch_mode: expected controlnet or img2img, got {auto_sketch_mode!r}"
            )
        self.auto_sketch_mode = auto_sketch_mode
        if framing not in FRAMINGS:
            raise ValueError(f"framing: expected one of {FRAMINGS}, got {framing!r}")
        #: How ``finish`` frames the product (``FRAMINGS``).
        self.framing = framing
        #: Where the ControlNet came from (folder, file or hub id; evaluation cache keys).
        self.controlnet_ref = controlnet_ref
        #: Category shape guides of text-only creations (``creation.shape_guide``; None: off)
        #: and the strength / sketch path a guide is followed with.
        self.shape_guides = shape_guides
        self.guide_strength = guide_strength
        self.guide_mode = guide_mode
        self._derived: dict[str, Any] = {}

    @classmethod
    def from_config(
        cls,
        config: GenerationConfig,
        *,
        home: str | Path,
        store: PutImages | None = None,
        controlnet: str | None = "auto",
        controlnet_config: str | None = None,
        build_fallback: Any = None,
        shape_guide: bool | None = None,
    ) -> Creator:
        """Default wiring: the diffusers backend of ``config``, the safety checker it names,
        U^2-Net-p + restoration. ``controlnet``: ``auto`` (the shipped controlnet-tiny when
        the model is the embedded default), a folder / single file / hub id, or None.
        ``shape_guide``: the shipped category shape guides (learned from the demo catalog) for
        text-only creations; None (auto): on when the model is the embedded default."""
        from genservice.backends.diffusers_backend import DiffusersBackend

        backend = DiffusersBackend(config, home=home, build_fallback=build_fallback)
        shipped = None
        if config.safety_checker == "auto":
            backend.load()
            shipped = backend.safety_checker
        ref = resolve_controlnet(controlnet, config)
        loader = None
        if ref is not None:

            def loader() -> Any:
                return sk.load_controlnet(ref, config=controlnet_config, dtype=backend.dtype).to(
                    backend.device
                )

        return cls(
            load_pipeline=backend.load,
            safety=make_checker(config.safety_checker, shipped=shipped),
            imaging=CreationImaging.default(),
            model_id=config.model,
            store=store,
            controlnet=loader,
            controlnet_ref=ref,
            steps=config.num_inference_steps,
            guidance=config.guidance_scale,
            shape_guides=shipped_guides()
            if (config.model == DEFAULT_MODEL if shape_guide is None else shape_guide)
            else None,
        )

    # ------------------------------------------------------------------ pipelines

    @property
    def has_controlnet(self) -> bool:
        return self._controlnet is not None

    def _get_controlnet(self) -> Any:
        if callable(self._controlnet) and not hasattr(self._controlnet, "config"):
            self._controlnet = self._controlnet()
        return self._controlnet

    def pipeline(self, mode: str) -> Any:
        """The pipeline of ``mode``: ``txt2img`` | ``controlnet`` (from noise) |
        ``controlnet-img2img`` (from a start image) | ``img2img`` (all sharing the
        text-to-image pipeline's components)."""
        base = self._load()
        if mode == "txt2img":
            return base
        if mode not in self._derived:
            from diffusers import (
                StableDiffusionControlNetImg2ImgPipeline,
                StableDiffusionControlNetPipeline,
                StableDiffusionImg2ImgPipeline,
            )

            if mode == "controlnet":
                pipe = StableDiffusionControlNetPipeline.from_pipe(
                    base, controlnet=self._get_controlnet()
                )
            elif mode == "controlnet-img2img":
                pipe = StableDiffusionControlNetImg2ImgPipeline.from_pipe(
                    base, controlnet=self._get_controlnet()
                )
            elif mode == "img2img":
                pipe = StableDiffusionImg2ImgPipeline.from_pipe(base)
            else:
                raise ValueError(
                    "mode: expected txt2img, controlnet, controlnet-img2img or img2img, "
                    f"got {mode!r}"
                )
            pipe.set_progress_bar_config(disable=True)
            self._derived[mode] = pipe
        return self._derived[mode]

    def native_side(self) -> int:
        pipe = self._load()
        return int(pipe.unet.config.sample_size * pipe.vae_scale_factor)

    def sketch_mode(self, requested: str) -> str:
        """The conditioning a sketch gets: ``controlnet`` or ``img2img``. ``auto``: the img2img
        fallback without a ControlNet, else ``auto_sketch_mode`` (the path that measured
        best)."""
        if requested == "controlnet" and not self.has_controlnet:
            raise CreationRejected("sketch_mode: controlnet requested but none is configured")
        if requested == "img2img" or not self.has_controlnet:
            return "img2img"
        if requested == "auto":
            return self.auto_sketch_mode
        return "controlnet"

    def sketch_steps(self, mode: str, strength: float | None = None) -> int:
        """Denoising steps a sketch in ``mode`` (``controlnet`` | ``img2img``) runs."""
        if strength is None:
            strength = self.img2img_strength if mode == "img2img" else self.controlnet_strength
        if strength is None:
            return self.steps
        return max(1, int(self.steps * strength))

    # ------------------------------------------------------------------ diffusion

    def diffuse(
        self,
        prompt: str | Sequence[str],
        seeds: Sequence[int],
        *,
        sketch: Image.Image | Sequence[Image.Image] | None = None,
        mode: str = "auto",
        strength: float | None = None,
        controlnet_scale: float | None = None,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
        total: int | None = None,
    ) -> tuple[list[Image.Image], str]:
        """Native-size RGB images for ``prompt`` (one prompt, or one per seed; image i from
        seed ``seeds[i]``) and the conditioning used (``text`` | ``sketch-controlnet`` |
        ``sketch-img2img``). ``sketch``: one for all, or one per seed."""
        import torch

        side = self.native_side()
        base = self._load()
        device = getattr(base, "device", "cpu")
        gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        steps = self.steps
        kwargs: dict[str, Any] = {}
        sketches = (
            None
            if sketch is None
            else [sketch] * len(seeds)
            if isinstance(sketch, Image.Image)
            else list(sketch)
        )
        if sketches is not None and len(sketches) != len(seeds):
            raise ValueError(f"sketch: expected one per seed ({len(seeds)}), got {len(sketches)}")
        if sketches is None:
            pipe, source = self.pipeline("txt2img"), "text"
            kwargs.update(height=side, width=side)
        elif self.sketch_mode(mode) == "controlnet":
            source = "sketch-controlnet"
            controls = [sk.control_image(x, side) for x in sketches]
            scale = float(self.controlnet_scale if controlnet_scale is None else controlnet_scale)
            kwargs.update(controlnet_conditioning_scale=scale)
            cn_strength = self.controlnet_strength if strength is None else strength
            if cn_strength is None:
                pipe = self.pipeline("controlnet")
                kwargs.update(image=controls, height=side, width=side)
            else:
                # Start from the fallback's start (the filled outline in the description's
                # colour) at a stated strength, conditioned on the sketch's edges throughout.
                pipe = self.pipeline("controlnet-img2img")
                kwargs.update(
                    image=self._init_images(prompt, sketches, side),
                    control_image=controls,
                    strength=cn_strength,
                )
                total = total if total is not None else self.sketch_steps("controlnet", strength)
        else:
            pipe, source = self.pipeline("img2img"), "sketch-img2img"
            i2i = self.img2img_strength if strength is None else strength
            kwargs.update(image=self._init_images(prompt, sketches, side), strength=i2i)
            total = total if total is not None else self.sketch_steps("img2img", strength)
        grand = total if total is not None else steps

        def on_step(_pipe: Any, i: int, _t: Any, cb: dict[str, Any]) -> dict[str, Any]:
            if progress is not None:
                progress(min(i + 1, grand), grand)
            if should_cancel is not None and should_cancel():
                raise JobCancelled("creation cancelled")
            return cb

        prompts = [prompt] * len(seeds) if isinstance(prompt, str) else list(prompt)
        if len(prompts) != len(seeds):
            raise ValueError(f"prompt: expected one per seed ({len(seeds)}), got {len(prompts)}")
        res = pipe(
            prompts,
            num_inference_steps=steps,
            guidance_scale=self.guidance,
            generator=gens,
            output_type="pil",
            callback_on_step_end=on_step,
            **kwargs,
        )
        return [im.convert("RGB") for im in res.images], source

    @staticmethod
    def _init_images(
        prompt: str | Sequence[str], sketches: Sequence[Image.Image], side: int
    ) -> list[Image.Image]:
        prompts = [prompt] * len(sketches) if isinstance(prompt, str) else list(prompt)
        return [
            sk.init_image(x, side, colour=sk.prompt_colour(p))
            for x, p in zip(sketches, prompts, strict=False)
        ]

    # ------------------------------------------------------------------ the whole path

    def finish(
        self,
        native: Image.Image,
        *,
        size: int,
        background: tuple[int, int, int],
        framing: str | None = None,
        guide: Image.Image | None = None,
    ) -> tuple[Image.Image, np.ndarray, float, str]:
        """Cut out (:func:`genservice.creation.cutout.creation_alpha`), put on ``background``
        and restore to ``size``: (RGB image, native alpha, plain enlargement of product
        pixels, cut-out method). ``framing`` (default ``self.framing``): ``native`` keeps the
        product where and as large as the model drew it (the page is the generated frame with
        its backdrop replaced, composited at the native side and restored as one image: no
        rim of the old backdrop); ``centred`` crops the product and fits it into
        ``PRODUCT_FILL`` of the side."""
        from genservice.creation.cutout import creation_alpha
        from genservice.imaging.cutout import estimate_foreground

        framing = framing or self.framing
        if framing not in FRAMINGS:
            raise ValueError(f"framing: expected one of {FRAMINGS}, got {framing!r}")
        rgb = np.asarray(native.convert("RGB"))
        try:
            u2 = np.asarray(self.imaging.cut_out(native).alpha, np.float32)
        except ValueError:
            u2 = None
        # A creation started from a shape guide: its silhouette is where the product stands.
        cut = creation_alpha(rgb, u2, None if guide is None else guide_mask(guide, rgb.shape[0]))
        alpha, method = cut.alpha, cut.method
        if method == "none":
            # No product stands out: the whole picture is placed, centred with a margin of the
            # background (counted as "none" in the evaluation) rather than failing the
            # candidate.
            log.warning("creation: no product to cut out (%s); placing the whole image", cut.reason)
            alpha = np.ones(rgb.shape[:2], np.float32)
            framing = "centred"
        fg = estimate_foreground(rgb, alpha)
        if framing == "native":
            a = alpha[..., None]
            flat = fg.astype(np.float32) * a + np.asarray(background, np.float32) * (1 - a)
            page = Image.fromarray(np.round(flat).clip(0, 255).astype(np.uint8), "RGB")
            big = self.imaging.upscale(page, (size, size)).convert("RGB")
            plain = plain_enlargement(page.size, (size, size), self.imaging.max_upscale)
            return big, alpha, plain, method
        rgba = np.dstack([fg, np.round(alpha * 255).astype(np.uint8)])
        ys, xs = np.nonzero(alpha > 1.0 / 255.0)
        crop = Image.fromarray(
            np.ascontiguousarray(rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]), "RGBA"
        )
        target = product_box(crop.size, size)
        big = self.imaging.upscale(crop, target)
        plain = plain_enlargement(crop.size, target, self.imaging.max_upscale)
        return on_background(big, size, background), alpha, plain, method

    def guide_for(self, request: CreationRequest) -> Image.Image | None:
        """The category shape guide (a sketch at the native side) a text-only ``request``
        starts from, or None: guides off, or no guided category (``request.category``, else
        the one its text names)."""
        if self.shape_guides is None:
            return None
        cat = self.shape_guides.category_of(request.text, request.category)
        return self.shape_guides.sketch(cat, self.native_side())

    def create(
        self,
        request: CreationRequest,
        *,
        sketch: Image.Image | None = None,
        controlnet_scale: float | None = None,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> CreationOutput:
        """All ``request.n`` candidates: checked, finished, encoded (and stored when a store is
        given). Raises ``CreationRejected`` (bad text or sketch mode), ``SafetyViolation``
        (flagged output; nothing is stored), ``JobCancelled``. Without a sketch, a request
        whose category has a shape guide (``request.shape_guide``) starts from it
        (:meth:`guide_for`; source ``text-shape-guide``)."""
        t0 = time.perf_counter()
        prompt = request.prompt
        bg = parse_background(request.background)
        seeds = [request.seed + i for i in range(request.n)]
        mode, strength = request.sketch_mode, None
        guide = None if sketch is not None or not request.shape_guide else self.guide_for(request)
        if guide is not None:
            sketch, mode, strength = guide, self.guide_mode, self.guide_strength
        steps_run = self.steps
        if sketch is not None:
            steps_run = self.sketch_steps(self.sketch_mode(mode), strength)
        total = steps_run + request.n
        natives, source = self.diffuse(
            prompt,
            seeds,
            sketch=sketch,
            mode=mode,
            strength=strength,
            controlnet_scale=controlnet_scale,
            progress=progress,
            should_cancel=should_cancel,
            total=total,
        )
        source = "text-shape-guide" if guide is not None else source
        t1 = time.perf_counter()
        finished = []
        for i, native in enumerate(natives):
            finished.append(self.finish(native, size=request.size, background=bg, guide=guide))
            if progress is not None:
                progress(steps_run + i + 1, total)
            if should_cancel is not None and should_cancel():
                raise JobCancelled("creation cancelled")
        t2 = time.perf_counter()
        enforce_safe(self.safety, [f[0] for f in finished])
        cands = []
        for seed, native, (image, alpha, plain, method) in zip(
            seeds, natives, finished, strict=True
        ):
            meta = creation_metadata(model=self.model_id, seed=seed, prompt=prompt, source=source)
            png = encode_png(image, meta)
            key = self.store.put(png, "image/png") if self.store is not None else None
            cands.append(Candidate(seed, image, native, alpha, plain, method, meta, png, key))
        t3 = time.perf_counter()
        return CreationOutput(
            candidates=cands,
            prompt=prompt,
            source=source,
            timings={
                "diffusion_s": round(t1 - t0, 4),
                "finish_s": round(t2 - t1, 4),
                "safety_store_s": round(t3 - t2, 4),
            },
        )


def resolve_controlnet(ref: str | None, config: GenerationConfig) -> str | None:
    """``auto`` -> the shipped controlnet-tiny folder when the model is the embedded default
    and the folder exists, else None; a relative path is tried against the working folder,
    then the project root; anything else is returned as is (a hub id)."""
    if ref is None or ref == "":
        return None
    if ref == "auto":
        if config.model != DEFAULT_MODEL:
            return None
        folder = _PROJECT_ROOT / DEFAULT_CONTROLNET
        return str(folder) if (folder / "config.json").is_file() else None
    p = Path(ref)
    if p.exists():
        return str(p)
    if not p.is_absolute() and (_PROJECT_ROOT / p).exists():
        return str(_PROJECT_ROOT / p)
    return ref


def max_product_upscale(outputs: Sequence[CreationOutput]) -> float:
    """The largest plain enlargement of product pixels over ``outputs`` (0 when empty)."""
    vals = [c.product_upscale for o in outputs for c in o.candidates]
    return max(vals) if vals else 0.0


__all__ = [
    "DEFAULT_FRAMING",
    "DIGITAL_SOURCE_TYPE",
    "FRAMINGS",
    "MAX_PRODUCT_UPSCALE",
    "PRODUCT_FILL",
    "Candidate",
    "CreationImaging",
    "CreationOutput",
    "Creator",
    "creation_metadata",
    "encode_png",
    "is_generated",
    "max_product_upscale",
    "on_background",
    "plain_enlargement",
    "product_box",
    "resolve_controlnet",
]
