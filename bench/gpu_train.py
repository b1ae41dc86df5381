"""Train the embedded generator on a GPU with the CLI recipe, time each stage, then evaluate
it — one prepared script for a lent GPU machine.

First a speed check of the UNet stage on the real data (``--speed-steps`` steps each):

  per-step-reads   the loop as it was: losses read every step, draws on the CPU, for-loop AdamW
  optimized        draws on the device, losses read every 50 steps, fused AdamW
  compiled         optimized + ``torch.compile`` of the step (each of ``--compile-modes``)

then the recipe, with the fastest UNet variant:

  --size 64 (shipped sd-tiny, as in ``data/models/sd-tiny/MODEL_CARD.md``)
      vae 1500 steps (32x32 crops), decoder 1000 + 2500 steps, unet 8000 steps, batch 32
  --size 128 (4x VAE -> 32x32 latents, UNet widths 64/128/128)
      vae 1500 steps (64x64 crops), decoder 1500 steps, unet: as many steps as fit
      ``--budget-s`` (at most ``--unet-steps``), batch 32

and ``tailorshot evaluate generator --json`` on the result (128-px images are judged
box-downscaled to 64 px, so the figures compare with the 64-px model's card). Prints one
JSON object and writes it to ``OUT/gpu_train.json`` (and ``--json-out``).

    python bench/gpu_train.py --out "$OUT/sd"                        # 64 px
    python bench/gpu_train.py --size 128 --out /tmp/sd128 --budget-s 540
    python bench/gpu_train.py --speed-only --out /tmp/sd               # the it/s table only
    python bench/gpu_train.py --dry-run --out /tmp/sd                  # any machine

The device image lacks diffusers, pydantic and sqlmodel: carry their wheels and install them
first (``bench/gpu_all.sh`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: (label, steps, lr, decoder_only) per image size.
VAE_STAGES: dict[int, list[tuple[str, int, float, bool]]] = {
    64: [
        ("vae", 1500, 1e-3, False),
        ("decoder_1", 1000, 5e-4, True),
        ("decoder_2", 2500, 3e-4, True),
    ],
    128: [("vae", 1500, 1e-3, False), ("decoder_1", 1500, 5e-4, True)],
}
UNET_STEPS = {64: 8000, 128: 12000}
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def unet_parts(out: Path, work: Path, data: Any, device: str) -> dict[str, Any]:
    """What ``train_unet`` needs, prepared the way the recipe prepares it."""
    import torch
    from diffusers import AutoencoderKL

    from genservice.training import ip_adapter as ipa
    from genservice.training.data import downscale
    from genservice.training.recipes import load_data, size_recipe
    from genservice.training.text import TextEncoderSpec, build_clip_tokenizer_files, load_tokenizer
    from genservice.training.unet import UnetSpec, encode_latents, tokenize

    ds = load_data(data, work)
    vae = AutoencoderKL.from_pretrained(str(out / "vae")).to(device).eval()
    latents = encode_latents(vae, ds.train.images)
    tok = load_tokenizer(build_clip_tokenizer_files(ds.train.captions, work / "speed-tok"))
    recipe = size_recipe(data.size)
    return {
        "latents": latents,
        "caption_ids": tokenize(tok, ds.train.captions),
        "empty_ids": tokenize(tok, [""])[0],
        "vocab_size": len(tok),
        "spec": UnetSpec(
            sample_size=int(latents.shape[-1]), block_out_channels=recipe["unet_channels"]
        ),
        "text_spec": TextEncoderSpec(),
        "refs": ipa.clip_preprocess(downscale(ds.train.refs, recipe["ref_size"])),
        "image_spec": ipa.ImageEncoderSpec(image_size=recipe["ref_size"]),
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }


def speed_check(
    parts: dict[str, Any], *, device: str, steps: int, modes: list[str], work: Path
) -> dict[str, Any]:
    """UNet-stage it/s of the loop variants on the same data: one run each of ``warm +
    steps`` steps, timed between the loop's loss reads after the first ``warm`` steps (so
    compilation and start-up are excluded and only finished device work is counted)."""
    import torch

    from genservice.training.common import LoopConfig
    from genservice.training.unet import IpJointSpec, train_unet

    gpu = device.startswith("cuda")
    warm = 50 if steps >= 100 else 2
    variants: dict[str, dict[str, Any]] = {
        "per-step-reads": {"rng_device": "cpu", "log_every": 1, "fused_optimizer": False},
        "optimized": {"rng_device": "device" if gpu else "cpu", "log_every": warm},
    }
    for m in modes:
        variants[f"compiled:{m}"] = {**variants["optimized"], "compile": True, "compile_mode": m}
    out: dict[str, Any] = {}
    for name, extra in variants.items():
        log(f"speed: {name}")
        try:
            torch._dynamo.reset()  # each variant compiles afresh
            cfg = LoopConfig(
                steps=warm + steps, device=device, warmup_steps=0, progress=False, **extra
            )
            t = time.perf_counter()
            res = train_unet(
                latents=parts["latents"],
                caption_ids=parts["caption_ids"],
                empty_ids=parts["empty_ids"],
                vocab_size=parts["vocab_size"],
                spec=parts["spec"],
                text_spec=parts["text_spec"],
                cfg=cfg,
                batch_size=32,
                work_dir=work / f"speed-{name.replace(':', '-')}",
                refs=parts["refs"],
                image_spec=parts["image_spec"],
                ip=IpJointSpec(),
            )
            reads = res.loop.extra["read_times"]
            (s0, t0), (s1, t1) = next(r for r in reads if r[0] >= warm), reads[-1]
            out[name] = {
                "it_per_s": round((s1 - s0) / (t1 - t0), 2) if t1 > t0 else None,
                "first_steps_s": round(t0, 1),  # includes compilation
                "run_s": round(time.perf_counter() - t, 1),
                "host_reads": res.loop.extra["host_reads"],
            }
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}
            traceback.print_exc()
        log(f"speed: {name}: {out[name]}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description="Train sd-tiny on a GPU with the CLI recipe.")
    p.add_argument("--out", type=Path, required=True, help="pipeline folder to write")
    p.add_argument("--work", type=Path, default=None, help="checkpoints + data cache (temp)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--size", type=int, default=64, choices=sorted(UNET_STEPS))
    p.add_argument("--dry-run", action="store_true", help="a few steps per stage, 400 samples")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation")
    p.add_argument("--speed-only", action="store_true", help="the it/s table only (VAE quick)")
    p.add_argument("--speed-steps", type=int, default=300)
    p.add_argument("--n", type=int, default=0, help="samples to render (0 = 8000; dry run: 400)")
    p.add_argument("--compile-modes", default="default,reduce-overhead")
    p.add_argument("--unet-steps", type=int, default=0, help="0 = the size's recipe")
    p.add_argument("--budget-s", type=float, default=0, help="UNet steps fit this total (0: off)")
    p.add_argument("--json-out", type=Path, default=None)
    args = p.parse_args()

    import torch

    from genservice.training.common import resolve_device
    from genservice.training.recipes import DataSpec, train_unet_recipe, train_vae_recipe

    device = resolve_device(args.device)
    if not device.startswith("cuda"):
        torch.set_num_threads(1)  # tiny models on a shared CPU: threads only spin
    scale = 1000 if args.dry_run else 1  # dry run: steps // 1000, at least 2
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-train-"))
    n = 400 if args.dry_run else (args.n or 8000)
    data = DataSpec(n=n, size=args.size)
    out: Path = args.out
    stages: dict[str, dict[str, Any]] = {}
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "dry_run": args.dry_run,
        "size": args.size,
        "stages": stages,
    }
    json_targets = [out / "gpu_train.json"]
    if args.json_out is not None:
        json_targets.append(args.json_out)
    if os.environ.get("OUT"):
        json_targets.append(Path(os.environ["OUT"]) / f"gpu_train_{args.size}.json")

    def write() -> None:
        report["seconds"] = round(time.perf_counter() - T0, 1)
        text = json.dumps(report, indent=2, default=str)
        for t in json_targets:
            t.parent.mkdir(parents=True, exist_ok=True)
            t.write_text(text)

    t = time.perf_counter()
    from genservice.training.recipes import load_data

    load_data(data, work)  # rendered once (in parallel processes), cached for every stage
    report["data_s"] = round(time.perf_counter() - t, 1)
    log(f"data ready ({report['data_s']} s)")
    vae_stages = VAE_STAGES[args.size]
    if args.speed_only:
        vae_stages = [("vae", 50 * (2 if args.dry_run else 1), 1e-3, False)]
    for label, steps, lr, decoder_only in vae_stages:
        t = time.perf_counter()
        s = train_vae_recipe(
            out=out,
            work_root=work,
            steps=max(2, steps // scale),
            lr=lr,
            batch_size=32,
            crop=args.size // 2,
            decoder_only=decoder_only,
            device=device,
            data=data,
            progress=False,
        )
        stages[label] = {
            "steps": s.steps,
            "seconds": round(time.perf_counter() - t, 1),
            "final_loss": s.final_loss,
        }
        log(f"{label}: {stages[label]}")
        write()

    modes = [m for m in args.compile_modes.split(",") if m] if device.startswith("cuda") else []
    parts = unet_parts(out, work, data, device)
    speed = speed_check(
        parts,
        device=device,
        steps=max(4, args.speed_steps // (50 if args.dry_run else 1)),
        modes=modes,
        work=work,
    )
    report["unet_speed"] = speed
    report["unet_speed_reference"] = {"H200 before (issue 19)": 9.5, "CPU 2 cores (card)": 2.26}
    write()
    if args.speed_only:
        print(json.dumps(report, indent=2, default=str))
        return

    ok = {k: v["it_per_s"] for k, v in speed.items() if v.get("it_per_s")}
    best = max(ok, key=lambda k: ok[k]) if ok else "optimized"
    compile_mode = best.split(":", 1)[1] if best.startswith("compiled:") else None
    steps = args.unet_steps or UNET_STEPS[args.size]
    if args.budget_s and ok.get(best):
        left = args.budget_s - (time.perf_counter() - T0) - (60 if not args.no_eval else 10)
        fit = int(ok[best] * left * 0.9 // 500 * 500)  # a margin for compile and saving
        steps = max(500, min(steps, fit))
    steps = max(2, steps // scale)
    report["unet_variant"] = best
    log(f"unet: {steps} steps with {best}")
    t = time.perf_counter()
    s = train_unet_recipe(
        out=out,
        work_root=work,
        ip_out=None,
        steps=steps,
        batch_size=32,
        device=device,
        data=data,
        progress=False,
        compile_mode=compile_mode,
    )
    stages["unet"] = {
        "steps": s.steps,
        "seconds": round(time.perf_counter() - t, 1),
        "it_per_s": s.extra.get("it_per_s"),
        "final_loss": s.final_loss,
        "compile_mode": compile_mode,
    }
    log(f"unet: {stages['unet']}")
    write()
    if not args.no_eval:
        cmd = [
            sys.executable,
            "-c",
            "import sys; from api.cli import main; sys.argv[0] = 'tailorshot'; main()",
            *("evaluate", "generator", "--json", "--model", str(out), "--work", str(work)),
            *("--sheet", str(out / "contact_sheet.png")),
            *(("--n", "4", "--steps", "2") if args.dry_run else ()),
        ]
        t = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode == 0:
            report["evaluation"] = json.loads(res.stdout)
        else:
            report["evaluation_error"] = res.stderr[-2000:]
        report["evaluation_seconds"] = round(time.perf_counter() - t, 1)
        report["reference_64px_card"] = {"colour": 0.835, "category": 0.86, "ip_shift": 0.74}
    write()
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
