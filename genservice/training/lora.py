"""DreamBooth-style LoRA fine-tuning of any Stable Diffusion checkpoint on a store's product
images (UNet attention projections; text encoder frozen).

Weights are saved as ``pytorch_lora_weights.safetensors`` with the keys diffusers writes
(``unet.<module>.lora_A.weight`` / ``lora_B.weight``), so ``pipe.load_lora_weights(folder)``
reads them when ``peft`` is installed; :func:`apply_lora` merges them without ``peft``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genservice.training.common import LoopConfig, LoopOutput, seed_everything, train_loop

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * B(A(x))`` with ``B`` zero-initialised (starts as ``base``)."""

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_A = nn.Linear(base.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * self.lora_B(self.lora_A(x))


@dataclass(frozen=True)
class LoraSpec:
    """LoRA rank and alpha (effective scale ``alpha / rank``)."""

    rank: int = 4
    alpha: float = 4.0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")


def inject_lora(unet: nn.Module, spec: LoraSpec) -> dict[str, LoRALinear]:
    """Wrap every attention ``to_q/to_k/to_v/to_out.0`` Linear; returns them by module name."""
    found: dict[str, LoRALinear] = {}
    for name, module in list(unet.named_modules()):
        for target in TARGETS:
            parent_name, _, leaf = f"{name}.{target}".rpartition(".")
            sub = module
            ok = True
            for part in target.split("."):
                if not hasattr(sub, part) and not (
                    part.isdigit() and isinstance(sub, nn.ModuleList)
                ):
                    ok = False
                    break
                sub = sub[int(part)] if part.isdigit() else getattr(sub, part)
            if not ok or not isinstance(sub, nn.Linear) or not hasattr(module, "to_q"):
                continue
            wrapped = LoRALinear(sub, rank=spec.rank, alpha=spec.alpha)
            holder = module
            for part in target.split(".")[:-1]:
                holder = getattr(holder, part)
            if leaf.isdigit():
                holder[int(leaf)] = wrapped  # type: ignore[index]
            else:
                setattr(holder, leaf, wrapped)
            found[f"{name}.{target}"] = wrapped
            del parent_name
    if not found:
        raise ValueError("unet: expected attention modules with to_q/to_k/to_v, found none")
    return found


def lora_state(layers: dict[str, LoRALinear]) -> dict[str, torch.Tensor]:
    """diffusers/peft key layout: ``unet.<module>.lora_A.weight`` (scale folded into B)."""
    out: dict[str, torch.Tensor] = {}
    for name, layer in layers.items():
        out[f"unet.{name}.lora_A.weight"] = layer.lora_A.weight.detach().cpu().contiguous()
        out[f"unet.{name}.lora_B.weight"] = (
            layer.lora_B.weight.detach().cpu() * layer.scale
        ).contiguous()
    return out


def apply_lora(pipe: Any, folder: str | Path, *, scale: float = 1.0) -> int:
    """Merge ``folder/pytorch_lora_weights.safetensors`` into ``pipe.unet`` (no peft needed).

    Returns the number of layers changed. ``W += scale * B @ A``.
    """
    from safetensors.torch import load_file

    sd = load_file(str(Path(folder) / LORA_WEIGHT_NAME))
    modules = dict(pipe.unet.named_modules())
    n = 0
    for key, a in sd.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key[len("unet.") : -len(".lora_A.weight")]
        b = sd[key.replace("lora_A", "lora_B")]
        if name not in modules:
            raise KeyError(f"lora weights: module {name!r} not found in the pipeline's UNet")
        lin = modules[name]
        with torch.no_grad():
            lin.weight += scale * (b.float() @ a.float()).to(lin.weight.dtype)
        n += 1
    return n


def _images_tensor(images: Sequence[Any], size: int) -> torch.Tensor:
    from PIL import Image

    arrs = []
    for im in images:
        im = im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        arrs.append(np.asarray(im))
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x


def train_lora(
    *,
    model: str | Path,
    images: Sequence[Any],
    prompt: str,
    out: str | Path,
    cfg: LoopConfig,
    spec: LoraSpec | None = None,
    batch_size: int = 1,
    resolution: int | None = None,
    work_dir: str | Path,
    resume: bool = False,
) -> LoopOutput:
    """Fine-tune LoRA layers of ``model``'s UNet on ``images`` (PIL) captioned ``prompt``.

    ``prompt`` is the DreamBooth instance prompt, e.g. ``"a photo of sks mug"``. The target
    follows the checkpoint's scheduler (epsilon, v-prediction or sample).
    """
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    if not images:
        raise ValueError("images must contain at least one product image, got none")
    spec = spec or LoraSpec()
    seed_everything(cfg.seed)
    pipe = StableDiffusionPipeline.from_pretrained(str(model), safety_checker=None)
    pipe.to(cfg.device)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.requires_grad_(False)
    layers = inject_lora(pipe.unet, spec)
    params = [p for layer in layers.values() for p in (layer.lora_A.weight, layer.lora_B.weight)]
    for p in params:
        p.requires_grad_(True)
    size = resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    x = _images_tensor(images, size).to(cfg.device)
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    with torch.no_grad():
        lat = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
        ids = pipe.tokenizer(
            [prompt],
            padding="max_length",
            truncation=True,
            max_length=pipe.tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids
        cond = pipe.text_encoder(ids.to(cfg.device))[0]
    pred_type = sched.config.prediction_type

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, lat.shape[0], (batch_size,), generator=gen)
        x0 = lat[idx]
        noise = torch.randn(x0.shape, generator=gen).to(cfg.device)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch_size,), generator=gen)
        t = t.to(cfg.device)
        xt = sched.add_noise(x0, noise, t)
        if pred_type == "epsilon":
            target = noise
        elif pred_type == "v_prediction":
            target = sched.get_velocity(x0, noise, t)
        else:
            target = x0
        pred = pipe.unet(xt, t, encoder_hidden_states=cond.expand(batch_size, -1, -1)).sample
        return F.mse_loss(pred.float(), target.float())

    loop = train_loop(
        modules={"lora": nn.ModuleDict({k.replace(".", "_"): v for k, v in layers.items()})},
        params=params,
        loss_fn=loss_fn,
        cfg=cfg,
        work_dir=work_dir,
        resume=resume,
        desc="lora",
    )
    from safetensors.torch import save_file

    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    save_file(lora_state(layers), str(o / LORA_WEIGHT_NAME))
    (o / "lora_config.json").write_text(
        json.dumps(
            {
                "base_model": str(model),
                "prompt": prompt,
                "rank": spec.rank,
                "alpha": spec.alpha,
                "steps": loop.steps,
                "seed": cfg.seed,
                "targets": list(TARGETS),
            },
            indent=2,
        )
    )
    return loop
