"""Segments: k by silhouette, seeded, stable ids across rebuilds."""

from __future__ import annotations

import numpy as np
import pytest
from profiles_fixtures import unit

from recsys.segments import KMeansSegmenter, match_segment_ids


def blobs(k: int, n_per: int = 40, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(dim, dtype=np.float32)[:k]
    x = np.concatenate([unit(c + 0.08 * rng.standard_normal((n_per, dim))) for c in centres])
    return x, np.repeat(np.arange(k), n_per)


@pytest.mark.parametrize("true_k", [3, 5])
def test_k_chosen_is_true_k_on_separated_blobs(true_k: int) -> None:
    x, truth = blobs(true_k)
    fit = KMeansSegmenter(k_min=2, k_max=8, seed=0).fit(x)
    assert fit.k == true_k
    assert max(fit.silhouettes, key=fit.silhouettes.get) == true_k  # type: ignore[arg-type]
    # the clustering equals the truth up to a relabelling
    pairs = {(int(a), int(b)) for a, b in zip(truth, fit.labels, strict=True)}
    assert len(pairs) == true_k
    np.testing.assert_allclose(np.linalg.norm(fit.centroids, axis=1), 1.0, atol=1e-5)


def test_fit_is_seeded() -> None:
    x, _ = blobs(4, seed=1)
    a = KMeansSegmenter(seed=3, k_max=6).fit(x)
    b = KMeansSegmenter(seed=3, k_max=6).fit(x)
    assert a.k == b.k and np.array_equal(a.labels, b.labels)


def test_segment_ids_stable_when_membership_barely_moves() -> None:
    x, _ = blobs(4)
    users = [f"u{i}" for i in range(len(x))]
    seg = KMeansSegmenter(k_min=2, k_max=6, seed=0)
    first = seg.fit(x)
    old_ids = [10, 20, 30, 40]
    old_members = {old_ids[c]: {users[i] for i in m} for c, m in enumerate(first.members())}
    old_centroids = {old_ids[c]: first.centroids[c] for c in range(first.k)}

    # rebuild: 4 users of 160 nudged, another seed (so raw labels are permuted)
    rng = np.random.default_rng(5)
    x2 = x.copy()
    moved = rng.choice(len(x), size=4, replace=False)
    x2[moved] = unit(x2[moved] + 0.05 * rng.standard_normal(x2[moved].shape))
    second = KMeansSegmenter(k_min=2, k_max=6, seed=7).fit(x2)
    new_members = [{users[i] for i in m} for m in second.members()]
    ids = match_segment_ids(
        old_centroids=old_centroids,
        old_members=old_members,
        new_centroids=second.centroids,
        new_members=new_members,
    )
    assert sorted(ids) == old_ids  # type: ignore[type-var]
    for new_c, old_id in enumerate(ids):
        assert new_members[new_c] == old_members[old_id]  # type: ignore[index]


def test_a_new_cluster_gets_a_new_id() -> None:
    e = np.eye(3, dtype=np.float32)
    ids = match_segment_ids(
        old_centroids={1: e[0], 2: e[1]},
        old_members={1: {"a", "b"}, 2: {"c", "d"}},
        new_centroids=np.stack([e[1], e[2], e[0]]),
        new_members=[{"c", "d"}, {"x", "y"}, {"a", "b", "z"}],
    )
    assert ids == [2, None, 1]
    # a membership overlap below min_jaccard breaks the match
    ids = match_segment_ids(
        old_centroids={1: e[0]},
        old_members={1: {"a", "b", "c", "d"}},
        new_centroids=e[:1],
        new_members=[{"a", "x", "y", "z"}],
        min_jaccard=0.5,
    )
    assert ids == [None]


def test_validation() -> None:
    with pytest.raises(ValueError, match="k_min"):
        KMeansSegmenter(k_min=1)
    with pytest.raises(ValueError, match="k_max"):
        KMeansSegmenter(k_min=5, k_max=3)
    with pytest.raises(ValueError, match="more than k_min"):
        KMeansSegmenter(k_min=2).fit(np.eye(2, dtype=np.float32))
