"""``batch embed``: the distributed embedding gives the in-process build's vectors, and a
rerun embeds nothing (content keys)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from batch_world import build_world

from api.batch.embed import run_embed
from api.batch.engine import ExecutorConfig
from api.batch.runner import RunOptions
from recsys.catalog import build_index, load_item_vectors


def test_batch_embed_matches_the_in_process_build_and_resumes(tmp_path: Path) -> None:
    options = RunOptions(
        executor=ExecutorConfig(executor="local"), chunk_size=3, threads=1, progress=False
    )
    settings, engine = build_world(tmp_path / "batch", n_products=8, n_users=2)
    out = run_embed(settings, engine, options=options)
    assert (out["planned"], out["rendered"], out["done_before"]) == (8, 8, 0)
    assert out["unit_norm"] is True

    ref_settings, ref_engine = build_world(tmp_path / "ref", n_products=8, n_users=2)
    build_index(ref_engine, config=ref_settings.recsys, home=ref_settings.home, progress=False)
    got, model = load_item_vectors(settings.home)
    want, ref_model = load_item_vectors(ref_settings.home)
    assert model == ref_model
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_allclose(got.vectors, want.vectors, atol=1e-5)

    again = run_embed(settings, engine, options=options)
    assert (again["rendered"], again["done_before"]) == (0, 8)
