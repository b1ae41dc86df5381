"""Taste profiles: decay, event weights, multi-interest clustering, hash, cold start."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from profiles_fixtures import T0, KeywordEmbedder, attribute_catalog, events, tiny_vocabulary, unit

from recsys.config import RecsysConfig
from recsys.profiles import (
    ColdStart,
    FallbackProfile,
    HistoryEvent,
    ItemVectors,
    ProfileBuilder,
    TasteProfile,
    cluster_items,
    decayed_weights,
)
from recsys.terms import StyleTermScorer

DIM = 16


def two_blob_items(n_a: int = 6, n_b: int = 3, seed: int = 0) -> ItemVectors:
    """Ids 1..n_a near e0, ids 101..100+n_b near e1, id 900 near e2 (a stray item)."""
    rng = np.random.default_rng(seed)
    e = np.eye(DIM, dtype=np.float32)
    a = unit(e[0] + 0.05 * rng.standard_normal((n_a, DIM)))
    b = unit(e[1] + 0.05 * rng.standard_normal((n_b, DIM)))
    stray = unit(e[2] + 0.05 * rng.standard_normal((1, DIM)))
    ids = np.concatenate([np.arange(1, n_a + 1), np.arange(101, 101 + n_b), [900]])
    return ItemVectors(ids=ids, vectors=np.concatenate([a, b, stray]))


def test_decay_halves_weight_at_one_half_life() -> None:
    w = decayed_weights(
        ["view", "view", "purchase"],
        [T0, T0 + timedelta(days=10), T0 + timedelta(days=20)],
        event_weights={"view": 1.0, "purchase": 8.0},
        half_life_days=10.0,
    )
    np.testing.assert_allclose(w, [0.25, 0.5, 8.0])


def test_decay_reference_time_does_not_change_relative_weights() -> None:
    kinds, ts = ["view", "click"], [T0, T0 + timedelta(days=3)]
    a = decayed_weights(kinds, ts, event_weights={"view": 1, "click": 2}, half_life_days=7)
    b = decayed_weights(
        kinds, ts, event_weights={"view": 1, "click": 2}, half_life_days=7, now=T0 + timedelta(90)
    )
    np.testing.assert_allclose(a / a.sum(), b / b.sum())


def test_two_separated_clusters_give_two_interests_with_right_weights() -> None:
    items = two_blob_items()
    evs = events([(i, "view", 0) for i in range(1, 7)] + [(i, "view", 0) for i in (101, 102, 103)])
    profile = ProfileBuilder(cluster_threshold=0.5, min_interest_share=0.1).build("u", evs, items)
    assert profile.source == "history"
    assert len(profile.interests) == 2
    first, second = profile.interests
    assert first.weight == pytest.approx(6 / 9)
    assert second.weight == pytest.approx(3 / 9)
    assert set(first.item_ids) == set(range(1, 7))
    assert set(second.item_ids) == {101, 102, 103}
    assert first.medoid_id in range(1, 7)
    assert float(first.centroid[0]) > 0.95 and float(second.centroid[1]) > 0.95
    assert np.linalg.norm(profile.embedding) == pytest.approx(1.0, abs=1e-5)


def test_event_kinds_and_decay_set_interest_importance() -> None:
    items = two_blob_items(n_a=2, n_b=4)
    # cluster A: two purchases (8 each) today; cluster B: four views (1 each) today
    evs = events(
        [(1, "purchase", 30), (2, "purchase", 30)] + [(i, "view", 30) for i in range(101, 105)]
    )
    weights = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}
    p = ProfileBuilder(event_weights=weights).build("u", evs, items)
    assert set(p.interests[0].item_ids) == {1, 2}
    assert p.interests[0].weight == pytest.approx(16 / 20)
    # the same purchases one half-life (30 days) older weigh half
    evs_old = events(
        [(1, "purchase", 0), (2, "purchase", 0)] + [(i, "view", 30) for i in range(101, 105)]
    )
    p_old = ProfileBuilder(event_weights=weights, half_life_days=30).build("u", evs_old, items)
    assert p_old.interests[0].weight == pytest.approx(8 / 12)


def test_stray_item_is_dropped_as_noise() -> None:
    items = two_blob_items()
    evs = events([(i, "view", 0) for i in range(1, 7)] + [(101, "view", 0), (900, "view", 0)])
    p = ProfileBuilder(min_interest_share=0.15).build("u", evs, items)
    assert len(p.interests) == 1
    assert 900 not in p.interests[0].item_ids


def test_max_interests_caps_the_count() -> None:
    items = two_blob_items()
    evs = events([(i, "view", 0) for i in range(1, 7)] + [(101, "view", 0), (900, "view", 0)])
    p = ProfileBuilder(min_interest_share=0.0, max_interests=2).build("u", evs, items)
    assert len(p.interests) == 2
    assert sum(i.weight for i in p.interests) == pytest.approx(1.0)


def test_profile_hash_stable_unless_events_change() -> None:
    items = two_blob_items()
    evs = events([(i, "view", i) for i in range(1, 7)] + [(101, "click", 2), (102, "view", 3)])
    builder = ProfileBuilder()
    h1 = builder.build("u", evs, items).profile_hash
    h2 = builder.build("u", list(reversed(evs)), items).profile_hash
    h3 = builder.build("u", evs, items, now=T0 + timedelta(days=400)).profile_hash
    assert h1 == h2 == h3
    added = [*evs, HistoryEvent(product_id=103, kind="purchase", ts=T0 + timedelta(days=8))]
    assert builder.build("u", added, items).profile_hash != h1


def test_profile_round_trips_through_dict() -> None:
    items, _ = attribute_catalog(KeywordEmbedder(dim=256))
    scorer = StyleTermScorer.fit(
        vocabulary=tiny_vocabulary(),
        embedder=KeywordEmbedder(dim=256),
        catalog_vectors=items.vectors,
    )
    evs = events([(i, "view", 0) for i in range(1, 9)])
    p = ProfileBuilder(scorer=scorer).build("u", evs, items)
    q = TasteProfile.from_dict(p.to_dict())
    assert q.profile_hash == p.profile_hash == q.compute_hash()
    assert q.style_terms == p.style_terms
    assert q.interests[0].item_ids == p.interests[0].item_ids


def test_style_terms_name_the_colour_of_the_history() -> None:
    emb = KeywordEmbedder(dim=256)
    items, attrs = attribute_catalog(emb)
    scorer = StyleTermScorer.fit(
        vocabulary=tiny_vocabulary(), embedder=emb, catalog_vectors=items.vectors
    )
    reds = [i for i, a in attrs.items() if a["colour"] == "red"]
    blues = [i for i, a in attrs.items() if a["colour"] == "blue"]
    evs = events([(i, "view", 0) for i in reds[:12]] + [(i, "view", 0) for i in blues[:4]])
    p = ProfileBuilder(scorer=scorer, cluster_threshold=0.3).build("u", evs, items)
    colours = [t.term for t in p.style_terms if t.facet == "colour"]
    assert colours[0] == "red"
    assert p.interests[0].terms[0].term == "red"
    assert any(t.term == "blue" for t in p.interests[1].terms if t.facet == "colour")


def test_references_exclude_featured_product() -> None:
    items = two_blob_items()
    evs = events([(i, "view", 0) for i in range(1, 7)] + [(i, "view", 0) for i in (101, 102, 103)])
    p = ProfileBuilder(n_references=3).build("u", evs, items, exclude_reference_ids={1})
    assert 1 not in p.reference_ids
    refs = p.references_for(2, 3)
    assert 2 not in refs and len(refs) == 3
    # both interests are represented
    assert any(r < 100 for r in refs) and any(r > 100 for r in refs)


def test_cold_start_segment_then_popularity() -> None:
    items = two_blob_items()
    e = np.eye(DIM, dtype=np.float32)
    cold = ColdStart(
        segments={
            7: FallbackProfile(embedding=e[0], style_terms=(), item_ids=(1, 2)),
            8: FallbackProfile(embedding=e[1], style_terms=(), item_ids=(101,)),
        },
        memberships={"member": 8},
        popularity=FallbackProfile(embedding=e[2], style_terms=(), item_ids=(900,)),
    )
    builder = ProfileBuilder(min_events=3)
    thin = builder.build("thin", events([(102, "view", 0)]), items, cold_start=cold)
    assert (thin.source, thin.segment_id) == ("segment", 8)
    member = builder.build("member", [], items, cold_start=cold)
    assert (member.source, member.segment_id) == ("segment", 8)
    stranger = builder.build("stranger", [], items, cold_start=cold)
    assert stranger.source == "popularity" and stranger.reference_ids == (900,)
    with pytest.raises(ValueError, match="no cold-start fallback"):
        builder.build("x", [], items)


def test_threshold_from_catalog_quantile() -> None:
    from recsys.profiles import threshold_from_quantile

    # 3 orthogonal pairs: 3 of 15 pairwise distances are ~0, the other 12 are 1
    e = np.eye(3, dtype=np.float32)
    x = unit(np.repeat(e, 2, axis=0) + 0.001)
    assert threshold_from_quantile(x, 0.1) < 0.01
    assert threshold_from_quantile(x, 0.5) == pytest.approx(1.0, abs=0.01)
    cfg = RecsysConfig(profile_cluster_quantile=0.5)
    assert ProfileBuilder.from_config(cfg, catalog_vectors=x).cluster_threshold == pytest.approx(
        1.0, abs=0.01
    )
    assert ProfileBuilder.from_config(cfg).cluster_threshold == cfg.profile_cluster_threshold


def test_merge_close_centroids_joins_split_halves() -> None:
    from recsys.profiles import merge_close_centroids

    # two spread-out halves around e0 (their centroids coincide) and one cluster at e1
    x = unit(
        np.array([[1, 0.6, 0, 0], [1, -0.6, 0, 0], [1, 0, 0.6, 0], [1, 0, -0.6, 0], [0, 0, 0, 1]])
    )
    labels = np.array([0, 0, 1, 1, 2])
    merged = merge_close_centroids(x, np.ones(5), labels, threshold=0.1)
    assert merged.tolist() == [0, 0, 0, 0, 1]
    # clusters farther apart than the threshold stay apart
    far = np.array([0, 0, 0, 0, 1])
    assert merge_close_centroids(x, np.ones(5), far, threshold=0.5).tolist() == [0, 0, 0, 0, 1]


def test_cluster_items_known_labels() -> None:
    x = unit(np.array([[1, 0, 0], [0.99, 0.1, 0], [0, 1, 0], [0.05, 1, 0]], dtype=np.float32))
    assert cluster_items(x, threshold=0.3).tolist() == [0, 0, 1, 1]
    assert cluster_items(x, threshold=0.5, linkage="ward").tolist() == [0, 0, 1, 1]


def test_builder_from_config_and_validation() -> None:
    b = ProfileBuilder.from_config(RecsysConfig())
    assert b.event_weights["purchase"] > b.event_weights["add_to_cart"] > b.event_weights["click"]
    with pytest.raises(ValueError, match="half_life_days"):
        ProfileBuilder(half_life_days=0)
    with pytest.raises(ValueError, match="profile_event_weights"):
        RecsysConfig(profile_event_weights={"like": 1.0})
    with pytest.raises(KeyError, match="item id 55"):
        two_blob_items().get([55])
