"""Product cut-out commands: ``tailorshot train cutout`` (ProductNet over U^2-Net-p) and
``tailorshot evaluate cutout`` (the cut-out part of ``evaluate heroes``, with overlays)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from api.cli.app import evaluate_app, train_app
from api.cli.common import fail, print_json

DEFAULT_OUT = Path("data/models/cutout-u2netp-products")
#: The fine-tuned network in ``DEFAULT_OUT`` (``genservice.imaging.cutout.FINETUNED_MODEL_PATH``).
FINETUNED_NAME = "u2netp_finetuned.onnx"


def _echo_validation(report: dict[str, Any], new: str) -> None:
    """One line per kind: the original network's IoU and boundary F1 -> the ``new`` model's."""
    for kind, v in report.items():
        typer.echo(
            f"validation {kind}: IoU {v['iou_original']} -> {v['iou_' + new]}, boundary F1 "
            f"{v['boundary_f1_original']} -> {v['boundary_f1_' + new]} (n={v['n']})"
        )


@train_app.command("cutout")
def train_cutout_cmd(
    work: Path = typer.Option(
        Path("cutout-data"), help="Folder of validation shards and checkpoints (best.pt, last.pt)."
    ),
    minutes: float = typer.Option(60.0, help="Training wall-clock budget (0: export --init only)."),
    batch_size: int = typer.Option(8, help="Pictures per step (fresh ones every step)."),
    lr: float = typer.Option(2e-3, help="Peak Adam learning rate (cosine over the budget)."),
    width: int = typer.Option(16, help="ProductNet's first-stage channels."),
    seed: int = typer.Option(0, help="Seed of initialisation and data."),
    threads: int = typer.Option(1, help="torch / onnxruntime CPU threads."),
    init: Path | None = typer.Option(
        None,
        help="Start from (or, with --minutes 0, export) this state dict (.pt), or an exported "
        "head (.onnx, e.g. the shipped one: its ProductNet is recovered).",
    ),
    band_px: int = typer.Option(5, help="Fusion: band around the product's contour (px)."),
    min_confidence: float = typer.Option(
        0.9, help="Fusion: ProductNet's mean inside its mask to count a product as found."
    ),
    out: Path = typer.Option(
        DEFAULT_OUT, help="Writes OUT/head.onnx, training.json, MODEL_CARD.md."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Train ProductNet (which pixels are the demo product) on demo products composited onto
    backgrounds that `evaluate heroes` never uses, plus studio renders and product-free
    pictures, then export ProductNet + the fusion rule as an ONNX head run after U^2-Net-p."""
    import os

    import torch

    from genservice.imaging.cutout import SalientObjectModel, bundled_u2netp_path
    from genservice.training import cutout_train as ct
    from genservice.training.cutout_data import (
        FUSION_VAL,
        WORLD_SEED,
        SampleMaker,
        make_shard,
        save_shard,
    )

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if minutes < 0 or batch_size < 1 or threads < 1 or width < 4:
        fail(
            "--minutes, --batch-size, --threads, --width: expected >= 0, >= 1, >= 1, >= 4, "
            f"got {minutes}, {batch_size}, {threads}, {width}"
        )
    if minutes == 0 and init is None:
        fail("--minutes 0: expected --init STATE_DICT to export")
    if init is not None and not init.is_file():
        fail(f"--init: expected a state dict (.pt) or head (.onnx) file, got {init}")
    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    # Distillation targets always come from the original network.
    original = SalientObjectModel(bundled_u2netp_path(), cache_size=0, threads=threads)
    maker = SampleMaker(original.raw_saliency)
    shards = {
        "val.npz": ((("composite", "composite", "studio", "empty")), 96, 10_000, False),
        "fusion_val.npz": (*FUSION_VAL, True),
    }
    data = {}
    for name, (kinds, n, shard_seed, with_sal) in shards.items():
        path = work / name
        if not path.is_file():
            m = maker if with_sal else SampleMaker()
            save_shard(path, make_shard(m, n, seed=shard_seed, kinds=kinds))
        data[name] = ct.load_shards([path])
    state: dict[str, Any] | None = None
    if init is not None and init.suffix == ".onnx":
        # The export folded the batch norms; they are calibrated back on validation pictures.
        try:
            state = ct.state_from_head(init, data["val.npz"]["images"][:16], width=width)
        except (ValueError, KeyError) as exc:
            fail(f"--init: {init} is not a ProductNet head of width {width} ({exc})")
    elif init is not None:
        state = torch.load(init, weights_only=True)
    if minutes > 0:
        net, summary = ct.train_product_net(
            maker.batch,
            data["val.npz"],
            minutes=minutes,
            batch=batch_size,
            lr=lr,
            width=width,
            seed=seed,
            folder=work,
            log=(lambda m: None) if as_json else typer.echo,
            init=state,
        )
    else:
        net = ct.ProductNet(width)
        net.load_state_dict(state)  # type: ignore[arg-type]
        # The run that made --init wrote its summary beside it.
        found = init.parent / "summary.json"  # type: ignore[union-attr]
        summary = json.loads(found.read_text()) if found.is_file() else {"init": str(init)}
    fused = ct.ProductCutout(net, band_px=band_px, min_confidence=min_confidence)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = ct.export_onnx(fused, out / "head.onnx")
    torch.save(net.state_dict(), work / "exported.pt")
    fused_val = ct.evaluate_fused(fused, data["fusion_val.npz"])
    record = {
        "command": (
            f"tailorshot train cutout --work {work} --minutes {minutes:g} --batch-size "
            f"{batch_size} --lr {lr:g} --width {width} --seed {seed} --threads {threads} "
            f"--band-px {band_px} --min-confidence {min_confidence:g}"
            + (f" --init {init}" if init is not None else "")
            + f" --out {out}"
        ),
        "world_seed": WORLD_SEED,
        "parameters": sum(p.numel() for p in net.parameters()),
        "fusion": {"band_px": band_px, "min_confidence": min_confidence},
        "training": summary,
        "validation_product_net": ct.evaluate_product_net(net, data["val.npz"]),
        "validation_fused": fused_val,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "model_bytes": onnx_path.stat().st_size,
    }
    ct.write_training_record(out / "training.json", record)
    ct.write_model_card(out, record)
    if as_json:
        print_json(record)
        return
    typer.echo(f"wrote {onnx_path} ({record['model_bytes']} bytes)")
    _echo_validation(fused_val, "fused")


@evaluate_app.command("cutout")
def evaluate_cutout_cmd(
    n: int = typer.Option(100, "--n", help="Cases of each kind (studio, photo composite)."),
    seed: int = typer.Option(0, help="Seed of the cases (evaluate heroes uses 0)."),
    model: str = typer.Option(
        "original",
        help="original (U^2-Net-p), products (`train cutout`'s head), finetuned (`train "
        "cutout-finetune`'s network) or an .onnx path.",
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
        try:
            res = cut_out_product(image, model=net)
        except ValueError:
            results.append(None)  # cutout_report scores it as an empty mask
            raise
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


@train_app.command("cutout-finetune")
def train_cutout_finetune_cmd(
    work: Path = typer.Option(
        Path("cutout-finetune"), help="Folder of the validation shard and checkpoints."
    ),
    minutes: float = typer.Option(60.0, help="Training wall-clock budget (0: export --init only)."),
    batch_size: int = typer.Option(8, help="Pictures per step (fresh ones every step)."),
    crop: int = typer.Option(224, help="Training crop of the 320-px pictures (px)."),
    distill: float = typer.Option(
        0.25, help="Share of real photographs whose target is U^2-Net-p's own map."
    ),
    lr: float = typer.Option(1e-4, help="Peak Adam learning rate (cosine to a tenth)."),
    seed: int = typer.Option(0, help="Seed of the pictures."),
    threads: int = typer.Option(2, help="torch CPU threads."),
    init: Path | None = typer.Option(
        None, help="Start from (or, with --minutes 0, export) this state dict (.pt)."
    ),
    validate_every: float = typer.Option(10.0, help="Minutes between validations."),
    out: Path = typer.Option(
        DEFAULT_OUT, help=f"Writes OUT/{FINETUNED_NAME} and OUT/finetune.json."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Fine-tune U^2-Net-p itself on demo products (composited onto backgrounds that `evaluate
    heroes` never uses, studio renders, product-free pictures) and on real photographs cut as
    the original cuts them; export it as a single-input ONNX file that serving runs in
    U^2-Net-p's place (`TAILORSHOT_CUTOUT_MODEL=finetuned`)."""
    import os

    import torch

    from genservice.imaging.cutout import SalientObjectModel, bundled_u2netp_path
    from genservice.training import cutout_finetune as cf
    from genservice.training.cutout_data import (
        FUSION_VAL,
        WORLD_SEED,
        SampleMaker,
        make_shard,
        save_shard,
    )
    from genservice.training.cutout_train import load_shards

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if minutes < 0 or batch_size < 1 or threads < 1 or not 0 <= distill <= 1:
        fail(
            "--minutes, --batch-size, --threads, --distill: expected >= 0, >= 1, >= 1, 0..1, "
            f"got {minutes}, {batch_size}, {threads}, {distill}"
        )
    if not 32 <= crop <= 320:
        fail(f"--crop: expected 32..320 px, got {crop}")
    if minutes == 0 and init is None:
        fail("--minutes 0: expected --init STATE_DICT to export")
    if init is not None and not init.is_file():
        fail(f"--init: expected a state dict (.pt), got {init}")
    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    original = SalientObjectModel(bundled_u2netp_path(), cache_size=0, threads=1)
    maker = SampleMaker(original.raw_saliency)
    val_path = work / "fusion_val.npz"
    if not val_path.is_file():
        # As `train cutout` builds its held-out shard: the two models are scored alike.
        kinds, n, shard_seed = FUSION_VAL
        save_shard(val_path, make_shard(maker, n, seed=shard_seed, kinds=kinds))
    val = load_shards([val_path])
    net = cf.u2netp_module()
    if init is not None:
        try:
            net.load_state_dict(torch.load(init, weights_only=True))
        except RuntimeError as exc:
            fail(f"--init: {init} is not a U^2-Net-p state dict ({str(exc)[:200]})")
    summary: dict[str, Any] = {"init": str(init)} if init is not None else {}
    if minutes > 0:
        summary = cf.finetune(
            net,
            lambda rng: cf.training_batch(
                maker, original.raw_saliency, rng, batch_size, crop=crop, distill=distill
            ),
            val,
            minutes=minutes,
            lr=lr,
            seed=seed,
            folder=work,
            validate_every_min=validate_every,
            log=(lambda m: None) if as_json else typer.echo,
        )
    onnx_path = cf.export_onnx(net, out / FINETUNED_NAME)
    validation = cf.evaluate(net, val)
    record: dict[str, Any] = {
        "command": (
            f"tailorshot train cutout-finetune --work {work} --minutes {minutes:g} "
            f"--batch-size {batch_size} --crop {crop} --distill {distill:g} --lr {lr:g} "
            f"--seed {seed} --threads {threads}"
            + (f" --init {init}" if init is not None else "")
            + f" --out {out}"
        ),
        "world_seed": WORLD_SEED,
        "parameters": sum(p.numel() for p in net.parameters()),
        "training": summary,
        "validation": validation,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "model_bytes": onnx_path.stat().st_size,
    }
    (out / "finetune.json").write_text(json.dumps(record, indent=2) + "\n")
    if as_json:
        print_json(record)
        return
    typer.echo(f"wrote {onnx_path} ({record['model_bytes']} bytes)")
    _echo_validation(validation, "finetuned")
