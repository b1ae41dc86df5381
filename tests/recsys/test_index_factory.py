"""The size-driven index plan ("auto"): which index at which size, add/remove without a rebuild
at the IVF and HNSW sizes (thresholds lowered so the sets stay small), and recall against exact
search on a clustered set."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.index.factory import FLAT_MAX, IndexPlan, make_index, plan_index
from recsys.index.faiss_index import FaissIndex
from recsys.index.numpy_index import NumpyIndex

DIM = 32


def clustered(
    rng: np.random.Generator, n: int, centers: int = 20, spread: float = 0.35
) -> np.ndarray:
    """Unit vectors around ``centers`` random directions (a small CLIP-like mixture)."""
    mu = rng.standard_normal((centers, DIM))
    x = mu[rng.integers(0, centers, n)] + spread * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall_at_10(index: object, exact: NumpyIndex, queries: np.ndarray) -> float:
    _, truth = exact.search(queries, 10)
    _, found = index.search(queries, 10)  # type: ignore[attr-defined]
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, IndexPlan("Flat")),
        (FLAT_MAX - 1, IndexPlan("Flat")),
        # sqrt(50k) = 224 -> 256 lists, 7/128 probed but at least 16; 6 candidates per result
        (FLAT_MAX, IndexPlan("IVF256,PQ128x4fsr,RFlat", {"nprobe": 16, "k_factor": 6})),
        (1_000_000, IndexPlan("IVF1024,PQ128x4fsr,RFlat", {"nprobe": 56, "k_factor": 6})),
        (10_000_000, IndexPlan("IVF4096,PQ128x4fsr,RFlat", {"nprobe": 224, "k_factor": 6})),
    ],
)
def test_plan_by_size(n: int, expected: IndexPlan) -> None:
    assert plan_index(n, 128) == expected


def test_plan_lowered_threshold_and_families() -> None:
    # sqrt(2000) = 45 -> 32 lists (each gets >= 39 training points), all 16 probes
    assert plan_index(2000, DIM, flat_max=1000) == IndexPlan(
        "IVF32,PQ32x4fsr,RFlat", {"nprobe": 16, "k_factor": 6}
    )
    # ivf-flat: 4*sqrt(2000)=179 -> 256 lists, halved until each gets >= 39 points: 32.
    flat = plan_index(2000, DIM, flat_max=1000, family="ivf-flat")
    assert flat == IndexPlan("IVF32,Flat", {"nprobe": 16})
    assert plan_index(1_000_000, 128, family="ivf-flat") == IndexPlan(
        "IVF4096,Flat", {"nprobe": 192}
    )
    assert plan_index(999, DIM, flat_max=1000).factory == "Flat"
    hnsw = plan_index(2000, DIM, flat_max=1000, family="hnsw")
    assert hnsw.factory == "HNSW32" and hnsw.params["ef_search"] == 128
    with pytest.raises(ValueError, match="family must be"):
        plan_index(10, DIM, family="lsh")
    with pytest.raises(ValueError, match="n must be"):
        plan_index(-1, DIM)


def test_make_index_auto() -> None:
    index = make_index("auto", 128, n=1_000_000)
    assert isinstance(index, FaissIndex)
    assert (index.factory, index.nprobe, index.k_factor, index.mode) == (
        "IVF1024,PQ128x4fsr,RFlat", 56, 6, "tombstone")  # fmt: skip
    assert make_index("auto", 128, n=1_000_000, nprobe=64).nprobe == 64  # explicit wins
    small = make_index("AUTO", DIM, n=10)
    assert isinstance(small, FaissIndex) and small.factory == "Flat"
    with pytest.raises(ValueError, match="needs n"):
        make_index("auto", DIM)


@pytest.mark.parametrize("family", ["ivf", "ivf-flat", "hnsw"])
def test_add_and_remove_without_rebuild(family: str) -> None:
    rng = np.random.default_rng(3)
    vectors = clustered(rng, 2100)
    plan = plan_index(2000, DIM, flat_max=1000, family=family)
    index = FaissIndex(DIM, plan.factory, **plan.params)
    index.upsert(np.arange(2000), vectors[:2000])
    inner = index._index  # the FAISS object: a rebuild would replace it
    assert index.is_trained and len(index) == 2000

    index.upsert(np.arange(2000, 2100), vectors[2000:])  # add: no retraining
    assert index.remove(np.arange(0, 300)) == 300  # below the tombstones' compaction share
    moved = clustered(np.random.default_rng(4), 1)
    index.upsert(np.array([500]), moved)  # replace one vector in place
    assert index._index is inner and len(index) == 1800

    _, found = index.search(vectors[:300], 10)
    assert not np.isin(found, np.arange(300)).any()  # removed ids never come back
    _, found = index.search(vectors[2000:2100], 1)
    assert np.mean(found[:, 0] == np.arange(2000, 2100)) >= 0.95  # added ids are found
    _, found = index.search(moved, 1)
    assert found[0, 0] == 500
    if index.mode == "tombstone":  # past the share of dead slots: compacted, still trained
        assert index.remove(np.arange(300, 1000)) == 700
        assert index.n_tombstones == 0 and len(index) == 1100
        _, found = index.search(vectors[1000:1100], 1)
        assert np.mean(found[:, 0] == np.arange(1000, 1100)) >= 0.95
        _, found = index.search(vectors[300:1000], 10)
        assert not np.isin(found, np.arange(1000)).any()


def test_recall_on_clustered_set_matches_exact_search() -> None:
    rng = np.random.default_rng(5)
    vectors, queries = clustered(rng, 8000), clustered(rng, 200)
    exact = NumpyIndex(DIM)
    exact.upsert(np.arange(8000), vectors)
    plan = plan_index(8000, DIM, flat_max=1000)
    assert plan == IndexPlan("IVF64,PQ32x4fsr,RFlat", {"nprobe": 16, "k_factor": 6})
    index = FaissIndex(DIM, plan.factory, **plan.params)
    index.upsert(np.arange(8000), vectors)
    assert recall_at_10(index, exact, queries) >= 0.95
    scores, found = index.search(queries, 10)  # re-ranked: the exact inner products
    np.testing.assert_allclose(
        scores, np.einsum("qkd,qd->qk", vectors[found], queries), rtol=0, atol=1e-5
    )
    flat_plan = plan_index(8000, DIM, flat_max=1000, family="ivf-flat")
    assert flat_plan == IndexPlan("IVF128,Flat", {"nprobe": 16})
    flat = FaissIndex(DIM, flat_plan.factory, **flat_plan.params)
    flat.upsert(np.arange(8000), vectors)
    assert recall_at_10(flat, exact, queries) >= 0.95
    # Probing every list is exhaustive: the same top 10 as exact search.
    flat.nprobe = 128
    assert recall_at_10(flat, exact, queries) == 1.0


def test_single_query_search_agrees_with_the_batch_search() -> None:
    """IVF fast-scan answers a single query with another FAISS implementation than a batch
    (faster for one query): the re-ranked top 10 are the same, up to near ties."""
    rng = np.random.default_rng(7)
    vectors, queries = clustered(rng, 8000), clustered(rng, 100)
    plan = plan_index(8000, DIM, flat_max=1000)
    index = FaissIndex(DIM, plan.factory, **plan.params)
    index.upsert(np.arange(8000), vectors)
    _, batch = index.search(queries, 10)
    single = np.vstack([index.search(q[None, :], 10)[1] for q in queries])
    same = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(single, batch, strict=True)])
    assert same >= 0.99
    exact = NumpyIndex(DIM)
    exact.upsert(np.arange(8000), vectors)
    assert recall_at_10(index, exact, queries) >= 0.95
