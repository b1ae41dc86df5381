"""``tailorshot train clip``: train the small embedded CLIP model on the demo world."""

from __future__ import annotations

from pathlib import Path

import typer

from api.cli.app import train_app
from api.cli.common import fail, load_settings, print_json


@train_app.command("clip")
def train_clip_cmd(
    out: Path = typer.Option(
        None, help="Output model folder (default: the shipped data/models/clip-tiny)."
    ),
    checkpoint_dir: Path = typer.Option(
        None, help="Checkpoint folder (default: <home>/training/clip)."
    ),
    steps: int = typer.Option(
        2400, min=1, help="Optimiser steps (the shipped model: 2400, ~35 min)."
    ),
    batch_size: int = typer.Option(128, min=2, help="Images (and captions) per step."),
    lr: float = typer.Option(1e-3, min=0.0, help="Peak learning rate."),
    seed: int = typer.Option(0, help="Seed (demo world, split, init, sampling)."),
    source: str = typer.Option("auto", help="auto | demo | fallback (built-in renders)."),
    threads: int = typer.Option(1, min=1, help="torch CPU threads."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue a checkpoint."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train clip-tiny (contrastive, captions from attributes), export safetensors, write
    the model card and print held-out recall@5 and zero-shot colour/category accuracy."""
    from recsys.embedders.clip import default_model_dir
    from recsys.training.clip_train import ClipTrainConfig, train_clip, write_model_card

    settings = load_settings()
    out_dir = out or default_model_dir()
    try:
        cfg = ClipTrainConfig(
            out_dir=out_dir,
            checkpoint_dir=checkpoint_dir or settings.home / "training" / "clip",
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            min_lr=min(1e-5, lr),
            seed=seed,
            source=source,
            threads=threads,
        )
        result = train_clip(cfg, resume=resume, log=lambda m: typer.echo(m, err=True))
    except (ValueError, FileNotFoundError, ImportError) as e:
        fail(str(e))
    assert result is not None  # no stop_after: training ran to the end
    write_model_card(result, cfg, path=out_dir / "MODEL_CARD.md")
    summary = {
        "out": str(out_dir),
        "steps": result.steps,
        "final_loss": result.final_loss,
        "seconds": round(result.total_seconds, 1),
        "weights_bytes": result.weights_bytes,
        **result.evaluation.recsys_keys(),
        "clip_colour_accuracy_scene": result.evaluation.colour_accuracy_scene,
        "clip_category_accuracy_scene": result.evaluation.category_accuracy_scene,
    }
    if as_json:
        print_json(summary)
    else:
        for k, v in summary.items():
            typer.echo(f"{k:32s} {v}")
