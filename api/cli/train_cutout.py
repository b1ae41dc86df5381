"""Product cut-out commands: ``tailorshot train cutout`` (the refiner over U^2-Net-p) and
``tailorshot evaluate cutout`` (the cut-out part of ``evaluate heroes``, with overlays)."""

from __future__ import annotations

from pathlib import Path

import typer

from api.cli.app import evaluate_app, train_app
from api.cli.common import fail, print_json

DEFAULT_OUT = Path("data/models/cutout-u2netp-products")


@train_app.command("cutout")
def train_cutout_cmd(
    data: Path = typer.Option(
        Path("cutout-data"), help="Folder of training shards (made here when missing)."
    ),
    shards: int = typer.Option(24, help="Shards of 40 samples; the first --val-shards validate."),
    val_shards: int = typer.Option(2, help="Shards held out for the validation figures."),
    minutes: float = typer.Option(40.0, help="Training wall-clock budget."),
    batch_size: int = typer.Option(8, help="Pictures per step."),
    lr: float = typer.Option(2e-3, help="Peak Adam learning rate (cosine over the budget)."),
    seed: int = typer.Option(0, help="Seed of initialisation and data order."),
    threads: int = typer.Option(1, help="torch / onnxruntime CPU threads."),
    out: Path = typer.Option(DEFAULT_OUT, help="Writes OUT/model.onnx and OUT/training.json."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Train the product refiner over U^2-Net-p on demo products composited onto backgrounds
    that `evaluate heroes` never uses (plus studio renders and real photos distilled from the
    original model), then export U^2-Net-p + refiner as one ONNX graph (OUT/model.onnx)."""
    import os
    import time

    import torch
    from tqdm import tqdm

    from genservice.imaging.cutout import SalientObjectModel, bundled_u2netp_path
    from genservice.training import cutout_train as ct
    from genservice.training.cutout_data import SampleMaker, make_shard, save_shard

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if shards < val_shards + 1 or val_shards < 1:
        fail(
            f"--shards, --val-shards: expected shards > val-shards >= 1, got {shards}, {val_shards}"
        )
    if minutes <= 0 or batch_size < 1 or threads < 1:
        fail(
            "--minutes, --batch-size, --threads: expected > 0, "
            f"got {minutes}, {batch_size}, {threads}"
        )
    torch.set_num_threads(threads)
    data.mkdir(parents=True, exist_ok=True)
    # Inputs and distillation targets always come from the original network.
    original = SalientObjectModel(bundled_u2netp_path(), cache_size=0, threads=threads)
    maker = SampleMaker(original.raw_saliency)
    paths = [data / f"shard{k:03d}.npz" for k in range(shards)]
    t0 = time.monotonic()
    for k, p in enumerate(tqdm(paths, desc="training pictures", disable=as_json)):
        if not p.is_file():
            save_shard(p, make_shard(maker, 40, seed=k))
    make_s = time.monotonic() - t0
    train = ct.load_shards(paths[val_shards:])
    val = ct.load_shards(paths[:val_shards])
    out.mkdir(parents=True, exist_ok=True)
    model, summary = ct.train_refiner(
        train,
        minutes=minutes,
        batch=batch_size,
        lr=lr,
        seed=seed,
        checkpoint=data / "refiner.pt",
        log=(lambda m: None) if as_json else typer.echo,
    )
    validation = ct.evaluate_refiner(model, val)
    onnx_path = ct.export_onnx(model, bundled_u2netp_path(), out / "model.onnx")
    record = {
        "command": (
            f"tailorshot train cutout --data {data} --shards {shards} --val-shards {val_shards} "
            f"--minutes {minutes:g} --batch-size {batch_size} --lr {lr:g} --seed {seed} "
            f"--threads {threads} --out {out}"
        ),
        "train_samples": len(train["images"]),
        "val_samples": len(val["images"]),
        "make_data_s": round(make_s, 1),
        "training": summary,
        "validation_iou": validation,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "model_bytes": onnx_path.stat().st_size,
    }
    ct.write_training_record(out / "training.json", record)
    if as_json:
        print_json(record)
        return
    typer.echo(f"wrote {onnx_path} ({record['model_bytes']} bytes)")
    for kind, v in validation.items():
        typer.echo(f"validation {kind}: IoU {v['iou_original']} -> {v['iou_refined']} (n={v['n']})")


@evaluate_app.command("cutout")
def evaluate_cutout_cmd(
    n: int = typer.Option(100, "--n", help="Cases of each kind (studio, photo composite)."),
    seed: int = typer.Option(0, help="Seed of the cases (evaluate heroes uses 0)."),
    model: str = typer.Option(
        "original", help="original (U^2-Net-p), products (`train cutout`'s) or an .onnx path."
    ),
    overlays: Path | None = typer.Option(
        None, help="Write PNG overlays of the worst photo composites to this folder."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """The cut-out part of `evaluate heroes`: IoU, boundary F1 (2 px) and fragment rate of
    the cut-out against known masks, on demo products on their studio backdrop and pasted onto
    scikit-image photographs (`--n` of each)."""
    import os

    from tqdm import tqdm

    from genservice.imaging.cutout import SalientObjectModel, cut_out_product, cutout_model_path
    from genservice.training.heroeval import cutout_report, mask_cases, write_overlays

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if n < 1:
        fail(f"--n: expected >= 1, got {n}")
    try:
        path = cutout_model_path(model)
    except FileNotFoundError as exc:
        fail(str(exc))
    net = SalientObjectModel(path, cache_size=0)
    cases = mask_cases(n, seed=seed)
    results: list = []

    def cut(image):  # type: ignore[no-untyped-def]
        res = cut_out_product(image, model=net)
        results.append(res)
        return res

    report = cutout_report(tqdm(cases, desc="cut-out cases", disable=as_json), cut)
    report["model"] = str(path)
    report["load_average"] = [round(v, 2) for v in os.getloadavg()]
    if overlays is not None:
        report["overlays"] = write_overlays(cases, results, overlays)
    if as_json:
        print_json(report)
        return
    for kind in ("studio", "photo", "all"):
        r = report[kind]
        typer.echo(
            f"{kind}: cutout_iou {r['cutout_iou']} (min {r['cutout_iou_min']}), "  # type: ignore[index]
            f"boundary_f1 {r['boundary_f1']}, fragment_rate {r['fragment_rate']}, n={r['n']}"  # type: ignore[index]
        )
