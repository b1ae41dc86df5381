"""Collaborative baselines against hand-computed answers on tiny matrices."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from profiles_fixtures import events

from recsys.collaborative import (
    ALSRecommender,
    CollaborativeEnsemble,
    EASERecommender,
    Interactions,
    ItemKNNRecommender,
    MostPopularRecommender,
    make_collaborative,
    top_k_excluding,
)

# 3 shoppers x 3 products, binary so the answers can be worked out by hand
X = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0]], dtype=np.float32))
IDS = np.array([10, 20, 30], dtype=np.int64)


def row(*values: float) -> sp.csr_matrix:
    return sp.csr_matrix(np.array([values], dtype=np.float32))


def test_interactions_are_log_weighted_sums() -> None:
    hist = {
        "a": events([(1, "view", 0), (1, "view", 1), (1, "view", 2), (1, "purchase", 3)]),
        "b": events([(2, "click", 0), (1, "add_to_cart", 1), (9, "unknown", 2)]),
    }
    inter = Interactions.from_histories(hist)
    assert inter.user_ids == ("a", "b") and inter.item_ids.tolist() == [1, 2, 9]
    m = inter.matrix.toarray()
    # a: 3 views + 1 purchase = 3 * 1 + 4 = 7; b: click 2 on product 2, cart 3 on product 1
    np.testing.assert_allclose(m[0], [np.log1p(7), 0, 0], rtol=1e-6)
    np.testing.assert_allclose(m[1], [np.log1p(3), np.log1p(2), 0], rtol=1e-6)
    assert inter.item_counts().tolist() == [2, 1, 0]
    folded = inter.fold_in(events([(2, "view", 0), (5, "view", 0)])).toarray()
    np.testing.assert_allclose(folded, [[0, np.log1p(1), 0]], rtol=1e-6)
    assert inter.cols_of([9, 1, 77]).tolist() == [2, 0, -1]


def test_popularity_counts_distinct_shoppers() -> None:
    model = MostPopularRecommender().fit(X)
    np.testing.assert_allclose(model.scores(row(0, 0, 1)), [[2, 2, 1]])
    # ties (10 and 20 both have 2 shoppers) go to the lower id
    assert model.recommend(row(0, 0, 0), item_ids=IDS, k=2).item_ids.tolist() == [10, 20]
    out = model.recommend(row(0, 0, 0), item_ids=IDS, k=3, exclude_ids={10})
    assert out.item_ids.tolist() == [20, 30] and out.policy == "popularity"


def test_item_knn_cosine_by_hand() -> None:
    # X^T X = [[2,1,0],[1,2,1],[0,1,1]]: cos(0,1) = 1/2, cos(1,2) = 1/sqrt(2), cos(0,2) = 0
    model = ItemKNNRecommender().fit(X)
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(
        model.similarity.toarray(), [[0, 0.5, 0], [0.5, 0, s], [0, s, 0]], rtol=1e-6
    )
    np.testing.assert_allclose(model.scores(row(1, 0, 1)), [[0, 0.5 + s, 0]], rtol=1e-6)
    # the neighbour behind product 20 for a shopper with 10 (weight 1) and 30 (weight 1)
    assert model.explain(row(1, 0, 1), np.array([1])).tolist() == [2]
    # one neighbour each: product 1 keeps only product 2 (1/sqrt(2) > 1/2)
    pruned = ItemKNNRecommender(n_neighbours=1).fit(X).similarity.toarray()
    assert pruned[0, 1] == 0 and pruned[2, 1] == pytest.approx(s)


def test_ease_closed_form_by_hand() -> None:
    # G + I = [[3,1,0],[1,3,1],[0,1,2]], det 13, P = adj / 13 = [[5,-2,1],[-2,6,-3],[1,-3,8]]/13
    # B_ij = -P_ij / P_jj, zero diagonal
    model = EASERecommender(l2=1.0).fit(X)
    expected = np.array([[0, 1 / 3, -1 / 8], [2 / 5, 0, 3 / 8], [-1 / 5, 1 / 2, 0]])
    np.testing.assert_allclose(model.weights, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.scores(row(1, 0, 0)), [[0, 1 / 3, -1 / 8]], rtol=1e-5)
    out = model.recommend(row(1, 0, 0), item_ids=IDS, k=1, exclude_ids={10})
    assert out.item_ids.tolist() == [20] and out.scores[0] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="max_items=2"):
        EASERecommender(l2=1.0, max_items=2).fit(X)
    with pytest.raises(ValueError, match="l2"):
        EASERecommender(l2=0.0)
    with pytest.raises(RuntimeError, match="fit"):
        EASERecommender().scores(row(1, 0, 0))
    with pytest.raises(ValueError, match="3 columns"):
        model.scores(sp.csr_matrix(np.ones((1, 2), dtype=np.float32)))


def test_als_fold_in_by_hand() -> None:
    model = ALSRecommender(factors=1, regularization=0.5, alpha=1.0, iterations=1).fit(
        sp.csr_matrix(np.eye(2, dtype=np.float32))
    )
    # fix the item factors to y = [1, 2] and fold in a shopper with x = 3 on product 2:
    # c = alpha * x = 3; A = y^T y + reg + (c - 1) y_2^2 = 5 + 0.5 + 8 = 13.5; b = c y_2 = 6
    model._items = np.array([[1.0], [2.0]])
    model._yty = model._items.T @ model._items
    np.testing.assert_allclose(model.user_factors(row(0, 3)), [[6 / 13.5]])
    np.testing.assert_allclose(model.scores(row(0, 3)), [[6 / 13.5, 12 / 13.5]], rtol=1e-6)
    np.testing.assert_allclose(model.scores(row(0, 0)), [[0, 0]])


def test_als_learns_blocks() -> None:
    # two blocks of shoppers x products; each shopper has seen 3 of their block's 4 products
    rng = np.random.default_rng(0)
    m = np.zeros((40, 8), dtype=np.float32)
    for u in range(40):
        block = 4 * (u % 2)
        seen = rng.choice(4, size=3, replace=False)
        m[u, block + seen] = 1.0
    model = ALSRecommender(factors=2, iterations=20, regularization=1.0, seed=0).fit(
        sp.csr_matrix(m)
    )
    s = model.scores(sp.csr_matrix(m))
    s[m > 0] = -np.inf
    best = np.argmax(s, axis=1)
    # every shopper's best unseen product is the missing one of their own block
    assert all((best[u] // 4) == (u % 2) for u in range(40))
    again = ALSRecommender(factors=2, iterations=20, regularization=1.0, seed=0).fit(
        sp.csr_matrix(m)
    )
    np.testing.assert_allclose(again.item_factors, model.item_factors)


def test_make_collaborative_switches_at_the_threshold() -> None:
    below = make_collaborative(100, ease_max_items=100)
    assert isinstance(below, CollaborativeEnsemble)
    assert [type(m) for m in below.models] == [
        EASERecommender,
        ALSRecommender,
        ItemKNNRecommender,
    ]
    assert isinstance(make_collaborative(101, ease_max_items=100), ALSRecommender)


def test_ensemble_averages_z_scores() -> None:
    pop = MostPopularRecommender().fit(X)  # scores [2, 2, 1]: z = [1, 1, -2] / sqrt(2)
    ease = EASERecommender(l2=1.0).fit(X)  # row (1, 0, 0): [0, 1/3, -1/8]
    ens = CollaborativeEnsemble.from_fitted([pop, ease], n_items=3)
    e = np.array([0, 1 / 3, -1 / 8])
    ze = (e - e.mean()) / e.std()
    zp = np.array([1, 1, -2]) / np.sqrt(2)
    np.testing.assert_allclose(ens.scores(row(1, 0, 0))[0], (zp + ze) / 2, rtol=1e-5)
    # explanations come from EASE: product 20 for a shopper with 10 and 30 is due to 30 (3/8)
    assert ens.explain(row(1, 0, 1), np.array([1])).tolist() == [2]
    with pytest.raises(ValueError, match="models"):
        CollaborativeEnsemble([])


def test_top_k_excluding_orders_ties_by_index() -> None:
    s = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    assert top_k_excluding(s, 3).tolist() == [1, 2, 4]
    assert top_k_excluding(s, 3, np.array([0, 1, 0, 0, 0], bool)).tolist() == [2, 4, 3]
    assert top_k_excluding(s, 9).tolist() == [1, 2, 4, 3, 0]
    assert top_k_excluding(s, 2, np.ones(5, bool)).tolist() == []
