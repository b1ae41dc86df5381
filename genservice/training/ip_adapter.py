"""Small IP-Adapter: a tiny ``CLIPVisionModelWithProjection`` image encoder, the IP-Adapter
image projection (4 tokens) and decoupled cross-attention ``to_k_ip``/``to_v_ip`` weights.

Saved in the original layout that ``pipe.load_ip_adapter(folder, subfolder="ip_adapter",
weight_name="ip-adapter.safetensors")`` reads: one safetensors file with ``image_proj.*`` and
``ip_adapter.{key_id}.to_{k,v}_ip.weight`` keys, plus ``ip_adapter/image_encoder/``.

Training attaches the adapter to a UNet through diffusers' own loader
(``unet._load_ip_adapter_weights``), so training and inference run the same processors. A
per-sample gate (0/1) multiplies the image tokens: a gated-off sample gets exactly no image
contribution (``to_v_ip`` has no bias), which lets the base UNet train in the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

IP_SUBFOLDER = "ip_adapter"
IP_WEIGHT_NAME = "ip-adapter.safetensors"
NUM_IP_TOKENS = 4  # plain IP-Adapter: diffusers infers 4 tokens from "image_proj.proj.weight"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImageEncoderSpec:
    """Hyperparameters of the tiny CLIP vision tower (ViT, patch 8 on 64x64)."""

    image_size: int = 64
    patch_size: int = 8
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    projection_dim: int = 64

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size must be a multiple of patch_size, got {self.image_size} and "
                f"{self.patch_size}"
            )


def build_image_encoder(spec: ImageEncoderSpec, *, seed: int) -> Any:
    """Randomly initialised (seeded) ``CLIPVisionModelWithProjection``."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.hidden_size * 2,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        projection_dim=spec.projection_dim,
    )
    return CLIPVisionModelWithProjection(cfg)


def clip_preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, 3) at the encoder's size -> normalised float32 (N, 3, S, S).

    Matches ``CLIPImageProcessor(size=S, crop_size=S)`` for S x S inputs (resize and crop are
    no-ops), which is what ``load_ip_adapter`` builds for this encoder.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CLIP_MEAN)[None, :, None, None]
    std = torch.tensor(CLIP_STD)[None, :, None, None]
    return (x - mean) / std


def cross_attn_hidden_sizes(unet: Any) -> list[tuple[str, int]]:
    """(processor name, hidden size) of every cross-attention processor, in loader order."""
    block_out = list(unet.config.block_out_channels)
    out = []
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = block_out[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(block_out))[int(name[len("up_blocks.")])]
        else:
            hidden = block_out[int(name[len("down_blocks.")])]
        out.append((name, hidden))
    return out


def init_ip_adapter_state(unet: Any, *, image_embed_dim: int, seed: int) -> dict[str, Any]:
    """Initial adapter weights ``{"image_proj": {...}, "ip_adapter": {...}}``.

    ``to_k_ip``/``to_v_ip`` start as copies of the text ``to_k``/``to_v`` (as in the
    IP-Adapter paper); the projection is small random.
    """
    gen = torch.Generator().manual_seed(seed)
    cross = int(unet.config.cross_attention_dim)
    proj = {
        "proj.weight": torch.randn(cross * NUM_IP_TOKENS, image_embed_dim, generator=gen) * 0.05,
        "proj.bias": torch.zeros(cross * NUM_IP_TOKENS),
        "norm.weight": torch.ones(cross),
        "norm.bias": torch.zeros(cross),
    }
    procs = dict(unet.named_modules())
    ip: dict[str, torch.Tensor] = {}
    for i, (name, _hidden) in enumerate(cross_attn_hidden_sizes(unet)):
        attn = procs[name[: -len(".processor")]]
        key_id = 1 + 2 * i
        ip[f"{key_id}.to_k_ip.weight"] = attn.to_k.weight.detach().clone()
        ip[f"{key_id}.to_v_ip.weight"] = attn.to_v.weight.detach().clone()
    return {"image_proj": proj, "ip_adapter": ip}


def attach_ip_adapter(unet: Any, state: dict[str, Any]) -> list[nn.Parameter]:
    """Load ``state`` into ``unet`` with diffusers' loader; returns the adapter's parameters."""
    unet._load_ip_adapter_weights([state], low_cpu_mem_usage=False)
    params = list(unet.encoder_hid_proj.parameters())
    for name, _ in cross_attn_hidden_sizes(unet):
        params += list(unet.attn_processors[name].parameters())
    return params


def export_ip_adapter_state(unet: Any) -> dict[str, torch.Tensor]:
    """The attached adapter as flat ``image_proj.*`` / ``ip_adapter.*`` tensors (contiguous)."""
    layer = unet.encoder_hid_proj.image_projection_layers[0]
    out = {
        "image_proj.proj.weight": layer.image_embeds.weight,
        "image_proj.proj.bias": layer.image_embeds.bias,
        "image_proj.norm.weight": layer.norm.weight,
        "image_proj.norm.bias": layer.norm.bias,
    }
    procs = unet.attn_processors
    for i, (name, _) in enumerate(cross_attn_hidden_sizes(unet)):
        key_id = 1 + 2 * i
        out[f"ip_adapter.{key_id}.to_k_ip.weight"] = procs[name].to_k_ip[0].weight
        out[f"ip_adapter.{key_id}.to_v_ip.weight"] = procs[name].to_v_ip[0].weight
    return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}


def base_unet_state(unet: Any) -> dict[str, torch.Tensor]:
    """The UNet's own weights without any attached adapter (processor / image projection)."""
    return {
        k: v
        for k, v in unet.state_dict().items()
        if ".processor." not in k and not k.startswith("encoder_hid_proj.")
    }


def detached_copy(unet: Any) -> Any:
    """A fresh UNet of the same (adapter-free) config carrying ``unet``'s base weights."""
    from diffusers import UNet2DConditionModel

    cfg = dict(unet.config)
    cfg["encoder_hid_dim_type"] = None
    cfg["encoder_hid_dim"] = None
    clean = UNet2DConditionModel.from_config(cfg)
    clean.load_state_dict(base_unet_state(unet))
    return clean


class ImageTokenGate:
    """Forward hook on ``unet.encoder_hid_proj`` multiplying each sample's image tokens by a
    0/1 gate (set ``gate`` to a (B,) tensor before the forward; ``None`` = all on)."""

    def __init__(self, unet: Any) -> None:
        self.gate: torch.Tensor | None = None
        self.handle = unet.encoder_hid_proj.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, output: Any) -> Any:
        if self.gate is None:
            return output
        g = self.gate.to(output[0].dtype)
        return [o * g.view(-1, *([1] * (o.ndim - 1))) for o in output]

    def remove(self) -> None:
        self.handle.remove()


def save_ip_adapter(out_dir: str | Path, *, unet: Any, image_encoder: Any) -> Path:
    """Write ``out_dir/ip_adapter/ip-adapter.safetensors`` and ``.../image_encoder/``."""
    from safetensors.torch import save_file

    folder = Path(out_dir) / IP_SUBFOLDER
    folder.mkdir(parents=True, exist_ok=True)
    save_file(export_ip_adapter_state(unet), str(folder / IP_WEIGHT_NAME))
    image_encoder.save_pretrained(str(folder / "image_encoder"), safe_serialization=True)
    return folder


def image_embeds(image_encoder: Any, refs: torch.Tensor) -> torch.Tensor:
    """Projected image embeddings (B, 1, D) of preprocessed references (B, 3, S, S)."""
    return image_encoder(pixel_values=refs).image_embeds[:, None, :]
