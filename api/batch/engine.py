"""Two executors for one batch function: in-process (``local``) and Ray Data (``ray``).

A batch job is a list of *chunks*; a chunk is a JSON-serialisable dict that the work function
turns into result rows. The work object is built ONCE per process (per Ray actor, or once in
this process) by a picklable factory, so a model is loaded once and then serves many chunks.
Both executors hand the work function the very same chunks (composition fixed by the
planner), so the two paths compute the same thing, item for item.

Ray: ``ray.data.from_items(chunks).map_batches(_ChunkActor, compute=ActorPoolStrategy(...),
batch_size=1)``; results stream back to the driver as they finish (the driver writes them
to the store and the database, so a retried or killed actor never writes twice).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

#: One result row: flat JSON-serialisable values.
Row = dict[str, Any]


class ChunkWork(Protocol):
    """The work of a batch job: one chunk in, its result rows out (one per item)."""

    def __call__(self, chunk: Row) -> list[Row]: ...


#: Builds the work object once per process; must be picklable (a Ray actor calls it).
WorkFactory = Callable[[], ChunkWork]


@dataclass(frozen=True)
class ExecutorConfig:
    """How to run a batch.

    ``executor``: ``ray`` or ``local``. ``address``: a Ray cluster (``ray://host:10001`` or
    ``auto``); None = ``RAY_ADDRESS`` if set, else a local Ray started with ``num_cpus``.
    ``actors``: concurrent actors; ``cpus_per_actor`` / ``gpus_per_actor``: each actor's
    reservation (``gpus_per_actor > 0`` puts the model on a GPU).
    """

    executor: str = "ray"
    address: str | None = None
    num_cpus: int | None = None
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0

    def __post_init__(self) -> None:
        if self.executor not in ("ray", "local"):
            raise ValueError(f"executor: expected 'ray' or 'local', got {self.executor!r}")
        if self.actors < 1:
            raise ValueError(f"actors: expected >= 1, got {self.actors}")
        if self.cpus_per_actor <= 0 or self.gpus_per_actor < 0:
            raise ValueError(
                "cpus_per_actor / gpus_per_actor: expected > 0 / >= 0, got "
                f"{self.cpus_per_actor} / {self.gpus_per_actor}"
            )


def run_chunks(
    chunks: Sequence[Row],
    factory: WorkFactory,
    config: ExecutorConfig,
    *,
    on_rows: Callable[[list[Row]], None] | None = None,
) -> list[Row]:
    """Run ``factory()`` over ``chunks`` with the configured executor; every result row is
    passed to ``on_rows`` as soon as it arrives (the driver commits there) and returned."""
    if not chunks:
        return []
    stream = (
        _run_local(chunks, factory)
        if config.executor == "local"
        else _run_ray(chunks, factory, config)
    )
    out: list[Row] = []
    for rows in stream:
        if on_rows is not None:
            on_rows(rows)
        out.extend(rows)
    return out


def _run_local(chunks: Sequence[Row], factory: WorkFactory) -> Iterator[list[Row]]:
    work = factory()
    for chunk in chunks:
        yield work(chunk)


# ----------------------------------------------------------------------------- Ray


def ensure_ray(config: ExecutorConfig) -> None:
    """Connect to ``config.address`` / ``RAY_ADDRESS``, or start Ray on this machine with
    ``num_cpus`` (no dashboard, quiet logs). A no-op when Ray is already initialised."""
    import ray

    if ray.is_initialized():
        return
    address = config.address or os.environ.get("RAY_ADDRESS") or None
    env = {k: v for k, v in os.environ.items() if k == "HF_HUB_OFFLINE"}
    kwargs: dict[str, Any] = {
        "logging_level": logging.WARNING,
        "log_to_driver": False,
        "runtime_env": {"env_vars": env} if env else None,
    }
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=config.num_cpus, include_dashboard=False, **kwargs)
    _quiet_ray_data()


def _quiet_ray_data() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
        logging.getLogger(name).setLevel(logging.WARNING)


class _ChunkActor:
    """A Ray Data actor: builds the work once, then maps batches of chunks to result rows.
    Chunks travel as JSON strings (one column) so any nesting survives Arrow."""

    def __init__(self, factory: WorkFactory) -> None:
        self.work = factory()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        rows: list[Row] = []
        for raw in batch["chunk"]:
            rows.extend(self.work(json.loads(str(raw))))
        return {"row": [json.dumps(r, sort_keys=True) for r in rows]}


def _run_ray(
    chunks: Sequence[Row], factory: WorkFactory, config: ExecutorConfig
) -> Iterator[list[Row]]:
    import ray.data

    ensure_ray(config)
    items = [{"chunk": json.dumps(c, sort_keys=True)} for c in chunks]
    source = ray.data.from_items(items, override_num_blocks=len(items))
    ds = source.map_batches(
        _ChunkActor,
        fn_constructor_kwargs={"factory": factory},
        batch_size=1,  # one planned chunk per call: the same composition as the local loop
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=config.actors),
        num_cpus=config.cpus_per_actor,
        num_gpus=config.gpus_per_actor or None,
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        yield [json.loads(str(r)) for r in batch["row"]]


def shutdown_ray() -> None:
    """Disconnect from (or stop the local) Ray; harmless when not started."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), wall seconds)``."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0
