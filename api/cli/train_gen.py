"""Generator training and evaluation commands: ``tailorshot train vae|unet|ip-adapter|lora``
and ``tailorshot evaluate generator``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from api.cli.app import evaluate_app, train_app
from api.cli.common import fail, load_settings, print_json

DEFAULT_OUT = Path("data/models/sd-tiny")
DEFAULT_IP_OUT = Path("data/models/ip-adapter-tiny")

# Options shared by the training commands: one definition each (help text as listed).
Threads = Annotated[int, typer.Option(help="torch CPU threads (0 = torch default).")]
Device = Annotated[str, typer.Option(help="cpu, cuda or auto.")]
Resume = Annotated[bool, typer.Option(help="Continue from the work folder's checkpoint.")]
Seed = Annotated[int, typer.Option(help="Seed of data order, noise and initialisation.")]
Work = Annotated[
    Path | None, typer.Option(help="Checkpoints and data cache (default HOME/training).")
]
Size = Annotated[int, typer.Option(help="Image side: 64 (shipped) or 128 (GPU recipe).")]
StopAfter = Annotated[int, typer.Option(help="End after this many steps (0 = all); resumable.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _work_root(work: Path | None) -> Path:
    if work is not None:
        return work
    return Path(load_settings().home) / "training"


def _threads(threads: int) -> None:
    # One thread avoids OpenMP spin-wait collapse on a shared 2-core machine (10x faster there).
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


@train_app.command("ip-adapter")
def train_ip_cmd(
    model: Path = typer.Option(DEFAULT_OUT, help="Frozen pipeline folder to adapt."),
    out: Path = typer.Option(DEFAULT_IP_OUT, help="Writes OUT/ip_adapter/."),
    steps: int = typer.Option(1000, help="Optimisation steps."),
    seed: Seed = 0,
    resume: Resume = False,
    work: Work = None,
    device: Device = "auto",
    batch_size: int = typer.Option(32, help="Latents per step."),
    threads: Threads = 1,
) -> None:
    """Train an IP-Adapter (image encoder + decoupled cross-attention) on a frozen model."""
    from genservice.training.recipes import train_ip_adapter_recipe

    _threads(threads)
    s = train_ip_adapter_recipe(
        model=model,
        out=out,
        work_root=_work_root(work),
        steps=steps,
        seed=seed,
        device=device,
        resume=resume,
        batch_size=batch_size,
    )
    print_json(s.__dict__)


@train_app.command("export-single-file")
def export_single_file_cmd(
    model: Path = typer.Option(DEFAULT_OUT, help="Diffusers pipeline folder (SD or SDXL)."),
    out: Path = typer.Option(..., help="The .safetensors file to write (original layout)."),
    config_out: Path = typer.Option(
        None, help="Also write the weightless config folder a loader needs offline."
    ),
    as_json: AsJson = False,
) -> None:
    """Write a pipeline folder as one original-layout (Civitai-style) .safetensors file."""
    from diffusers import DiffusionPipeline

    from genservice.backends.single_file import save_config_folder, save_single_file

    if not (model / "model_index.json").is_file():
        fail(f"--model: expected a diffusers folder with model_index.json, got {model}")
    if out.suffix != ".safetensors":
        fail(f"--out: expected a .safetensors file name, got {out}")
    pipe = DiffusionPipeline.from_pretrained(str(model))
    path = save_single_file(pipe, out)
    size = path.stat().st_size
    info = {"out": str(path), "bytes": size, "pipeline": type(pipe).__name__}
    if config_out is not None:
        info["config"] = str(save_config_folder(pipe, config_out))
    if as_json:
        print_json(info)
    else:
        typer.echo(f"wrote {path} ({size / 1e6:.1f} MB, {info['pipeline']})")


@train_app.command("lora")
def train_lora_cmd(
    images: Path = typer.Option(..., help="Folder of a store's product images (png/jpg)."),
    prompt: str = typer.Option(..., help='Instance prompt, e.g. "a photo of sks mug".'),
    model: str = typer.Option(str(DEFAULT_OUT), help="Base SD folder or hub id."),
    out: Path = typer.Option(Path("lora-out"), help="Writes pytorch_lora_weights.safetensors."),
    steps: int = typer.Option(400, help="Optimisation steps."),
    rank: int = typer.Option(4, help="LoRA rank."),
    lr: float = typer.Option(1e-4, help="Learning rate."),
    resolution: int = typer.Option(0, help="Training size (0 = the model's native size)."),
    seed: int = typer.Option(0, help="Seed."),
    resume: Resume = False,
    work: Path = typer.Option(None, help="Checkpoints (default HOME/training/lora)."),
    device: Device = "auto",
    threads: Threads = 1,
) -> None:
    """DreamBooth-style LoRA fine-tune of a Stable Diffusion checkpoint on product images."""
    from PIL import Image

    from genservice.training.common import LoopConfig, resolve_device
    from genservice.training.lora import LoraSpec, train_lora

    _threads(threads)
    files = sorted(
        p for p in images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")
    )
    if not files:
        fail(f"--images: expected png/jpg files in {images}, found none")
    dev = resolve_device(device)
    loop = train_lora(
        model=model,
        images=[Image.open(p) for p in files],
        prompt=prompt,
        out=out,
        cfg=LoopConfig(
            steps=steps, lr=lr, seed=seed, device=dev, warmup_steps=min(50, steps // 10)
        ),
        spec=LoraSpec(rank=rank, alpha=float(rank)),
        resolution=resolution or None,
        work_dir=(_work_root(work) / "lora") if work is None else work,
        resume=resume,
    )
    print_json(
        {
            "out": str(out),
            "steps": loop.steps,
            "seconds": round(loop.seconds, 1),
            "final_loss": sum(loop.losses[-20:]) / max(1, len(loop.losses[-20:])),
        }
    )


@train_app.command("vae")
def train_vae_cmd(
    steps: int = typer.Option(
        1500, help="Optimisation steps (cosine schedule length; 1500 as shipped)."
    ),
    stop_after: StopAfter = 0,
    seed: Seed = 0,
    resume: Resume = False,
    out: Path = typer.Option(DEFAULT_OUT, help="Model folder; the VAE goes to OUT/vae."),
    work: Work = None,
    device: Device = "auto",
    batch_size: int = typer.Option(32, help="Images per step."),
    lr: float = typer.Option(1e-3, help="Peak learning rate."),
    crop: int = typer.Option(
        -1, help="Train on random CROP x CROP windows (-1 = half of --size; 0 = full)."
    ),
    decoder_only: bool = typer.Option(
        False, help="Fine-tune only the decoder of OUT/vae (latent space unchanged)."
    ),
    threads: Threads = 1,
    size: Size = 64,
) -> None:
    """Train the small AutoencoderKL (SIZE RGB <-> 4 x SIZE/4 x SIZE/4 latents) on demo
    scenes."""
    from genservice.training.recipes import DataSpec, size_recipe, train_vae_recipe

    try:
        size_recipe(size)
    except ValueError as exc:
        fail(f"--{exc}")
    if crop < 0:
        crop = size // 2
    _threads(threads)
    s = train_vae_recipe(
        out=out,
        work_root=_work_root(work),
        steps=steps,
        stop_after=stop_after or None,
        seed=seed,
        device=device,
        resume=resume,
        batch_size=batch_size,
        lr=lr,
        crop=crop or None,
        decoder_only=decoder_only,
        data=DataSpec(size=size),
    )
    print_json(s.__dict__)


@train_app.command("unet")
def train_unet_cmd(
    steps: int = typer.Option(
        8000, help="Optimisation steps (cosine schedule length; 8000 as shipped)."
    ),
    stop_after: StopAfter = 0,
    seed: Seed = 0,
    resume: Resume = False,
    out: Path = typer.Option(DEFAULT_OUT, help="Pipeline folder (needs OUT/vae)."),
    ip_out: Path = typer.Option(DEFAULT_IP_OUT, help="Where to copy the IP-Adapter."),
    ip_adapter: bool = typer.Option(True, help="Train the IP-Adapter jointly."),
    work: Work = None,
    device: Device = "auto",
    batch_size: int = typer.Option(32, help="Latents per step."),
    threads: Threads = 1,
    size: Size = 64,
    compile_mode: str = typer.Option(
        "",
        "--compile",
        help="torch.compile the step with this mode (default, reduce-overhead, ...); "
        "empty = eager.",
    ),
) -> None:
    """Train text encoder + UNet (and the IP-Adapter) and write the diffusers folder."""
    from genservice.training.recipes import DataSpec, size_recipe, train_unet_recipe

    try:
        size_recipe(size)
    except ValueError as exc:
        fail(f"--{exc}")
    _threads(threads)
    s = train_unet_recipe(
        out=out,
        work_root=_work_root(work),
        ip_out=ip_out,
        steps=steps,
        stop_after=stop_after or None,
        seed=seed,
        device=device,
        resume=resume,
        batch_size=batch_size,
        with_ip_adapter=ip_adapter,
        data=DataSpec(size=size),
        compile_mode=compile_mode or None,
    )
    print_json(s.__dict__)


@evaluate_app.command("generator")
def evaluate_generator_cmd(
    model: Path = typer.Option(DEFAULT_OUT, help="Pipeline folder to evaluate."),
    ip_dir: Path = typer.Option(None, help="Folder holding ip_adapter/ (default MODEL)."),
    n: int = typer.Option(200, help="Held-out captions to generate."),
    seed: int = typer.Option(0, help="Seed of the generations and reference choice."),
    steps: int = typer.Option(20, help="DDIM steps."),
    guidance: float = typer.Option(5.0, help="Classifier-free guidance scale."),
    ip_scale: float = typer.Option(0.8, help="IP-Adapter scale for the colour-shift test."),
    sheet: Path = typer.Option(None, help="Also write a contact sheet PNG here."),
    clip: bool = typer.Option(True, help="Also judge with the small CLIP when it exists."),
    work: Path = typer.Option(None, help="Data cache and judge (default HOME/training)."),
    as_json: AsJson = False,
    threads: Threads = 1,
) -> None:
    """Colour / category match on held-out captions and the IP-Adapter colour shift."""
    import numpy as np

    from genservice.training.data import get_dataset
    from genservice.training.evaluate import evaluate_generator, fit_judge
    from genservice.training.recipes import DataSpec, load_data

    _threads(threads)
    if not (model / "model_index.json").is_file():
        fail(f"--model: expected a diffusers folder with model_index.json, got {model}")
    root = _work_root(work)
    ds = load_data(DataSpec(), root)
    check = get_dataset(cache=root / "demo64_s1_n600.npz", n=600, size=64, seed=1)
    tr = ds.train
    judge = fit_judge(
        work_dir=root / "eval",
        images=np.concatenate([tr.images, tr.refs]),
        colours=tr.colours * 2,
        categories=tr.categories * 2,
        colour_names=list(ds.palette),
        category_names=ds.categories,
        seed=0,
    )
    extra = {}
    if clip:
        cj = _clip_judge(list(ds.palette), ds.categories)
        if cj is not None:
            extra["clip"] = cj
    out = evaluate_generator(
        model_dir=model,
        dataset=ds,
        check_renders=check,
        judge=judge,
        n=n,
        seed=seed,
        steps=steps,
        guidance=guidance,
        ip_scale=ip_scale,
        ip_dir=ip_dir,
        extra_judges=extra,
        sheet_path=sheet,
        progress=not as_json,
    )
    d = out.to_json()
    if as_json:
        print_json(d)
    else:
        for k in ("n", "colour_match", "category_match", "ip_adapter_colour_shift"):
            typer.echo(f"{k:26s} {d[k]}")
        typer.echo(f"judges on true renders     {d['judge_accuracy_on_renders']}")


def _clip_judge(colours: list[str], categories: list[str]):  # type: ignore[no-untyped-def]
    """Zero-shot colour and category judge from the small CLIP, or None when unavailable."""
    try:
        import numpy as np
        from PIL import Image

        from recsys.embedders.clip import OpenClipEmbedder

        emb = OpenClipEmbedder.load("default")
        tc = emb.embed_texts([f"a photo of a {c} product" for c in colours])
        tk = emb.embed_texts([f"a photo of a {k}" for k in categories])
    except Exception:
        return None

    def judge(images):  # type: ignore[no-untyped-def]
        e = emb.embed_images([Image.fromarray(im) for im in images])
        return (
            [colours[i] for i in np.argmax(e @ tc.T, axis=1)],
            [categories[i] for i in np.argmax(e @ tk.T, axis=1)],
        )

    return judge
