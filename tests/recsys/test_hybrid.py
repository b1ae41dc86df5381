"""The hybrid recommender: new products through content, explanations, blend tuning."""

from __future__ import annotations

import numpy as np
import pytest
from profiles_fixtures import events, unit

from recsys.collaborative import EASERecommender, Interactions
from recsys.hybrid import COMPONENTS, BlendWeights, HybridRecommender, tune_blend
from recsys.profiles import HistoryEvent, ItemVectors, ProfileBuilder

DIM = 8
NEW = 99


def world() -> tuple[ItemVectors, dict[str, list[HistoryEvent]]]:
    """Products 1-6 near e0, 7-12 near e1, 13-18 near e2, and product 99 exactly on e0 with
    no interactions at all. 30 shoppers, each viewing 4 products of one group and buying a
    fifth."""
    rng = np.random.default_rng(0)
    e = np.eye(DIM, dtype=np.float32)
    vecs = [unit(e[g] + 0.15 * rng.standard_normal((6, DIM))) for g in range(3)]
    x = np.concatenate([*vecs, e[0][None, :]]).astype(np.float32)
    ids = np.array([*range(1, 19), NEW], dtype=np.int64)
    hist: dict[str, list[HistoryEvent]] = {}
    for u in range(30):
        g = u % 3
        picks = 1 + 6 * g + rng.choice(6, size=5, replace=False)
        hist[f"u{u:02d}"] = events(
            [(int(p), "view", d) for d, p in enumerate(picks[:4])]
            + [(int(picks[4]), "purchase", 5)]
        )
    return ItemVectors(ids=ids, vectors=x), hist


def make(items: ItemVectors, hist: dict[str, list[HistoryEvent]]) -> HybridRecommender:
    inter = Interactions.from_histories(hist)
    assert NEW not in inter.item_ids  # the new product has no column at all
    ease = EASERecommender(l2=5.0).fit(inter.matrix)
    return HybridRecommender(collaborative=ease, interactions=inter, items=items, mmr_lambda=1.0)


def test_new_product_is_recommended_through_content_alone() -> None:
    items, hist = world()
    hybrid = make(items, hist)
    history = events([(1, "view", 0), (2, "view", 1), (3, "click", 2), (4, "purchase", 3)])
    profile = ProfileBuilder(min_events=1).build("shopper", history, items)
    # the products the shopper already saw are excluded here: the revisit component would
    # (rightly) rank them first; what is left of their group is 5, 6 and the new product
    out = hybrid.recommend(profile, k=3, exclude_ids={1, 2, 3, 4}, history=history)
    assert set(out.item_ids.tolist()) == {5, 6, NEW}
    # the collaborative model alone cannot score a product it has no column for
    row = hybrid.interactions.fold_in(history)
    alone = hybrid.collaborative.recommend(  # type: ignore[attr-defined]
        row, item_ids=hybrid.interactions.item_ids, k=18
    )
    assert NEW not in alone.item_ids.tolist()
    # explanations: a product of the history, and the (only) interest
    assert out.because_ids is not None and out.interest_index is not None
    assert set(out.because_ids.tolist()) <= {1, 2, 3, 4}
    assert out.interest_index.tolist() == [0, 0, 0]
    assert out.policy == "hybrid"


def test_stored_rows_serve_the_storefront_call() -> None:
    items, hist = world()
    hybrid = make(items, hist)
    builder = ProfileBuilder(min_events=1)
    profile = builder.build("u04", hist["u04"], items)  # group 1: products 7-12
    bought = {e.product_id for e in hist["u04"] if e.kind == "purchase"}
    # the storefront's call: no history passed, the fitted matrix's row is used
    out = hybrid.recommend(profile, k=1, exclude_ids=bought)
    assert len(out) == 1 and 7 <= int(out.item_ids[0]) <= 12
    assert int(out.item_ids[0]) not in bought
    # a shopper the matrix never saw, without events: content (the profile) alone
    empty = hybrid.stored_row("nobody")
    assert empty.nnz == 0
    with pytest.raises(ValueError, match="k: expected >= 1"):
        hybrid.recommend(profile, k=0)


def test_cold_shoppers_use_their_own_weights() -> None:
    items, hist = world()
    hybrid = make(items, hist)
    hybrid.warm = BlendWeights(1.0, 0.0, 0.0)
    hybrid.cold = BlendWeights(0.0, 1.0, 0.0)
    comps = {c: np.arange(2 * len(items.ids), dtype=float).reshape(2, -1) * (i + 1)
             for i, c in enumerate(COMPONENTS)}  # fmt: skip
    blended = hybrid.blend(comps, [5, 2])  # shopper 0 warm, shopper 1 cold (<= 2 events)
    np.testing.assert_allclose(blended[0], comps["collaborative"][0])
    np.testing.assert_allclose(blended[1], comps["interests"][1])


def test_tune_blend_finds_the_informative_component() -> None:
    rng = np.random.default_rng(0)
    n, m = 60, 40
    targets = rng.integers(0, m, size=n)
    informative = rng.standard_normal((n, m))
    informative[np.arange(n), targets] += 10.0
    comps = {
        "collaborative": rng.standard_normal((n, m)),
        "interests": rng.standard_normal((n, m)),
        "kernel": informative,
    }
    excluded = np.zeros((n, m), dtype=bool)
    weights, recall = tune_blend(comps, targets, excluded, k=1)
    # the kernel alone ranks every target first; ties are broken by MRR, then grid order
    assert recall == 1.0 and (informative.argmax(1) == targets).all()
    assert weights.kernel == 1.0 and weights.collaborative == 0.0 and weights.interests == 0.0
    # an excluded target can never be found
    excluded[np.arange(n), targets] = True
    _, none = tune_blend(comps, targets, excluded, k=5)
    assert none == 0.0
    with pytest.raises(ValueError, match="step"):
        tune_blend(comps, targets, excluded, step=0.0)
    with pytest.raises(ValueError, match="BlendWeights"):
        BlendWeights(0.0, 0.0, 0.0)


def test_revisit_scores_the_shoppers_own_products_by_engagement() -> None:
    items, hist = world()
    hybrid = make(items, hist)
    history = events([(1, "view", 0), (2, "view", 1), (2, "add_to_cart", 2)])
    profile = ProfileBuilder(min_events=1).build("shopper", history, items)
    comps = hybrid.component_scores([profile], hybrid.interactions.fold_in(history))
    rev = comps["revisit"][0]
    pos = {int(i): j for j, i in enumerate(items.ids.tolist())}
    # log1p(1 + 3) for product 2 > log1p(1) for product 1 > 0 for everything else (z-scored)
    assert rev[pos[2]] > rev[pos[1]] > rev[pos[3]]
    others = np.delete(rev, [pos[1], pos[2]])
    np.testing.assert_allclose(others, others[0])
    # z-scores: mean 0, standard deviation 1 over the catalog
    assert abs(rev.mean()) < 1e-9 and rev.std() == pytest.approx(1.0)


def test_tune_blend_over_four_components() -> None:
    rng = np.random.default_rng(0)
    n, m = 60, 40
    targets = rng.integers(0, m, size=n)
    informative = rng.standard_normal((n, m))
    informative[np.arange(n), targets] += 10.0
    comps = {c: rng.standard_normal((n, m)) for c in COMPONENTS}
    comps["revisit"] = informative
    excluded = np.zeros((n, m), dtype=bool)
    weights, recall = tune_blend(comps, targets, excluded, k=1, step=0.25)
    assert recall == 1.0 and weights == BlendWeights(0.0, 0.0, 0.0, 1.0)
    # components left out get weight 0
    partial, _ = tune_blend({"kernel": informative}, targets, excluded, k=1)
    assert partial == BlendWeights(0.0, 0.0, 1.0, 0.0)
