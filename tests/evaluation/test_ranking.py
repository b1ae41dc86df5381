"""Ranking metrics and split protocols on hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.evaluation.ranking import (
    catalogue_coverage,
    group_by_user,
    hit_rate_at_k,
    intra_list_diversity,
    leave_last_out,
    map_at_k,
    mean_at_k,
    ndcg_at_k,
    novelty,
    precision_at_k,
    recall_at_k,
    time_split,
)

REC = ["a", "b", "c", "d", "e"]
REL = {"b", "d", "x"}


def test_recall_precision_hit() -> None:
    assert recall_at_k(REC, REL, 2) == pytest.approx(1 / 3)
    assert recall_at_k(REC, REL, 5) == pytest.approx(2 / 3)
    assert precision_at_k(REC, REL, 2) == pytest.approx(1 / 2)
    assert precision_at_k(REC, REL, 5) == pytest.approx(2 / 5)
    # precision divides by k even when fewer items were recommended
    assert precision_at_k(["b"], REL, 4) == pytest.approx(1 / 4)
    assert hit_rate_at_k(REC, REL, 1) == 0.0
    assert hit_rate_at_k(REC, REL, 2) == 1.0
    assert recall_at_k(REC, set(), 3) == 0.0


def test_ndcg_binary_and_graded() -> None:
    # hits at ranks 2 and 4; ideal: 3 relevant, k=5 -> ranks 1..3
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(REC, REL, 5) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["b", "d", "x"], REL, 3) == pytest.approx(1.0)
    graded = {"a": 3.0, "c": 1.0}
    dcg_g = 3.0 + 1.0 / math.log2(4)
    idcg_g = 3.0 + 1.0 / math.log2(3)
    assert ndcg_at_k(REC, graded, 3) == pytest.approx(dcg_g / idcg_g)
    assert ndcg_at_k(REC, {"z"}, 3) == 0.0
    with pytest.raises(ValueError, match="gains"):
        ndcg_at_k(REC, {"a": -1.0}, 3)


def test_map() -> None:
    # hits at ranks 2 (P=1/2) and 4 (P=2/4); divided by min(3, 5)
    assert map_at_k(REC, REL, 5) == pytest.approx((0.5 + 0.5) / 3)
    assert map_at_k(["a", "b"], {"a", "b"}, 2) == pytest.approx(1.0)
    # duplicates count once
    assert map_at_k(["a", "a", "b"], {"a", "b"}, 3) == pytest.approx(1.0)


def test_k_validation() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            recall_at_k(REC, REL, bad)  # type: ignore[arg-type]


def test_mean_at_k_skips_users_without_relevant() -> None:
    recs = {1: ["a", "b"], 2: ["c"], 3: ["d"]}
    rels = {1: {"a"}, 2: {"z"}, 3: set(), 4: {"a"}}
    # users 1 (1.0), 2 (0.0), 4 (0.0: no recommendations); 3 skipped
    assert mean_at_k(recall_at_k, recs, rels, 2) == pytest.approx(1 / 3)
    assert math.isnan(mean_at_k(recall_at_k, recs, {3: set()}, 2))


def test_coverage_diversity_novelty() -> None:
    assert catalogue_coverage([["a", "b", "c"], ["a", "d"]], 10, 2) == pytest.approx(3 / 10)
    with pytest.raises(ValueError, match="catalogue_size"):
        catalogue_coverage([["a", "b", "c"]], 2, 3)
    emb = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [-1.0, 0.0]}
    # pairs: a-b 1, a-c 2, b-c 1 -> mean 4/3
    assert intra_list_diversity(["a", "b", "c"], emb, 3) == pytest.approx(4 / 3)
    assert intra_list_diversity(["a"], emb, 3) == 0.0
    pop = {"a": 50, "b": 25}
    # -log2(0.5)=1, -log2(0.25)=2, unseen -> log2(100)
    expected = (1 + 2 + math.log2(100)) / 3
    assert novelty([["a", "b", "q"]], pop, 100, 3) == pytest.approx(expected)


def test_leave_last_out() -> None:
    users = np.array([1, 1, 2, 1, 2, 3])
    ts = np.array([10, 30, 5, 20, 6, 1])
    split = leave_last_out(users, ts)
    # user 1 last = row 1 (ts 30), user 2 last = row 4 (ts 6), user 3 has one row -> train
    assert split.test_index.tolist() == [1, 4]
    assert split.train_index.tolist() == [0, 2, 3, 5]
    # ties keep input order: the later row is the held-out one
    tie = leave_last_out(np.array(["u", "u"]), np.array([1, 1]))
    assert tie.test_index.tolist() == [1]
    with pytest.raises(ValueError, match="min_interactions"):
        leave_last_out(users, ts, n_test=2, min_interactions=2)
    with pytest.raises(ValueError, match="timestamps must have length"):
        leave_last_out(users, ts[:3])


def test_time_split_and_grouping() -> None:
    ts = np.array([5, 1, 3, 4, 2])
    split = time_split(ts, cutoff=4)
    assert split.test_index.tolist() == [0, 3]
    assert split.train_index.tolist() == [1, 2, 4]
    frac = time_split(ts, test_fraction=0.4)
    assert frac.test_index.tolist() == [0, 3]
    with pytest.raises(ValueError, match="exactly one"):
        time_split(ts)
    grouped = group_by_user(["u", "v", "u"], [1, 2, 3])
    assert grouped == {"u": [1, 3], "v": [2]}
    assert group_by_user(["u", "v", "u"], [1, 2, 3], index=[2]) == {"u": [3]}
