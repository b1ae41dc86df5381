"""The diffusers backend: the only module (outside ``genservice/training``) importing diffusers.

Loads SD 1.5/2.1, SDXL or Turbo/LCM pipelines by hub id or local folder through
``from_pretrained``, or a single-file (Civitai-style, original layout) checkpoint through
``from_single_file`` with a local config folder (``HF_HUB_OFFLINE`` honoured); applies the
serving settings (dtype, channels-last, fused q/k/v, ``torch.compile``) and warms each
configured canvas size up once at load time; runs text-to-image, image-to-image and
inpainting around a product mask, IP-Adapter with cached reference embeddings, batches
compatible requests into one pipeline call, reports progress and stops on cancellation.
``build_tiny_pipeline`` writes a small random-weight SD-architecture pipeline (the default
until trained weights ship).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from genservice.backends.base import CancelFn, GenerationOutput, GenerationRequest, ProgressFn
from genservice.config import DEFAULT_MODEL, GenerationConfig
from genservice.errors import FidelityError, GenerationError, JobCancelled

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

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
#: File suffixes of single-file (original-layout) checkpoints loaded with ``from_single_file``.
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
TINY_IP_ADAPTER_SUBFOLDER = "ip_adapter"
TINY_IP_ADAPTER_WEIGHTS = "ip-adapter.safetensors"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- model location


def resolve_model_path(config: GenerationConfig, *, home: Path) -> str:
    """The folder or hub id to load for ``config.model``.

    A relative path is tried against the working directory, then the project root. When the
    *default* folder is missing and ``fallback_random_model`` is on, a tiny random pipeline
    is built once into ``<home>/models/sd-tiny-random`` and that folder is returned.
    """
    model = config.model
    candidates = [Path(model)]
    if not Path(model).is_absolute():
        candidates.append(_PROJECT_ROOT / model)
    for cand in candidates:
        if (cand / "model_index.json").is_file():
            return str(cand.resolve())
        if cand.is_file() and cand.suffix in SINGLE_FILE_SUFFIXES:
            return str(cand.resolve())
    if model == DEFAULT_MODEL:
        if not config.fallback_random_model:
            raise GenerationError(
                f"generation.model: expected a model folder at {model!r} (or a hub id), "
                "found none and fallback_random_model is off"
            )
        folder = Path(home) / "models" / "sd-tiny-random"
        if not (folder / "model_index.json").is_file():
            import fcntl

            folder.parent.mkdir(parents=True, exist_ok=True)
            # Several workers may start at once: one builds, the others wait and reuse it.
            with open(folder.parent / ".sd-tiny-random.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not (folder / "model_index.json").is_file():
                    log.warning(
                        "model folder %s not found: building a tiny RANDOM-weight pipeline "
                        "into %s (it draws noise; set TAILORSHOT_GENERATION__MODEL for a real "
                        "model)",
                        model,
                        folder,
                    )
                    build_tiny_pipeline(folder, seed=0)
        return str(folder.resolve())
    if Path(model).exists() or model.count("/") != 1:
        raise GenerationError(
            f"generation.model: expected a diffusers folder with model_index.json, a single-file "
            f"checkpoint ({'/'.join(SINGLE_FILE_SUFFIXES)}) or a hub id 'org/name', got {model!r}"
        )
    return model  # a hub id; from_pretrained honours HF_HUB_OFFLINE


# --------------------------------------------------------------------------- tiny pipeline


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte → printable-unicode table (the BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def write_clip_tokenizer_files(folder: Path) -> int:
    """Write CLIP's ``vocab.json`` / ``merges.txt`` into ``folder``; returns the vocab size.

    Derived from the BPE file bundled with open_clip (read as data, not imported), so token
    counts match real Stable Diffusion tokenizers. Without open_clip, a tiny byte-level vocab
    (no merges) is written instead.
    """
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = list(_bytes_to_unicode().values())
    merges: list[str] = []
    spec = importlib.util.find_spec("open_clip")  # locates the package without importing it
    bpe = (
        Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
        if spec is not None and spec.origin
        else None
    )
    if bpe is not None and bpe.is_file():
        with gzip.open(bpe) as fh:
            lines = fh.read().decode("utf-8").split("\n")
        merges = lines[1 : 49152 - 256 - 2 + 1]
    vocab_list = alphabet + [a + "</w>" for a in alphabet]
    vocab_list += ["".join(m.split()) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return len(vocab)


def _tiny_ip_adapter_state(unet: Any, *, image_embed_dim: int, seed: int) -> dict[str, Any]:
    """Random IP-Adapter weights in the original (``image_proj.*``/``ip_adapter.*``) layout."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    state: dict[str, Any] = {
        "image_proj.proj.weight": torch.randn(cross * 4, image_embed_dim, generator=gen) * 0.2,
        "image_proj.proj.bias": torch.zeros(cross * 4),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key_id = 1
    block_out = list(unet.config.block_out_channels)
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = block_out[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(block_out))[int(name[len("up_blocks.")])]
        else:
            hidden = block_out[int(name[len("down_blocks.")])]
        for kind in ("to_k_ip", "to_v_ip"):
            w = torch.randn(hidden, cross, generator=gen) / float(np.sqrt(cross))
            state[f"ip_adapter.{key_id}.{kind}.weight"] = w
        key_id += 2
    return state


def build_tiny_pipeline(folder: str | Path, seed: int = 0, *, with_ip_adapter: bool = True) -> Path:
    """Build a small random-weight SD-architecture pipeline and ``save_pretrained`` it.

    UNet (2 blocks, 32/64 channels, cross-attention 32), an 8x VAE (4 blocks), a 2-layer
    CLIP text encoder with CLIP's real BPE vocabulary, DDIM scheduler; native size 64 px.
    With ``with_ip_adapter`` also ``ip_adapter/ip-adapter.safetensors`` and a tiny CLIP
    image encoder under ``ip_adapter/image_encoder`` so ``load_ip_adapter`` works. The write
    is atomic (a temporary folder renamed into place). Returns the folder.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from safetensors.torch import save_file
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=folder.parent))
    try:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            norm_num_groups=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(16, 16, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=8,
            sample_size=64,
        )
        tok_dir = tmp / "_tok"
        vocab_size = write_clip_tokenizer_files(tok_dir)
        tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=vocab_size,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                projection_dim=32,
            )
        )
        scheduler = DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        )
        feature_extractor = CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=feature_extractor,
            image_encoder=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(tmp, safe_serialization=True)  # type: ignore[attr-defined]
        shutil.rmtree(tok_dir)
        if with_ip_adapter:
            image_encoder = CLIPVisionModelWithProjection(
                CLIPVisionConfig(
                    hidden_size=32,
                    intermediate_size=64,
                    num_hidden_layers=2,
                    num_attention_heads=4,
                    image_size=32,
                    patch_size=8,
                    projection_dim=32,
                )
            )
            ip_dir = tmp / TINY_IP_ADAPTER_SUBFOLDER
            image_encoder.save_pretrained(ip_dir / "image_encoder", safe_serialization=True)
            state = _tiny_ip_adapter_state(unet, image_embed_dim=32, seed=seed + 1)
            save_file(state, str(ip_dir / TINY_IP_ADAPTER_WEIGHTS))
        (tmp / "README.md").write_text(
            "# sd-tiny-random\n\nA tiny Stable-Diffusion-architecture pipeline with RANDOM "
            f"weights (seed {seed}), built by `genservice.backends.diffusers_backend."
            "build_tiny_pipeline` for tests and as a placeholder until trained weights ship. "
            "It draws noise.\n"
        )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


# --------------------------------------------------------------------------- architectures

#: UNet / VAE / text-encoder configs of the real architectures ("full") and of small,
#: architecture-identical stand-ins ("tiny": same block types, layers and key layout, few
#: channels) used to test single-file loading and to dry-run the GPU benches.
ARCHS: dict[str, dict[str, dict[str, Any]]] = {
    "sd15": {
        "unet": {
            "sample_size": 64,
            "block_out_channels": (320, 640, 1280, 1280),
            "layers_per_block": 2,
            "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
        },
        "vae": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2},
        "text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12},
    },
    "sdxl": {
        "unet": {
            "sample_size": 128,
            "block_out_channels": (320, 640, 1280),
            "layers_per_block": 2,
            "down_block_types": ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 2,
            "up_block_types": ("CrossAttnUpBlock2D",) * 2 + ("UpBlock2D",),
            "transformer_layers_per_block": (1, 2, 10),
            "attention_head_dim": (5, 10, 20),
            "cross_attention_dim": 2048,
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
        },
        "vae": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2},
        "text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12},
        "text_2": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32},
    },
}
TINY_ARCHS: dict[str, dict[str, dict[str, Any]]] = {
    "sd15": {
        "unet": {
            **ARCHS["sd15"]["unet"],
            "sample_size": 8,
            "block_out_channels": (32, 32, 64, 64),
            "cross_attention_dim": 32,
            "norm_num_groups": 8,
        },
        "vae": {"block_out_channels": (16, 16, 32, 32), "layers_per_block": 1},
        "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2},
    },
    "sdxl": {
        "unet": {
            **ARCHS["sdxl"]["unet"],
            "sample_size": 16,
            "block_out_channels": (32, 64, 64),
            "transformer_layers_per_block": (1, 1, 2),
            "attention_head_dim": (2, 4, 8),
            "cross_attention_dim": 96,
            "norm_num_groups": 8,
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 64 + 6 * 8,
        },
        "vae": {"block_out_channels": (16, 32, 32, 32), "layers_per_block": 1},
        # Different widths: diffusers tells SDXL's two encoders apart by their sizes.
        "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2},
        "text_2": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2},
    },
}


def build_arch_pipeline(
    arch: str, *, tiny: bool = True, seed: int = 0, device: str = "cpu", dtype: Any = None
) -> Any:
    """A random-weight SD 1.5 (``"sd15"``, 512 px) or SDXL (``"sdxl"``, 1024 px, two text
    encoders) pipeline built from configs on ``device``; ``tiny`` keeps the architecture
    (block types, layers, key names) with few channels (native 64 / 128 px). Nothing is
    downloaded; CLIP's real BPE vocabulary is used."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    table = TINY_ARCHS if tiny else ARCHS
    if arch not in table:
        raise ValueError(f"arch: expected one of {sorted(table)}, got {arch!r}")
    spec = table[arch]
    tmp = Path(tempfile.mkdtemp(prefix="tok-"))
    try:
        vocab = write_clip_tokenizer_files(tmp)
        tokenizer = CLIPTokenizer.from_pretrained(str(tmp), model_max_length=77)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def text_config(t: dict[str, Any], *, xl_second: bool = False) -> Any:
        return CLIPTextConfig(
            vocab_size=vocab,
            max_position_embeddings=77,
            num_attention_heads=max(4, t["hidden_size"] // 64),
            projection_dim=t["hidden_size"],
            hidden_act="gelu" if xl_second else "quick_gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **t,
        )

    native = spec["unet"]["sample_size"] * 8
    torch.manual_seed(seed)
    with torch.device(device):  # allocate on the device: no multi-GB copy from the host
        unet = UNet2DConditionModel(in_channels=4, out_channels=4, **spec["unet"])
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            norm_num_groups=8 if tiny else 32,
            sample_size=native,
            scaling_factor=0.13025 if arch == "sdxl" else 0.18215,
            **spec["vae"],
        )
        text_encoder = CLIPTextModel(text_config(spec["text"]))
        text_encoder_2 = (
            CLIPTextModelWithProjection(text_config(spec["text_2"], xl_second=True))
            if "text_2" in spec
            else None
        )
    sched_kw: dict[str, Any] = {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "steps_offset": 1,
    }
    pipe: Any
    if arch == "sdxl":
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=EulerDiscreteScheduler(timestep_spacing="leading", **sched_kw),
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **sched_kw),
            safety_checker=None,
            feature_extractor=None,
            image_encoder=None,
            requires_safety_checker=False,
        )
    if dtype is not None:
        pipe = pipe.to(dtype=dtype)
    return pipe


def write_random_ip_adapter(pipe: Any, folder: str | Path, *, seed: int = 0) -> Path:
    """Random IP-Adapter weights for ``pipe``'s UNet plus a small CLIP image encoder under
    ``folder/ip_adapter`` (the layout ``generation.ip_adapter="auto"`` finds)."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    ip_dir = Path(folder) / TINY_IP_ADAPTER_SUBFOLDER
    torch.manual_seed(seed)
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            projection_dim=32,
        )
    )
    encoder.save_pretrained(ip_dir / "image_encoder", safe_serialization=True)
    state = _tiny_ip_adapter_state(pipe.unet, image_embed_dim=32, seed=seed + 1)
    save_file({k: v.contiguous() for k, v in state.items()}, str(ip_dir / TINY_IP_ADAPTER_WEIGHTS))
    return ip_dir


# --------------------------------------------------------------------------- safety checker


class DiffusersSafetyChecker:
    """diffusers' ``StableDiffusionSafetyChecker`` behind the ``SafetyChecker`` protocol."""

    name = "diffusers"

    def __init__(self, checker: Any, feature_extractor: Any, device: str = "cpu") -> None:
        self._checker = checker.to(device).eval()
        self._fe = feature_extractor
        self._device = device
        self._lock = threading.Lock()

    @classmethod
    def from_folder(cls, path: str, *, device: str = "cpu") -> DiffusersSafetyChecker | None:
        """The checker a model folder ships (``safety_checker/``), or None when it has none."""
        index = Path(path) / "model_index.json"
        if not index.is_file():
            return None
        entry = json.loads(index.read_text()).get("safety_checker")
        if not entry or entry[0] is None or not (Path(path) / "safety_checker").is_dir():
            return None
        from diffusers.pipelines.stable_diffusion.safety_checker import (
            StableDiffusionSafetyChecker,
        )
        from transformers import CLIPImageProcessor

        checker = StableDiffusionSafetyChecker.from_pretrained(path, subfolder="safety_checker")
        fe = CLIPImageProcessor.from_pretrained(path, subfolder="feature_extractor")
        return cls(checker, fe, device=device)

    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        """True for each flagged image."""
        import torch

        arrays = np.stack(
            [np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]
        )
        clip_input = self._fe([im.convert("RGB") for im in images], return_tensors="pt")
        with self._lock, torch.no_grad():
            dtype = next(self._checker.parameters()).dtype
            _, flags = self._checker(
                images=arrays, clip_input=clip_input.pixel_values.to(self._device, dtype)
            )
        return [bool(f) for f in flags]


# --------------------------------------------------------------------------- backend


@dataclass(frozen=True)
class _GroupKey:
    mode: str
    width: int
    height: int
    steps: int
    guidance: float
    strength: float
    n_refs: int
    scale: str


def _image_hash(image: Image.Image) -> str:
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def _resolve_device_dtype(config: GenerationConfig) -> tuple[str, torch.dtype]:
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


class DiffusersBackend:
    """A diffusers pipeline family behind the ``Backend`` protocol.

    The pipeline is loaded lazily on first use; one lock guards it (diffusers pipelines and
    schedulers are stateful: one instance is never used by two threads at once).
    """

    def __init__(self, config: GenerationConfig | None = None, *, home: str | Path = "var") -> None:
        self.config = config or GenerationConfig()
        self.home = Path(home)
        self._lock = threading.RLock()
        self._pipe: Any = None
        self._pipes: dict[str, Any] = {}
        self._path: str | None = None
        self._ip_loaded = False
        self._ip_source: tuple[str, str, str] | None = None
        self._embed_cache: OrderedDict[str, Any] = OrderedDict()
        self._embed_cache_size = 512
        self.device, self.dtype = _resolve_device_dtype(self.config)
        self.model_id = self.config.model
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
            path = resolve_model_path(self.config, home=self.home)
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
            t0 = time.perf_counter()
            try:
                if Path(path).is_file():
                    pipe = self._load_single_file(path, offline=offline)
                else:
                    pipe = self._load_pretrained(path, offline=offline)
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
                pipe.scheduler = self._make_scheduler(self.config.scheduler, pipe.scheduler)
            self._optimize(pipe)
            if Path(path).is_dir():
                self.safety_checker = DiffusersSafetyChecker.from_folder(path, device=self.device)
            self._ip_source = self._find_ip_adapter(path)
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

    def _load_pretrained(self, path: str, *, offline: bool) -> Any:
        """A diffusers folder or hub id through ``AutoPipelineForText2Image``."""
        from diffusers import AutoPipelineForText2Image

        kwargs: dict[str, Any] = {"dtype": self.dtype}
        if Path(path).is_dir() or offline:
            kwargs["local_files_only"] = True
        if self.config.model_variant:
            kwargs["variant"] = self.config.model_variant
        if "safety_checker" in self._model_index(path):
            kwargs["safety_checker"] = None  # run separately on the final composite
            kwargs["requires_safety_checker"] = False
        return AutoPipelineForText2Image.from_pretrained(path, **kwargs)

    def _load_single_file(self, path: str, *, offline: bool) -> Any:
        """A single original-layout checkpoint through ``from_single_file``.

        The architecture comes from ``generation.single_file_config`` (a local diffusers folder or a
        hub id); the pipeline class from ``generation.pipeline``, else that folder's
        ``model_index.json``, else the checkpoint's keys (two text encoders: SDXL).
        """
        import inspect

        import diffusers

        cfg_src = self.config.single_file_config
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
        cls = getattr(diffusers, self._single_file_class(path, cfg_src if local_cfg else None))
        kwargs: dict[str, Any] = {"torch_dtype": self.dtype}
        if cfg_src is not None:
            kwargs["config"] = str(Path(cfg_src).resolve()) if local_cfg else cfg_src
        if local_cfg or offline:
            kwargs["local_files_only"] = True
        if "safety_checker" in inspect.signature(cls.__init__).parameters:
            kwargs["safety_checker"] = None  # run separately on the final composite
            kwargs["requires_safety_checker"] = False
        return cls.from_single_file(path, **kwargs)

    def _single_file_class(self, path: str, config_dir: str | None) -> str:
        if self.config.pipeline == "sd":
            return "StableDiffusionPipeline"
        if self.config.pipeline == "sdxl":
            return "StableDiffusionXLPipeline"
        if config_dir is not None:
            name = self._model_index(config_dir).get("_class_name")
            if isinstance(name, str) and name.endswith("Pipeline"):
                return name
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                if any(k.startswith("conditioner.embedders.1.") for k in f.keys()):  # noqa: SIM118
                    return "StableDiffusionXLPipeline"
        return "StableDiffusionPipeline"

    def _optimize(self, pipe: Any) -> None:
        """Apply the serving settings: channels-last, fused q/k/v, VAE tiling/slicing and
        ``torch.compile`` (compiled lazily: the first call per shape pays, see ``warmup``)."""
        import torch

        cfg = self.config
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

    @staticmethod
    def _model_index(path: str) -> dict[str, Any]:
        index = Path(path) / "model_index.json"
        return json.loads(index.read_text()) if index.is_file() else {}

    @staticmethod
    def _make_scheduler(name: str, current: Any) -> Any:
        import diffusers

        cls_name = SCHEDULERS.get(name.lower(), name)
        cls = getattr(diffusers, cls_name, None)
        if cls is None or not hasattr(cls, "from_config"):
            raise ValueError(
                f"generation.scheduler: expected one of {sorted(SCHEDULERS)} or a diffusers "
                f"scheduler class name, got {name!r}"
            )
        return cls.from_config(current.config)

    def _find_ip_adapter(self, path: str) -> tuple[str, str, str] | None:
        setting = self.config.ip_adapter
        if setting is None or setting == "none":
            return None
        source = path if setting == "auto" else setting
        if setting == "auto" and Path(path).is_file():
            source = str(Path(path).parent)  # a single file: an adapter beside it, if any
        if Path(source).is_dir():
            weights = Path(source) / self.config.ip_adapter_subfolder
            if not (weights / self.config.ip_adapter_weight_name).is_file():
                if setting != "auto":
                    raise GenerationError(
                        f"generation.ip_adapter: expected {self.config.ip_adapter_weight_name} "
                        f"under {weights}, found none"
                    )
                return None
        return (source, self.config.ip_adapter_subfolder, self.config.ip_adapter_weight_name)

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
        source, subfolder, weight = self._ip_source
        pipe = self._pipe
        pipe.load_ip_adapter(source, subfolder=subfolder, weight_name=weight)
        pipe.image_encoder.to(self.device, self.dtype)
        if self.config.fuse_qkv:
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
        self._ip_loaded = True
        self._pipes = {"txt2img": pipe}  # derived pipelines must see the new components

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
                key = hashes[i] if hashes is not None else _image_hash(img)
                cached = self._embed_cache.get(key)
                if cached is not None:
                    self._embed_cache.move_to_end(key)
                else:
                    # Not in memory: from the on-disk cache (another process or an earlier
                    # run computed it), else computed now; either way kept in memory.
                    cached = self._load_embed(key)
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
                        self._save_embed(key, cached)
                    self._embed_cache[key] = cached
                    while len(self._embed_cache) > self._embed_cache_size:
                        self._embed_cache.popitem(last=False)
                out.append(cached)
            return out

    @property
    def _embed_dir(self) -> Path | None:
        if self._path is None or self._ip_source is None:
            return None
        ident = hashlib.sha256(json.dumps([self._path, *self._ip_source]).encode()).hexdigest()
        return self.home / "cache" / "ip_embeds" / ident[:16]

    def _load_embed(self, key: str) -> Any:
        folder = self._embed_dir
        if folder is None or not (folder / f"{key}.safetensors").is_file():
            return None
        from safetensors.torch import load_file

        tensor = load_file(str(folder / f"{key}.safetensors"))["embeds"]
        return tensor.to(self.device, self.dtype)

    def _save_embed(self, key: str, tensor: Any) -> None:
        folder = self._embed_dir
        if folder is None:
            return
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{threading.get_ident()}.tmp"
        save_file({"embeds": tensor.detach().float().cpu().contiguous()}, str(tmp))
        os.replace(tmp, folder / f"{key}.safetensors")

    def embeds_by_id(self, ids: Sequence[str]) -> Any:
        """Cached reference embeddings by id (content hash), concatenated: ``(2, n, dim)``."""
        import torch

        with self._lock:
            self.load()
            self._ensure_ip_adapter()
            out = []
            for key in ids:
                emb = self._embed_cache.get(key)
                if emb is None:
                    emb = self._load_embed(key)
                if emb is None:
                    raise GenerationError(
                        f"reference_embedding_ids: no cached embedding {key!r} for this model"
                    )
                self._embed_cache[key] = emb
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
        groups: dict[_GroupKey, list[int]] = {}
        for i, r in enumerate(requests):
            n_refs = 0
            if r.ip_adapter_image_embeds:
                n_refs = int(r.ip_adapter_image_embeds[0].shape[1])
            elif r.ip_adapter_image:
                n_refs = len(r.ip_adapter_image)
            scale = (
                r.ip_adapter_scale
                if r.ip_adapter_scale is not None
                else self.config.ip_adapter_scale
            )
            key = _GroupKey(
                r.mode,
                r.width,
                r.height,
                r.num_inference_steps,
                float(r.guidance_scale),
                float(r.strength),
                n_refs,
                json.dumps(scale, sort_keys=True) if n_refs else "",
            )
            groups.setdefault(key, []).append(i)
        chunks: list[tuple[_GroupKey, list[int]]] = []
        for key, idx in groups.items():
            for s in range(0, len(idx), self.config.max_batch):
                chunks.append((key, idx[s : s + self.config.max_batch]))
        total = sum(self._expected_steps(requests[c[0]]) for _, c in chunks)
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

    @staticmethod
    def _install_embeds_passthrough(pipe: Any, batch: int) -> Any:
        """Make ``pipe`` take our per-item IP-Adapter embeddings as they are.

        diffusers' ``prepare_ip_adapter_image_embeds`` tiles the given embeddings
        ``batch_size`` times, assuming one reference set shared by the whole batch; with one
        set per item that yields ``batch**2`` rows and every item attends to all items'
        references (the mixing of diffusers issue 9813). Ours are already laid out
        ``(2B, n, dim)`` in the pipeline's [negative..., positive...] order. Returns a
        function that restores the pipeline.
        """
        name = "prepare_ip_adapter_image_embeds"
        had_own = name in pipe.__dict__
        previous = pipe.__dict__.get(name)

        def passthrough(
            ip_adapter_image: Any,
            ip_adapter_image_embeds: Any,
            device: Any,
            num_images_per_prompt: int,
            do_classifier_free_guidance: bool,
        ) -> Any:
            if ip_adapter_image_embeds is None or num_images_per_prompt != batch:
                raise GenerationError(
                    f"ip_adapter_image_embeds: expected per-item embeddings for a batch of "
                    f"{batch}, got {num_images_per_prompt} images per prompt"
                )
            return [e.to(device) for e in ip_adapter_image_embeds]

        setattr(pipe, name, passthrough)

        def restore() -> None:
            if had_own:
                setattr(pipe, name, previous)
            else:
                delattr(pipe, name)

        return restore

    @staticmethod
    def _expected_steps(r: GenerationRequest) -> int:
        if r.mode == "txt2img":
            return r.num_inference_steps
        return max(1, min(r.num_inference_steps, int(r.num_inference_steps * r.strength)))

    def _run_chunk(
        self,
        key: _GroupKey,
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
            if key.mode != "txt2img":
                originals = []
                for i, r in enumerate(reqs):
                    assert r.image is not None
                    if r.image.size != (key.width, key.height):
                        raise ValueError(
                            f"image: expected size {(key.width, key.height)} (width, height), "
                            f"got {r.image.size} for request {i}"
                        )
                    originals.append(r.image.convert("RGB"))
                kwargs["image"] = originals
                kwargs["strength"] = key.strength
            if key.mode == "inpaint":
                masks = []
                for i, r in enumerate(reqs):
                    assert r.mask_image is not None
                    if r.mask_image.size != (key.width, key.height):
                        raise ValueError(
                            f"mask_image: expected size {(key.width, key.height)}, got "
                            f"{r.mask_image.size} for request {i}"
                        )
                    masks.append(r.mask_image.convert("L"))
                kwargs["mask_image"] = masks
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
                self._install_embeds_passthrough(pipe, len(reqs))
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


def keep_unmasked_pixels(pixels: np.ndarray, image: Any, mask_image: Any) -> np.ndarray:
    """Paste the original pixels back where the mask is black (< 128: keep) and verify.

    The VAE round trip changes every pixel a little, so the pipeline output alone never keeps
    a product exact. Shapes: ``pixels`` (H, W, 3) uint8; returns the same shape.
    """
    orig = np.asarray(image.convert("RGB"), dtype=np.uint8)
    keep = np.asarray(mask_image.convert("L")) < 128
    out = pixels.copy()
    out[keep] = orig[keep]
    if not np.array_equal(out[keep], orig[keep]):
        raise FidelityError("inpainting: kept pixels differ from the original after paste-back")
    return out


__all__ = [
    "ARCHS",
    "SCHEDULERS",
    "TINY_ARCHS",
    "DiffusersBackend",
    "DiffusersSafetyChecker",
    "build_arch_pipeline",
    "build_tiny_pipeline",
    "keep_unmasked_pixels",
    "resolve_model_path",
    "write_clip_tokenizer_files",
    "write_random_ip_adapter",
]
