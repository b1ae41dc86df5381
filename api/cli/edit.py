"""``tailorshot edit``: one edit op (recolor, material, background, restore, adjust,
remove-background) on a catalog product's image or an image file, written as a PNG that
records the op, its parameters, the source hash and the model in its metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from api.cli.app import app
from api.cli.common import fail, load_settings, open_engine, print_json
from data.files import under_home

OPS = ("recolor", "material", "background", "restore", "adjust", "remove-background")


def product_image_path(sku: str) -> Path:
    """The image file of the catalog product (or variant) ``sku``; exits with a clear error
    when the sku, its image or the file is missing (the lookup ``generate`` uses)."""
    from sqlmodel import Session

    from data.repos.catalog import resolve_sku

    settings = load_settings()
    with Session(open_engine(settings)) as session:
        match = resolve_sku(session, sku=sku)
    if match is None:
        fail(f"--product: no product with sku {sku!r} in the catalog (nor a variant)")
    if not match.image:
        fail(f"--product: product {sku!r} has no image")
    path = under_home(match.image, settings.home)
    if not path.is_file():
        fail(f"product {sku!r}: image file {str(path)!r} not found")
    return path


def scene_params(
    prompt: str | None, user_id: str | None, *, seed: int, shadow: float
) -> dict[str, Any]:
    """The parameters of a generated background: the prompt, or the user's taste profile
    resolved to approved style terms (``api.services.edits.profile_scene_terms``; the user id
    goes no further), and the configured hero generator (loaded here: slow)."""
    from sqlmodel import Session

    from api.composition import build_components, load_generator
    from api.services.edits import EditRejected, profile_scene_terms

    settings = load_settings()
    params: dict[str, Any] = {"seed": seed, "shadow": shadow}
    if user_id is not None:
        comps = build_components(settings, engine=open_engine(settings))
        with Session(comps.engine) as session:
            try:
                params["terms"] = profile_scene_terms(comps.orchestrator, session, user_id)
            except EditRejected as exc:
                fail(f"--user-id: {exc}")
    else:
        params["prompt"] = prompt
    params["generator"] = load_generator(settings)
    return params


@app.command("edit")
def edit_cmd(
    op: str = typer.Option(..., "--op", help=f"Edit op: {' | '.join(OPS)}."),
    out: Path = typer.Option(..., "--out", help="Output PNG (metadata records the edit)."),
    product: str | None = typer.Option(None, "--product", help="SKU of a catalog product."),
    image: Path | None = typer.Option(None, "--image", help="Or an image file."),
    mask: Path | None = typer.Option(
        None, "--mask", help="Greyscale mask PNG (white = edit); default: the cut-out."
    ),
    mask_part: str | None = typer.Option(
        None,
        "--mask-part",
        help="recolor / material: only a part of the product: colour:COLOUR[:DE], dominant, "
        "secondary, top|bottom|left|right[:F], sole, upper (docs/EDITS.md).",
    ),
    colour: str | None = typer.Option(None, "--colour", help='recolor: "#1f4fd1" or a name.'),
    texture: str | None = typer.Option(
        None,
        "--texture",
        help="material: image file or brick|grass|gravel|leather|denim|wood|marble.",
    ),
    texture_scale: float = typer.Option(1.0, "--texture-scale", help="material: tile size."),
    seed: int = typer.Option(
        0, "--seed", help="material: texture noise seed; background: the scene's seed."
    ),
    studio: str | None = typer.Option(None, "--studio", help="background: backdrop colour."),
    gradient: float = typer.Option(0.0, "--gradient", help="background: 0-40 (CIELAB L)."),
    shadow: float = typer.Option(0.35, "--shadow", help="background: contact shadow 0-1."),
    prompt: str | None = typer.Option(
        None, "--prompt", help='background: a generated scene from text ("beach, golden hour").'
    ),
    user_id: str | None = typer.Option(
        None,
        "--user-id",
        help="background: a generated scene from the user's taste profile (approved terms).",
    ),
    scale: int = typer.Option(4, "--scale", help="restore: 2 or 4."),
    denoise: bool = typer.Option(False, "--denoise", help="restore: denoise first."),
    brightness: float = typer.Option(1.0, "--brightness", help="adjust: factor (1 = same)."),
    contrast: float = typer.Option(1.0, "--contrast", help="adjust: factor (1 = same)."),
    saturation: float = typer.Option(1.0, "--saturation", help="adjust: factor (1 = same)."),
    sharpness: float = typer.Option(0.0, "--sharpness", help="adjust: unsharp amount 0-4."),
    auto_exposure: bool = typer.Option(
        False, "--auto-exposure", help="adjust / restore: levels and gamma."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print what was done and timings."),
) -> None:
    """Edit a product image: recolour, change material or background, restore, adjust or
    remove the background. Outside the mask nothing changes (bit-exact)."""
    import time

    from PIL import Image, UnidentifiedImageError

    from genservice.edits import apply_edit
    from genservice.errors import GenerationError

    if op not in OPS:
        fail(f"--op: expected one of {list(OPS)}, got {op!r}")
    if (product is None) == (image is None):
        fail("--product / --image: expected exactly one of them")
    if out.suffix.lower() != ".png":
        fail(f"--out: expected a .png file name, got {str(out)!r}")
    src_path = product_image_path(product) if product is not None else image
    assert src_path is not None
    if not src_path.is_file():
        fail(f"--image: expected an image file, got {str(src_path)!r} (not found)")
    try:
        with Image.open(src_path) as im:
            im.load()
            src = im.copy()
        mask_img = None
        if mask is not None:
            with Image.open(mask) as m:
                mask_img = m.convert("L")
    except (UnidentifiedImageError, OSError) as exc:
        fail(f"could not read an image: {exc}")
    params: dict[str, Any] = {}
    if mask_part and op not in ("recolor", "material"):
        fail(f"--mask-part: works with recolor and material, not {op}")
    if op == "recolor":
        if not colour:
            fail('--colour: recolor needs a colour ("#1f4fd1" or a name)')
        params = {"colour": colour}
    elif op == "material":
        if not texture:
            fail("--texture: material needs a texture file or name")
        params = {"texture": texture, "scale": texture_scale, "seed": seed}
    elif op == "background":
        given = [
            n for n, v in (("--studio", studio), ("--prompt", prompt), ("--user-id", user_id)) if v
        ]
        if len(given) != 1:
            fail(
                "--studio / --prompt / --user-id: background needs exactly one of --studio, "
                f"--prompt, --user-id; got {given or 'none'}"
            )
        if studio:
            params = {"studio": studio, "gradient": gradient, "shadow": shadow}
        else:
            params = scene_params(prompt, user_id, seed=seed, shadow=shadow)
    if mask_part:
        params["part"] = mask_part
    elif op == "restore":
        params = {"scale": scale, "denoise": denoise, "auto_exposure": auto_exposure}
    elif op == "adjust":
        params = {
            "brightness": brightness,
            "contrast": contrast,
            "saturation": saturation,
            "sharpness": sharpness,
            "auto_exposure": auto_exposure,
        }
    if op == "restore" or "generator" in params:
        from tqdm import tqdm

        scene = "generator" in params
        bar = tqdm(desc="scene" if scene else "restore", unit="step" if scene else "tile",
                   disable=as_json)  # fmt: skip

        def on_progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        params["progress"] = on_progress
    t0 = time.perf_counter()
    try:
        result = apply_edit(op, src, mask=mask_img, **params)
    except (ValueError, GenerationError) as exc:
        fail(str(exc))
    total = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    result.save(out)
    info = {
        "op": result.op,
        "params": result.params,
        "source": str(src_path),
        "out": str(out),
        "size": list(result.image.size),
        "mode": result.image.mode,
        "mask_pixels": None if result.mask is None else int((result.mask >= 0.5).sum()),
        "metadata": result.metadata,
        "timings": {**result.timings, "total": round(total, 4)},
    }
    if "scene_prompt" in result.params:
        info["scene_prompt"] = result.params["scene_prompt"]
    if as_json:
        print_json(info)
    else:
        typer.echo(
            f"{out}: {op} {result.params} -> {result.image.size[0]}x{result.image.size[1]} "
            f"{result.image.mode}, {total:.2f} s"
        )
