"""``tailorshot batch embed | variants | personalize | cover``: catalog-scale production on Ray Data
(``--executor ray``, the default: a local Ray on this machine, or a cluster with
``--address`` / ``RAY_ADDRESS``) or in this process (``--executor local``). Each command is
resumable (a rerun skips what is done, keyed by brief or content hash), shows progress and
prints a JSON summary with a quality report (``--json``) or a short text one."""

from __future__ import annotations

import json
from typing import Any

import typer

from api.cli.app import app
from api.cli.common import load_settings, open_engine, print_json

batch_app = typer.Typer(
    help="Catalog-scale batch production (Ray Data or in-process).", no_args_is_help=True
)
app.add_typer(batch_app, name="batch")

_EXECUTOR = typer.Option("ray", "--executor", help="ray (Ray Data actors) or local (this process).")
_ADDRESS = typer.Option(
    None, "--address", help="Ray cluster address (ray://host:10001); default RAY_ADDRESS."
)
_CPUS = typer.Option(None, "--num-cpus", help="CPUs of a local Ray (default: all).", min=1)
_ACTORS = typer.Option(1, "--actors", help="Concurrent Ray actors (each loads the model once).")
_GPUS = typer.Option(0.0, "--gpus-per-actor", help="GPUs per actor (0: CPU actors).", min=0.0)
_CHUNK = typer.Option(4, "--chunk-size", help="Briefs per pipeline call.", min=1, max=64)
_THREADS = typer.Option(1, "--threads", help="Torch threads per renderer.", min=1, max=256)
_JSON = typer.Option(False, "--json", help="Print the JSON summary.")
_PLACEMENTS = typer.Option("banner,square,story", "--placements", help="Comma-separated.")


def _options(
    executor: str,
    address: str | None,
    num_cpus: int | None,
    actors: int,
    gpus: float,
    chunk: int,
    threads: int,
) -> Any:
    from api.batch.engine import ExecutorConfig
    from api.batch.runner import RunOptions

    cfg = ExecutorConfig(
        executor=executor,
        address=address,
        num_cpus=num_cpus,
        actors=actors,
        cpus_per_actor=float(threads),
        gpus_per_actor=gpus,
    )
    return RunOptions(executor=cfg, chunk_size=chunk, threads=threads)


def _placements(spec: str) -> list[str]:
    from genservice.brief import PLACEMENTS

    names = [p.strip() for p in spec.split(",") if p.strip()]
    bad = [p for p in names if p not in PLACEMENTS]
    if not names or bad:
        raise ValueError(f"--placements: expected names from {sorted(PLACEMENTS)}, got {spec!r}")
    return names


def _report(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(summary)
        return
    keys = ("planned", "done_before", "from_cache", "rendered", "failed", "approved", "drafts",
            "recomposed")  # fmt: skip
    typer.echo(" ".join(f"{k}={summary[k]}" for k in keys if k in summary))
    for placement, why in sorted((summary.get("refused_placements") or {}).items()):
        typer.echo(f"still refused at {placement}: {why}")
    for k in ("seconds", "items_per_s", "cpu_s_per_image", "gpu_s_per_image", "cache_hit_rate"):
        if k in summary:
            typer.echo(f"{k}={summary[k]}")
    q = summary.get("quality")
    if q:
        typer.echo("quality: " + json.dumps(q, sort_keys=True))


def _shutdown(executor: str) -> None:
    if executor == "ray":
        from api.batch.engine import shutdown_ray

        shutdown_ray()


@batch_app.command("variants")
def variants(
    segments: str = typer.Option("all", "--segments", help="all or comma-separated ids."),
    placements: str = _PLACEMENTS,
    products: str = typer.Option("all", "--products", help="TOP_K (most engaged) or all."),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed of every brief (default: settings)."
    ),
    auto_approve: bool = typer.Option(
        False, "--auto-approve", help="Approve variants whose terms are all in the vocabulary."
    ),
    vocabulary: str = typer.Option(
        "", "--vocabulary", help="Approved terms (comma-separated) added to api.approved_terms."
    ),
    executor: str = _EXECUTOR,
    address: str | None = _ADDRESS,
    num_cpus: int | None = _CPUS,
    actors: int = _ACTORS,
    gpus_per_actor: float = _GPUS,
    chunk_size: int = _CHUNK,
    threads: int = _THREADS,
    as_json: bool = _JSON,
) -> None:
    """Render every segment x product x placement as drafts (or auto-approved)."""
    from api.batch.service import run_variants
    from api.batch.variants import parse_ids

    settings = load_settings()
    top = None if products.strip().lower() == "all" else _positive_int(products, "--products")
    vocab = [t for t in vocabulary.split(",") if t.strip()] if auto_approve else None
    options = _options(executor, address, num_cpus, actors, gpus_per_actor, chunk_size, threads)
    try:
        out = run_variants(
            settings,
            open_engine(settings),
            segment_ids=parse_ids(segments, name="--segments"),
            placements=_placements(placements),
            products=top,
            options=options,
            seed=seed,
            vocabulary=vocab,
        )
    finally:
        _shutdown(executor)
    _report(out.as_dict(), as_json)


@batch_app.command("cover")
def cover(as_json: bool = _JSON) -> None:
    """Recompose, from kept scenes and without a diffusion run, every placement a segment (or
    the generic pool) has no approved variant at, from its newest approved variant."""
    from api.batch.cover import run_cover

    settings = load_settings()
    out = run_cover(settings, open_engine(settings)).as_dict()
    if as_json:
        print_json(out)
        return
    typer.echo(" ".join(f"{k}={out[k]}" for k in ("owners", "recomposed", "retired", "seconds")))
    for owner, refused in sorted(out["refused"].items()):
        for placement, why in sorted(refused.items()):
            typer.echo(f"still refused: {owner} at {placement}: {why}")


@batch_app.command("personalize")
def personalize(
    active_since: str = typer.Option("7d", "--active-since", help="Window: 7d, 36h, 90m."),
    limit: int | None = typer.Option(None, "--limit", help="At most this many shoppers.", min=1),
    budget: int | None = typer.Option(
        None, "--budget", help="At most this many diffusion runs (cached briefs are free).", min=0
    ),
    placements: str = typer.Option("banner", "--placements", help="Comma-separated."),
    executor: str = _EXECUTOR,
    address: str | None = _ADDRESS,
    num_cpus: int | None = _CPUS,
    actors: int = _ACTORS,
    gpus_per_actor: float = _GPUS,
    chunk_size: int = _CHUNK,
    threads: int = _THREADS,
    as_json: bool = _JSON,
) -> None:
    """Personalized heroes for active shoppers, by expected value, within a run budget."""
    from api.batch.service import run_personalize

    settings = load_settings()
    options = _options(executor, address, num_cpus, actors, gpus_per_actor, chunk_size, threads)
    try:
        out = run_personalize(
            settings,
            open_engine(settings),
            active_since=active_since,
            limit=limit,
            budget=budget,
            placements=_placements(placements),
            options=options,
        )
    finally:
        _shutdown(executor)
    summary = out.as_dict()
    summary["extra"].pop("shoppers", None)  # shopper ids stay in the database
    _report(summary, as_json)


@batch_app.command("embed")
def embed(
    executor: str = _EXECUTOR,
    address: str | None = _ADDRESS,
    num_cpus: int | None = _CPUS,
    actors: int = _ACTORS,
    gpus_per_actor: float = _GPUS,
    chunk_size: int = typer.Option(64, "--chunk-size", help="Items per embedder call.", min=1),
    threads: int = _THREADS,
    as_json: bool = _JSON,
) -> None:
    """Embed the catalog (images, texts where no image) and rebuild or extend the index."""
    from api.batch.embed import run_embed

    settings = load_settings()
    options = _options(executor, address, num_cpus, actors, gpus_per_actor, chunk_size, threads)
    try:
        out = run_embed(settings, open_engine(settings), options=options)
    finally:
        _shutdown(executor)
    _report(out, as_json)


def _positive_int(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}: expected a positive integer or 'all', got {text!r}") from None
    if value < 1:
        raise ValueError(f"{name}: expected a positive integer or 'all', got {text!r}")
    return value
