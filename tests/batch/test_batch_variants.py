"""``batch variants`` on Ray (local, 2 CPUs) and in-process: 8 products x 2 segments x 2
placements = 32 images in 8 chunks; a Ray worker killed mid-run, then a rerun: exactly 32 rows and 32
files, none twice; the Ray and the in-process path give identical images for the same seeds."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_world import build_world
from sqlalchemy import func
from sqlmodel import Session, col, select

import api.batch.runner as runner_mod
from api.batch.engine import ExecutorConfig, shutdown_ray
from api.batch.runner import RunOptions
from api.batch.service import run_variants
from data.models import CreativeVariant, VariantChange, VariantStatus
from data.variant_schema import has_index

PLACEMENTS = ("banner", "square")
N_PRODUCTS = 8  # x 2 segments x 2 placements = 32 images in 8 chunks of 4: a kill lands mid-run
N_IMAGES = N_PRODUCTS * 2 * len(PLACEMENTS)


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    from api.batch.engine import ensure_ray

    ensure_ray(ExecutorConfig(executor="ray", num_cpus=2))
    yield
    shutdown_ray()


def _options(executor: str, actors: int = 2) -> RunOptions:
    return RunOptions(
        executor=ExecutorConfig(executor=executor, num_cpus=2, actors=actors),
        chunk_size=4,
        threads=1,
        progress=False,
        delivery=False,
    )


def _files(home: Path) -> list[Path]:
    return sorted(p for p in (home / "images").rglob("*.png") if not p.name.startswith("."))


def test_ray_variants_survive_a_killed_worker_and_rerun_exactly_once(
    tmp_path: Path, ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, engine = build_world(tmp_path / "home", n_products=N_PRODUCTS)
    real = runner_mod.run_chunks
    killed: list[int] = []

    def kill_first_worker(chunks: Any, factory: Any, config: Any, *, on_rows: Any) -> Any:
        def hook(rows: list[dict[str, Any]]) -> None:
            on_rows(rows)
            if not killed:
                killed.append(int(rows[0]["pid"]))
                os.kill(killed[0], signal.SIGKILL)  # a Ray worker dies mid-run

        return real(chunks, factory, config, on_rows=hook)

    monkeypatch.setattr(runner_mod, "run_chunks", kill_first_worker)
    first_error: Exception | None = None
    try:
        first = run_variants(
            settings,
            engine,
            segment_ids=None,
            placements=PLACEMENTS,
            products=N_PRODUCTS,
            options=_options("ray"),
        )
    except Exception as exc:  # Ray may give up on the dead actor's task: the rerun finishes
        first_error = exc
        first = None
    assert killed and killed[0] != os.getpid()
    monkeypatch.setattr(runner_mod, "run_chunks", real)

    second = run_variants(
        settings,
        engine,
        segment_ids=None,
        placements=PLACEMENTS,
        products=N_PRODUCTS,
        options=_options("ray"),
    )
    assert second.planned == N_IMAGES and second.failed == 0
    # The rerun skipped everything the first run had written.
    done_first = 0 if first is None else first.rows_created
    assert second.done_before >= done_first
    assert second.done_before + second.from_cache + second.rendered == N_IMAGES, (
        first_error,
        second,
    )

    with Session(engine) as s:
        rows = list(s.exec(select(CreativeVariant)))
        creates = s.exec(
            select(func.count()).select_from(VariantChange).where(VariantChange.action == "create")
        ).one()
    assert len(rows) == N_IMAGES and creates == N_IMAGES
    # ... with the database's unique key in place (a second row would have failed there).
    assert has_index(engine, "uq_variant_owner_brief")
    assert len({(r.segment_id, r.placement, r.brief_hash) for r in rows}) == N_IMAGES
    assert all(r.image_key and r.status == VariantStatus.draft for r in rows)
    assert {r.placement for r in rows} == set(PLACEMENTS)
    files = _files(settings.home)
    assert len(files) == N_IMAGES
    assert {f.name for f in files} == {r.image_key for r in rows}

    # A third run has nothing to do.
    third = run_variants(
        settings,
        engine,
        segment_ids=None,
        placements=PLACEMENTS,
        products=N_PRODUCTS,
        options=_options("ray"),
    )
    assert (third.done_before, third.rendered, third.rows_created) == (N_IMAGES, 0, 0)


def test_ray_and_in_process_paths_give_identical_images(tmp_path: Path, ray_local: None) -> None:
    keys = {}
    for executor in ("ray", "local"):
        settings, engine = build_world(tmp_path / executor, n_products=4)
        out = run_variants(
            settings,
            engine,
            segment_ids=[1],
            placements=("banner",),
            products=4,
            options=_options(executor, actors=1),
        )
        assert out.rendered == 4 and out.failed == 0
        with Session(engine) as s:
            keys[executor] = {
                (v.product_id, v.brief_hash): v.image_key
                for v in s.exec(select(CreativeVariant).order_by(col(CreativeVariant.id)))
            }
    # Content-addressed keys: the same key is the same bytes.
    assert keys["ray"] == keys["local"] and len(keys["ray"]) == 4
