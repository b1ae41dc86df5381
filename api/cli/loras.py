"""``tailorshot loras list|add|remove`` (the LoRA adapters ``generation.loras`` may name) and
``tailorshot brand-kit set|show|clear`` (the store's brand kit drawn on heroes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from api.cli.app import app
from api.cli.common import fail, load_settings, print_json

loras_app = typer.Typer(
    help="LoRA/DreamBooth adapters: register by name, use with generation.loras.",
    no_args_is_help=True,
)
brand_kit_app = typer.Typer(
    help="The store's brand kit (font, colours, logo, price, call to action).",
    no_args_is_help=True,
)
app.add_typer(loras_app, name="loras")
app.add_typer(brand_kit_app, name="brand-kit")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@loras_app.command("list")
def loras_list(as_json: JsonOpt = False) -> None:
    """Known adapters (folders under <home>/models/loras and registered paths), with the
    scale generation.loras gives each (absent: not in use)."""
    from genservice.backends.loras import list_loras

    settings = load_settings()
    in_use = settings.generation.loras
    rows = [{**i.to_dict(), "scale": in_use.get(i.name)} for i in list_loras(settings.home)]
    known = {r["name"] for r in rows}
    # Adapters in use by path (not registered) are listed too.
    rows += [
        {"name": ref, "scale": s, "source": "path"} for ref, s in in_use.items() if ref not in known
    ]
    if as_json:
        print_json({"loras": rows, "model_identity": settings.generation.model_identity})
        return
    if not rows:
        typer.echo("no adapters (tailorshot loras add NAME FOLDER)")
    for r in rows:
        scale = "-" if r.get("scale") is None else f"{r['scale']:g}"
        flag = "" if r.get("ok", True) else "  (weights missing)"
        typer.echo(f"{r['name']:<24s} scale {scale:<5s} {r.get('path', r['name'])}{flag}")


@loras_app.command("add")
def loras_add(
    name: Annotated[str, typer.Argument(help="Name generation.loras uses.")],
    folder: Annotated[Path, typer.Argument(help="Folder written by 'tailorshot train lora'.")],
    copy: Annotated[
        bool, typer.Option("--copy", help="Copy it to <home>/models/loras/NAME (else register).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Register an adapter folder by name (use it: TAILORSHOT_GENERATION__LORAS='{"NAME": 1.0}')."""
    from genservice.backends.loras import add_lora

    settings = load_settings()
    try:
        info = add_lora(settings.home, name, folder, copy=copy)
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        print_json(info.to_dict())
    else:
        typer.echo(f"added {info.name} ({info.source}): {info.path}")


@loras_app.command("remove")
def loras_remove(name: Annotated[str, typer.Argument(help="A registered name.")]) -> None:
    """Forget an adapter (a copied folder is deleted; a registered folder stays on disk)."""
    from genservice.backends.loras import remove_lora

    settings = load_settings()
    try:
        info = remove_lora(settings.home, name)
    except ValueError as exc:
        fail(str(exc))
    if name in settings.generation.loras:
        typer.echo(f"warning: generation.loras still names {name!r}", err=True)
    typer.echo(f"removed {info.name} ({info.source})")


@brand_kit_app.command("set")
def brand_kit_set(
    file: Annotated[Path, typer.Option("--file", help="A brand kit JSON file.")],
    as_json: JsonOpt = False,
) -> None:
    """Validate a kit file and install it as <home>/brand_kit.json; its font and logo files
    are copied to <home>/brand/ so the home folder stays self-contained."""
    from data.files import atomic_write_json
    from genservice.brandkit import BRAND_KIT_FILE, load_brand, read_brand_kit

    settings = load_settings()
    home = settings.home
    try:
        kit = read_brand_kit(file)
        load_brand(kit, home=file.parent)  # files exist and open
    except ValueError as exc:
        fail(str(exc))
    data = kit.model_dump()
    for key in ("font", "logo"):
        ref = data.get(key)
        if ref:
            src = Path(ref) if Path(ref).is_absolute() else file.parent / ref
            dest = home / "brand" / f"{key}{src.suffix.lower()}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            data[key] = str(dest.relative_to(home))
    atomic_write_json(home / BRAND_KIT_FILE, data, indent=2, sort_keys=True)
    if settings.generation.brand_kit is not None:
        typer.echo("warning: the generation.brand_kit setting overrides this file", err=True)
    if as_json:
        print_json({"file": str(home / BRAND_KIT_FILE), "kit": data})
    else:
        typer.echo(f"brand kit {kit.name!r} installed: {home / BRAND_KIT_FILE}")


@brand_kit_app.command("show")
def brand_kit_show() -> None:
    """The kit in use (the generation.brand_kit setting, else <home>/brand_kit.json), as JSON."""
    from genservice.brandkit import brand_kit_for, load_brand

    settings = load_settings()
    gen = settings.generation
    try:
        kit = brand_kit_for(gen.brand_kit, gen.brand_kit_file, home=settings.home)
        if kit is None:
            fail("no brand kit (tailorshot brand-kit set --file kit.json)", code=1)
        brand = load_brand(kit, home=settings.home)
    except ValueError as exc:
        fail(str(exc))
    typer.echo(json.dumps({**kit.model_dump(), "font_path": brand.font_path}, indent=2))


@brand_kit_app.command("clear")
def brand_kit_clear() -> None:
    """Remove <home>/brand_kit.json and <home>/brand/ (heroes get plain headlines again)."""
    from genservice.brandkit import BRAND_KIT_FILE

    home = load_settings().home
    path = home / BRAND_KIT_FILE
    if not path.is_file():
        fail(f"no brand kit file at {str(path)!r}", code=1)
    path.unlink()
    shutil.rmtree(home / "brand", ignore_errors=True)
    typer.echo(f"removed {path}")
