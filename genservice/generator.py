"""``HeroGenerator``: brief → prompt → diffusion (inpainting around the product) → hero
composition → fidelity and safety checks → encoded image in the store → result cache.
This is what the jobs worker calls."""

from __future__ import annotations

import functools
import io
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data.files import under_home
from genservice.backends.base import (
    Backend,
    CancelFn,
    GenerationOutput,
    GenerationRequest,
    ProgressFn,
)
from genservice.backends.paths import FallbackBuilder
from genservice.brandkit import Brand, brand_kit_for, load_brand
from genservice.brandkit import brand_id as kit_id
from genservice.brief import CreativeBrief
from genservice.cache import CachedResult, ResultCache
from genservice.compose import (
    Cutout,
    Layout,
    PlacedProduct,
    canvas_size,
    check_fidelity,
    compose_hero,
    crop_to_aspect,
    cut_out,
    find_ground,
    ghost_regions,
    inpaint_inputs,
    match_gain,
    place_cutout,
    plan_layout,
    plan_scene_layout,
    remove_ghosts,
    scene_canvas,
)
from genservice.config import GenerationConfig
from genservice.errors import GenerationError
from genservice.metadata import hero_metadata
from genservice.prompts import BuiltPrompt, PromptBuilder, sanitize_text
from genservice.safety import SafetyChecker, enforce_safe, make_checker
from genservice.scene_prompt import backdrop_prompt, known_words_only
from genservice.scenes import SceneInfo, SceneStore
from genservice.storage import ImageStore, LocalImageStore, encode_image

log = logging.getLogger(__name__)
_STORE_KEY = re.compile(r"^[0-9a-f]{64}\.(png|webp)$")


@dataclass(frozen=True)
class HeroOutput:
    """A finished hero: its key in the image store, the brief hash, per-stage timings in
    seconds, and the metadata written into the file. ``cached``: served from the cache."""

    image_key: str
    brief_hash: str
    timings: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    cached: bool = False
    prompt: str = ""


#: How far a product's pixels may be enlarged by plain resampling; beyond it they are restored
#: (learned super-resolution) first.
MAX_PRODUCT_UPSCALE = 1.25
#: Detector regions smaller than this share of the native scene are not taken for painted
#: products (neither erased nor counted): on 900 product-free demo renders of the three
#: canvases the ghost detector's largest false region was 0.39 %; a product sd-tiny paints
#: covers ~10 %.
GHOST_MIN_AREA = 0.005


@dataclass
class HeroImaging:
    """The learned imaging collaborators of the delivery hero path (compose, don't construct).

    ``cut_out(image)`` -> an object with ``.cutout`` (:class:`Cutout`), ``.alpha`` (H, W)
    float32, ``.method`` and ``.confidence`` (``genservice.imaging.cutout.cut_out_product``);
    ``upscale_product(image, (w, h))`` and ``upscale_scene(image, (w, h))`` -> learned
    super-resolution to that size (``genservice.imaging.restore.upscale_to``);
    ``saliency(image)`` -> (H, W) float32 in [0, 1] at the image's size (U^2-Net-p).
    ``shadow``: draw a contact shadow; ``match_light``: apply the per-channel gain of
    :func:`genservice.compose.match_gain`.
    """

    cut_out: Callable[[Image.Image], Any]
    upscale_product: Callable[[Image.Image, tuple[int, int]], Image.Image]
    upscale_scene: Callable[[Image.Image, tuple[int, int]], Image.Image]
    saliency: Callable[[Image.Image], np.ndarray]
    max_upscale: float = MAX_PRODUCT_UPSCALE
    shadow: bool = True
    match_light: bool = True

    @classmethod
    def default(cls) -> HeroImaging:
        """U^2-Net-p cut-out and saliency; Real-ESRGAN x4plus for products (photographs) and
        the compact realesr-animevideov3 network for scenes (the model's smooth backdrops;
        measured 27x faster on a 1200x628 banner scene on the 2-core CPU, about as sharp)."""
        from genservice.imaging.cutout import cut_out_product, default_model
        from genservice.imaging.restore import default_restorer, fit_for_passes, upscale_to

        model = default_model()
        scene_restorer = default_restorer("realesr-animevideov3-x4")

        def upscale_product(image: Image.Image, size: tuple[int, int]) -> Image.Image:
            return upscale_to(image, size, max_plain_upscale=MAX_PRODUCT_UPSCALE)

        def upscale_scene(image: Image.Image, size: tuple[int, int]) -> Image.Image:
            return upscale_to(fit_for_passes(image, size), size, restorer=scene_restorer)

        # Ghosts: the detector trained on demo scenes when its weights ship (U^2-Net-p misses
        # products on dark scenes and takes sea stripes and mountains for objects at 64 px).
        # Loaded on first use (torch weights; the cut-out alone never needs them).
        detector: list[Callable[[Image.Image], np.ndarray]] = []

        def ghosts(image: Image.Image) -> np.ndarray:
            if not detector:
                try:
                    from genservice.judges import GhostDetector

                    detector.append(GhostDetector.load().probability)
                except FileNotFoundError as exc:
                    log.warning("ghost detector unavailable (%s): using U^2-Net-p saliency", exc)
                    detector.append(model.saliency)
            return detector[0](image)

        return cls(
            cut_out=lambda im: cut_out_product(im, model=model),
            upscale_product=upscale_product,
            upscale_scene=upscale_scene,
            saliency=ghosts,
        )


def place_product(
    cut: Cutout,
    box: tuple[int, int, int, int],
    upscale_to: Callable[[Image.Image, tuple[int, int]], Image.Image] | None,
    *,
    max_upscale: float = MAX_PRODUCT_UPSCALE,
) -> PlacedProduct:
    """The cut-out at ``box`` with soft edges; when the box is more than ``max_upscale`` times
    the cut-out, its RGB is first restored to the box size by ``upscale_to`` (learned
    super-resolution) and its alpha resized (a matte, not product pixels). Deterministic."""
    _x, _y, w, h = box
    cw, ch = cut.size
    if max(w / cw, h / ch) <= max_upscale or upscale_to is None:
        return place_cutout(cut, box, soft_edges=True)
    rgba = np.asarray(cut.image)
    # Restore what the camera saw (straight colours) and resize the matte separately.
    rgb = Image.fromarray(np.ascontiguousarray(rgba[..., :3]), "RGB")
    restored = upscale_to(rgb, (w, h)).convert("RGB")
    if restored.size != (w, h):
        raise ValueError(f"upscale_to: expected an image of {(w, h)}, got {restored.size}")
    alpha = Image.fromarray(rgba[..., 3], "L").resize((w, h), Image.Resampling.LANCZOS)
    big = Cutout(Image.merge("RGBA", (*restored.split(), alpha)))
    return place_cutout(big, box, soft_edges=True)


@dataclass
class _Prepared:
    brief: CreativeBrief
    prompt: BuiltPrompt
    layout: Layout | None
    placed: PlacedProduct | None
    headline: str | None
    request: GenerationRequest
    timings: dict[str, float]
    cut: Cutout | None = None
    scene: SceneInfo | None = None


class HeroGenerator:
    """Orchestrates the collaborators it is given (compose, don't construct).

    ``home`` resolves relative product and reference image paths (``catalog/<sku>.png``).
    """

    def __init__(
        self,
        *,
        backend: Backend,
        store: ImageStore,
        cache: ResultCache,
        safety: SafetyChecker,
        config: GenerationConfig | None = None,
        home: str | Path = "var",
        prompt_builder: PromptBuilder | None = None,
        scenes: SceneStore | None = None,
        imaging: HeroImaging | None = None,
        scene_backend: Backend | None = None,
    ) -> None:
        """``imaging``: the learned delivery path (cut-out, restoration, ghost-free scenes,
        light match, contact shadow; :meth:`from_config` wires it). Without it the classic
        path runs: colour-key cut-out, inpainting around the product, bicubic scene.
        ``scene_backend``: the model that draws product-free scenes (``generation.scene_model``,
        :meth:`scene_request`); None = ``backend``."""
        self.scene_backend = scene_backend or backend
        #: Erase products the scene model paints (sd-tiny learned scenes that always hold
        #: one); a separate scene model was trained product-free, so nothing is erased.
        self.erase_ghosts = scene_backend is None or scene_backend is backend
        self.imaging = imaging
        self.backend = backend
        self.store = store
        self.cache = cache
        self.safety = safety
        self.config = config or GenerationConfig()
        self.home = Path(home)
        self._prompt_builder = prompt_builder
        self.scenes = scenes  # keeps each generated scene for recomposition (genservice.scenes)

    @classmethod
    def from_config(
        cls,
        config: GenerationConfig,
        *,
        home: str | Path,
        build_fallback: FallbackBuilder | None = None,
    ) -> HeroGenerator:
        """Default wiring: diffusers backend, local store under ``<home>/images``, SQLite
        result cache under ``<home>/cache``, safety checker per ``config.safety_checker``.
        ``build_fallback`` builds the random fallback model when the default folder is missing
        (``genservice.training.random_pipelines.build_tiny_pipeline``; CLI and tests)."""
        from genservice.backends.diffusers_backend import DiffusersBackend

        home = Path(home)
        backend = DiffusersBackend(config, home=home, build_fallback=build_fallback)
        scene_backend = None
        if config.scene_model_resolved != config.model:
            # Same settings (adapters, scheduler, device), another folder: product-free scenes.
            scene_config = config.model_copy(
                update={"model": config.scene_model_resolved, "scene_model": ""}
            )
            scene_backend = DiffusersBackend(scene_config, home=home)
        store = LocalImageStore(Path(config.image_store_dir or home / "images"))
        cache = ResultCache(
            Path(config.result_cache_file or home / "cache" / "results.sqlite"), store=store
        )
        shipped = None
        if config.safety_checker == "auto":
            backend.load()
            shipped = backend.safety_checker
        safety = make_checker(config.safety_checker, shipped=shipped)
        return cls(
            backend=backend,
            store=store,
            cache=cache,
            safety=safety,
            config=config,
            home=home,
            imaging=HeroImaging.default(),
            scene_backend=scene_backend,
            scenes=SceneStore(home / "scenes"),
        )

    # ------------------------------------------------------------------ helpers

    @functools.cached_property
    def brand(self) -> Brand | None:
        """The store's brand kit with its font and logo loaded (``generation.brand_kit``, else
        ``<home>/brand_kit.json``), once per generator; None without a kit."""
        try:
            kit = brand_kit_for(self.config.brand_kit, self.config.brand_kit_file, home=self.home)
            return None if kit is None else load_brand(kit, home=self.home)
        except ValueError as exc:
            raise GenerationError(str(exc)) from exc

    @functools.cached_property
    def brand_id(self) -> str:
        """The fingerprint of :attr:`brand` (``genservice.brandkit.brand_id``; "" = none)."""
        try:
            return kit_id(self.config.brand_kit, self.config.brand_kit_file, home=self.home)
        except ValueError as exc:
            raise GenerationError(str(exc)) from exc

    def _text_block(self, brief: CreativeBrief, headline: str | None) -> bool:
        """Whether the layout keeps a text area: a headline, or a kit's price or CTA."""
        kit = self.brand.kit if self.brand is not None else None
        return bool(headline) or (
            kit is not None and bool(kit.cta or kit.price_text(brief.product.price))
        )

    @property
    def prompt_builder(self) -> PromptBuilder:
        if self._prompt_builder is None:
            self._prompt_builder = PromptBuilder(
                max_tokens=self.backend.max_tokens, token_counter=self.backend.count_tokens
            )
        return self._prompt_builder

    def load_image(self, ref: str) -> Image.Image:
        """An image by store key, absolute path or path relative to ``home``."""
        if _STORE_KEY.match(ref) and self.store.exists(ref):
            return Image.open(io.BytesIO(self.store.get(ref))).copy()
        path = under_home(ref, self.home)
        if not path.is_file():
            raise GenerationError(f"image: expected a file or store key, found none at {ref!r}")
        with Image.open(path) as im:
            im.load()
            return im.copy()

    def _prepare(self, brief: CreativeBrief) -> _Prepared:
        t0 = time.perf_counter()
        if brief.model_id and brief.model_id != self.backend.model_id:
            raise GenerationError(
                f"brief.model_id: this generator serves {self.backend.model_id!r}, "
                f"got {brief.model_id!r}"
            )
        if brief.brand_id and brief.brand_id != self.brand_id:
            raise GenerationError(
                f"brief.brand_id: this generator draws brand kit {self.brand_id!r}, "
                f"got {brief.brand_id!r}"
            )
        prompt = self.prompt_builder.build(brief)
        t1 = time.perf_counter()
        product = self.load_image(brief.product.image)
        if self.imaging is not None:
            found = self.imaging.cut_out(product)
            cut = found.cutout
            log.info(
                "brief %s: product cut out by %s (confidence %.2f)",
                brief.brief_hash[:12],
                found.method,
                found.confidence,
            )
        else:
            cut = cut_out(product)
        headline = None
        if brief.headline:
            text = sanitize_text(brief.headline, max_chars=120)
            title = sanitize_text(brief.product.title, max_chars=80)
            try:
                headline = self.config.headline_template.format(headline=text, title=title)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    "generation.headline_template: expected placeholders {headline} and "
                    f"{{title}} only, got {self.config.headline_template!r} ({exc})"
                ) from None
        multiple = self.backend.size_multiple
        layout: Layout | None = None
        placed: PlacedProduct | None = None
        if self.imaging is not None:
            # The backdrop alone, at the model's native scale; the product is placed later on
            # the scene's surface (the layout depends on the scene).
            request = self.scene_request(brief, prompt)
        else:
            layout = plan_layout(
                brief.placement, cut.size, headline=self._text_block(brief, headline)
            )
            placed = place_cutout(cut, layout.product_box)
            canvas = canvas_size(
                brief.placement,
                native=self.backend.native_size,
                multiple=multiple,
                max_side=self.config.canvas_max_side,
            )
            init, mask = inpaint_inputs(placed, brief.placement, canvas)
            request = GenerationRequest(
                prompt=prompt.prompt,
                negative_prompt=prompt.negative_prompt,
                width=canvas[0],
                height=canvas[1],
                num_inference_steps=self.config.num_inference_steps,
                guidance_scale=self.config.guidance_scale,
                strength=self.config.strength,
                seed=brief.seed,
                image=init,
                mask_image=mask,
            )
        use_refs = bool(brief.references or brief.reference_embedding_ids)
        # The delivery path's request goes to the scene model.
        drawer = self.scene_backend if self.imaging is not None else self.backend
        if use_refs and not drawer.supports_ip_adapter:
            if self.config.require_ip_adapter:
                raise GenerationError(
                    "brief.references: this model has no IP-Adapter and "
                    "generation.require_ip_adapter is on"
                )
            log.warning(
                "model %s has no IP-Adapter: ignoring %d reference(s) of brief %s",
                drawer.model_id,
                len(brief.references) + len(brief.reference_embedding_ids),
                brief.brief_hash[:12],
            )
            use_refs = False
        if use_refs and brief.references:
            request.ip_adapter_image = [self.load_image(r).convert("RGB") for r in brief.references]
            hashes = dict(brief.content_hashes)
            if all(r in hashes for r in brief.references):
                request.reference_hashes = [hashes[r] for r in brief.references]
            request.ip_adapter_scale = self.config.ip_adapter_scale
        elif use_refs and brief.reference_embedding_ids:
            ids = list(brief.reference_embedding_ids)
            request.ip_adapter_image_embeds = [drawer.embeds_by_id(ids)]
            request.ip_adapter_scale = self.config.ip_adapter_scale
        t2 = time.perf_counter()
        timings = {"prompt_s": t1 - t0, "prepare_s": t2 - t1}
        return _Prepared(brief, prompt, layout, placed, headline, request, timings, cut=cut)

    def scene_request(self, brief: CreativeBrief, prompt: BuiltPrompt) -> GenerationRequest:
        """The delivery path's product-free scene request: :func:`backdrop_prompt` of
        ``prompt`` on a canvas at the model's native scale (:func:`scene_canvas` of the
        brief's placement), the brief's seed. Edits' generated backgrounds use it too. Run it
        on :attr:`scene_backend` (the scene model)."""
        be = self.scene_backend
        canvas = scene_canvas(brief.placement, native=be.native_size, multiple=be.size_multiple)
        return GenerationRequest(
            prompt=backdrop_prompt(prompt),
            negative_prompt=known_words_only(prompt.negative_prompt, be.count_tokens),
            width=canvas[0],
            height=canvas[1],
            num_inference_steps=self.config.num_inference_steps,
            guidance_scale=self.config.guidance_scale,
            seed=brief.seed,
        )

    def deliver_scene(self, scene: Image.Image, placement: Any) -> tuple[SceneInfo, np.ndarray]:
        """A generated native-scale scene made deliverable: cropped to the placement's aspect,
        products the model painted erased (saliency, biharmonic fill), the ground line found,
        then restored to the placement's size. Returns the info and the ghost mask (native)."""
        if self.imaging is None:
            raise GenerationError("deliver_scene: this generator has no imaging collaborators")
        native = crop_to_aspect(scene.convert("RGB"), placement.aspect)
        prob = self.imaging.saliency(native)
        if self.erase_ghosts:
            clean, ghosts = remove_ghosts(native, prob, min_area_frac=GHOST_MIN_AREA)
            ground = find_ground(clean, ghosts=ghosts)
        else:
            # A product-free scene model: what the detector marks is measured, not erased
            # (erasing its false finds, a sea band or a floor, left smudges in clean scenes).
            clean, ghosts = native, ghost_regions(prob, min_area_frac=GHOST_MIN_AREA)
            ground = find_ground(clean)
        delivered = self.imaging.upscale_scene(clean, placement.size).convert("RGB")
        if delivered.size != placement.size:
            raise GenerationError(f"upscale_to: expected {placement.size}, got {delivered.size}")
        marked = ghost_regions(prob, min_area_frac=GHOST_MIN_AREA, grow=0)
        info = SceneInfo(scene.size, float(ghosts.mean()), ground, clean, delivered, marked)
        return info, ghosts

    def _deliver(self, prep: _Prepared, out: GenerationOutput) -> tuple[Image.Image, PlacedProduct]:
        """Scene and placed product of the delivery path (see :meth:`deliver_scene`)."""
        assert self.imaging is not None and prep.cut is not None
        brief = prep.brief
        info, _ = self.deliver_scene(out.image, brief.placement)
        prep.scene = info
        layout = plan_scene_layout(
            brief.placement,
            prep.cut.size,
            ground=info.ground,
            headline=self._text_block(brief, prep.headline),
            max_plain_scale=self.imaging.max_upscale,
        )
        prep.layout = layout
        placed = place_product(
            prep.cut,
            layout.product_box,
            self.imaging.upscale_product,
            max_upscale=self.imaging.max_upscale,
        )
        if self.imaging.match_light:
            placed = placed.with_gain(match_gain(info.delivered, placed))
        return info.delivered, placed

    def _finish(self, prep: _Prepared, out: GenerationOutput) -> HeroOutput:
        brief = prep.brief
        timings = dict(prep.timings)
        timings["generate_s"] = sum(out.timings.values())
        t0 = time.perf_counter()
        if self.imaging is not None:
            scene, placed = self._deliver(prep, out)
            prep.placed = placed
            timings["deliver_s"] = time.perf_counter() - t0
        else:
            scene = out.image
        assert prep.placed is not None and prep.layout is not None
        hero = compose_hero(
            scene,
            prep.placed,
            brief.placement,
            headline=prep.headline,
            text_box=prep.layout.text_box,
            shadow=self.imaging is not None and self.imaging.shadow,
            brand=self.brand,
            price=brief.product.price,
        )
        check_fidelity(hero, prep.placed)
        t1 = time.perf_counter()
        enforce_safe(self.safety, [hero])  # a flagged image is never encoded nor stored
        t2 = time.perf_counter()
        meta = hero_metadata(
            model=brief.model_id or self.backend.model_id,
            seed=brief.seed,
            brief_hash=brief.brief_hash,
            box=prep.placed.box,
            gain=prep.placed.gain,
        )
        data, content_type = encode_image(hero, self.config.output_format, metadata=meta)
        # Verify the encoded bytes, not just the in-memory image.
        with Image.open(io.BytesIO(data)) as decoded:
            check_fidelity(decoded, prep.placed)
        t3 = time.perf_counter()
        key = self.store.put(data, content_type)
        t4 = time.perf_counter()
        timings.update(compose_s=t1 - t0, safety_s=t2 - t1, encode_s=t3 - t2, store_s=t4 - t3)
        return HeroOutput(key, brief.brief_hash, timings, meta, False, prep.prompt.prompt)

    # ------------------------------------------------------------------ public

    def generate(
        self,
        brief: CreativeBrief,
        *,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> HeroOutput:
        """The hero for ``brief``: from the cache if it ran before (the pipeline is not
        called), else generated, checked, stored and cached. Raises ``JobCancelled``,
        ``FidelityError``, ``SafetyViolation`` or ``GenerationError``."""
        result = self.generate_batch([brief], progress=progress, should_cancel=should_cancel)[0]
        assert isinstance(result, HeroOutput)
        return result

    def generate_batch(
        self,
        briefs: Sequence[CreativeBrief],
        *,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Heroes for several briefs; cache misses that share a size run in one pipeline
        call. Same order as ``briefs``. With ``return_exceptions`` a failed brief's slot
        holds its exception instead of raising (cancellation always raises)."""
        t_start = time.perf_counter()
        results: list[Any] = [None] * len(briefs)
        pending: dict[str, list[int]] = {}
        for i, brief in enumerate(briefs):
            if not isinstance(brief, CreativeBrief):
                raise TypeError(f"briefs[{i}]: expected CreativeBrief, got {type(brief).__name__}")
            h = brief.brief_hash
            hit = self.cache.get(h)
            if hit is not None:
                results[i] = HeroOutput(
                    hit.image_key, h, {"total_s": 0.0}, dict(hit.metadata), cached=True
                )
            else:
                pending.setdefault(h, []).append(i)
        prepared: list[_Prepared] = []
        for _h, idx in pending.items():
            try:
                prepared.append(self._prepare(briefs[idx[0]]))
            except Exception as exc:
                if not return_exceptions:
                    raise
                for i in idx:
                    results[i] = exc
        if prepared:
            drawer = self.scene_backend if self.imaging is not None else self.backend
            outs = drawer.generate_batch(
                [p.request for p in prepared], progress=progress, should_cancel=should_cancel
            )
            for prep, out in zip(prepared, outs, strict=True):
                h = prep.brief.brief_hash
                try:
                    hero = self._finish(prep, out)
                except Exception as exc:
                    if not return_exceptions:
                        raise
                    for i in pending[h]:
                        results[i] = exc
                    continue
                self.cache.put(h, hero.image_key, hero.metadata)
                if self.scenes is not None:  # the classic path's scene holds the product
                    placed = None if self.imaging is not None else prep.placed
                    self.scenes.keep(h, out.image, prep.brief.placement, placed)
                hero.timings["total_s"] = time.perf_counter() - t_start
                for i in pending[h]:
                    results[i] = hero
        return results

    def cached(self, brief_hash: str) -> CachedResult | None:
        """The cached result for a brief hash, if any (never generates)."""
        return self.cache.get(brief_hash)
