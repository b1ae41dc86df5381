"""Random-weight Stable Diffusion pipelines for tests, fixtures and GPU dry runs.

``build_tiny_pipeline`` writes a small SD-architecture pipeline with random weights (the
fallback model when the default folder is missing); ``build_arch_pipeline`` builds SD 1.5 /
SDXL pipelines (full size or architecture-identical tiny) from configs; ``write_random_ip_adapter``
adds random IP-Adapter weights and a small image encoder. Serving code never imports this
module: the fallback builder is passed in (see ``genservice.backends.paths``).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from genservice.training.text import bytes_to_unicode

TINY_IP_ADAPTER_SUBFOLDER = "ip_adapter"
TINY_IP_ADAPTER_WEIGHTS = "ip-adapter.safetensors"


def write_clip_tokenizer_files(folder: Path) -> int:
    """Write CLIP's ``vocab.json`` / ``merges.txt`` into ``folder``; returns the vocab size.

    Derived from the BPE file bundled with open_clip (read as data, not imported), so token
    counts match real Stable Diffusion tokenizers. Without open_clip, a tiny byte-level vocab
    (no merges) is written instead.
    """
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = list(bytes_to_unicode().values())
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

    from genservice.training.ip_adapter import cross_attn_hidden_sizes

    gen = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    state: dict[str, Any] = {
        "image_proj.proj.weight": torch.randn(cross * 4, image_embed_dim, generator=gen) * 0.2,
        "image_proj.proj.bias": torch.zeros(cross * 4),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    for i, (_name, hidden) in enumerate(cross_attn_hidden_sizes(unet)):
        for kind in ("to_k_ip", "to_v_ip"):
            w = torch.randn(hidden, cross, generator=gen) / float(np.sqrt(cross))
            state[f"ip_adapter.{1 + 2 * i}.{kind}.weight"] = w
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
            f"weights (seed {seed}), built by `genservice.training.random_pipelines."
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


__all__ = [
    "ARCHS",
    "TINY_ARCHS",
    "TINY_IP_ADAPTER_SUBFOLDER",
    "TINY_IP_ADAPTER_WEIGHTS",
    "build_arch_pipeline",
    "build_tiny_pipeline",
    "write_clip_tokenizer_files",
    "write_random_ip_adapter",
]
