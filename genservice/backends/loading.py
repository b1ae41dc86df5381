"""Loading a diffusers pipeline: folder or hub id, single-file checkpoints, schedulers, the
serving optimisations and the IP-Adapter."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from genservice.backends.paths import model_index
from genservice.config import GenerationConfig
from genservice.errors import GenerationError

if TYPE_CHECKING:
    import torch

#: Scheduler names accepted by ``GenerationConfig.scheduler`` → diffusers class names.
SCHEDULERS: dict[str, str] = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "dpm++_sde": "DPMSolverSDEScheduler",
    "unipc": "UniPCMultistepScheduler",
    "lcm": "LCMScheduler",
    "heun": "HeunDiscreteScheduler",
    "lms": "LMSDiscreteScheduler",
}


def resolve_device_dtype(config: GenerationConfig) -> tuple[str, torch.dtype]:
    """``generation.device`` / ``generation.dtype`` with ``auto`` resolved."""
    import torch

    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    name = config.dtype
    if name == "auto":
        name = "float16" if device.startswith("cuda") else "float32"
    if device == "cpu" and name == "float16":
        raise ValueError("generation.dtype: expected float32 or bfloat16 on CPU, got float16")
    return device, getattr(torch, name)


def load_pretrained(config: GenerationConfig, path: str, *, dtype: Any, offline: bool) -> Any:
    """A diffusers folder or hub id through ``AutoPipelineForText2Image``."""
    from diffusers import AutoPipelineForText2Image

    kwargs: dict[str, Any] = {"dtype": dtype}
    if Path(path).is_dir() or offline:
        kwargs["local_files_only"] = True
    if config.model_variant:
        kwargs["variant"] = config.model_variant
    if "safety_checker" in model_index(path):
        kwargs["safety_checker"] = None  # run separately on the final composite
        kwargs["requires_safety_checker"] = False
    return AutoPipelineForText2Image.from_pretrained(path, **kwargs)


def load_single_file(config: GenerationConfig, path: str, *, dtype: Any, offline: bool) -> Any:
    """A single original-layout checkpoint through ``from_single_file``.

    The architecture comes from ``generation.single_file_config`` (a local diffusers folder or a
    hub id); the pipeline class from ``generation.pipeline``, else that folder's
    ``model_index.json``, else the checkpoint's keys (two text encoders: SDXL).
    """
    import inspect

    import diffusers

    cfg_src = config.single_file_config
    local_cfg = cfg_src is not None and Path(cfg_src).is_dir()
    if cfg_src is None and offline:
        raise GenerationError(
            "generation.single_file_config: a single-file checkpoint needs its architecture "
            "configs offline; expected a local diffusers folder (model_index.json, "
            f"*/config.json, tokenizer), got None for model {path!r}"
        )
    if local_cfg and not (Path(str(cfg_src)) / "model_index.json").is_file():
        raise GenerationError(
            "generation.single_file_config: expected a diffusers folder with "
            f"model_index.json, got {cfg_src!r}"
        )
    cls = getattr(diffusers, single_file_class(config, path, cfg_src if local_cfg else None))
    kwargs: dict[str, Any] = {"torch_dtype": dtype}
    if cfg_src is not None:
        kwargs["config"] = str(Path(cfg_src).resolve()) if local_cfg else cfg_src
    if local_cfg or offline:
        kwargs["local_files_only"] = True
    if "safety_checker" in inspect.signature(cls.__init__).parameters:
        kwargs["safety_checker"] = None  # run separately on the final composite
        kwargs["requires_safety_checker"] = False
    return cls.from_single_file(path, **kwargs)


def single_file_class(config: GenerationConfig, path: str, config_dir: str | None) -> str:
    """The diffusers pipeline class name for a single-file checkpoint."""
    if config.pipeline == "sd":
        return "StableDiffusionPipeline"
    if config.pipeline == "sdxl":
        return "StableDiffusionXLPipeline"
    if config_dir is not None:
        name = model_index(config_dir).get("_class_name")
        if isinstance(name, str) and name.endswith("Pipeline"):
            return name
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            if any(k.startswith("conditioner.embedders.1.") for k in f.keys()):  # noqa: SIM118
                return "StableDiffusionXLPipeline"
    return "StableDiffusionPipeline"


def optimize(pipe: Any, config: GenerationConfig) -> None:
    """Apply the serving settings: channels-last, fused q/k/v, VAE tiling/slicing and
    ``torch.compile`` (compiled lazily: the first call per shape pays, see ``warmup``)."""
    import torch

    cfg = config
    if cfg.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if cfg.fuse_qkv:
        pipe.unet.fuse_qkv_projections()
        pipe.vae.fuse_qkv_projections()
    if cfg.vae_tiling:
        pipe.vae.enable_tiling()
    if cfg.vae_slicing:
        pipe.vae.enable_slicing()
    if cfg.compile_unet:
        pipe.unet = torch.compile(pipe.unet, mode=cfg.compile_mode, fullgraph=False)
    if cfg.compile_vae:
        pipe.vae.decode = torch.compile(pipe.vae.decode, mode=cfg.compile_mode)


def make_scheduler(name: str, current: Any) -> Any:
    """A scheduler by short name (``SCHEDULERS``) or diffusers class name, from ``current``'s
    config."""
    import diffusers

    cls_name = SCHEDULERS.get(name.lower(), name)
    cls = getattr(diffusers, cls_name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise ValueError(
            f"generation.scheduler: expected one of {sorted(SCHEDULERS)} or a diffusers "
            f"scheduler class name, got {name!r}"
        )
    return cls.from_config(current.config)


def find_ip_adapter(config: GenerationConfig, path: str) -> tuple[str, str, str] | None:
    """``(source, subfolder, weight_name)`` of the IP-Adapter per ``generation.ip_adapter``,
    or None (``"auto"`` and none beside the model, or ``"none"``)."""
    setting = config.ip_adapter
    if setting is None or setting == "none":
        return None
    source = path if setting == "auto" else setting
    if setting == "auto" and Path(path).is_file():
        source = str(Path(path).parent)  # a single file: an adapter beside it, if any
    if Path(source).is_dir():
        weights = Path(source) / config.ip_adapter_subfolder
        if not (weights / config.ip_adapter_weight_name).is_file():
            if setting != "auto":
                raise GenerationError(
                    f"generation.ip_adapter: expected {config.ip_adapter_weight_name} "
                    f"under {weights}, found none"
                )
            return None
    return (source, config.ip_adapter_subfolder, config.ip_adapter_weight_name)


def attach_ip_adapter(
    pipe: Any, source: tuple[str, str, str], config: GenerationConfig, *, device: str, dtype: Any
) -> None:
    """Load the IP-Adapter ``(source, subfolder, weight_name)`` into ``pipe``."""
    folder, subfolder, weight = source
    pipe.load_ip_adapter(folder, subfolder=subfolder, weight_name=weight)
    pipe.image_encoder.to(device, dtype)
    if config.fuse_qkv:
        # Loading the adapter resets every attention processor: self-attention gets the
        # fused one back (its modules keep their fused weights); cross-attention keeps
        # the adapter's processor.
        from diffusers.models.attention_processor import FusedAttnProcessor2_0

        unet = pipe.unet
        procs = dict(unet.attn_processors)
        for name in procs:
            if name.endswith("attn1.processor"):
                procs[name] = FusedAttnProcessor2_0()
        unet.set_attn_processor(procs)
