"""Interest cells: communities, session shares, the two-cell lift and its tuning, by hand."""

from __future__ import annotations

import numpy as np
import pytest
from profiles_fixtures import events, unit

from recsys.cells import (
    CellParams,
    CellTransitions,
    ProductCells,
    adjust_scores,
    category_communities,
    next_probabilities,
    session_labels,
    sessions_of,
    tune_cells,
)
from recsys.collaborative import EASERecommender, Interactions
from recsys.hybrid import HybridRecommender
from recsys.profiles import HistoryEvent, ItemVectors

MIN = 1 / (24 * 60)  # one minute in days


def test_sessions_split_at_gaps_over_30_minutes() -> None:
    h = events([(1, "view", 0), (2, "view", 20 * MIN), (3, "view", 51 * MIN), (4, "view", 2)])
    assert [[e.product_id for e in s] for s in sessions_of(h)] == [[1, 2], [3], [4]]
    assert sessions_of([]) == []


def test_category_communities_join_co_viewed_categories() -> None:
    # products 1-2 mug, 3-4 lamp, 5-6 dress, 7-8 hoodie, 9 watch; sessions view mug with
    # lamp or dress with hoodie, and one session mixes mug and dress once
    cat = {1: "mug", 2: "mug", 3: "lamp", 4: "lamp", 5: "dress", 6: "dress"}
    cat |= {7: "hoodie", 8: "hoodie", 9: "watch"}
    hist = {
        "a": events([(1, "view", 0), (3, "view", 0.001), (2, "view", 1), (4, "view", 1.001)]),
        "b": events([(5, "view", 0), (7, "view", 0.001), (6, "view", 2), (8, "view", 2.001)]),
        "c": events([(1, "view", 0), (5, "view", 0.001), (9, "view", 3)]),
    }
    # session shares: 2x (mug .5, lamp .5), 2x (dress .5, hoodie .5), 1x (mug .5, dress .5),
    # 1x watch 1. C[mug, lamp] = 0.5, mug total 1.5 (0.5 + 0.25 each), lamp 1.0, sum 6:
    # lift(mug, lamp) = 0.5 * 6 / (1.5 * 1.0) = 2 > 1; lift(mug, dress) = 0.25 * 6 / 2.25 < 1
    com = category_communities(hist, cat)
    assert com == {"dress": 0, "hoodie": 0, "lamp": 1, "mug": 1, "watch": 2}
    assert category_communities(hist, cat, min_lift=2.5) == {
        "dress": 0,
        "hoodie": 1,
        "lamp": 2,
        "mug": 3,
        "watch": 4,
    }


def cells_world() -> ProductCells:
    """Products 1-8: colours red (1-4) / blue (5-8), categories mug / lamp (home) and dress
    (apparel): cells red-home (1, 2), red-apparel (3, 4), blue-home (5, 6), blue-apparel
    (7, 8)."""
    colour = {i: ("red" if i <= 4 else "blue") for i in range(1, 9)}
    category = {1: "mug", 2: "lamp", 3: "dress", 4: "dress", 5: "mug", 6: "lamp"}
    category |= {7: "dress", 8: "dress"}
    return ProductCells(np.arange(1, 9), colour, category, {"dress": 0, "lamp": 1, "mug": 1})


def cell_items() -> ItemVectors:
    """CLIP-like vectors of products 1-8: two near-identical vectors per cell."""
    e = np.eye(4, dtype=np.float32)
    x = unit(np.stack([e[0], e[0] + 0.1, e[1], e[1] + 0.1, e[2], e[2] + 0.1, e[3], e[3] + 0.1]))
    return ItemVectors(ids=np.arange(1, 9), vectors=x)


def test_cells_and_session_shares_by_hand() -> None:
    c = cells_world()
    # colours sorted: blue 0, red 1; communities: apparel 0, home 1; cell = colour * 2 + comm
    assert c.cell.tolist() == [3, 3, 2, 2, 1, 1, 0, 0] and c.n_cells == 4
    # session 1: three views of red-home; session 2 (a day later): one purchase of blue-apparel
    h = events([(1, "view", 0), (2, "view", MIN), (1, "view", 2 * MIN), (7, "purchase", 1)])
    # per session, then averaged: (0, 0, 0, 1) and (1, 0, 0, 0): a long session does not
    # outweigh a short one (event shares would be 3/7 vs 4/7)
    assert c.shares(h).tolist() == [0.5, 0.0, 0.0, 0.5]
    assert c.shares([]).tolist() == [0.0] * 4


def test_second_interest_differs_in_colour_and_community() -> None:
    c = cells_world()
    # top red-home 0.6; red-apparel (same colour) 0.3 and blue-home (same community) 0.05
    # are spill-over; blue-apparel 0.05 is the only distinct cell
    s = np.array([0.05, 0.05, 0.3, 0.6])
    assert c.interest_cells(s, 0.05) == [3, 0]
    assert c.interest_cells(s, 0.1) == [3]
    assert c.interest_cells(np.zeros(4), 0.1) == []


def test_adjust_scores_lifts_the_second_cell_by_hand() -> None:
    s = np.array([5.0, 4.0, 1.0, 0.5, -np.inf, 2.0])
    cell = np.array([0, 0, 1, 1, 1, 2])
    # gamma 1: cell 1's best (1.0) is lifted level with the top (5.0): +4
    out = adjust_scores(s, cell, [0, 1], CellParams(gamma=1.0, min_share=0.1))
    assert out.tolist() == [5.0, 4.0, 5.0, 4.5, -np.inf, 2.0]
    out = adjust_scores(s, cell, [0, 1], CellParams(gamma=0.5, min_share=0.1, boost=1.0))
    assert out.tolist() == [6.0, 5.0, 4.0, 3.5, -np.inf, 2.0]
    # one interest cell: only the boost
    out = adjust_scores(s, cell, [1], CellParams(gamma=1.0, min_share=0.1, boost=0.5))
    assert out.tolist() == [5.0, 4.0, 1.5, 1.0, -np.inf, 2.0]
    assert adjust_scores(s, cell, [0, 1], CellParams()).tolist() == s.tolist()
    with pytest.raises(ValueError, match="gamma"):
        CellParams(gamma=1.5)


def test_tune_cells_turns_the_lift_on_only_when_it_finds_targets() -> None:
    c = cells_world()
    # every shopper: red-home 0.7, blue-apparel 0.3; blended scores favour red products
    blended = np.tile(np.array([5.0, 4.9, 4.8, 4.7, 1.0, 0.9, 3.0, 2.0]), (6, 1))
    shares = np.tile(np.array([0.3, 0.0, 0.0, 0.7]), (6, 1))
    excluded = np.zeros_like(blended, dtype=bool)
    grid = [CellParams(), CellParams(gamma=1.0, min_share=0.2)]
    # targets: product 7 (blue-apparel's best, rank 5 unadjusted) -> needs the lift at k=2
    p, r = tune_cells(blended, c.cell, shares, np.full(6, 6), excluded, c, k=2, grid=grid)
    assert p == grid[1] and r == 1.0
    # targets: product 1 (already first) -> cells stay off (the first grid point wins ties)
    p, r = tune_cells(blended, c.cell, shares, np.zeros(6, int), excluded, c, k=2, grid=grid)
    assert p == grid[0] and r == 1.0


def test_hybrid_lifts_the_minority_interest_into_the_top_k() -> None:
    c = cells_world()
    items = cell_items()
    hist: dict[str, list[HistoryEvent]] = {}
    for u in range(12):  # red-home shoppers and blue-apparel shoppers
        a, b = (1, 2) if u % 2 else (7, 8)
        hist[f"u{u}"] = events([(a, "view", 0), (b, "view", 1)])
    inter = Interactions.from_histories(hist)
    ease = EASERecommender(l2=1.0).fit(inter.matrix)
    # a shopper with three red-home sessions and one blue-apparel session
    mine = events([(1, "view", 0), (2, "view", 1), (1, "view", 2), (7, "view", 3)])
    hybrid = HybridRecommender(
        collaborative=ease,
        interactions=inter,
        items=items,
        cells=c,
        cell_params=CellParams(gamma=1.0, min_share=0.2),
        histories={"me": mine},
    )
    rel = np.array([3.0, 2.5, 0.0, 0.0, 0.0, 0.0, 1.0, 0.5])
    excluded = np.zeros(8, dtype=bool)
    excluded[1] = True  # product 2 (bought): keeps its score, never sets the top
    # shares: red-home 3/4, blue-apparel 1/4 -> both interest cells; blue-apparel's best
    # (product 7, 1.0) is lifted level with the top unexcluded score (3.0): +2
    out = hybrid.adjust_for_cells(rel, excluded, mine)
    assert out.tolist() == [3.0, 2.5, 0.0, 0.0, 0.0, 0.0, 3.0, 2.5]
    # no history: unchanged
    assert hybrid.adjust_for_cells(rel, excluded, []).tolist() == rel.tolist()
    with pytest.raises(ValueError, match=r"order of items\.ids"):
        HybridRecommender(
            collaborative=ease,
            interactions=inter,
            items=items,
            cells=ProductCells(np.arange(8, 0, -1), {}, {}, {}),
        )


def _sessions(*products: int) -> list[HistoryEvent]:
    """One view per session, a day apart, of each product in turn."""
    return events([(pid, "view", float(d)) for d, pid in enumerate(products)])


def test_session_labels_and_transition_counts_by_hand() -> None:
    c = cells_world()
    # A = product 1 (red-home, cell 3), B = product 7 (blue-apparel, cell 0)
    vec = c.session_vectors(_sessions(1, 7, 5, 1))  # product 5 = blue-home: neither interest
    assert vec.shape == (4, 4)
    assert session_labels(vec, [3, 0]) == [0, 1, 0]
    hist = {
        "a": _sessions(1, 7, 1),  # shares A 2/3, B 1/3 -> labels 0 1 0
        "b": _sessions(1, 1, 7, 1),  # A 3/4, B 1/4 -> 0 0 1 0
        "c": _sessions(1, 1),  # one interest: no transitions
    }
    t = CellTransitions.fit(hist, c, 0.2, min_count=2)
    # (0,): a 0->1; b 0->0, 0->1 => 2 of 3 to the second; (1,): a 1->0, b 1->0 => 0 of 2;
    # (0, 1): a and b -> 0 => 0 of 2; (0, 0): b -> 1 => 1 of 1
    assert dict(t.counts) == {(0,): (2, 3), (1,): (0, 2), (0, 1): (0, 2), (0, 0): (1, 1)}
    # a sample of one shopper: a's counts or b's (seeded), never both
    two = {"a": hist["a"], "b": hist["b"]}
    one = CellTransitions.fit(two, c, 0.2, min_count=2, max_shoppers=1).counts
    assert one[(1,)] == (0, 1) and sum(n for _, n in one.values()) in (3, 5)
    # (0, 0) seen once < min_count 2: backs off to (0,): (2 + 2 * 0.25) / (3 + 2)
    assert t.p_second([0, 0], 0.25) == pytest.approx(0.5)
    # (0, 1) seen twice: (0 + 2 * 0.4) / (2 + 2)
    assert t.p_second([0, 1], 0.4) == pytest.approx(0.2)
    assert t.p_second([], 0.3) == 0.3
    # shopper a's next session: context (1, 0) unseen -> (0,); prior = B's share 1/3
    assert t.p_next(c, hist["a"]) == pytest.approx((2 + 2 / 3) / 5)
    assert t.p_next(c, hist["c"]) is None and t.p_next(c, []) is None
    got = next_probabilities(c, [hist["a"], hist["c"]], {0.2: t})
    assert got[0.2][0] == pytest.approx(8 / 15) and np.isnan(got[0.2][1])


def test_adjust_scores_moves_the_cell_the_next_session_serves() -> None:
    s = np.array([5.0, 4.0, 1.0, 0.5, -np.inf, 2.0])
    cell = np.array([0, 0, 1, 1, 1, 2])
    p = CellParams(min_share=0.1, sequence=2.0)
    # p_next 0.8 for the second cell (1): + 2 log(0.8 / 0.5); first cell (0): 2 log(0.2 / 0.5)
    out = adjust_scores(s, cell, [0, 1], p, p_next=0.8)
    up, down = 2 * np.log(1.6), 2 * np.log(0.4)
    assert out == pytest.approx([5 + down, 4 + down, 1 + up, 0.5 + up, -np.inf, 2.0])
    # a certain next cell: the other's log-probability is floored at 0.02
    out = adjust_scores(s, cell, [0, 1], p, p_next=1.0)
    assert out[0] == pytest.approx(5 + 2 * np.log(0.04))
    assert adjust_scores(s, cell, [0, 1], p).tolist() == s.tolist()  # no p_next
    assert adjust_scores(s, cell, [0], p, p_next=0.8).tolist() == s.tolist()  # one cell
    with pytest.raises(ValueError, match="sequence"):
        CellParams(sequence=-1.0)


def test_tune_cells_uses_the_sequence_only_when_it_predicts_the_target() -> None:
    c = cells_world()
    blended = np.tile(np.array([5.0, 4.9, 4.8, 4.7, 1.0, 0.9, 3.0, 2.0]), (6, 1))
    shares = np.tile(np.array([0.3, 0.0, 0.0, 0.7]), (6, 1))
    excluded = np.zeros_like(blended, dtype=bool)
    grid = [
        CellParams(),
        CellParams(gamma=1.0, min_share=0.2),
        CellParams(gamma=1.0, min_share=0.2, sequence=1.0),
    ]
    # half the shoppers' next session is likely blue-apparel and they buy product 7; the
    # other half red-home, buying product 1. gamma 1 alone ties products 1 and 7 at 5.0
    # (the lower column wins): 3 of 6 at k = 1; the sequence term breaks the tie right.
    p_next = {0.2: np.array([0.9, 0.1, 0.9, 0.1, 0.9, 0.1])}
    targets = np.array([6, 0, 6, 0, 6, 0])
    p, r = tune_cells(blended, c.cell, shares, targets, excluded, c, k=1, grid=grid, p_next=p_next)
    assert p == grid[2] and r == 1.0
    # without next-session probabilities the sequence points are skipped
    p, r = tune_cells(blended, c.cell, shares, targets, excluded, c, k=1, grid=grid)
    assert p == grid[0] and r == 0.5


def test_hybrid_applies_the_learned_transitions() -> None:
    c = cells_world()
    items = cell_items()
    # everyone alternates: after a blue-apparel session comes a red-home one
    hist = {f"u{u}": _sessions(1, 7, 1, 7, 1) for u in range(6)}
    inter = Interactions.from_histories(hist)
    ease = EASERecommender(l2=1.0).fit(inter.matrix)
    t = CellTransitions.fit(hist, c, 0.2, min_count=2)
    assert dict(t.counts)[(1,)] == (0, 12)  # 1 -> 0 every time
    mine = _sessions(1, 7, 1, 7)  # last session blue-apparel: red-home comes next
    hybrid = HybridRecommender(
        collaborative=ease,
        interactions=inter,
        items=items,
        cells=c,
        cell_params=CellParams(min_share=0.2, sequence=1.0),
        transitions=t,
    )
    rel = np.array([1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 1.0, 0.5])
    # shares 1/2 each: the top cell is blue-apparel (argmax takes the lower cell id), so the
    # labels (0 = top) are [1, 0, 1, 0]; in training, context (1, 0) was always followed by
    # 1: the second cell, red-home, comes next
    labels = session_labels(c.session_vectors(mine), [0, 3])
    assert labels == [1, 0, 1, 0]
    out = hybrid.adjust_for_cells(rel, np.zeros(8, dtype=bool), mine)
    p2 = t.p_next(c, mine)
    assert p2 is not None and p2 > 0.5  # the second cell (red-home) comes next
    # red-home + log(p2 / 0.5), blue-apparel + log((1 - p2) / 0.5), from a tie at 1.0
    assert out[0] > out[6] and out[0] - out[6] == pytest.approx(np.log(p2 / (1 - p2)))
    with pytest.raises(ValueError, match="min_share"):
        HybridRecommender(
            collaborative=ease,
            interactions=inter,
            items=items,
            cells=c,
            cell_params=CellParams(min_share=0.1, sequence=1.0),
            transitions=t,
        ).adjust_for_cells(rel, np.zeros(8, dtype=bool), mine)
