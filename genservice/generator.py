"""``HeroGenerator``: brief → prompt → diffusion (inpainting around the product) → hero
composition → fidelity and safety checks → encoded image in the store → result cache.
This is what the jobs worker calls."""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from genservice.backends.base import (
    Backend,
    CancelFn,
    GenerationOutput,
    GenerationRequest,
    ProgressFn,
)
from genservice.brief import CreativeBrief
from genservice.cache import CachedResult, ResultCache
from genservice.compose import (
    Layout,
    PlacedProduct,
    canvas_size,
    check_fidelity,
    compose_hero,
    cut_out,
    hero_metadata,
    inpaint_inputs,
    place_cutout,
    plan_layout,
)
from genservice.config import GenerationConfig
from genservice.errors import GenerationError
from genservice.prompts import BuiltPrompt, PromptBuilder, sanitize_text
from genservice.safety import SafetyChecker, enforce_safe, make_checker
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


@dataclass
class _Prepared:
    brief: CreativeBrief
    prompt: BuiltPrompt
    layout: Layout
    placed: PlacedProduct
    headline: str | None
    request: GenerationRequest
    timings: dict[str, float]


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
    ) -> None:
        self.backend = backend
        self.store = store
        self.cache = cache
        self.safety = safety
        self.config = config or GenerationConfig()
        self.home = Path(home)
        self._prompt_builder = prompt_builder

    @classmethod
    def from_config(cls, config: GenerationConfig, *, home: str | Path) -> HeroGenerator:
        """Default wiring: diffusers backend, local store under ``<home>/images``, SQLite
        result cache under ``<home>/cache``, safety checker per ``config.safety_checker``."""
        from genservice.backends.diffusers_backend import DiffusersBackend

        home = Path(home)
        backend = DiffusersBackend(config, home=home)
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
            backend=backend, store=store, cache=cache, safety=safety, config=config, home=home
        )

    # ------------------------------------------------------------------ helpers

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
        path = Path(ref)
        if not path.is_absolute():
            path = self.home / path
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
        prompt = self.prompt_builder.build(brief)
        t1 = time.perf_counter()
        product = self.load_image(brief.product.image)
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
        layout = plan_layout(brief.placement, cut.size, headline=bool(headline))
        placed = place_cutout(cut, layout.product_box)
        canvas = canvas_size(
            brief.placement,
            native=self.backend.native_size,
            multiple=getattr(self.backend, "size_multiple", 64),
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
        if use_refs and not getattr(self.backend, "supports_ip_adapter", True):
            if self.config.require_ip_adapter:
                raise GenerationError(
                    "brief.references: this model has no IP-Adapter and "
                    "generation.require_ip_adapter is on"
                )
            log.warning(
                "model %s has no IP-Adapter: ignoring %d reference(s) of brief %s",
                self.backend.model_id,
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
            embeds_by_id = getattr(self.backend, "embeds_by_id", None)
            if embeds_by_id is None:
                raise GenerationError("reference_embedding_ids: this backend caches no embeddings")
            request.ip_adapter_image_embeds = [embeds_by_id(list(brief.reference_embedding_ids))]
            request.ip_adapter_scale = self.config.ip_adapter_scale
        t2 = time.perf_counter()
        return _Prepared(
            brief,
            prompt,
            layout,
            placed,
            headline,
            request,
            {"prompt_s": t1 - t0, "prepare_s": t2 - t1},
        )

    def _finish(self, prep: _Prepared, out: GenerationOutput) -> HeroOutput:
        brief = prep.brief
        timings = dict(prep.timings)
        timings["generate_s"] = sum(out.timings.values())
        t0 = time.perf_counter()
        hero = compose_hero(
            out.image,
            prep.placed,
            brief.placement,
            headline=prep.headline,
            text_box=prep.layout.text_box,
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
            outs = self.backend.generate_batch(
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
                hero.timings["total_s"] = time.perf_counter() - t_start
                for i in pending[h]:
                    results[i] = hero
        return results

    def cached(self, brief_hash: str) -> CachedResult | None:
        """The cached result for a brief hash, if any (never generates)."""
        return self.cache.get(brief_hash)
