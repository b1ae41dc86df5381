"""``tailorshot import catalog|events FILE``: streaming, validated, idempotent imports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

import typer

from api.cli.app import import_app
from api.cli.common import fail, load_settings, open_engine

_MAP_HELP = "Column mapping OURS=THEIRS, repeatable (e.g. --map sku=item_code --map ts=time)."


def _run(
    kind: str,
    file: Path,
    fmt: str | None,
    mapping: list[str] | None,
    chunk_size: int,
    errors: Path | None,
    as_json: bool,
    catalog_options: dict[str, Any] | None = None,
) -> None:
    from data.ingest import import_catalog, import_events
    from data.ingest.importer import parse_mapping

    try:
        parsed = parse_mapping(mapping)
    except ValueError as exc:
        fail(str(exc))
    settings = load_settings()
    engine = open_engine(settings)
    extra: dict[str, Any] = {}
    if kind == "catalog":
        from data.ingest.images import ImageFetcher

        opts = catalog_options or {}
        try:
            fetcher = (
                ImageFetcher(
                    home=settings.home,
                    timeout_s=opts["image_timeout"],
                    max_bytes=int(opts["image_max_mb"] * 1024 * 1024),
                )
                if opts.get("fetch_images", True)
                else None
            )
        except ValueError as exc:
            fail(str(exc))
        extra = {
            "preset": opts.get("preset"),
            "facets": tuple(opts.get("facets") or ()),
            "facet_separators": opts.get("facet_separators"),
            "fetcher": fetcher,
        }
    errors_out: TextIO | None = errors.open("w") if errors else None
    try:
        if kind == "catalog":
            report = import_catalog(
                engine,
                path=file,
                fmt=fmt,
                mapping=parsed,
                chunk_size=chunk_size,
                progress=not as_json,
                errors_out=errors_out,
                **extra,
            )
        else:
            from api.services.erasure import guard_from_settings

            # An erased shopper's events are refused, never stored again (tombstones).
            guard = guard_from_settings(settings, engine)
            report = import_events(
                engine,
                path=file,
                fmt=fmt,
                mapping=parsed,
                chunk_size=chunk_size,
                progress=not as_json,
                errors_out=errors_out,
                refused_users=guard.erased_in_batches,
            )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    finally:
        if errors_out is not None:
            errors_out.close()
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    summary = (
        f"{kind}: read {report.rows_read} rows, wrote {report.written}, unchanged "
        f"{report.unchanged}, bad {report.bad_count}"
    )
    if kind == "events":
        summary += f", new users {report.users_created}"
    else:
        summary += (
            f"; {report.products} products, {report.variants} variants, "
            f"{report.images_fetched} images fetched ({report.images_reused} already stored), "
            f"{report.warning_count} warnings"
        )
    typer.echo(summary)
    # ``FILE:LINE``: the same line numbers as the JSON report and the --errors file.
    for bad in report.sorted_bad_rows()[:20]:
        typer.echo(f"  {bad.file}:{bad.row}: {bad.reason[:200]}", err=True)
    if report.bad_count > 20:
        more = report.bad_count - 20
        where = f" (all in {errors})" if errors else " (use --errors FILE for all)"
        typer.echo(f"  ... {more} more bad rows{where}", err=True)
    for warning in sorted(report.warnings, key=lambda w: w.row)[:20]:
        typer.echo(f"  {warning.file}:{warning.row}: warning: {warning.reason[:200]}", err=True)
    if report.warning_count > 20:
        typer.echo(f"  ... {report.warning_count - 20} more warnings", err=True)


@import_app.command("catalog")
def import_catalog_cmd(
    file: Path = typer.Argument(..., help="CSV, JSONL or Parquet file of products."),
    fmt: str = typer.Option(None, "--format", help="csv | jsonl | parquet (default: suffix)."),
    mapping: list[str] = typer.Option(None, "--map", help=_MAP_HELP),
    preset: str = typer.Option(
        None,
        "--preset",
        help="Column names of a shop system's export: shopify (Handle, Title, Body (HTML), "
        "Vendor, Type, Tags, Option1..3 Name/Value, Variant SKU, Variant Price, Image Src, "
        "Variant Image). --map entries override it.",
    ),
    facets: list[str] = typer.Option(
        None,
        "--facets",
        help="Column holding facet strings such as 'category:Electronics|brand:Apple' "
        "(repeatable): 'category' fills the category, other KEY:VALUE pairs become "
        "attributes, bare words become attributes.tags.",
    ),
    facet_separators: str = typer.Option(
        None,
        "--facet-separators",
        help="Characters that separate facet pairs (default '|;', shopify ',|;').",
    ),
    fetch_images: bool = typer.Option(
        True,
        "--fetch-images/--no-fetch-images",
        help="Fetch http(s) image URLs into the state folder (else keep them as URLs).",
    ),
    image_timeout: float = typer.Option(
        10.0, "--image-timeout", min=0.1, help="Seconds allowed per image download."
    ),
    image_max_mb: float = typer.Option(
        20.0, "--image-max-mb", min=0.001, help="Largest image download accepted, in MB."
    ),
    chunk_size: int = typer.Option(1000, min=1, max=100_000, help="Rows per transaction."),
    errors: Path = typer.Option(None, help="Write every bad row (and warning) as JSON Lines here."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Upsert products and their variants by sku. Columns: sku, title, description (HTML
    is reduced to text), category, price, image (path relative to FILE, or a URL),
    attributes (JSON) or attributes.X / attr_X. A row without title and description after
    a product row is a variant of it (own sku, price, image, option1_name/option1_value ..
    option3_* or option.X columns); with a `handle` column rows group by handle. Bad rows
    are reported as FILE:LINE with the reason; good rows always load."""
    _run(
        "catalog",
        file,
        fmt,
        mapping,
        chunk_size,
        errors,
        as_json,
        {
            "preset": preset,
            "facets": facets,
            "facet_separators": facet_separators,
            "fetch_images": fetch_images,
            "image_timeout": image_timeout,
            "image_max_mb": image_max_mb,
        },
    )


@import_app.command("events")
def import_events_cmd(
    file: Path = typer.Argument(..., help="CSV, JSONL or Parquet file of events."),
    fmt: str = typer.Option(None, "--format", help="csv | jsonl | parquet (default: suffix)."),
    mapping: list[str] = typer.Option(None, "--map", help=_MAP_HELP),
    chunk_size: int = typer.Option(20_000, min=1, max=200_000, help="Rows per transaction."),
    errors: Path = typer.Option(None, help="Write every bad row as JSON Lines here."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Insert events, idempotent by event_id. Columns: event_id, user_id, sku (a product's
    or a variant's), kind (view|click|add_to_cart|purchase), ts (ISO 8601 or epoch s/ms),
    session, source. Bad rows are reported as FILE:LINE with the reason."""
    _run("events", file, fmt, mapping, chunk_size, errors, as_json)
