"""The diffusers backend: a pipeline family behind the ``Backend`` protocol.

Loads SD 1.5/2.1, SDXL or Turbo/LCM pipelines by hub id or local folder through
``from_pretrained``, or a single-file (Civitai-style, original layout) checkpoint through
``from_single_file`` with a local config folder (``HF_HUB_OFFLINE`` honoured; see
``backends.loading`` and ``backends.paths``); applies the serving settings (dtype,
channels-last, fused q/k/v, ``torch.compile``) and warms each configured canvas size up once
at load time; runs text-to-image, image-to-image and inpainting around a product mask,
IP-Adapter with cached reference embeddings (``backends.embed_cache``), the LoRA adapters of
``generation.loras`` (``backends.loras``, loaded once with the model), batches compatible
requests into one pipeline call (``backends.batching``), reports progress and stops on
cancellation. Random-weight pipelines for tests live in ``genservice.training.random_pipelines``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from genservice.backends import loading
from genservice.backends.base import CancelFn, GenerationOutput, GenerationRequest, ProgressFn
from genservice.backends.batching import (
    GroupKey,
    expected_steps,
    group_requests,
    install_embeds_passthrough,
    keep_unmasked_pixels,
    sized_inputs,
)
from genservice.backends.embed_cache import EmbeddingCache, embed_folder, image_hash
from genservice.backends.loras import attach_loras
from genservice.backends.paths import FallbackBuilder, resolve_model_path
from genservice.backends.safety_checker import DiffusersSafetyChecker
from genservice.config import GenerationConfig
from genservice.errors import GenerationError, JobCancelled

log = logging.getLogger(__name__)


class DiffusersBackend:
    """A diffusers pipeline family behind the ``Backend`` protocol.

    The pipeline is loaded lazily on first use; one lock guards it (diffusers pipelines and
    schedulers are stateful: one instance is never used by two threads at once).
    """

    def __init__(
        self,
        config: GenerationConfig | None = None,
        *,
        home: str | Path = "var",
        build_fallback: FallbackBuilder | None = None,
    ) -> None:
        """``build_fallback(folder, seed=0)`` builds the random fallback model when the default
        model folder is missing (see ``backends.paths.resolve_model_path``)."""
        self.config = config or GenerationConfig()
        self.home = Path(home)
        self._build_fallback = build_fallback
        self._lock = threading.RLock()
        self._pipe: Any = None
        self._pipes: dict[str, Any] = {}
        self._path: str | None = None
        self._ip_loaded = False
        self._ip_source: tuple[str, str, str] | None = None
        self.device, self.dtype = loading.resolve_device_dtype(self.config)
        self._embeds = EmbeddingCache(size=512, device=self.device, dtype=self.dtype)
        #: The model a brief names: the model plus the adapters in use (``model_identity``).
        self.model_id = self.config.model_identity
        #: peft adapter names loaded with the model (``generation.loras``).
        self.loras: list[str] = []
        self.safety_checker: DiffusersSafetyChecker | None = None
        #: Number of pipeline calls made (tests check that a cache hit makes none).
        self.calls = 0
        #: Seconds each warmed-up ``(width, height, batch)`` took (see :meth:`warmup`).
        self.warmed: dict[tuple[int, int, int], float] = {}
        self.load_seconds = 0.0

    # ----------------------------------------------------------------- loading

    def load(self) -> Any:
        """Load (once) and return the text-to-image pipeline; then warm up the configured
        sizes (see :meth:`warmup`)."""
        with self._lock:
            if self._pipe is not None:
                return self._pipe
            path = resolve_model_path(
                self.config, home=self.home, build_fallback=self._build_fallback
            )
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
            t0 = time.perf_counter()
            try:
                load = loading.load_single_file if Path(path).is_file() else loading.load_pretrained
                pipe = load(self.config, path, dtype=self.dtype, offline=offline)
            except GenerationError:
                raise
            except Exception as exc:  # diffusers' loaders raise many kinds; name the model
                raise GenerationError(
                    f"generation.model: could not load {path!r} "
                    f"(offline={offline}): {type(exc).__name__}: {exc}"
                ) from exc
            pipe = pipe.to(self.device)
            pipe.set_progress_bar_config(disable=True)
            if self.config.scheduler != "default":
                pipe.scheduler = loading.make_scheduler(self.config.scheduler, pipe.scheduler)
            # Adapters before the optimisations: fused q/k/v and compiled graphs need them
            # merged into the weights first.
            self.loras = attach_loras(
                pipe,
                self.config.loras,
                home=self.home,
                fuse=self.config.fuse_qkv or self.config.compile_unet,
            )
            loading.optimize(pipe, self.config)
            if Path(path).is_dir():
                self.safety_checker = DiffusersSafetyChecker.from_folder(path, device=self.device)
            self._ip_source = loading.find_ip_adapter(self.config, path)
            if self._ip_source is not None:
                self._embeds.folder = embed_folder(self.home, path, self._ip_source)
            self._path = path
            self._pipe = pipe
            self._pipes = {"txt2img": pipe}
            self.load_seconds = time.perf_counter() - t0
            log.info(
                "loaded %s (%s) on %s/%s in %.1fs",
                path,
                type(pipe).__name__,
                self.device,
                self.dtype,
                self.load_seconds,
            )
            if self.config.warmup_sizes or self.config.compile_unet or self.config.compile_vae:
                self.warmup()
            return pipe

    # ----------------------------------------------------------------- warm-up

    def warmup(
        self,
        sizes: Sequence[tuple[int, int]] | None = None,
        *,
        batch_sizes: Sequence[int] | None = None,
    ) -> dict[tuple[int, int, int], float]:
        """Run one short inpainting call per ``(width, height)`` and batch size not warmed up
        yet, so compilation, autotuning and CUDA-graph capture happen now, not on a
        shopper's request. Defaults: ``generation.warmup_sizes`` (else the native square) and
        ``generation.warmup_batch_sizes``; guidance as configured (CFG doubles the UNet
        batch) and the IP-Adapter loaded when the model has one (it changes the graph).
        Returns seconds per newly warmed ``(width, height, batch)``; repeated sizes cost
        nothing."""
        with self._lock:
            self.load()
            cfg = self.config
            if sizes is None:
                sizes = list(cfg.warmup_sizes) or [(self.native_size, self.native_size)]
            batches = list(batch_sizes) if batch_sizes is not None else cfg.warmup_batch_sizes
            if self._ip_source is not None:
                self._ensure_ip_adapter()
            done: dict[tuple[int, int, int], float] = {}
            for w, h in sizes:
                for b in batches:
                    key = (int(w), int(h), int(b))
                    if key in self.warmed:
                        continue
                    image = Image.new("RGB", (key[0], key[1]), (128, 128, 128))
                    mask = Image.new("L", (key[0], key[1]), 255)
                    reqs = [
                        GenerationRequest(
                            prompt="warm-up",
                            width=key[0],
                            height=key[1],
                            num_inference_steps=cfg.warmup_steps,
                            guidance_scale=cfg.guidance_scale,
                            seed=i,
                            image=image,
                            mask_image=mask,
                        )
                        for i in range(key[2])
                    ]
                    t0 = time.perf_counter()
                    self.generate_batch(reqs)
                    done[key] = self.warmed[key] = time.perf_counter() - t0
                    log.info("warmed up %dx%d batch %d in %.1fs", *key, done[key])
            return done

    @property
    def supports_ip_adapter(self) -> bool:
        self.load()
        return self._ip_source is not None

    def _ensure_ip_adapter(self) -> None:
        if self._ip_loaded:
            return
        if self._ip_source is None:
            raise GenerationError(
                "ip_adapter_image: this model has no IP-Adapter (set generation.ip_adapter)"
            )
        loading.attach_ip_adapter(
            self._pipe, self._ip_source, self.config, device=self.device, dtype=self.dtype
        )
        self._ip_loaded = True
        self._pipes = {"txt2img": self._pipe}  # derived pipelines must see the new components

    def _pipeline(self, mode: str) -> Any:
        pipe = self.load()
        if mode not in self._pipes:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            cls = AutoPipelineForInpainting if mode == "inpaint" else AutoPipelineForImage2Image
            derived = cls.from_pipe(pipe)
            derived.set_progress_bar_config(disable=True)
            self._pipes[mode] = derived
        return self._pipes[mode]

    # ----------------------------------------------------------------- info

    @property
    def tokenizer(self) -> Any:
        return self.load().tokenizer

    @property
    def max_tokens(self) -> int:
        return int(self.tokenizer.model_max_length)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` for the (first) text encoder, without begin/end tokens."""
        return len(
            self.tokenizer(
                text, add_special_tokens=False, truncation=False, verbose=False
            ).input_ids
        )

    @property
    def native_size(self) -> int:
        """The model's native side in pixels: ``generation.native_size`` when set, else the
        UNet sample size x the VAE factor (512 for SD 1.5, 768 for SD 2.x-v, 1024 for SDXL)."""
        if self.config.native_size:
            return int(self.config.native_size)
        pipe = self.load()
        return int(pipe.unet.config.sample_size * pipe.vae_scale_factor)

    @property
    def size_multiple(self) -> int:
        """Canvas sides must be multiples of this (VAE factor x UNet down-sampling)."""
        pipe = self.load()
        return int(pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1))

    # ----------------------------------------------------------------- references

    def reference_embeds(
        self,
        images: Sequence[Image.Image],
        hashes: Sequence[str] | None = None,
    ) -> list[Any]:
        """IP-Adapter embeddings for reference images, one tensor per image of shape
        ``(2, 1, dim)`` (negative, positive), computed once per content hash and cached."""
        import torch

        with self._lock:
            self.load()
            self._ensure_ip_adapter()
            out = []
            for i, img in enumerate(images):
                key = hashes[i] if hashes is not None else image_hash(img)
                # From memory, else the on-disk cache (another process or an earlier run
                # computed it), else computed now and stored in both.
                cached = self._embeds.get(key)
                if cached is None:
                    with torch.no_grad():
                        (cached,) = self._pipe.prepare_ip_adapter_image_embeds(
                            ip_adapter_image=[img.convert("RGB")],
                            ip_adapter_image_embeds=None,
                            device=self.device,
                            num_images_per_prompt=1,
                            do_classifier_free_guidance=True,
                        )
                    cached = cached.detach()
                    self._embeds.put(key, cached)
                out.append(cached)
            return out

    def embeds_by_id(self, ids: Sequence[str]) -> Any:
        """Cached reference embeddings by id (content hash), concatenated: ``(2, n, dim)``."""
        import torch

        with self._lock:
            self.load()
            self._ensure_ip_adapter()
            out = []
            for key in ids:
                emb = self._embeds.get(key)
                if emb is None:
                    raise GenerationError(
                        f"reference_embedding_ids: no cached embedding {key!r} for this model"
                    )
                out.append(emb)
            return torch.cat(out, dim=1)

    def _request_embeds(self, req: GenerationRequest) -> Any:
        """``(2, n_refs, dim)`` for one request (negative first)."""
        import torch

        if req.ip_adapter_image_embeds:
            if len(req.ip_adapter_image_embeds) != 1:
                raise ValueError(
                    "ip_adapter_image_embeds: expected one tensor (one IP-Adapter), got "
                    f"{len(req.ip_adapter_image_embeds)}"
                )
            emb = req.ip_adapter_image_embeds[0]
            if emb.ndim != 3 or emb.shape[0] != 2:
                raise ValueError(
                    "ip_adapter_image_embeds[0]: expected shape (2, n_images, dim), got "
                    f"{tuple(emb.shape)}"
                )
            return emb.to(self.device)
        assert req.ip_adapter_image is not None
        per_image = self.reference_embeds(list(req.ip_adapter_image), req.reference_hashes)
        return torch.cat(per_image, dim=1)

    # ----------------------------------------------------------------- generation

    def generate(
        self,
        request: GenerationRequest,
        *,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> GenerationOutput:
        """Run one request (see :meth:`generate_batch`)."""
        return self.generate_batch([request], progress=progress, should_cancel=should_cancel)[0]

    def generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        *,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> list[GenerationOutput]:
        """Run requests; those sharing mode, size, steps, guidance, strength, reference count
        and IP-Adapter scale share one pipeline call (at most ``max_batch`` each). Each item
        keeps its own seed (its own generator) and references. Output order = input order.
        ``progress(step, total)`` counts steps over all calls."""
        requests = list(requests)
        for i, r in enumerate(requests):
            if not isinstance(r, GenerationRequest):
                raise TypeError(
                    f"requests[{i}]: expected GenerationRequest, got {type(r).__name__}"
                )
        chunks = group_requests(
            requests, default_scale=self.config.ip_adapter_scale, max_batch=self.config.max_batch
        )
        total = sum(expected_steps(requests[c[0]]) for _, c in chunks)
        done = 0
        results: list[GenerationOutput | None] = [None] * len(requests)
        for key, idx in chunks:
            outs = self._run_chunk(
                key, [requests[i] for i in idx], done, total, progress, should_cancel
            )
            done += outs[0].steps_run
            for i, o in zip(idx, outs, strict=True):
                results[i] = o
        return [r for r in results if r is not None]

    def _run_chunk(
        self,
        key: GroupKey,
        reqs: list[GenerationRequest],
        offset: int,
        total: int,
        progress: ProgressFn | None,
        should_cancel: CancelFn | None,
    ) -> list[GenerationOutput]:
        import torch

        with self._lock:
            t0 = time.perf_counter()
            pipe = self._pipeline(key.mode)
            base = self._pipe
            do_cfg = key.guidance > 1.0 and base.unet.config.time_cond_proj_dim is None
            kwargs: dict[str, Any] = {
                "prompt": [r.prompt for r in reqs],
                "negative_prompt": [r.negative_prompt for r in reqs] if do_cfg else None,
                "num_inference_steps": key.steps,
                "guidance_scale": key.guidance,
                "width": key.width,
                "height": key.height,
                # CPU generators: the same seed gives the same noise on every device.
                "generator": [torch.Generator("cpu").manual_seed(r.seed) for r in reqs],
                "output_type": "np",
            }
            size = (key.width, key.height)
            if key.mode != "txt2img":
                images = [r.image for r in reqs]
                note = " (width, height)"
                kwargs["image"] = sized_inputs(
                    images, arg="image", size=size, mode="RGB", note=note
                )
                kwargs["strength"] = key.strength
            if key.mode == "inpaint":
                kwargs["mask_image"] = sized_inputs(
                    [r.mask_image for r in reqs], arg="mask_image", size=size, mode="L"
                )
            if self._ip_loaded or key.n_refs:
                self._ensure_ip_adapter()
                pipe = self._pipeline(key.mode)
                if key.n_refs:
                    embeds = [self._request_embeds(r) for r in reqs]
                    base.set_ip_adapter_scale(json.loads(key.scale))
                else:
                    # The adapter is loaded but these items have no references: scale 0
                    # skips the adapter's attention entirely (bit-equal to no adapter).
                    dim = base.unet.encoder_hid_proj.image_projection_layers[0].image_embeds
                    dummy = torch.zeros(2, 1, dim.in_features, device=self.device, dtype=self.dtype)
                    embeds = [dummy for _ in reqs]
                    base.set_ip_adapter_scale(0.0)
                neg = torch.cat([e[0:1] for e in embeds], dim=0)
                pos = torch.cat([e[1:2] for e in embeds], dim=0)
                # One tensor for the one adapter, (2B, n, dim) with CFG: every item keeps its
                # own references (passing a list of images would mix them, diffusers #9813).
                stacked = torch.cat([neg, pos], dim=0) if do_cfg else pos
                kwargs["ip_adapter_image_embeds"] = [stacked.to(self.device, self.dtype)]
            steps_run = 0

            def on_step_end(p: Any, step: int, timestep: Any, cb_kwargs: dict[str, Any]) -> dict:
                nonlocal steps_run
                steps_run = step + 1
                if progress is not None:
                    progress(offset + steps_run, total)
                if should_cancel is not None and should_cancel():
                    raise JobCancelled(f"cancelled after step {steps_run} of {total}")
                return cb_kwargs

            kwargs["callback_on_step_end"] = on_step_end
            self.calls += 1
            t1 = time.perf_counter()
            restore = (
                install_embeds_passthrough(pipe, len(reqs))
                if key.n_refs or self._ip_loaded
                else None
            )
            try:
                with torch.inference_mode():
                    result = pipe(**kwargs)
            finally:
                if restore is not None:
                    restore()
            t2 = time.perf_counter()
        arrays = np.asarray(result.images, dtype=np.float32)
        if not np.isfinite(arrays).all():
            raise GenerationError("the pipeline returned non-finite pixels (NaN/inf)")
        outputs = []
        for i, r in enumerate(reqs):
            pixels = (np.clip(arrays[i], 0.0, 1.0) * 255.0).round().astype(np.uint8)
            if key.mode == "inpaint":
                pixels = keep_unmasked_pixels(pixels, r.image, r.mask_image)
            outputs.append(
                GenerationOutput(
                    image=Image.fromarray(pixels, "RGB"),
                    seed=r.seed,
                    model_id=self.model_id,
                    steps_run=steps_run,
                    timings={"prepare_s": t1 - t0, "denoise_decode_s": (t2 - t1) / len(reqs)},
                    array=arrays[i],
                )
            )
        return outputs


__all__ = ["DiffusersBackend"]
