"""LoRA adapters in use: what an adapter changes and what it costs.

Trains a rank-4 LoRA for a few steps on a model (default: a tiny random pipeline built in a
temporary folder), then runs the diffusers backend with no adapter, the adapter at scale 1 and
at scale 0 (peft layers), and at scale 1 merged into the weights (``fuse``, as with fused
q/k/v or ``torch.compile``). Prints one JSON object: load seconds, seconds per image, and the
largest pixel change against no adapter (0..1 floats; scale 0 must be exactly 0).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_lora.py [--model DIR] [--size 64] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="A diffusers folder (default: tiny random).")
    ap.add_argument("--size", type=int, default=64, help="Image side in pixels.")
    ap.add_argument("--steps", type=int, default=4, help="Denoising steps per image.")
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from PIL import Image, ImageDraw
    from tqdm import tqdm

    from genservice.backends.base import GenerationRequest
    from genservice.backends.diffusers_backend import DiffusersBackend
    from genservice.config import GenerationConfig
    from genservice.training.common import LoopConfig
    from genservice.training.lora import train_lora
    from genservice.training.random_pipelines import build_tiny_pipeline

    work = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    model = Path(args.model) if args.model else build_tiny_pipeline(work / "sd-tiny", seed=0)
    shot = Image.new("RGB", (args.size, args.size), (248, 248, 246))
    ImageDraw.Draw(shot).rounded_rectangle(
        (args.size // 4, args.size // 5, 3 * args.size // 4, 4 * args.size // 5),
        radius=4,
        fill=(200, 30, 40),
    )
    t0 = time.perf_counter()
    train_lora(
        model=model,
        images=[shot, shot.transpose(Image.Transpose.FLIP_LEFT_RIGHT)],
        prompt="a photo of sks mug",
        out=work / "lora",
        cfg=LoopConfig(
            steps=args.train_steps, lr=5e-2, progress=False, warmup_steps=0, device=args.device
        ),
        work_dir=work / "train",
    )
    train_s = time.perf_counter() - t0
    runs = {
        "none": ({}, False),
        "scale1": ({str(work / "lora"): 1.0}, False),
        "scale0": ({str(work / "lora"): 0.0}, False),
        "scale1_fused": ({str(work / "lora"): 1.0}, True),
    }
    out: dict[str, object] = {"model": str(model), "train_s": round(train_s, 2)}
    arrays = {}
    for label, (loras, fuse) in tqdm(runs.items(), desc="configs"):
        cfg = GenerationConfig(
            model=str(model), device=args.device, loras=loras, fuse_qkv=fuse, warmup_sizes=[]
        )
        backend = DiffusersBackend(cfg, home=work / "home")
        t0 = time.perf_counter()
        backend.load()
        load_s = time.perf_counter() - t0
        req = GenerationRequest(
            prompt="a photo of sks mug",
            width=args.size,
            height=args.size,
            num_inference_steps=args.steps,
            guidance_scale=5.0,
            seed=3,
        )
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = backend.generate(req)
            times.append(time.perf_counter() - t0)
        arrays[label] = res.array
        out[label] = {"load_s": round(load_s, 3), "image_s": round(float(np.median(times)), 4)}
    for label in ("scale1", "scale0", "scale1_fused"):
        diff = float(np.abs(arrays[label] - arrays["none"]).max())
        out[label]["max_diff_vs_none"] = diff  # type: ignore[index]
    out["fused_vs_peft_max_diff"] = float(np.abs(arrays["scale1_fused"] - arrays["scale1"]).max())
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
