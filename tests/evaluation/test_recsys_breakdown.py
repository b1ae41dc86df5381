"""The recommender evaluation's error-analysis masks: shoppers who revisit vs discover."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from recsys.evaluation.protocols import ProtocolSplit, global_time_split
from recsys.evaluation.recommenders import target_seen_before, targets_excluded
from recsys.profiles import HistoryEvent

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _ev(product: int, kind: str, day: float) -> HistoryEvent:
    return HistoryEvent(product_id=product, kind=kind, ts=T0 + timedelta(days=day))


def test_target_seen_before_by_hand() -> None:
    split = ProtocolSplit(
        name="hand",
        train={
            "a": [_ev(1, "view", 0), _ev(2, "view", 1)],  # target 2: viewed before
            "b": [_ev(1, "view", 0)],  # target 3: never touched
            "c": [_ev(4, "purchase", 0)],  # relevant {4, 5}: 4 was an event before
            "d": [],  # no history at all
        },
        relevant={
            "a": frozenset({2}),
            "b": frozenset({3}),
            "c": frozenset({4, 5}),
            "d": frozenset({1}),
        },
        excluded={u: frozenset() for u in "abcd"},
    )
    got = target_seen_before(split, ["a", "b", "c", "d", "unknown"])
    assert got.dtype == bool
    assert got.tolist() == [True, False, True, False, False]


def test_target_seen_before_on_a_time_split() -> None:
    hist = {
        # buys 7 after the cut, viewed it before: a revisit
        "a": [_ev(7, "view", 0), _ev(8, "view", 1), _ev(7, "purchase", 9)],
        # buys 9 after the cut, never saw it before
        "b": [_ev(8, "view", 0), _ev(8, "click", 1), _ev(9, "purchase", 9)],
    }
    split = global_time_split(hist, test_fraction=1 / 3)
    users = sorted(split.relevant)
    assert users == ["a", "b"]
    np.testing.assert_array_equal(target_seen_before(split, users), [True, False])


def test_targets_excluded_are_repurchases_by_hand() -> None:
    split = ProtocolSplit(
        name="hand",
        train={
            "a": [_ev(1, "purchase", 0)],  # buys 1 again: excluded, unreachable
            "b": [_ev(1, "purchase", 0)],  # buys 2: reachable
            "c": [_ev(4, "purchase", 0)],  # relevant {4, 5}: 5 is still reachable
            "d": [],
        },
        relevant={
            "a": frozenset({1}),
            "b": frozenset({2}),
            "c": frozenset({4, 5}),
            "d": frozenset(),
        },
        excluded={"a": frozenset({1}), "b": frozenset({1}), "c": frozenset({4}), "d": frozenset()},
    )
    got = targets_excluded(split, ["a", "b", "c", "d", "unknown"])
    assert got.dtype == bool
    assert got.tolist() == [True, False, False, False, False]


def test_a_time_split_never_has_excluded_targets() -> None:
    # the time split's relevant products are those not bought before the cut
    hist = {"a": [_ev(7, "purchase", 0), _ev(8, "view", 1), _ev(7, "purchase", 9)]}
    split = global_time_split(hist, test_fraction=0.5)
    assert targets_excluded(split, ["a"]).tolist() == [False]
    assert "a" not in split.relevant
