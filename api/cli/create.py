"""``tailorshot create`` (new product images from a description or a sketch),
``tailorshot train controlnet`` and ``tailorshot evaluate creations`` (issue 21)."""

from __future__ import annotations

from pathlib import Path

import typer

from api.cli.app import app, evaluate_app, train_app
from api.cli.common import fail, load_settings, print_json

DEFAULT_CONTROLNET_OUT = Path("data/models/controlnet-tiny")


def _threads(threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


def _creator(controlnet: str | None):  # type: ignore[no-untyped-def]
    from genservice.creation.pipeline import Creator
    from genservice.training.random_pipelines import build_tiny_pipeline

    settings = load_settings()
    return Creator.from_config(
        settings.generation,
        home=settings.home,
        controlnet=controlnet,
        build_fallback=build_tiny_pipeline,
    )


@app.command("create")
def create_cmd(
    text: str = typer.Option(..., "--text", help='Product description, e.g. "a red handbag".'),
    out: Path = typer.Option(..., "--out", help="Folder for the candidate PNGs."),
    category: str | None = typer.Option(None, "--category", help="Product category."),
    n: int = typer.Option(4, "--n", help="Candidates (seeds SEED .. SEED+N-1), 1-8."),
    seed: int = typer.Option(0, "--seed", help="Seed of the first candidate."),
    size: int = typer.Option(1080, "--size", help="Square output side in pixels (64-2048)."),
    background: str = typer.Option(
        "white", "--background", help="white | studio | grey | #rrggbb."
    ),
    sketch: Path | None = typer.Option(None, "--sketch", help="A line drawing or colour sketch."),
    sketch_mode: str = typer.Option(
        "auto",
        "--sketch-mode",
        help="auto (the measured best when a ControlNet is configured, else img2img) | "
        "controlnet (ControlNet from the outline at a stated strength) | img2img.",
    ),
    controlnet: str = typer.Option(
        "auto",
        "--controlnet",
        help="auto (shipped controlnet-tiny with the embedded model) | folder | .safetensors "
        "| hub id | none.",
    ),
    shape_guide: bool = typer.Option(
        True,
        "--shape-guide/--no-shape-guide",
        help="Without --sketch: start from the category's typical silhouette (learned from the "
        "demo catalog's training renders) when the category is known (--category or named in "
        "the text) and the model is the embedded one; --no-shape-guide: from noise.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    threads: int = typer.Option(1, "--threads", help="torch CPU threads (0 = default)."),
) -> None:
    """Create N candidate detail-page images of a new product (PNG metadata marks them as
    generated)."""
    from PIL import Image

    from genservice.creation.request import CreationRejected, CreationRequest
    from genservice.errors import GenerationError

    _threads(threads)
    try:
        req = CreationRequest(
            text=text,
            category=category,
            n=n,
            seed=seed,
            size=size,
            background=background,
            sketch_mode=sketch_mode,
            shape_guide=shape_guide,
        )
    except CreationRejected as exc:
        fail(str(exc))
    image = None
    if sketch is not None:
        if not sketch.is_file():
            fail(f"--sketch: file {str(sketch)!r} not found")
        try:
            image = Image.open(sketch)
            image.load()
        except OSError as exc:
            fail(f"--sketch: not an image ({exc})")
    creator = _creator(None if controlnet.lower() == "none" else controlnet)
    try:
        result = creator.create(req, sketch=image)
    except (CreationRejected, GenerationError) as exc:
        fail(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for c in result.candidates:
        path = out / f"creation_s{c.seed}.png"
        path.write_bytes(c.png)
        files.append(str(path))
    info = {
        "files": files,
        "prompt": result.prompt,
        "source": result.source,
        "size": size,
        "max_product_upscale": max(c.product_upscale for c in result.candidates),
        "cutout": [c.cutout_method for c in result.candidates],
        "timings": result.timings,
    }
    if as_json:
        print_json(info)
    else:
        for f in files:
            typer.echo(f)
        typer.echo(f"prompt: {result.prompt} ({result.source})")


@train_app.command("controlnet")
def train_controlnet_cmd(
    model: Path = typer.Option(Path("data/models/sd-tiny"), help="Frozen base pipeline folder."),
    out: Path = typer.Option(DEFAULT_CONTROLNET_OUT, help="ControlNet folder to write."),
    steps: int = typer.Option(2000, help="Planned optimisation steps."),
    pairs: int = typer.Option(2000, help="Demo sketch/render pairs to render."),
    batch_size: int = typer.Option(16, help="Pairs per step."),
    lr: float = typer.Option(1e-3, help="Peak learning rate."),
    budget_s: float = typer.Option(780.0, help="Stop after about this many seconds (0 = none)."),
    seed: int = typer.Option(0, help="Seed."),
    work: Path | None = typer.Option(None, help="Work folder (default HOME/training)."),
    threads: int = typer.Option(1, help="torch CPU threads (0 = default)."),
    init_from: Path | None = typer.Option(
        None, "--init-from", help="Continue from this ControlNet folder (e.g. the shipped one)."
    ),
) -> None:
    """Train a small ControlNet (edge sketches of demo renders -> renders) for sd-tiny."""
    from genservice.training.controlnet import train_controlnet

    _threads(threads)
    if not (model / "model_index.json").is_file():
        fail(f"--model: expected a diffusers folder with model_index.json, got {model}")
    if init_from is not None and not (init_from / "config.json").is_file():
        fail(f"--init-from: expected a ControlNet folder with config.json, got {init_from}")
    root = work if work is not None else Path(load_settings().home) / "training"
    res = train_controlnet(
        model=model,
        out=out,
        work_dir=root / "controlnet",
        n_pairs=pairs,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        time_budget_s=budget_s or None,
        init_from=init_from,
    )
    print_json(res.__dict__)


@evaluate_app.command("creations")
def evaluate_creations_cmd(
    n: int = typer.Option(200, "--n", help="Held-out demo captions to create from (0: none)."),
    sketches: int = typer.Option(100, "--sketches", help="Held-out demo products to sketch."),
    size: int = typer.Option(1080, "--size", help="Requested output side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed of the first creation."),
    controlnet: str = typer.Option("auto", "--controlnet", help="As for create."),
    sheet: Path | None = typer.Option(None, "--sheet", help="Also write a contact sheet PNG."),
    work: Path | None = typer.Option(None, "--work", help="Data cache + judge (HOME/training)."),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Do not reuse or keep diffusion outputs (WORK/creations_cache)."
    ),
    sketch_modes: str = typer.Option(
        "img2img,text,controlnet",
        "--sketch-modes",
        help="Comma list of sketch conditionings to measure (text = no sketch, the floor).",
    ),
    spread: bool = typer.Option(
        False,
        "--spread",
        help="Take the N captions evenly over the held-out list (every len/N-th) instead of the "
        "first N (the list is sorted by caption: its first ones are all black products).",
    ),
    judge_kind: str = typer.Option(
        "page",
        "--judge",
        help="page: a judge also trained on true renders shown as detail pages (any place and "
        "scale, plain ground) sees each page as it is; scene: evaluate generator's judge sees "
        "each page re-framed like its renders (both are reported with page).",
    ),
    which: str = typer.Option(
        "held-out",
        "--captions",
        help="held-out: the 200 captions the generator never saw (the acceptance figure); "
        "validation: N seeded training captions (where the creator's choices are checked).",
    ),
    framing: str = typer.Option(
        "native",
        "--framing",
        help="native: the product where and as large as the model drew it (the creator's "
        "default); centred: its crop fitted into 0.8 of the side.",
    ),
    shape_guide: bool = typer.Option(
        True,
        "--shape-guide/--no-shape-guide",
        help="Text creations start from their category's shape guide, as the product does "
        "(--no-shape-guide: from noise, the earlier figures).",
    ),
    guide_strength: float | None = typer.Option(
        None, "--guide-strength", help="Strength of the guide path (default: the shipped one)."
    ),
    guide_mode: str | None = typer.Option(
        None, "--guide-mode", help="auto | controlnet | img2img (default: the shipped one)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    threads: int = typer.Option(1, "--threads", help="torch CPU threads (0 = default)."),
) -> None:
    """Judge's colour/category accuracy of creations from held-out captions at SIZE, the
    largest product upscale after restoration, and sketch adherence (silhouette IoU)."""
    import numpy as np

    from genservice.training.creation_eval import (
        evaluate_creations,
        fit_page_judge,
        pick_captions,
        validation_captions,
    )
    from genservice.training.evaluate import fit_judge
    from genservice.training.recipes import DataSpec, load_data

    _threads(threads)
    if judge_kind not in ("page", "scene"):
        fail(f"--judge: expected page or scene, got {judge_kind!r}")
    modes = [m.strip() for m in sketch_modes.split(",") if m.strip()]
    if not modes or set(modes) - {"img2img", "text", "controlnet"}:
        fail(
            f"--sketch-modes: expected img2img, text, controlnet (comma list), got {sketch_modes!r}"
        )
    root = work if work is not None else Path(load_settings().home) / "training"
    ds = load_data(DataSpec(), root)
    if n < 0 or n > len(ds.held_out):
        fail(f"--n: expected at most {len(ds.held_out)} held-out captions, got {n}")
    tr = ds.train
    judge = fit_judge(
        work_dir=root / "eval",
        images=np.concatenate([tr.images, tr.refs]),
        colours=tr.colours * 2,
        categories=tr.categories * 2,
        colour_names=list(ds.palette),
        category_names=ds.categories,
        seed=0,
        progress=not as_json,
    )
    page_judge, page_acc = None, None
    if judge_kind == "page" and n > 0:
        page_judge, page_acc = fit_page_judge(
            work_dir=root / "eval", dataset=ds, progress=not as_json
        )
    creator = _creator(None if controlnet.lower() == "none" else controlnet)
    if framing not in ("native", "centred"):
        fail(f"--framing: expected native or centred, got {framing!r}")
    creator.framing = framing
    if not shape_guide:
        creator.shape_guides = None
    if guide_strength is not None:
        if not 0.0 < guide_strength <= 1.0:
            fail(f"--guide-strength: expected (0, 1], got {guide_strength}")
        creator.guide_strength = guide_strength
    if guide_mode is not None:
        if guide_mode not in ("auto", "controlnet", "img2img"):
            fail(f"--guide-mode: expected auto, controlnet or img2img, got {guide_mode!r}")
        creator.guide_mode = guide_mode
    if which == "validation":
        caps = validation_captions(tr, ds.held_out, n, seed=seed)
    elif which == "held-out":
        caps = [(h.caption, h.colour, h.category) for h in pick_captions(ds.held_out, n, spread)]
    else:
        fail(f"--captions: expected held-out or validation, got {which!r}")
    out = evaluate_creations(
        creator=creator,
        captions=caps,
        judge=judge,
        size=size,
        sketches=sketches,
        seed=seed,
        sheet_path=sheet,
        progress=not as_json,
        cache_dir=None if no_cache else root / "creations_cache",
        sketch_modes=modes,
        page_judge=page_judge,
        page_judge_accuracy=page_acc,
        training_captions=set(tr.captions),
    )
    d = out.to_json()
    if as_json:
        print_json(d)
    else:
        for k, v in d.items():
            if k != "extra":
                typer.echo(f"{k:28s} {v}")
