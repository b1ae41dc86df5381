"""The ``tailorshot`` Typer application and its shared command groups.

Every CLI module imports the app or group it adds commands to and decorates top-level
functions (``@train_app.command("vae")``); ``api.cli`` imports the modules in order.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="tailorshot",
    help="Personalized product imagery from shoppers' histories.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    pretty_exceptions_enable=False,
)

import_app = typer.Typer(help="Import a store's catalog or events.", no_args_is_help=True)
evaluate_app = typer.Typer(help="Offline evaluation reports (JSON).", no_args_is_help=True)
train_app = typer.Typer(help="Train the small embedded models.", no_args_is_help=True)
index_app = typer.Typer(help="Build and inspect the product vector index.", no_args_is_help=True)
segments_app = typer.Typer(help="Build shopper segments.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)

for _name, _group in (
    ("import", import_app),
    ("evaluate", evaluate_app),
    ("train", train_app),
    ("index", index_app),
    ("segments", segments_app),
    ("keys", keys_app),
):
    app.add_typer(_group, name=_name)
