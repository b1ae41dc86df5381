"""Offline click-through evaluation commands: ``evaluate obd``, ``evaluate simulate``,
``evaluate report`` (in the shared ``evaluate`` group)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import typer

from api.cli.app import evaluate_app
from api.cli.common import fail, print_json

DEFAULT_OBD_PATH = Path("../shared/data/obd")


@evaluate_app.command("obd")
def obd(
    path: Path = typer.Option(
        DEFAULT_OBD_PATH,
        "--path",
        help="Open Bandit Dataset folder (holding bts/ and random/), relative to the cwd.",
    ),
    campaign: str = typer.Option("men", "--campaign", help="Campaign: men or women."),
    n_bootstrap: int = typer.Option(500, "--n-bootstrap", help="Bootstrap resamples."),
    alpha: float = typer.Option(0.05, help="1 - confidence level of the intervals."),
    seed: int = typer.Option(0, help="Seed of the bootstrap and the reward model folds."),
    n_folds: int = typer.Option(
        3, "--n-folds", help="Cross-fitting folds of the DM / DR reward model."
    ),
    details: bool = typer.Option(
        False, "--details", help="Add coverage, ESS and the truth's interval."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Estimate the uniform-random policy's CTR from the Bernoulli-TS logs of the Open Bandit
    Dataset and compare with its on-policy CTR (relative error per estimator)."""
    from recsys.evaluation.obd import run_obd_experiment

    if campaign not in ("men", "women", "all"):
        fail(f"--campaign: expected men, women or all, got {campaign!r}")
    if not path.is_dir():
        fail(
            f"--path: Open Bandit Dataset folder not found at {path.resolve()} "
            "(expected bts/ and random/ subfolders; see the dataset's README)"
        )
    try:
        out = run_obd_experiment(
            path,
            campaign=campaign,
            n_bootstrap=n_bootstrap,
            alpha=alpha,
            random_state=seed,
            n_folds=n_folds,
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    result = out.to_json(details=details)
    if as_json:
        print_json(result)
        return
    typer.echo(
        f"OBD {campaign}: random policy's CTR from bts logs; truth {out.truth:.5f} "
        f"[{out.truth_ci[0]:.5f}, {out.truth_ci[1]:.5f}]"
    )
    for name, e in out.estimates.items():
        verdict = "covers" if e.covers(out.truth) else "MISSES"
        typer.echo(
            f"  {name:12s} {e.value:.5f} [{e.ci_low:.5f}, {e.ci_high:.5f}] "
            f"rel.err {e.relative_error(out.truth):6.1%} "
            f"{verdict} ESS {e.effective_sample_size:,.0f}"
        )


@evaluate_app.command("simulate")
def simulate(
    seed: int = typer.Option(0, help="Seed of the demo world and the logs."),
    n_users: int = typer.Option(1200, "--n-users", help="Simulated shoppers."),
    n_rounds: int = typer.Option(30_000, "--n-rounds", help="Logged impressions."),
    epsilon: float = typer.Option(0.3, help="Exploration rate of the logging policy."),
    n_bootstrap: int = typer.Option(500, "--n-bootstrap", help="Bootstrap resamples."),
    details: bool = typer.Option(
        False, "--details", help="Add coverage, relative error, ESS and the logs' summary."
    ),
    seeds: int = typer.Option(
        1,
        "--seeds",
        help="With N > 1: repeat over N seeds and print each estimator's interval coverage.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Simulate a personalized / segment / generic hero A/B test in the demo world (true
    CTRs from the click model), log an epsilon-greedy policy, and estimate each arm
    offline from those logs."""
    from recsys.evaluation.simulate import SimulationConfig, run_simulation

    try:
        cfg = SimulationConfig(
            seed=seed,
            n_users=n_users,
            n_rounds=n_rounds,
            epsilon=epsilon,
            n_bootstrap=n_bootstrap,
        )
    except ValueError as exc:
        fail(str(exc))
    if seeds > 1:
        from recsys.evaluation.simulate import coverage_over_seeds

        cov = coverage_over_seeds(cfg, seeds, progress=not as_json)
        if as_json:
            print_json(cov)
        else:
            for name, rate in cov["coverage"].items():
                err = cov["mean_relative_error"][name]
                typer.echo(f"{name:12s} coverage {rate:6.1%}  mean rel.err {err:6.1%}")
        return
    out = run_simulation(cfg, progress=not as_json)
    if as_json:
        print_json(out.to_json(details=details))
        return
    for arm, a in out.evaluation.arms.items():
        t = out.truth[arm]
        typer.echo(f"{arm:13s} true CTR {t:.4f}")
        for name, e in a.estimates.items():
            typer.echo(
                f"    {name:12s} {e.value:.4f} [{e.ci_low:.4f}, {e.ci_high:.4f}] "
                f"{'covers' if e.covers(t) else 'MISSES'}"
            )


@evaluate_app.command("report")
def report(
    out: Path = typer.Option(
        None, "--out", help="Output folder (default: <state folder>/reports/evaluation)."
    ),
    placement: str = typer.Option(None, help="Only impressions of this placement."),
    n_bootstrap: int = typer.Option(500, "--n-bootstrap", help="Bootstrap resamples."),
    demo_fallback: bool = typer.Option(
        True,
        "--demo-fallback/--no-demo-fallback",
        help="Without logged impressions, report on simulated demo logs (labelled).",
    ),
    demo_rounds: int = typer.Option(
        20_000, "--demo-rounds", help="Simulated impressions of the demo fallback."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON summary."),
) -> None:
    """Write report.html (plots inlined) and summary.json from the storefront's logged
    impressions and clicks."""
    from api.cli.common import load_settings, open_engine
    from recsys.evaluation.report import build_report, write_report
    from recsys.evaluation.simulate import build_demo_report

    settings = load_settings()
    engine = open_engine(settings)
    demo = partial(
        build_demo_report,
        random_state=settings.seed,
        n_rounds=demo_rounds,
        n_bootstrap=n_bootstrap,
    )
    try:
        rep = build_report(
            engine,
            demo_report=demo if demo_fallback else None,
            placement=placement,
            n_bootstrap=n_bootstrap,
            random_state=settings.seed,
        )
    except (LookupError, ValueError) as exc:
        fail(str(exc))
    out_dir = out if out is not None else settings.home / "reports" / "evaluation"
    paths = write_report(rep, out_dir)
    if as_json:
        print_json(rep.summary)
    else:
        label = "DEMO (simulated logs)" if rep.source != "impressions" else "impressions"
        typer.echo(f"source: {label}")
        typer.echo(f"wrote {paths['html']}")
        typer.echo(f"wrote {paths['summary']}")
