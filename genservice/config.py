"""genservice configuration (a nested section of the root settings)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from genservice.brandkit import BrandKit

#: The default model folder: the trained embedded model lands here (embedded-models issue).
DEFAULT_MODEL = "data/models/sd-tiny"
#: The embedded scene model (product-free backdrops; ``genservice.training.scene_model``).
DEFAULT_SCENE_MODEL = "data/models/sd-tiny-scenes"


class GenerationConfig(BaseModel):
    """Diffusion backend, worker and storage settings.

    ``model`` is a local folder (relative paths resolve against the working directory, then
    the project root) or a hub id; switching to a real checkpoint is this one setting. When
    the default folder does not exist yet, a tiny random-weight pipeline is built once into
    ``<home>/models/sd-tiny-random`` and loaded through the same ``from_pretrained`` path
    (``fallback_random_model``).
    """

    model_config = {"protected_namespaces": ()}

    model: str = DEFAULT_MODEL
    model_variant: str | None = None
    fallback_random_model: bool = True
    pipeline: Literal["auto", "sd", "sdxl"] = "auto"
    device: str = "auto"  # "auto" → cuda if available else cpu
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    scheduler: str = "default"  # e.g. "ddim", "euler", "euler_a", "dpm++", "lcm", "pndm"
    num_inference_steps: int = Field(default=20, ge=1, le=200)
    guidance_scale: float = Field(default=5.0, ge=0.0, le=30.0)
    strength: float = Field(default=1.0, gt=0.0, le=1.0)
    #: Longest side of the diffusion canvas in pixels (0 = the model's native sample size).
    canvas_max_side: int = Field(default=0, ge=0, le=2048)
    ip_adapter: str | None = "auto"  # "auto": <model>/ip_adapter if present; None disables
    ip_adapter_subfolder: str = "ip_adapter"
    ip_adapter_weight_name: str = "ip-adapter.safetensors"
    #: A float, or per-block scales such as ``{"up": {"block_0": [0.0, 1.0, 0.0]}}``.
    ip_adapter_scale: float | dict[str, Any] = 0.6
    #: With references but a model without IP-Adapter: fail (True) or warn and ignore them.
    require_ip_adapter: bool = False
    max_batch: int = Field(default=8, ge=1, le=64)
    channels_last: bool = False
    compile_unet: bool = False
    safety_checker: Literal["auto", "heuristic", "allow_all"] = "auto"
    image_store_dir: str | None = None  # default: <home>/images
    output_format: Literal["png", "webp"] = "png"
    result_cache_file: str | None = None  # default: <home>/cache/results.sqlite
    headline_template: str = "{headline}"
    max_prompt_chars: int = Field(default=1000, ge=16, le=20000)
    # Jobs and workers (genservice.jobs.JobQueue.from_config, genservice.worker.Worker.from_config).
    job_max_attempts: int = Field(default=3, ge=1, le=100)
    job_timeout_s: float = Field(default=600.0, gt=0)
    job_backoff_base_s: float = Field(default=2.0, ge=0)
    job_backoff_max_s: float = Field(default=300.0, ge=0)
    job_backoff_jitter: float = Field(default=0.5, ge=0, le=1)
    worker_poll_interval_s: float = Field(default=0.5, ge=0)
    worker_heartbeat_interval_s: float = Field(default=2.0, gt=0)
    worker_stale_after_s: float = Field(default=30.0, gt=0)
    worker_cancel_check_interval_s: float = Field(default=0.1, ge=0)
    # Real checkpoints and serving speed (issue 19).
    #: Architecture configs for a single-file ``model`` (``*.safetensors``/``*.ckpt`` in the
    #: original layout): a local diffusers folder (``model_index.json``, ``*/config.json``,
    #: tokenizers; no weights needed) or a hub id. Required offline.
    single_file_config: str | None = None
    #: Override of the native image side in pixels (0 = UNet sample size x VAE factor).
    native_size: int = Field(default=0, ge=0, le=4096)
    #: ``torch.compile`` mode when ``compile_unet``/``compile_vae`` is on.
    compile_mode: Literal[
        "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    ] = "max-autotune"
    compile_vae: bool = False
    #: Fuse the attention q/k/v projections into one matmul (UNet and VAE).
    fuse_qkv: bool = False
    #: Decode in tiles / one image at a time: only where GPU memory needs it (slower).
    vae_tiling: bool = False
    vae_slicing: bool = False
    #: Canvas sizes ``(width, height)`` warmed up once when the model loads (compilation and
    #: autotuning paid at start-up, not on a shopper's request); empty = the native square
    #: when compiling, else none.
    warmup_sizes: list[tuple[int, int]] = Field(default_factory=list)
    #: Batch sizes warmed up per size (compiled graphs are shape-specific).
    warmup_batch_sizes: list[int] = Field(default_factory=lambda: [1])
    #: Denoising steps of each warm-up call.
    warmup_steps: int = Field(default=2, ge=1, le=50)
    # Trained adapters and the brand kit (issue 17).
    #: LoRA/DreamBooth adapters in use, name (registered under ``<home>/models/loras``) or
    #: folder path -> scale; several at once, loaded once with the model (peft).
    loras: dict[str, float] = Field(default_factory=dict)
    #: The store's brand kit (fonts, colours, logo, price, call to action) drawn by
    #: composition; None: ``brand_kit_file`` (default ``<home>/brand_kit.json``) if it exists.
    brand_kit: BrandKit | None = None
    brand_kit_file: str | None = None
    #: The model that draws a hero's product-free scene (issue 15): "auto" = the embedded
    #: scene model (``data/models/sd-tiny-scenes``: sd-tiny fine-tuned on backdrops by
    #: ``genservice.training.scene_model``) when ``model`` is the embedded default and that
    #: folder exists, else ``model``; "" = ``model``; else a folder or hub id.
    scene_model: str = "auto"

    @property
    def scene_model_resolved(self) -> str:
        """The model that draws scenes (see ``scene_model``)."""
        if self.scene_model == "auto":
            root = Path(__file__).resolve().parents[1]
            ok = self.model == DEFAULT_MODEL and (root / DEFAULT_SCENE_MODEL).is_dir()
            return DEFAULT_SCENE_MODEL if ok else self.model
        return self.scene_model or self.model

    @property
    def model_identity(self) -> str:
        """``model`` plus the adapters in use (``model+lora:name@scale``, sorted) and the scene
        model when it is another one (``+scenes:folder``), the model id a brief names:
        switching adapters or scene model changes the brief hash, so no stale cached hero."""
        parts = [self.model, *(f"lora:{n}@{s:g}" for n, s in sorted(self.loras.items()))]
        if self.scene_model_resolved != self.model:
            parts.append(f"scenes:{self.scene_model_resolved}")
        return "+".join(parts)

    @field_validator("loras")
    @classmethod
    def _check_loras(cls, value: dict[str, float]) -> dict[str, float]:
        for name, scale in value.items():
            if not name or not math.isfinite(scale) or not -4.0 <= scale <= 4.0:
                raise ValueError(
                    f"loras: expected name -> scale in [-4, 4], got {name!r}: {scale!r}"
                )
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value != "auto" and not (value == "cpu" or value.startswith(("cuda", "mps"))):
            raise ValueError(f"device: expected 'auto', 'cpu', 'cuda[:N]' or 'mps', got {value!r}")
        return value

    @field_validator("warmup_sizes")
    @classmethod
    def _check_warmup_sizes(cls, value: list[tuple[int, int]]) -> list[tuple[int, int]]:
        for w, h in value:
            if w < 8 or h < 8 or w % 8 or h % 8:
                raise ValueError(
                    f"warmup_sizes: expected (width, height) multiples of 8, got {(w, h)}"
                )
        return value

    @field_validator("warmup_batch_sizes")
    @classmethod
    def _check_warmup_batches(cls, value: list[int]) -> list[int]:
        if any(b < 1 or b > 64 for b in value):
            raise ValueError(f"warmup_batch_sizes: expected ints in [1, 64], got {value}")
        return value
