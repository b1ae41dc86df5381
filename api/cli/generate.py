"""``tailorshot generate``: one hero image for a catalog product, written to a file."""

from __future__ import annotations

from pathlib import Path

import typer

from api.cli.app import app
from api.cli.common import fail, load_settings, open_engine, print_json
from data.files import under_home


@app.command()
def generate(
    product: str = typer.Option(
        ..., "--product", help="SKU of a catalog product or of one of its variants."
    ),
    out: Path = typer.Option(..., "--out", help="Output file (.png or .webp)."),
    terms: str = typer.Option(
        "", "--terms", help='Style terms, "term:weight, term, ..." (weight defaults to 1).'
    ),
    reference: list[Path] = typer.Option(
        [], "--reference", help="Reference image for IP-Adapter (repeatable)."
    ),
    placement: str = typer.Option("banner", "--placement", help="banner | square | story."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same image)."),
    headline: str | None = typer.Option(None, "--headline", help="Optional headline text."),
    steps: int | None = typer.Option(None, "--steps", help="Override denoising steps."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Generate a hero image for PRODUCT and write it to OUT; prints the brief hash and
    per-stage timings. The product's pixels are kept exactly (checked before writing)."""
    from sqlmodel import Session
    from tqdm import tqdm

    from data.repos.catalog import resolve_sku
    from genservice.brandkit import brand_id
    from genservice.brief import CreativeBrief, Placement, ProductRef, file_sha256, parse_terms
    from genservice.generator import HeroGenerator

    settings = load_settings()
    try:
        place = Placement.preset(placement)
    except ValueError as exc:
        fail(str(exc))
    if out.suffix.lower() not in {".png", ".webp"}:
        fail(f"--out: expected a .png or .webp file name, got {str(out)!r}")
    for ref in reference:
        if not ref.is_file():
            fail(f"--reference: expected an image file, got {str(ref)!r} (not found)")
    engine = open_engine(settings)
    with Session(engine) as session:
        match = resolve_sku(session, sku=product)  # a variant sku names its product
    if match is None:
        fail(f"--product: no product with sku {product!r} in the catalog (nor a variant)")
    row, image = match.product, match.image  # a variant's own image when it has one
    if not image:
        fail(f"--product: product {product!r} has no image")
    image_path = under_home(image, settings.home)
    if not image_path.is_file():
        fail(f"product {product!r}: image file {str(image_path)!r} not found")

    gen_config = settings.generation.model_copy(
        update={"output_format": "webp" if out.suffix.lower() == ".webp" else "png"}
    )
    if steps is not None:
        gen_config = gen_config.model_copy(update={"num_inference_steps": steps})
    generator = HeroGenerator.from_config(gen_config, home=settings.home)
    refs = tuple(str(r.resolve()) for r in reference)
    hashes = {r: file_sha256(r) for r in refs}
    hashes[image] = file_sha256(str(image_path))
    brief = CreativeBrief(
        product=ProductRef(
            id=str(row.id),
            title=match.title,
            image=image,
            category=row.category,
            # A variant's own price, else the product's (a brand kit may draw it).
            price=(match.variant.price if match.variant is not None else None) or row.price,
        ),
        placement=place,
        style_terms=parse_terms(terms),
        references=refs,
        seed=seed,
        model_id=gen_config.model_identity,
        headline=headline,
        content_hashes=tuple(hashes.items()),
        brand_id=brand_id(gen_config.brand_kit, gen_config.brand_kit_file, home=settings.home),
    )
    bar = tqdm(
        total=gen_config.num_inference_steps,
        desc="denoising",
        unit="step",
        disable=as_json,
        leave=False,
    )

    def on_progress(step: int, total: int) -> None:
        bar.total = total
        bar.n = step
        bar.refresh()

    try:
        result = generator.generate(brief, progress=on_progress)
    except Exception as exc:  # a clear message, no traceback
        fail(f"generation failed: {type(exc).__name__}: {exc}", code=1)
    finally:
        bar.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(generator.store.get(result.image_key))
    timings = {k: round(v, 4) for k, v in result.timings.items()}
    summary: dict[str, object] = {
        "brief_hash": result.brief_hash,
        "image_key": result.image_key,
        "out": str(out),
        "cached": result.cached,
        "product_box": result.metadata.get("product_box"),
        "timings": timings,
    }
    if as_json:
        print_json(summary)
    else:
        typer.echo(f"brief_hash  {result.brief_hash}")
        typer.echo(f"image_key   {result.image_key}{'  (cached)' if result.cached else ''}")
        typer.echo(f"product_box {summary['product_box']}")
        typer.echo(f"wrote       {out}")
        for k, v in timings.items():
            typer.echo(f"{k:<11s} {v:.3f}s")
