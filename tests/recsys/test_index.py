"""Contract tests shared by every VectorIndex implementation, plus FAISS-specific checks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from recsys.index.base import VectorIndex
from recsys.index.factory import load_index, make_index
from recsys.index.numpy_index import NumpyIndex

DIM = 32
FACTORIES = ["numpy", "Flat", "HNSW32", "IVF8,Flat", "SQ8", "IVF8,PQ8x4fs,RFlat"]
#: Factories whose search is exact (the rest are approximate).
EXACT = {"numpy", "Flat"}


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(params=FACTORIES)
def filled(request: pytest.FixtureRequest) -> tuple[VectorIndex, np.ndarray, np.ndarray, str]:
    rng = np.random.default_rng(0)
    vectors = unit(rng, 600)
    ids = np.arange(1000, 1600, dtype=np.int64)
    index = make_index(request.param, DIM)
    index.upsert(ids, vectors)
    return index, ids, vectors, request.param


def test_protocol(filled: tuple[VectorIndex, np.ndarray, np.ndarray, str]) -> None:
    index, ids, _, _ = filled
    assert isinstance(index, VectorIndex)
    assert len(index) == ids.size and index.dim == DIM


def test_self_query_finds_itself(filled: tuple[VectorIndex, np.ndarray, np.ndarray, str]) -> None:
    index, ids, vectors, factory = filled
    scores, found = index.search(vectors[:50], 5)
    assert scores.dtype == np.float32 and found.dtype == np.int64 and found.shape == (50, 5)
    hit = np.mean(found[:, 0] == ids[:50])
    assert hit >= (1.0 if factory != "SQ8" else 0.8)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first


def test_upsert_replaces(filled: tuple[VectorIndex, np.ndarray, np.ndarray, str]) -> None:
    index, ids, vectors, factory = filled
    new = unit(np.random.default_rng(1), 1)
    index.upsert(np.array([ids[3]]), new)
    assert len(index) == ids.size
    _scores, found = index.search(new, 3)
    assert found[0, 0] == ids[3]
    # The old vector no longer maps to the id (unless old and new are close, they are not).
    _, found_old = index.search(vectors[3:4], 1)
    assert found_old[0, 0] != ids[3]
    back = index.reconstruct(np.array([ids[3]]))[0]
    if factory == "SQ8":  # 8-bit codes: close in angle, not bit-exact
        assert float(back @ new[0]) / float(np.linalg.norm(back)) > 0.99
    else:
        np.testing.assert_allclose(back, new[0], atol=1e-5)


def test_remove(filled: tuple[VectorIndex, np.ndarray, np.ndarray, str]) -> None:
    index, ids, vectors, _ = filled
    gone = ids[:200]
    assert index.remove(gone) == 200
    assert index.remove(gone) == 0  # second call is harmless
    assert index.remove(np.array([999_999])) == 0
    assert len(index) == ids.size - 200
    _, found = index.search(vectors[:200], 10)
    assert not np.isin(found, gone).any()
    _, found = index.search(vectors[300:320], 1)
    assert np.mean(found[:, 0] == ids[300:320]) >= 0.8
    with pytest.raises(KeyError):
        index.reconstruct(gone[:1])
    # Re-adding a removed id works.
    index.upsert(gone[:1], vectors[:1])
    assert index.search(vectors[:1], 1)[1][0, 0] == gone[0]


def test_padding_when_k_exceeds_n() -> None:
    for factory in ["numpy", "Flat", "HNSW32"]:
        index = make_index(factory, DIM)
        empty_scores, empty_ids = index.search(unit(np.random.default_rng(2), 2), 4)
        assert (empty_ids == -1).all() and np.isneginf(empty_scores).all()
        index.upsert(np.array([7, 8, 9]), unit(np.random.default_rng(3), 3))
        scores, found = index.search(unit(np.random.default_rng(4), 2), 5)
        assert found.shape == (2, 5)
        assert sorted(found[0, :3].tolist()) == [7, 8, 9]
        assert (found[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
        assert np.isfinite(scores[:, :3]).all()


def test_save_load_round_trip(
    tmp_path: Path, filled: tuple[VectorIndex, np.ndarray, np.ndarray, str]
) -> None:
    index, ids, vectors, _ = filled
    index.remove(ids[:10])  # tombstones/holes must survive the round trip
    q = vectors[20:40]
    before = index.search(q, 7)
    path = tmp_path / "idx.bin"
    index.save(path)
    loaded = load_index(path)
    assert type(loaded) is type(index) and len(loaded) == len(index)
    after = loaded.search(q, 7)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0], rtol=1e-6)
    # The loaded index keeps working.
    loaded.upsert(np.array([5]), vectors[:1])
    assert loaded.search(vectors[:1], 1)[1][0, 0] == 5


def test_crash_mid_save_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = make_index("Flat", DIM)
    vectors = unit(np.random.default_rng(5), 20)
    index.upsert(np.arange(20), vectors)
    path = tmp_path / "idx.bin"
    index.save(path)
    good = path.read_bytes()
    index.upsert(np.arange(20, 40), unit(np.random.default_rng(6), 20))

    def boom(*_: object, **__: object) -> None:
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated crash"):
        index.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["idx.bin"]  # no temp file left behind
    assert len(load_index(path)) == 20


def test_truncated_file_is_rejected(tmp_path: Path) -> None:
    index = make_index("HNSW32", DIM)
    index.upsert(np.arange(50), unit(np.random.default_rng(7), 50))
    path = tmp_path / "idx.bin"
    index.save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a readable index"):
        load_index(path)


def test_flat_equals_brute_force_tie_tolerant() -> None:
    rng = np.random.default_rng(8)
    vectors = unit(rng, 3000)
    vectors[100:110] = vectors[5]  # exact ties under different ids
    ids = rng.permutation(100_000)[:3000].astype(np.int64)
    flat, ref = make_index("Flat", DIM), NumpyIndex(DIM)
    flat.upsert(ids, vectors)
    ref.upsert(ids, vectors)
    queries = np.concatenate([unit(rng, 60), vectors[5:6]])
    k = 10
    fs, fi = flat.search(queries, k)
    rs, _ri = ref.search(queries, k)
    np.testing.assert_allclose(fs, rs, atol=1e-5)
    all_scores = queries @ ref.reconstruct(ids).T
    for row in range(queries.shape[0]):
        kth = rs[row, -1]
        # Every id FAISS returns scores at least the k-th best (ties may be ordered differently).
        allowed = set(ids[all_scores[row] >= kth - 1e-5].tolist())
        assert set(fi[row].tolist()) <= allowed
    # The query equal to the 11 tied vectors gets 10 of them, all at score 1.
    assert set(fi[-1].tolist()) <= {int(ids[5])} | set(ids[100:110].tolist())
    np.testing.assert_allclose(fs[-1], 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def hnsw_20k() -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    """Built once per module: 20k random unit vectors at the default dim (128)."""
    rng = np.random.default_rng(9)
    vectors = unit(rng, 20_000, 128)
    # A lighter graph than the default (ef_construction 200) keeps the suite fast.
    index = make_index("HNSW32", 128, ef_construction=80)
    index.upsert(np.arange(20_000), vectors)
    return index, vectors, unit(rng, 200, 128)


def test_hnsw_recall_at_10(hnsw_20k: tuple[VectorIndex, np.ndarray, np.ndarray]) -> None:
    # The 100k check lives in bench/bench_index.py (too slow for the suite on 2 cores).
    index, vectors, queries = hnsw_20k
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    _, found = index.search(queries, 10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95


def test_hnsw_tombstones_and_compaction() -> None:
    from recsys.index.faiss_index import FaissIndex

    rng = np.random.default_rng(10)
    vectors = unit(rng, 400)
    index = FaissIndex(DIM, "HNSW32", compact_fraction=0.5)
    assert index.mode == "tombstone"
    index.upsert(np.arange(400), vectors)
    index.remove(np.arange(100))
    assert index.n_tombstones == 100 and len(index) == 300
    _, found = index.search(vectors[:100], 20)
    assert not np.isin(found, np.arange(100)).any()
    index.remove(np.arange(100, 200))  # 200 dead of 400 slots -> rebuild
    assert index.n_tombstones == 0 and len(index) == 200
    _, found = index.search(vectors[200:250], 1)
    np.testing.assert_array_equal(found[:, 0], np.arange(200, 250))


def test_ivf_modes_and_training_errors() -> None:
    from recsys.index.faiss_index import FaissIndex

    index = FaissIndex(DIM, "IVF64,Flat")
    assert index.mode == "ivf" and index.min_train_size() == 64
    with pytest.raises(ValueError, match="at least 64 training vectors"):
        index.upsert(np.arange(10), unit(np.random.default_rng(11), 10))
    index.train(unit(np.random.default_rng(12), 500))
    index.upsert(np.arange(10), unit(np.random.default_rng(11), 10))
    assert len(index) == 10
    assert FaissIndex(DIM, "Flat").mode == "idmap"


@pytest.mark.parametrize("factory", ["numpy", "Flat", "HNSW32"])
def test_input_validation(factory: str) -> None:
    index = make_index(factory, DIM)
    v = unit(np.random.default_rng(13), 3)
    with pytest.raises(ValueError, match=r"shape \(n, 32\)"):
        index.upsert(np.arange(3), v[:, :5])
    with pytest.raises(ValueError, match="ids has 2 entries"):
        index.upsert(np.arange(2), v)
    with pytest.raises(ValueError, match="unique"):
        index.upsert(np.array([1, 1, 2]), v)
    with pytest.raises(ValueError, match=">= 0"):
        index.upsert(np.array([-1, 2, 3]), v)
    with pytest.raises(TypeError, match="integers"):
        index.upsert(np.array([1.5, 2.0, 3.0]), v)
    bad = v.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        index.upsert(np.arange(3), bad)
    index.upsert(np.arange(3), v)
    with pytest.raises(ValueError, match="k must be"):
        index.search(v, 0)
    with pytest.raises(ValueError, match="queries must have shape"):
        index.search(v[:, :4], 1)
    assert len(index) == 3  # bad calls lost nothing


def test_bad_factory_and_dim() -> None:
    with pytest.raises(ValueError, match="not a valid FAISS factory"):
        make_index("NoSuchIndex99", DIM)
    with pytest.raises(ValueError, match="dim must be"):
        make_index("Flat", 0)
    with pytest.raises(ValueError, match="factory must be"):
        make_index("", DIM)
