"""The ``tailorshot`` command line. The app and its groups live in ``api.cli.app``; each area
adds its commands as top-level functions in its own module (``api/cli/<area>.py``), imported
here in the order the commands are listed."""

from __future__ import annotations

import typer

# Commands are listed in the order they are added: areas in this order (not alphabetical).
# isort: off
from api.cli.app import app
from api.cli import core, ingest, generate, keys, worker, evaluate, recsys  # noqa: F401
from api.cli import train_gen, clip, imaging, safety  # noqa: F401
from api.cli import heroes, edit, batch, create, loras  # noqa: F401
from api.cli import train_cutout  # noqa: F401

# isort: on

__all__ = ["app", "main"]


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
