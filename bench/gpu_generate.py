"""GPU generation throughput: plain diffusers defaults vs our settings, in one run.

Builds a Stable Diffusion 1.5-architecture pipeline with random weights (UNet 320/640/1280/1280,
cross-attention 768, 8x VAE, CLIP ViT-L text encoder with CLIP's BPE vocabulary) directly on
the device — nothing is downloaded — and times 512x512, 25 steps for each variant:

  defaults      fp32, diffusers' default attention (SDPA on torch 2), batch 1
  eager-attn    fp32, classic (non-SDPA) attention processor, batch 1  (what SDPA saves)
  bf16          bf16 weights, SDPA, batch 1
  bf16+cl       + channels_last UNet/VAE
  bf16+cl+b8    + batch 8
  compiled      + torch.compile(unet), batch 1
  compiled+b8   + torch.compile(unet), batch 8

and prints images/s for each plus a JSON summary.

    python bench/gpu_generate.py                       # CUDA: the full comparison
    python bench/gpu_generate.py --dry-run             # any machine: tiny model, 64 px, 2 steps
    python bench/gpu_generate.py --no-compile          # skip the torch.compile variants

Without CUDA it falls back to the dry run (so the script is checked on CPU-only machines).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SD15_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "latent_channels": 4,
    "layers_per_block": 2,
    "sample_size": 512,
}
SD15_TEXT: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
TINY_UNET: dict[str, Any] = {
    **SD15_UNET,
    "sample_size": 8,
    "block_out_channels": (32, 64, 64, 64),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "cross_attention_dim": 32,
}
TINY_VAE: dict[str, Any] = {
    **SD15_VAE,
    "block_out_channels": (16, 16, 32, 32),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
}
TINY_TEXT: dict[str, Any] = {
    **SD15_TEXT,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "projection_dim": 32,
}


def build_pipeline(device: str, *, tiny: bool, seed: int) -> Any:
    """An SD 1.5-architecture ``StableDiffusionPipeline`` with random fp32 weights on ``device``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from genservice.training.random_pipelines import write_clip_tokenizer_files

    torch.manual_seed(seed)
    tok_dir = Path(tempfile.mkdtemp(prefix="bench-tok-"))
    vocab_size = write_clip_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77)
    with torch.device(device):  # allocate on the device: no 4 GB copy from host
        unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD15_UNET))
        vae = AutoencoderKL(**(TINY_VAE if tiny else SD15_VAE))
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=vocab_size,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **(TINY_TEXT if tiny else SD15_TEXT),
            )
        )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
    )
    pipe: Any = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def time_variant(
    pipe: Any, *, batch: int, size: int, steps: int, repeats: int, device: str, seed: int
) -> dict[str, float]:
    """Warm up once, then time ``repeats`` calls; images/s over all timed calls."""
    import torch

    prompts = [f"a red ceramic mug on a wooden table, studio light, item {i}" for i in range(batch)]
    negative = ["blurry, low quality"] * batch

    def run() -> None:
        gens = [torch.Generator("cpu").manual_seed(seed + i) for i in range(batch)]
        pipe(
            prompt=prompts,
            negative_prompt=negative,
            width=size,
            height=size,
            num_inference_steps=steps,
            guidance_scale=7.5,
            generator=gens,
            output_type="np",
        )

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    t = time.perf_counter()
    run()
    sync()
    warmup_s = time.perf_counter() - t
    sync()
    t = time.perf_counter()
    for _ in range(repeats):
        run()
    sync()
    elapsed = time.perf_counter() - t
    return {
        "batch": batch,
        "images_per_s": round(batch * repeats / elapsed, 4),
        "s_per_image": round(elapsed / (batch * repeats), 4),
        "warmup_s": round(warmup_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="SD1.5-architecture throughput: defaults vs ours")
    parser.add_argument("--dry-run", action="store_true", help="tiny model, 64 px, 2 steps")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch", type=int, default=8, help="batch size of the batched variants")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile variants")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json-out", default=os.environ.get("OUT") and f"{os.environ['OUT']}/gpu_generate.json"
    )
    args = parser.parse_args()

    import torch
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    tiny = args.dry_run or not cuda
    if tiny:
        if not cuda and not args.dry_run:
            print("no CUDA device: falling back to the dry run (tiny model, 64 px, 2 steps)")
        args.size, args.steps, args.repeats = 64, 2, 1
        args.batch = min(args.batch, 2)
    compile_ok = not args.no_compile and cuda  # inductor on CPU needs a compiler toolchain
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # "plain defaults" means true fp32
        torch.backends.cudnn.allow_tf32 = False
    t0 = time.perf_counter()
    pipe = build_pipeline(device, tiny=tiny, seed=args.seed)
    build_s = time.perf_counter() - t0
    common = {
        "size": args.size,
        "steps": args.steps,
        "repeats": args.repeats,
        "device": device,
        "seed": args.seed,
    }
    results: dict[str, dict[str, float]] = {}

    def record(name: str, batch: int) -> None:
        results[name] = time_variant(pipe, batch=batch, **common)
        r = results[name]
        print(
            f"{name:<14s} batch {batch:>2d}  {r['images_per_s']:>8.3f} images/s  "
            f"{r['s_per_image']:>8.3f} s/image  (warm-up {r['warmup_s']:.1f}s)",
            flush=True,
        )

    # 1. Plain diffusers defaults: fp32, default processors (SDPA on torch 2), batch 1.
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    record("defaults", 1)
    # 2. Classic attention, to show what SDPA buys.
    pipe.unet.set_attn_processor(AttnProcessor())
    record("eager-attn", 1)
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    # 3. Our settings, one at a time.
    pipe.to(dtype=torch.bfloat16)
    record("bf16", 1)
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    record("bf16+cl", 1)
    record(f"bf16+cl+b{args.batch}", args.batch)
    errors: dict[str, str] = {}
    if compile_ok:
        try:
            pipe.unet = torch.compile(pipe.unet, mode=args.compile_mode, fullgraph=True)
            record("compiled", 1)
            record(f"compiled+b{args.batch}", args.batch)
        except Exception as exc:  # keep the eager figures when compilation fails
            errors["compiled"] = f"{type(exc).__name__}: {str(exc)[:500]}"
            print(f"torch.compile failed: {errors['compiled']}", flush=True)
    else:
        print(
            "torch.compile variants skipped ("
            + ("--no-compile" if args.no_compile else "no CUDA")
            + ")"
        )
    base = results["defaults"]["images_per_s"]
    summary = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "dry_run": tiny,
        "size": args.size,
        "steps": args.steps,
        "build_s": round(build_s, 2),
        "results": results,
        "errors": errors,
        "speedup_vs_defaults": {k: round(v["images_per_s"] / base, 2) for k, v in results.items()},
    }
    print(json.dumps(summary, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
