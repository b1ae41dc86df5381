"""The ``tailorshot`` command line. Each area registers its commands from its own module
(``api/cli/<area>.py`` exposes ``register(app, groups)``), so areas never edit one file."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="tailorshot",
    help="Personalized product imagery from shoppers' histories.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    pretty_exceptions_enable=False,
)

#: Shared command groups: several areas add commands to one group.
groups: dict[str, typer.Typer] = {
    "import": typer.Typer(help="Import a store's catalog or events.", no_args_is_help=True),
    "evaluate": typer.Typer(help="Offline evaluation reports (JSON).", no_args_is_help=True),
    "train": typer.Typer(help="Train the small embedded models.", no_args_is_help=True),
    "index": typer.Typer(help="Build and inspect the product vector index.", no_args_is_help=True),
    "segments": typer.Typer(help="Build shopper segments.", no_args_is_help=True),
    "keys": typer.Typer(help="Manage API keys.", no_args_is_help=True),
}
for _name, _group in groups.items():
    app.add_typer(_group, name=_name)

#: Modules under ``api.cli`` that register commands; each area appends its own.
AREAS: list[str] = [
    "core",
    "ingest",
    "generate",
    "keys",
    "worker",
    "evaluate",
    "recsys",
    "train_gen",
    "clip",
    "imaging",
    "safety",
    "heroes",
    "edit",
]

for _area in AREAS:
    importlib.import_module(f"api.cli.{_area}").register(app, groups)


def main() -> None:
    """Console-script entry point. Expected failures (bad input, missing files or models)
    print one ``error:`` line and exit 2; ``TAILORSHOT_DEBUG=1`` shows the traceback."""
    import os
    import sys

    try:
        app(standalone_mode=True)
    except (FileNotFoundError, ValueError, PermissionError) as exc:
        if os.environ.get("TAILORSHOT_DEBUG"):
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
