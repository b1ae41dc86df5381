"""``tailorshot import catalog|events FILE``: streaming, validated, idempotent imports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

import typer

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
) -> None:
    from data.ingest import import_catalog, import_events
    from data.ingest.importer import parse_mapping

    try:
        parsed = parse_mapping(mapping)
    except ValueError as exc:
        fail(str(exc))
    settings = load_settings()
    engine = open_engine(settings)
    fn = import_catalog if kind == "catalog" else import_events
    errors_out: TextIO | None = errors.open("w") if errors else None
    try:
        report = fn(
            engine,
            path=file,
            fmt=fmt,
            mapping=parsed,
            chunk_size=chunk_size,
            progress=not as_json,
            errors_out=errors_out,
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    finally:
        if errors_out is not None:
            errors_out.close()
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    typer.echo(
        f"{kind}: read {report.rows_read} rows, wrote {report.written}, unchanged "
        f"{report.unchanged}, bad {report.bad_count}"
        + (f", new users {report.users_created}" if kind == "events" else "")
    )
    for bad in report.bad_rows[:20]:
        typer.echo(f"  {bad.file}:{bad.row}: {bad.reason[:200]}", err=True)
    if report.bad_count > 20:
        more = report.bad_count - 20
        where = f" (all in {errors})" if errors else " (use --errors FILE for all)"
        typer.echo(f"  ... {more} more bad rows{where}", err=True)


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add ``import catalog`` and ``import events``."""
    group = groups["import"]

    @group.command("catalog")
    def import_catalog_cmd(
        file: Path = typer.Argument(..., help="CSV, JSONL or Parquet file of products."),
        fmt: str = typer.Option(None, "--format", help="csv | jsonl | parquet (default: suffix)."),
        mapping: list[str] = typer.Option(None, "--map", help=_MAP_HELP),
        chunk_size: int = typer.Option(1000, min=1, max=100_000, help="Rows per transaction."),
        errors: Path = typer.Option(None, help="Write every bad row as JSON Lines here."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Upsert products by sku. Columns: sku, title, description, category, price, image
        (path relative to FILE, or a URI), attributes (JSON) or attributes.X / attr_X."""
        _run("catalog", file, fmt, mapping, chunk_size, errors, as_json)

    @group.command("events")
    def import_events_cmd(
        file: Path = typer.Argument(..., help="CSV, JSONL or Parquet file of events."),
        fmt: str = typer.Option(None, "--format", help="csv | jsonl | parquet (default: suffix)."),
        mapping: list[str] = typer.Option(None, "--map", help=_MAP_HELP),
        chunk_size: int = typer.Option(5000, min=1, max=100_000, help="Rows per transaction."),
        errors: Path = typer.Option(None, help="Write every bad row as JSON Lines here."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Insert events, idempotent by event_id. Columns: event_id, user_id, sku, kind
        (view|click|add_to_cart|purchase), ts (ISO 8601 or epoch s/ms), session, source."""
        _run("events", file, fmt, mapping, chunk_size, errors, as_json)
