"""Small ``UNet2DConditionModel`` + text encoder trained jointly on VAE latents of captioned
demo scenes (v-prediction on a zero-terminal-SNR schedule, caption dropout for
classifier-free guidance), saved as a diffusers ``StableDiffusionPipeline`` folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genservice.training.common import LoopConfig, LoopOutput, seed_everything, train_loop
from genservice.training.text import TextEncoderSpec, build_text_encoder


@dataclass(frozen=True)
class UnetSpec:
    """Architecture of the small UNet (latent 4x16x16 by default)."""

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention_heads: int = 4
    norm_num_groups: int = 8
    sample_size: int = 16
    in_channels: int = 4

    def __post_init__(self) -> None:
        if len(self.block_out_channels) < 2:
            raise ValueError(
                f"block_out_channels must have >= 2 entries, got {self.block_out_channels}"
            )
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(
                f"block_out_channels must be divisible by norm_num_groups={self.norm_num_groups}"
                f", got {self.block_out_channels}"
            )


def build_unet(spec: UnetSpec, *, cross_attention_dim: int, seed: int) -> Any:
    """Randomly initialised (seeded) ``UNet2DConditionModel``: cross-attention in every block
    but the lowest-resolution one (as SD 1.x)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    n = len(spec.block_out_channels)
    down = ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)
    return UNet2DConditionModel(
        sample_size=spec.sample_size,
        in_channels=spec.in_channels,
        out_channels=spec.in_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=spec.block_out_channels,
        layers_per_block=spec.layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=spec.attention_heads,
        norm_num_groups=spec.norm_num_groups,
    )


def scheduler_kwargs() -> dict[str, Any]:
    """Noise schedule shared by training (DDPM) and inference (DDIM).

    Zero terminal SNR + v-prediction + trailing timesteps (Lin et al. 2023): sampling starts
    from pure noise exactly as in training, which keeps generated colours on prompt.
    """
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True,
        "timestep_spacing": "trailing",
        "clip_sample": False,
    }


def encode_latents(vae: Any, images: np.ndarray, *, batch_size: int = 64) -> torch.Tensor:
    """Scaled VAE latent means of uint8 (N, H, W, 3) images -> float32 (N, 4, H/4, W/4)."""
    from genservice.training.vae import to_tensor

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = to_tensor(images[i : i + batch_size]).to(vae.device)
            out.append(vae.encode(x).latent_dist.mean.cpu() * vae.config.scaling_factor)
    return torch.cat(out)


def tokenize(tokenizer: Any, captions: list[str]) -> torch.Tensor:
    """Caption ids (N, model_max_length), padded and truncated as the pipeline does."""
    ids = tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return torch.as_tensor(ids)


@dataclass
class UnetTraining:
    """The trained UNet (adapter attached when trained jointly), text encoder, optional image
    encoder and the loop output."""

    unet: Any
    text_encoder: Any
    loop: LoopOutput
    image_encoder: Any | None = None


@dataclass(frozen=True)
class IpJointSpec:
    """Joint IP-Adapter training: share of samples that see their reference image (``prob``),
    caption dropout for those samples (makes the image carry colour and category), and the
    share of those whose image embedding is zeroed (the pipeline's unconditional image)."""

    prob: float = 0.5
    caption_dropout: float = 0.5
    zero_image: float = 0.1

    def __post_init__(self) -> None:
        for name in ("prob", "caption_dropout", "zero_image"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v}")


def train_unet(
    *,
    latents: torch.Tensor,
    caption_ids: torch.Tensor,
    empty_ids: torch.Tensor,
    vocab_size: int,
    spec: UnetSpec,
    text_spec: TextEncoderSpec,
    cfg: LoopConfig,
    batch_size: int,
    work_dir: str | Path,
    caption_dropout: float = 0.1,
    refs: torch.Tensor | None = None,
    image_spec: Any | None = None,
    ip: IpJointSpec | None = None,
    resume: bool = False,
    stop_after: int | None = None,
) -> UnetTraining:
    """Train UNet + text encoder on ``latents`` (N, C, h, w) with ``caption_ids`` (N, L).

    ``empty_ids`` (L,) are the ids of the empty caption, used for caption dropout (CFG).
    Horizontal flips of the latents augment the data (captions say nothing about direction).
    With ``refs`` (N, 3, S, S, CLIP-normalised reference images), ``image_spec`` and ``ip``,
    an IP-Adapter and its image encoder train jointly (see :mod:`ip_adapter`).
    """
    from diffusers import DDPMScheduler

    from genservice.training import ip_adapter as ipa

    if not 0 <= caption_dropout < 1:
        raise ValueError(f"caption_dropout must be in [0, 1), got {caption_dropout}")
    if latents.shape[0] != caption_ids.shape[0]:
        raise ValueError(
            f"latents and caption_ids must have the same length, got {latents.shape[0]} and "
            f"{caption_ids.shape[0]}"
        )
    if refs is not None and refs.shape[0] != latents.shape[0]:
        raise ValueError(f"refs must have {latents.shape[0]} rows, got {refs.shape[0]}")
    seed_everything(cfg.seed)
    dev = cfg.device
    text_encoder = build_text_encoder(vocab_size, text_spec, seed=cfg.seed).to(dev)
    unet = build_unet(spec, cross_attention_dim=text_spec.hidden_size, seed=cfg.seed + 1).to(dev)
    modules: dict[str, torch.nn.Module] = {"unet": unet, "text_encoder": text_encoder}
    params = list(unet.parameters()) + list(text_encoder.parameters())
    image_encoder = None
    gate = None
    if refs is not None:
        if image_spec is None or ip is None:
            raise ValueError("image_spec and ip must be given with refs, got None")
        image_encoder = ipa.build_image_encoder(image_spec, seed=cfg.seed + 2).to(dev)
        state = ipa.init_ip_adapter_state(
            unet, image_embed_dim=image_spec.projection_dim, seed=cfg.seed + 3
        )
        params += ipa.attach_ip_adapter(unet, state) + list(image_encoder.parameters())
        params = list({id(p): p for p in params}.values())  # adapter params live in the unet
        modules["image_encoder"] = image_encoder
        gate = ipa.ImageTokenGate(unet)
    noise_sched: Any = DDPMScheduler(**scheduler_kwargs())
    alphas = noise_sched.alphas_cumprod.to(dev)
    n_timesteps = int(noise_sched.config.num_train_timesteps)
    # The data set lives on the device, prepared once: a step only gathers its batch there.
    latents_d = latents.to(dev)
    ids_d = caption_ids.to(dev)
    empty_d = empty_ids.to(dev)[None, :]
    refs_d = refs.to(dev) if refs is not None else None
    use_ip = refs_d is not None and gate is not None and ip is not None
    ip_spec = ip or IpJointSpec()
    gate_buf = torch.ones(batch_size, dtype=torch.bool, device=dev)
    if use_ip and gate is not None:
        gate.gate = gate_buf  # one tensor, updated in place: a compiled step sees no new object
    shape = (batch_size, *latents.shape[1:])

    def draw(gen: torch.Generator) -> dict[str, torch.Tensor]:
        """The step's random numbers, drawn in a fixed order from ``gen`` (its device)."""
        g = gen.device
        d = {"idx": torch.randint(0, latents.shape[0], (batch_size,), generator=gen, device=g)}
        d["flip"] = torch.rand(batch_size, generator=gen, device=g) < 0.5
        d["u_drop"] = torch.rand(batch_size, generator=gen, device=g)
        d["noise"] = torch.randn(shape, generator=gen, device=g)
        d["t"] = torch.randint(0, n_timesteps, (batch_size,), generator=gen, device=g)
        if use_ip:
            d["on"] = torch.rand(batch_size, generator=gen, device=g) < ip_spec.prob
            d["zero"] = torch.rand(batch_size, generator=gen, device=g) < ip_spec.zero_image
            d["rflip"] = torch.rand(batch_size, generator=gen, device=g) < 0.5
        return {k: v.to(dev, non_blocking=True) for k, v in d.items()}

    def step_loss(r: dict[str, torch.Tensor]) -> torch.Tensor:
        """v-prediction loss of one batch; tensor ops only (no host reads), compilable."""
        idx = r["idx"]
        x0 = latents_d[idx]
        x0 = torch.where(r["flip"][:, None, None, None], x0.flip(-1), x0)
        t = r["t"]
        a = alphas[t].sqrt()[:, None, None, None]
        s = (1 - alphas[t]).sqrt()[:, None, None, None]
        xt = a * x0 + s * r["noise"]
        target = a * r["noise"] - s * x0  # v-prediction
        kwargs: dict[str, Any] = {}
        drop = r["u_drop"] < caption_dropout
        if use_ip and refs_d is not None and image_encoder is not None:
            on = r["on"]
            drop = torch.where(on, r["u_drop"] < ip_spec.caption_dropout, drop)
            im = refs_d[idx]
            im = torch.where(r["rflip"][:, None, None, None], im.flip(-1), im)
            emb = ipa.image_embeds(image_encoder, im)
            emb = emb * (~r["zero"]).to(emb.dtype)[:, None, None]
            kwargs["added_cond_kwargs"] = {"image_embeds": [emb]}
        ids = torch.where(drop[:, None], empty_d, ids_d[idx])
        cond = text_encoder(ids)[0]
        pred = unet(xt, t, encoder_hidden_states=cond, **kwargs).sample
        return F.mse_loss(pred.float(), target.float())

    step_fn = (
        torch.compile(step_loss, mode=cfg.compile_mode, dynamic=False) if cfg.compile else step_loss
    )

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        r = draw(gen)
        if use_ip:
            gate_buf.copy_(r["on"])
        return step_fn(r)

    loop = train_loop(
        modules=modules,
        params=params,
        loss_fn=loss_fn,
        cfg=cfg,
        work_dir=work_dir,
        resume=resume,
        desc="unet",
        stop_after=stop_after,
    )
    if gate is not None:
        gate.remove()
    return UnetTraining(
        unet=unet, text_encoder=text_encoder, loop=loop, image_encoder=image_encoder
    )


@torch.no_grad()
def fixed_batch_loss(
    unet: Any, text_encoder: Any, latents: torch.Tensor, caption_ids: torch.Tensor, *, seed: int
) -> float:
    """v-prediction loss on fixed noise and timesteps (seeded): comparable across training."""
    from diffusers import DDPMScheduler

    g = torch.Generator().manual_seed(seed)
    sched: Any = DDPMScheduler(**scheduler_kwargs())
    noise = torch.randn(latents.shape, generator=g)
    t = torch.randint(0, 1000, (latents.shape[0],), generator=g)
    a = sched.alphas_cumprod[t].sqrt()[:, None, None, None]
    s = (1 - sched.alphas_cumprod[t]).sqrt()[:, None, None, None]
    pred = unet(a * latents + s * noise, t, encoder_hidden_states=text_encoder(caption_ids)[0])
    return float(F.mse_loss(pred.sample, a * noise - s * latents))


def save_pipeline(
    *, out_dir: str | Path, vae: Any, unet: Any, text_encoder: Any, tokenizer: Any
) -> Path:
    """Write a diffusers ``StableDiffusionPipeline`` folder (safetensors, DDIM scheduler)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    sched = DDIMScheduler(**scheduler_kwargs(), set_alpha_to_one=False, steps_offset=1)
    pipe: Any = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = Path(out_dir)
    pipe.save_pretrained(str(out), safe_serialization=True)
    return out
