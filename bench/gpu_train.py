"""Train the embedded default generator (sd-tiny + IP-Adapter) on a GPU with the CLI recipe,
time each stage, then evaluate it — one prepared script for a lent GPU machine.

Stages are exactly the ones in ``data/models/sd-tiny/MODEL_CARD.md`` (same steps, batch,
crop and learning rates), so the figures compare with the CPU run recorded there:

  vae          1500 steps, batch 32, 32x32 crops, lr 1e-3
  decoder 1    1000 steps, decoder only, lr 5e-4
  decoder 2    2500 steps, decoder only, lr 3e-4
  unet         8000 steps, UNet + text encoder + IP-Adapter jointly, batch 32

then ``tailorshot evaluate generator --json`` on the result. Prints one JSON object
(seconds per stage, final losses, the evaluation) and writes it to ``OUT/gpu_train.json``.

    python bench/gpu_train.py --out "$OUT/sd"              # CUDA (bf16 autocast), ~minutes
    python bench/gpu_train.py --dry-run --out /tmp/sd      # any machine: a few steps each

The device image lacks diffusers and open_clip: carry their wheels and ``pip install`` them
before running (see the device README).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = [
    # (label, steps, lr, decoder_only)
    ("vae", 1500, 1e-3, False),
    ("decoder_1", 1000, 5e-4, True),
    ("decoder_2", 2500, 3e-4, True),
]
UNET_STEPS = 8000


def main() -> None:
    p = argparse.ArgumentParser(description="Train sd-tiny on a GPU with the CLI recipe.")
    p.add_argument("--out", type=Path, required=True, help="pipeline folder to write")
    p.add_argument("--work", type=Path, default=None, help="checkpoints + data cache (temp)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--dry-run", action="store_true", help="a few steps per stage, 4 captions")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation")
    args = p.parse_args()

    import torch

    from genservice.training.recipes import DataSpec, train_unet_recipe, train_vae_recipe

    scale = 1000 if args.dry_run else 1  # dry run: steps // 1000, at least 2
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-train-"))
    data = DataSpec(n=400) if args.dry_run else DataSpec()
    out: Path = args.out
    stages: dict[str, dict[str, float]] = {}
    report: dict[str, object] = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "dry_run": args.dry_run,
        "stages": stages,
    }
    for label, steps, lr, decoder_only in STAGES:
        t0 = time.perf_counter()
        s = train_vae_recipe(
            out=out,
            work_root=work,
            steps=max(2, steps // scale),
            lr=lr,
            batch_size=32,
            crop=32,
            decoder_only=decoder_only,
            device=args.device,
            data=data,
        )
        stages[label] = {
            "steps": s.steps,
            "seconds": round(time.perf_counter() - t0, 1),
            "final_loss": s.final_loss,
        }
    t0 = time.perf_counter()
    s = train_unet_recipe(
        out=out,
        work_root=work,
        ip_out=None,
        steps=max(2, UNET_STEPS // scale),
        batch_size=32,
        device=args.device,
        data=data,
    )
    stages["unet"] = {
        "steps": s.steps,
        "seconds": round(time.perf_counter() - t0, 1),
        "final_loss": s.final_loss,
    }
    if not args.no_eval:
        cmd = [
            sys.executable,
            "-c",
            "import sys; from api.cli import main; sys.argv[0] = 'tailorshot'; main()",
            *("evaluate", "generator", "--json", "--model", str(out), "--work", str(work)),
            *(("--n", "4", "--steps", "2") if args.dry_run else ()),
        ]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        report["evaluation"] = json.loads(res.stdout)
        report["evaluation_seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(report, indent=2)
    (out / "gpu_train.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
