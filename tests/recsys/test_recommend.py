"""Recommendations: interests, exclusions, MMR, popularity prior, similar products,
reference choice."""

from __future__ import annotations

import numpy as np
import pytest
from profiles_fixtures import BruteForceIndex, events, unit

from recsys.profiles import ItemVectors, ProfileBuilder
from recsys.recommend import InterestRecommender, PopularityRecommender, Recommendations
from recsys.references import allocate_slots, mmr_select, select_references

DIM = 8


def catalog() -> tuple[BruteForceIndex, ItemVectors]:
    """ids 1-10 near e0 (interest A), 11-20 near e1 (interest B), 21-30 on the A/B diagonal
    (what a blurred mean profile would find), 31-40 near e2."""
    rng = np.random.default_rng(0)
    e = np.eye(DIM, dtype=np.float32)
    groups = [e[0], e[1], unit(e[0] + e[1]), e[2]]
    x = np.concatenate([unit(g + 0.1 * rng.standard_normal((10, DIM))) for g in groups])
    ids = np.arange(1, 41, dtype=np.int64)
    index = BruteForceIndex(DIM)
    index.upsert(ids, x)
    return index, ItemVectors(ids=ids, vectors=x)


def two_interest_profile(items: ItemVectors):  # type: ignore[no-untyped-def]
    evs = events([(i, "view", 0) for i in (1, 2, 3, 4)] + [(i, "view", 0) for i in (11, 12, 13)])
    return ProfileBuilder(cluster_threshold=0.5).build("u", evs, items)


def test_mmr_picks_diverse_items() -> None:
    e = np.eye(3, dtype=np.float32)
    # two near-duplicates with the best relevance and one different item
    x = unit(np.stack([e[0], e[0] + 0.01 * e[1], e[1]]))
    rel = np.array([1.0, 0.99, 0.8])
    assert mmr_select(rel, x, k=2, lambda_=1.0) == [0, 1]
    assert mmr_select(rel, x, k=2, lambda_=0.5) == [0, 2]
    with pytest.raises(ValueError, match="lambda_"):
        mmr_select(rel, x, k=2, lambda_=1.5)


def test_purchased_items_are_excluded() -> None:
    index, items = catalog()
    profile = two_interest_profile(items)
    rec = InterestRecommender(index=index, mmr_lambda=1.0, popularity_weight=0.0)
    out = rec.recommend(profile, k=10, exclude_ids={1, 2})
    assert 1 not in out.item_ids and 2 not in out.item_ids
    assert len(out) == 10


def test_each_interest_is_served_not_the_blurred_mean() -> None:
    index, items = catalog()
    profile = two_interest_profile(items)
    assert len(profile.interests) == 2
    rec = InterestRecommender(index=index, mmr_lambda=1.0, popularity_weight=0.0)
    out = rec.recommend(profile, k=14)
    assert set(out.item_ids.tolist()) <= set(range(1, 21))
    assert any(i <= 10 for i in out.item_ids) and any(11 <= i <= 20 for i in out.item_ids)
    # the blurred mean's nearest items are the diagonal ones
    _, blurred = index.search(profile.embedding[None, :], 5)
    assert set(blurred[0].tolist()) & set(range(21, 31))
    assert np.all(np.diff(out.scores) <= 1e-6)


def test_popularity_prior_breaks_near_ties() -> None:
    index = BruteForceIndex(2)
    x = unit(np.array([[1.0, 0.0], [1.0, 0.001], [0.0, 1.0]], dtype=np.float32))
    index.upsert(np.array([1, 2, 3]), x)
    items = ItemVectors(ids=np.array([1, 2, 3]), vectors=x)
    profile = ProfileBuilder(min_events=1).build("u", events([(1, "view", 0)]), items)
    plain = InterestRecommender(index=index, mmr_lambda=1.0, popularity_weight=0.0)
    assert plain.recommend(profile, k=1, exclude_ids={3}).item_ids.tolist() == [1]
    popular = InterestRecommender(
        index=index, mmr_lambda=1.0, popularity_weight=0.1, popularity={1: 1, 2: 500, 3: 1}
    )
    assert popular.recommend(profile, k=1).item_ids.tolist() == [2]


def test_similar_products_exclude_the_product() -> None:
    index, _ = catalog()
    out = InterestRecommender(index=index).similar(12, k=5)
    assert 12 not in out.item_ids and len(out) == 5
    assert set(out.item_ids.tolist()) <= set(range(11, 21))
    with pytest.raises(KeyError, match="999"):
        InterestRecommender(index=index).similar(999, k=5)


def test_popularity_baseline() -> None:
    pop = PopularityRecommender(popularity={5: 10, 6: 30, 7: 30, 8: 1})
    assert pop.recommend(k=3).item_ids.tolist() == [6, 7, 5]
    assert pop.recommend(k=3, exclude_ids={6}).item_ids.tolist() == [7, 5, 8]


def test_recommendations_validation() -> None:
    with pytest.raises(ValueError, match="propensities"):
        Recommendations(
            item_ids=np.array([1]), scores=np.array([0.5]), propensities=np.array([0.0])
        )
    with pytest.raises(ValueError, match="one length"):
        Recommendations(item_ids=np.array([1, 2]), scores=np.array([0.5]))


def test_reference_slots_follow_importance_and_skip_featured() -> None:
    assert allocate_slots([0.7, 0.3], 4) == [3, 1]
    assert allocate_slots([0.5, 0.3, 0.2], 2) == [1, 1, 0]
    _, items = catalog()
    ids = np.array([1, 2, 3, 11, 12], dtype=np.int64)
    e = np.eye(DIM, dtype=np.float32)
    refs = select_references(
        centroids=np.stack([e[0], e[1]]),
        importances=[0.6, 0.4],
        item_ids=ids,
        item_vectors=items.get(ids),
        n=3,
        lambda_=0.7,
        exclude_ids={1},
    )
    assert 1 not in refs and len(refs) == 3
    assert sum(r <= 10 for r in refs) == 2 and sum(r >= 11 for r in refs) == 1
