"""Core commands: ``stats``, ``serve``, ``demo``."""

from __future__ import annotations

import typer
from sqlmodel import Session

from api.cli.app import app
from api.cli.common import load_settings, open_engine, print_json


@app.command()
def stats(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Count products, users, events, segments, variants, jobs, impressions and clicks; then
    personalized coverage and cost (api/batch/coverage.py)."""
    from api.batch.coverage import coverage_report
    from data.repos.stats import count_all

    settings = load_settings()
    engine = open_engine(settings)
    with Session(engine) as session:
        counts = count_all(session)
    cost = coverage_report(engine, home=settings.home, generation=settings.generation).as_dict()
    if as_json:
        print_json({**counts, **cost})
    else:
        for name, n in counts.items():
            typer.echo(f"{name:12s} {n:>10d}")
        for name, value in cost.items():
            typer.echo(f"{name} {'-' if value is None else value}")


def serve_app() -> object:
    """The app ``tailorshot serve`` runs, as a factory: each worker process builds its own
    components (engine, caches, impression buffer) from the environment's settings."""
    import functools

    from api.app import create_app
    from api.services.analytics import build_report
    from recsys.evaluation.simulate import build_demo_report

    # The analyst report shows a labelled demo-world simulation before any impression is
    # logged; wired here because serving code never imports the demo world.
    report_builder = functools.partial(build_report, demo_report=build_demo_report)
    return create_app(load_settings(), report_builder=report_builder)


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default: settings, 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default: settings, 8000)."),
    workers: int = typer.Option(
        1, "--workers", min=1, max=64, help="Worker processes sharing the database."
    ),
) -> None:
    """Start the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    settings = load_settings()
    uvicorn.run(
        "api.cli.core:serve_app",
        factory=True,
        workers=workers,
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_level="info",
        timeout_graceful_shutdown=30,
    )


@app.command()
def demo(
    serve_after: bool = typer.Option(True, "--serve/--no-serve", help="Serve after building."),
    seed: int = typer.Option(0, help="Seed of the demo world."),
    cover: bool = typer.Option(
        True,
        "--cover/--no-cover",
        help="Recompose square and story from the approved banners' kept scenes "
        "(`batch cover`; ~15-45 CPU s each on a CPU).",
    ),
) -> None:
    """Build the demo world into the state folder (idempotent), then serve."""
    from api.cli.demo import build_demo

    settings = load_settings()
    build_demo(settings, seed=seed, cover=cover)
    if serve_after:
        serve(host=None, port=None, workers=1)
