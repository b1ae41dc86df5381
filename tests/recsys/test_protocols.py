"""Evaluation protocols: splits by hand, bootstrap intervals, tuning never sees test ids."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from profiles_fixtures import T0, events, unit

from recsys.evaluation.protocols import (
    ProtocolOutput,
    bootstrap_ci,
    bootstrap_ratio_ci,
    drop_products,
    global_time_split,
    run_protocol,
    split_before,
    user_folds,
)
from recsys.profiles import HistoryEvent, ItemVectors, ProfileBuilder

DIM = 8


def test_split_before_holds_out_the_session() -> None:
    hist = {
        "a": events([(1, "purchase", 0), (2, "view", 1), (3, "view", 2), (3, "purchase", 2.1)]),
        "b": events([(4, "view", 0)]),
    }
    # a's last purchase (product 3) happened in a session that started at day 2
    split = split_before(hist, {"a": T0 + timedelta(days=2)}, {"a": 3})
    assert [e.product_id for e in split.train["a"]] == [1, 2]
    assert split.train["b"] == hist["b"]
    assert split.relevant == {"a": frozenset({3})}
    assert split.excluded == {"a": frozenset({1})}
    with pytest.raises(ValueError, match="cutoff"):
        split_before(hist, {}, {"a": 3})


def test_global_time_split_by_hand() -> None:
    hist = {
        "a": events([(1, "view", 0), (1, "purchase", 1), (2, "purchase", 8), (1, "purchase", 9)]),
        "b": events([(3, "view", 2), (3, "view", 3), (4, "view", 8.5), (5, "view", 7)]),
    }
    # 8 events, test_fraction 0.25: the cutoff is the 7th stamp (day 8.5): a's day-9 purchase
    split = global_time_split(hist, test_fraction=0.25)
    assert [e.ts for e in split.train["a"]] == [T0 + timedelta(days=d) for d in (0, 1, 8)]
    # product 1 was bought before the cutoff: not relevant again; b bought nothing after it
    assert split.relevant == {}
    split = global_time_split(hist, test_fraction=0.5)  # cutoff at day 7
    assert split.relevant == {"a": frozenset({2})} and split.excluded == {"a": frozenset({1})}
    with pytest.raises(ValueError, match="test_fraction"):
        global_time_split(hist, test_fraction=1.0)


def test_drop_products_removes_their_events() -> None:
    hist = {"a": events([(p, "view", p) for p in range(1, 11)])}
    split = split_before(hist, {}, {})
    new_split, new = drop_products(split, list(range(1, 11)), fraction=0.3, seed=1)
    assert len(new) == 3 and new <= set(range(1, 11))
    assert {e.product_id for e in new_split.train["a"]} == set(range(1, 11)) - new


def test_bootstrap_intervals() -> None:
    assert bootstrap_ci([0.5] * 20) == (0.5, 0.5)
    lo, hi = bootstrap_ci([0.0, 1.0] * 50, n_bootstrap=2000, seed=0)
    # the mean's standard error is 0.05: the 95% interval is about 0.5 +- 0.098
    assert lo < 0.5 < hi and 0.16 < hi - lo < 0.23
    assert bootstrap_ci([0.0, 1.0] * 50, seed=3) == bootstrap_ci([0.0, 1.0] * 50, seed=3)
    b = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    assert bootstrap_ratio_ci(2 * b, b) == pytest.approx((2.0, 2.0))
    with pytest.raises(ValueError, match="paired"):
        bootstrap_ratio_ci([1.0], [1.0, 2.0])


def test_user_folds_partition() -> None:
    users = [f"u{i}" for i in range(11)]
    folds = user_folds(users, seed=0)
    assert sorted(folds[0] + folds[1]) == sorted(users) and not set(folds[0]) & set(folds[1])
    assert folds == user_folds(users, seed=0) and folds != user_folds(users, seed=1)


def block_world() -> tuple[ItemVectors, dict[str, list[HistoryEvent]], dict[str, int]]:
    """3 groups of 8 products; 36 shoppers, each browsing one group and buying in it last."""
    rng = np.random.default_rng(0)
    e = np.eye(DIM, dtype=np.float32)
    x = np.concatenate([unit(e[g] + 0.2 * rng.standard_normal((8, DIM))) for g in range(3)])
    items = ItemVectors(ids=np.arange(1, 25, dtype=np.int64), vectors=x.astype(np.float32))
    hist: dict[str, list[HistoryEvent]] = {}
    target: dict[str, int] = {}
    for u in range(36):
        g = u % 3
        picks = 1 + 8 * g + rng.choice(8, size=6, replace=False)
        uid = f"u{u:02d}"
        hist[uid] = events(
            [(int(p), "view", d) for d, p in enumerate(picks[:5])]
            + [(int(picks[5]), "purchase", 9)]
        )
        target[uid] = int(picks[5])
    return items, hist, target


def small_protocol(**extra: object) -> ProtocolOutput:
    """The block world's leave-last-out run with one grid point per model (fast), ``extra``
    passed to :func:`run_protocol`."""
    items, hist, target = block_world()
    split = split_before(hist, {u: T0 + timedelta(days=8) for u in target}, target)
    builder = ProfileBuilder(min_events=1)
    return run_protocol(
        split,
        items=items,
        profile_of=lambda u, h: builder.build(u, h, items),
        k=5,
        ease_grid=(10.0,),
        als_params={"iterations": 2},
        als_grid=(2,),
        knn_grid=(0,),
        **extra,  # type: ignore[arg-type]
    )


def test_run_protocol_tunes_on_other_shoppers_only() -> None:
    items, hist, target = block_world()
    split = split_before(hist, {u: T0 + timedelta(days=8) for u in target}, target)
    builder = ProfileBuilder(min_events=1)
    out = run_protocol(
        split,
        items=items,
        profile_of=lambda u, h: builder.build(u, h, items),
        k=5,
        seed=0,
        ease_grid=(1.0, 10.0),
        als_params={"iterations": 5},
        als_grid=(2, 3),
        knn_grid=(0, 3),
    )
    assert set(out.recall) == {"popularity", "item_knn", "als", "ease", "hybrid"}
    # every scored shopper is scored once, by a fold whose tuning never saw them (by id)
    assert sorted(u for f in out.fold_users for u in f) == sorted(target)
    for scored, tuned_on in zip(out.fold_users, out.tuning_users, strict=True):
        assert scored and tuned_on and not set(scored) & set(tuned_on)
        assert set(scored) | set(tuned_on) == set(target)
    for name, r in out.recall.items():
        assert r.shape == (36,) and np.all((r == 0) | (r == 1)), name
    # the groups are obvious: within the shopper's group the target is one of 8 (5 of them
    # seen), so a top 5 from the right group finds it about half the time; popularity ranks
    # all 24 products the same for everyone (0.083 here)
    assert out.recall["popularity"].mean() < 0.15
    assert out.recall["hybrid"].mean() >= 0.45 and out.recall["item_knn"].mean() >= 0.45
    s = out.summary(n_bootstrap=100, seed=0)
    assert s["n_users"] == 36 and s["recall_at_5_hybrid"] == pytest.approx(
        out.recall["hybrid"].mean()
    )
    lo, hi = s["recall_at_5_hybrid_ci95"]
    assert lo <= s["recall_at_5_hybrid"] <= hi
    assert s["best_baseline"] in {"popularity", "item_knn", "als", "ease"}
    assert {t["ease_l2"] for t in out.tuned} <= {1.0, 10.0}
    assert {t["knn_neighbours"] for t in out.tuned} <= {0, 3}


def test_the_blend_is_fitted_on_validation_shoppers_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import recsys.evaluation.protocols as protocols

    rows_seen: list[int] = []
    real = protocols.tune_blend

    def spy(components, targets, excluded, **kw):  # type: ignore[no-untyped-def]
        rows_seen.append(len(targets))
        return real(components, targets, excluded, **kw)

    monkeypatch.setattr(protocols, "tune_blend", spy)
    out = small_protocol()
    # one warm fit per fold (no cold shoppers here: each has 5 events), on exactly the
    # shoppers blend_users names, none of whom the fold scores (by id)
    assert len(rows_seen) == 2 == len(out.blend_users)
    for seen, fitted, scored, tuned_on in zip(
        rows_seen, out.blend_users, out.fold_users, out.tuning_users, strict=True
    ):
        assert seen == len(fitted) > 0
        assert set(fitted) <= set(tuned_on) and not set(fitted) & set(scored)
    w = out.tuned[0]["warm"]
    assert len(w) == 4 and min(w) >= 0 and sum(w) == pytest.approx(1.0)


def test_the_cells_are_tuned_on_validation_shoppers_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import recsys.evaluation.protocols as protocols

    rows_seen: list[int] = []
    real = protocols.tune_cells

    def spy(blended, cell, shares, targets, excluded, cells, **kw):  # type: ignore[no-untyped-def]
        rows_seen.append(len(targets))
        return real(blended, cell, shares, targets, excluded, cells, **kw)

    monkeypatch.setattr(protocols, "tune_cells", spy)
    items = block_world()[0]
    # facets: group g is category "c{g}", products alternate red / blue
    facets = {int(i): ("red" if i % 2 else "blue", f"c{(int(i) - 1) // 8}") for i in items.ids}
    out = small_protocol(facets=facets)
    # one cell tuning per fold, on that fold's validation shoppers (all have their target in
    # the catalog), which blend_users names and the fold never scores (by id)
    assert len(rows_seen) == 2
    for seen, fitted, scored, tuned_on in zip(
        rows_seen, out.blend_users, out.fold_users, out.tuning_users, strict=True
    ):
        assert seen == len(tuned_on) == len(fitted) == 18
        assert set(fitted) == set(tuned_on) and not set(fitted) & set(scored)
    for t in out.tuned:
        gamma, min_share, boost, sequence = t["cells"]
        assert 0 <= gamma <= 1 and 0 < min_share <= 1 and boost >= 0 and sequence >= 0
    assert out.recall["hybrid"].shape == (36,)
