"""``tailorshot worker``: generation worker processes sharing the database job queue.

Each process builds its job handler through ``api.composition.build_job_handler``; the
generator loads (warming up ``generation.warmup_sizes``) before the first claim. It runs a
``genservice.worker.Worker`` in the foreground. SIGTERM / Ctrl-C once: finish the job in
hand, then exit; twice: hand the job back to the queue at its next step and exit. Either
way no job is left half-done.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import typer

from api.cli.app import app


def _configure_logs(level: str) -> None:
    """JSON log lines on stderr for the ``genservice`` and ``tailorshot`` loggers."""
    from api.logging import configure_logging, log_json

    configure_logging(level)
    log_json("genservice", level)


def run_worker_process(
    index: int,
    *,
    once: bool,
    poll_interval: float | None,
    log_level: str = "INFO",
    handle_sigint: bool = True,
) -> int:
    """Run one worker in this process until stopped (or, with ``once``, until no job is
    due); returns the number of jobs it processed. ``index`` varies the jitter seed."""
    from api.cli.common import load_settings, open_engine
    from api.composition import EditJobHandler, build_job_handler
    from genservice.jobs import JobQueue
    from genservice.worker import Worker

    _configure_logs(log_level)
    settings = load_settings()
    engine = open_engine(settings)
    queue = JobQueue.from_config(engine, settings.generation, seed=settings.seed + index)
    handler = build_job_handler(settings)
    # The model loads (and warms up generation.warmup_sizes) before the first claim.
    # (tests substitute a handler without a model to load)
    warmup = handler.warmup if isinstance(handler, EditJobHandler) else None
    worker = Worker.from_config(queue, handler, settings.generation, warmup=warmup)
    if poll_interval is not None:
        worker.poll_interval = poll_interval

    signals_seen = 0

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal signals_seen
        signals_seen += 1
        worker.request_stop(graceful=signals_seen == 1)

    previous: dict[int, Any] = {}
    stop_signals = [signal.SIGTERM] + ([signal.SIGINT] if handle_sigint else [])
    for stop_sig in stop_signals:
        previous[stop_sig] = signal.signal(stop_sig, on_signal)
    if not handle_sigint:
        # children: Ctrl-C reaches the whole process group; the parent forwards it once
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return worker.run(until_idle=once)
    finally:
        for signum, old_handler in previous.items():
            signal.signal(signum, old_handler)
        engine.dispose()


def _child_main(index: int, once: bool, poll_interval: float | None, log_level: str) -> None:
    processed = run_worker_process(
        index, once=once, poll_interval=poll_interval, log_level=log_level, handle_sigint=False
    )
    print(json.dumps({"worker": index, "processed": processed}), flush=True)


@app.command("worker")
def worker(
    concurrency: int = typer.Option(
        1, "--concurrency", "-c", min=1, max=64, help="Worker processes to run."
    ),
    once: bool = typer.Option(
        False, "--once", help="Process the jobs due now, then exit (no polling)."
    ),
    poll_interval: float = typer.Option(
        None,
        "--poll-interval",
        min=0.0,
        help="Seconds between polls of an empty queue (default: settings).",
    ),
    log_level: str = typer.Option("INFO", "--log-level", help="Logging level."),
) -> None:
    """Run generation workers that claim jobs from the shared database queue.

    With --concurrency N, N processes run side by side (each loads its own generator).
    SIGTERM or Ctrl-C once finishes the jobs in hand; twice hands them back to the queue.
    """
    if concurrency == 1:
        processed = run_worker_process(
            0, once=once, poll_interval=poll_interval, log_level=log_level
        )
        typer.echo(json.dumps({"worker": 0, "processed": processed}))
        return

    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fresh interpreters: no forked DB connections or threads
    procs = [
        ctx.Process(
            target=_child_main,
            args=(i, once, poll_interval, log_level),
            name=f"tailorshot-worker-{i}",
        )
        for i in range(concurrency)
    ]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: Any) -> None:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for p in procs:
            p.join()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    failed = [p.name for p in procs if p.exitcode not in (0, None)]
    if failed:
        from api.cli.common import fail

        fail(f"worker processes exited with errors: {', '.join(failed)}", code=1)
