"""Offline comparison of product recommenders: splits, cross-fitted tuning, bootstrap CIs.

Protocols (each a :class:`ProtocolSplit`: training histories, relevant products per test
shopper, products not to recommend):

- leave-last-out (:func:`split_before`): each shopper's last purchase is held out; their
  history is the events before that purchase's session; earlier purchases are excluded;
- global time split (:func:`global_time_split`): every event before one instant trains;
  the products bought at or after it (not bought before) are relevant;
- new products (:func:`drop_products`): a seeded share of the catalog loses all its
  interactions, so only content can place those products.

Everything tuned (EASE's ``l2``, ALS's factors, item-kNN's neighbours, the hybrid's blend
weights: a simplex grid maximising validation recall) is tuned on
validation shoppers and scored on others: test shoppers are split into two seeded folds and
each fold is scored with what was tuned on the other (``ProtocolOutput.tuning_users`` records
which shoppers each fold's tuning saw). Intervals are percentile bootstraps over shoppers; the
hybrid's lift over the best baseline is a paired bootstrap of the ratio of means.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.cells import (
    CELL_GRID,
    CellTransitions,
    ProductCells,
    category_communities,
    next_probabilities,
    tune_cells,
)
from recsys.collaborative import (
    KNN_NEIGHBOURS,
    ALSRecommender,
    CollaborativeEnsemble,
    EASERecommender,
    Interactions,
    ItemKNNRecommender,
    MostPopularRecommender,
    top_k_excluding,
)
from recsys.evaluation.ranking import ndcg_at_k, recall_at_k
from recsys.hybrid import BlendWeights, HybridRecommender, tune_blend
from recsys.profiles import HistoryEvent, ItemVectors, TasteProfile

__all__ = [
    "BASELINES",
    "ProtocolOutput",
    "ProtocolSplit",
    "bootstrap_ci",
    "bootstrap_ratio_ci",
    "drop_products",
    "global_time_split",
    "run_protocol",
    "split_before",
    "user_folds",
]

#: The collaborative baselines reported next to the interest and hybrid recommenders.
BASELINES: tuple[str, ...] = ("popularity", "item_knn", "ease", "als")
EASE_L2_GRID: tuple[float, ...] = (50.0, 100.0, 200.0, 400.0, 800.0)
ALS_FACTORS_GRID: tuple[int, ...] = (16, 32, 64)
#: Item-kNN neighbours per product (0 = all), tuned like EASE's l2.
KNN_GRID: tuple[int, ...] = (0, 25, 50, 100, 200)

Progress = Callable[[Iterable[Any], str, int | None], Iterable[Any]]


def _no_progress(it: Iterable[Any], desc: str, total: int | None) -> Iterable[Any]:
    return it


# ---------------------------------------------------------------------------- splits
@dataclass(frozen=True)
class ProtocolSplit:
    """``train``: every shopper's training history (time order); ``relevant``: test
    shopper -> products to find; ``excluded``: shopper -> products never recommended."""

    name: str
    train: Mapping[str, Sequence[HistoryEvent]]
    relevant: Mapping[str, frozenset[int]]
    excluded: Mapping[str, frozenset[int]]


def _purchases(evs: Iterable[HistoryEvent]) -> frozenset[int]:
    return frozenset(int(e.product_id) for e in evs if e.kind == "purchase")


def split_before(
    histories: Mapping[str, Sequence[HistoryEvent]],
    cutoff: Mapping[str, datetime],
    targets: Mapping[str, int],
    *,
    name: str = "leave_last_out",
) -> ProtocolSplit:
    """Leave-last-out: shopper ``u``'s history is their events before ``cutoff[u]`` (the
    start of the held-out purchase's session); ``targets[u]`` is the held-out product."""
    if set(targets) - set(cutoff):
        raise ValueError("targets: every test shopper needs a cutoff")
    train = {
        u: [e for e in evs if u not in cutoff or e.ts < cutoff[u]] for u, evs in histories.items()
    }
    return ProtocolSplit(
        name=name,
        train=train,
        relevant={u: frozenset([int(t)]) for u, t in targets.items()},
        excluded={u: _purchases(train.get(u, [])) for u in targets},
    )


def global_time_split(
    histories: Mapping[str, Sequence[HistoryEvent]], *, test_fraction: float = 0.2
) -> ProtocolSplit:
    """Global time split: the events at or after the ``1 - test_fraction`` quantile of all
    timestamps are the test period; relevant = products bought then and not before."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected in (0, 1), got {test_fraction}")
    stamps = sorted(e.ts for evs in histories.values() for e in evs)
    if not stamps:
        raise ValueError("histories: expected some events, got none")
    cut = stamps[min(round(len(stamps) * (1 - test_fraction)), len(stamps) - 1)]
    train = {u: [e for e in evs if e.ts < cut] for u, evs in histories.items()}
    relevant: dict[str, frozenset[int]] = {}
    excluded: dict[str, frozenset[int]] = {}
    for u, evs in histories.items():
        before = _purchases(train[u])
        after = _purchases(e for e in evs if e.ts >= cut) - before
        if after:
            relevant[u] = after
            excluded[u] = before
    return ProtocolSplit(name="time_split", train=train, relevant=relevant, excluded=excluded)


def drop_products(
    split: ProtocolSplit, product_ids: Sequence[int], *, fraction: float = 0.1, seed: int = 0
) -> tuple[ProtocolSplit, frozenset[int]]:
    """``split`` with a seeded ``fraction`` of ``product_ids`` made new (all their training
    events removed), and those products."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction: expected in (0, 1), got {fraction}")
    ids = np.array(sorted({int(i) for i in product_ids}), dtype=np.int64)
    rng = np.random.default_rng(seed)
    new = frozenset(int(i) for i in rng.choice(ids, size=max(1, round(fraction * len(ids)))))
    train = {u: [e for e in evs if e.product_id not in new] for u, evs in split.train.items()}
    return (
        ProtocolSplit(
            name=f"{split.name}_new_products",
            train=train,
            relevant=split.relevant,
            excluded=split.excluded,
        ),
        new,
    )


def user_folds(users: Sequence[str], *, n_folds: int = 2, seed: int = 0) -> list[list[str]]:
    """Shoppers shuffled (seeded) into ``n_folds`` disjoint folds, each sorted."""
    if n_folds < 2:
        raise ValueError(f"n_folds: expected >= 2, got {n_folds}")
    order = np.random.default_rng(seed).permutation(len(users))
    return [sorted(users[i] for i in order[f::n_folds]) for f in range(n_folds)]


# ---------------------------------------------------------------------------- bootstrap
def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap ``(1 - alpha)`` interval of the mean of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_bootstrap, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def bootstrap_ratio_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Paired percentile bootstrap interval of ``mean(a) / mean(b)`` (same shoppers)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or len(x) == 0:
        raise ValueError(f"a and b: expected paired non-empty arrays, got {x.shape}, {y.shape}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_bootstrap, len(x)))
    den = y[idx].mean(axis=1)
    ratios = np.where(den > 0, x[idx].mean(axis=1) / np.where(den > 0, den, 1.0), np.nan)
    lo, hi = np.nanquantile(ratios, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


# ---------------------------------------------------------------------------- running
@dataclass
class ProtocolOutput:
    """Per recommender: per-shopper ``recall`` and ``ndcg`` at ``k`` (test shoppers in
    ``users`` order). ``cold`` marks shoppers with at most ``cold_max_events`` training
    events; ``tuning_users[f]`` are the shoppers fold ``f``'s tuning saw, ``fold_users[f]``
    those it scored, ``blend_users[f]`` the shoppers whose rows the hybrid's blend was fitted
    on (a subset of ``tuning_users[f]``); ``tuned`` what was chosen per fold."""

    name: str
    k: int
    users: list[str]
    recall: dict[str, np.ndarray]
    ndcg: dict[str, np.ndarray]
    cold: np.ndarray
    fold_users: list[list[str]]
    tuning_users: list[list[str]]
    tuned: list[dict[str, Any]] = field(default_factory=list)
    blend_users: list[list[str]] = field(default_factory=list)
    subset: np.ndarray | None = None

    def summary(
        self, *, n_bootstrap: int = 1000, seed: int = 0, mask: np.ndarray | None = None
    ) -> dict[str, Any]:
        """``recall_at_<k>_<name>``, ``ndcg_at_<k>_<name>`` and ``..._ci95`` intervals over
        the shoppers of ``mask`` (all by default), the best baseline and the hybrid's lift."""
        sel = np.ones(len(self.users), bool) if mask is None else np.asarray(mask, bool)
        out: dict[str, Any] = {"n_users": int(sel.sum())}
        if not sel.any():
            return out
        for name in self.recall:
            r, g = self.recall[name][sel], self.ndcg[name][sel]
            out[f"recall_at_{self.k}_{name}"] = float(r.mean())
            out[f"recall_at_{self.k}_{name}_ci95"] = bootstrap_ci(
                r, n_bootstrap=n_bootstrap, seed=seed
            )
            out[f"ndcg_at_{self.k}_{name}"] = float(g.mean())
            out[f"ndcg_at_{self.k}_{name}_ci95"] = bootstrap_ci(
                g, n_bootstrap=n_bootstrap, seed=seed
            )
        base = [b for b in BASELINES if b in self.recall]
        if base and "hybrid" in self.recall:
            best = max(base, key=lambda b: float(self.recall[b][sel].mean()))
            out["best_baseline"] = best
            h, b = self.recall["hybrid"][sel], self.recall[best][sel]
            if b.mean() > 0:
                out["hybrid_lift_over_best_baseline"] = float(h.mean() / b.mean())
                out["hybrid_lift_over_best_baseline_ci95"] = bootstrap_ratio_ci(
                    h, b, n_bootstrap=n_bootstrap, seed=seed
                )
        return out


def _lists_metrics(
    tops: Mapping[str, Sequence[int]],
    relevant: Mapping[str, Collection[int]],
    users: list[str],
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    rec = np.array([recall_at_k(tops.get(u, ()), relevant[u], k) for u in users])
    ndcg = np.array([ndcg_at_k(tops.get(u, ()), relevant[u], k) for u in users])
    return rec, ndcg


def _top_lists(
    scores: np.ndarray, col_ids: np.ndarray, excluded: list[np.ndarray], k: int
) -> list[list[int]]:
    return [
        col_ids[top_k_excluding(scores[i], k, excluded[i])].tolist() for i in range(len(scores))
    ]


def run_protocol(
    split: ProtocolSplit,
    *,
    items: ItemVectors,
    profile_of: Callable[[str, Sequence[HistoryEvent]], TasteProfile],
    interest_recommend: Callable[[TasteProfile, int, Collection[int]], Sequence[int]] | None = None,
    k: int = 10,
    seed: int = 0,
    cold_max_events: int = 2,
    als_params: Mapping[str, Any] | None = None,
    ease_grid: Sequence[float] = EASE_L2_GRID,
    als_grid: Sequence[int] = ALS_FACTORS_GRID,
    knn_grid: Sequence[int] = KNN_GRID,
    hybrid_params: Mapping[str, Any] | None = None,
    facets: Mapping[int, tuple[str, str]] | None = None,
    progress: Progress = _no_progress,
) -> ProtocolOutput:
    """Score popularity, item-kNN, EASE, ALS, the interest recommender (when
    ``interest_recommend`` is given) and the hybrid on ``split``'s test shoppers.

    ``profile_of(user, history)`` builds a taste profile from a training history;
    ``items`` are the catalog's CLIP vectors (every recommendable product). EASE's ``l2``
    and ALS's ``factors`` (``als_grid``; other parameters ``als_params``, seeded with
    ``seed``) and the hybrid's blend are tuned per fold on the other fold's shoppers (see the
    module docstring). ``facets`` (product id -> (colour, category)) turns on the hybrid's
    interest cells (:mod:`recsys.cells`; communities from the training sessions, parameters
    tuned per fold on the same validation shoppers as the blend)."""
    users = sorted(u for u in split.relevant if split.relevant[u])
    if len(users) < 4:
        raise ValueError(f"split {split.name!r}: expected >= 4 test shoppers, got {len(users)}")
    catalog = np.asarray(items.ids, dtype=np.int64)
    inter = Interactions.from_histories(
        split.train,
        item_ids=set(catalog.tolist()) | {e.product_id for h in split.train.values() for e in h},
    )
    x = inter.matrix
    rows = sp.csr_matrix(x[[inter.row_of(u) for u in users]])  # type: ignore[misc]
    n_events = np.array([len(split.train.get(u, [])) for u in users])
    cold = n_events <= cold_max_events
    col_ids = inter.item_ids
    excl_cols = [np.isin(col_ids, list(split.excluded.get(u, ()))) for u in users]
    excl_cat = np.stack([np.isin(catalog, list(split.excluded.get(u, ()))) for u in users])
    pos = {u: i for i, u in enumerate(users)}
    folds = user_folds(users, seed=seed)
    recall: dict[str, np.ndarray] = {}
    ndcg: dict[str, np.ndarray] = {}

    def record(name: str, tops: Mapping[str, Sequence[int]]) -> None:
        recall[name], ndcg[name] = _lists_metrics(tops, split.relevant, users, k)

    # --- untuned baseline
    fixed = {"popularity": MostPopularRecommender()}
    for name, model in progress(fixed.items(), f"{split.name}: baselines", len(fixed)):
        model.fit(x)
        tops = _top_lists(model.scores(rows), col_ids, excl_cols, k)
        record(name, dict(zip(users, tops, strict=True)))

    # --- profiles (content) for every test shopper
    profiles = [
        profile_of(u, split.train.get(u, []))
        for u in progress(users, f"{split.name}: profiles", len(users))
    ]
    if interest_recommend is not None:
        tops_i = {
            u: list(interest_recommend(p, k, split.excluded.get(u, frozenset())))
            for u, p in zip(users, profiles, strict=True)
        }
        record("interest", tops_i)

    # --- EASE (l2 tuned per fold) and the hybrid (blend tuned per fold)
    eases = {l2: EASERecommender(l2=l2).fit(x) for l2 in ease_grid}
    ease_scores = {l2: m.scores(rows) for l2, m in eases.items()}
    knns = {n: ItemKNNRecommender(n_neighbours=n or None).fit(x) for n in knn_grid}
    knn_scores = {n: m.scores(rows) for n, m in knns.items()}
    # the hybrid's own item-kNN is the one make_collaborative builds (not tuned here)
    knn_hybrid = ItemKNNRecommender(n_neighbours=KNN_NEIGHBOURS).fit(x)
    als_models = {
        f: ALSRecommender(
            **{"seed": seed, "num_threads": 1, **(als_params or {}), "factors": f}
        ).fit(x)
        for f in progress(als_grid, f"{split.name}: ALS", len(als_grid))
    }
    als_scores = {f: m.scores(rows) for f, m in als_models.items()}
    cat_pos = {int(i): j for j, i in enumerate(catalog.tolist())}
    cells: ProductCells | None = None
    if facets:
        category_of = {int(i): str(f[1]) for i, f in facets.items()}
        cells = ProductCells(
            catalog,
            {int(i): str(f[0]) for i, f in facets.items()},
            category_of,
            category_communities(split.train, category_of),
        )
        shares = np.stack([cells.shares(split.train.get(u, [])) for u in users])
        # which interest comes next: chains learned from every shopper's training sessions
        transitions = {
            ms: CellTransitions.fit(split.train, cells, ms)
            for ms in sorted({p.min_share for p in CELL_GRID})
        }
        p_next = next_probabilities(cells, [split.train.get(u, []) for u in users], transitions)
    targets_cat = np.array([cat_pos.get(min(split.relevant[u]), -1) for u in users])

    def recall_of(scores: np.ndarray, idx: np.ndarray) -> float:
        hits = [
            bool(
                np.isin(
                    col_ids[top_k_excluding(scores[i], k, excl_cols[i])],
                    list(split.relevant[users[i]]),
                ).any()
            )
            for i in idx
        ]
        return float(np.mean(hits))

    tops_e: dict[str, list[int]] = {}
    tops_k: dict[str, list[int]] = {}
    tops_a: dict[str, list[int]] = {}
    tops_h: dict[str, list[int]] = {}
    tuning_users: list[list[str]] = []
    blend_users: list[list[str]] = []
    tuned: list[dict[str, Any]] = []
    hp = dict(hybrid_params or {})
    for f, test_fold in enumerate(folds):
        val = sorted(u for g, fold in enumerate(folds) if g != f for u in fold)
        tuning_users.append(val)
        vi = np.array([pos[u] for u in val])
        ti = np.array([pos[u] for u in test_fold])
        l2 = max(ease_grid, key=lambda v: (recall_of(ease_scores[v], vi), -v))
        factors = max(als_grid, key=lambda v: (recall_of(als_scores[v], vi), -v))
        n_nb = max(knn_grid, key=lambda v: (recall_of(knn_scores[v], vi), -v))
        for i in ti:
            tops_k[users[i]] = col_ids[
                top_k_excluding(knn_scores[n_nb][i], k, excl_cols[i])
            ].tolist()
        for i in ti:
            tops_a[users[i]] = col_ids[
                top_k_excluding(als_scores[factors][i], k, excl_cols[i])
            ].tolist()
        for i in ti:
            tops_e[users[i]] = col_ids[
                top_k_excluding(ease_scores[l2][i], k, excl_cols[i])
            ].tolist()
        # the hybrid's collaborative part is what make_collaborative gives: EASE + ALS + kNN
        ensemble = CollaborativeEnsemble.from_fitted(
            [eases[l2], als_models[factors], knn_hybrid], x.shape[1]
        )
        hybrid = HybridRecommender(
            collaborative=ensemble,
            interactions=inter,
            items=items,
            cold_max_events=cold_max_events,
            **hp,
        )
        comps = hybrid.component_scores(profiles, rows)
        # tune on validation shoppers whose (first) relevant product is in the catalog
        ok = vi[targets_cat[vi] >= 0]
        warm_v, cold_v = ok[~cold[ok]], ok[cold[ok]]
        warm, warm_r = tune_blend(
            {c: s[warm_v] for c, s in comps.items()}, targets_cat[warm_v], excl_cat[warm_v], k=k
        )
        cold_w: BlendWeights = hybrid.cold
        fitted_on = [users[i] for i in warm_v]
        if len(cold_v) >= 5:
            fitted_on += [users[i] for i in cold_v]
            cold_w, _ = tune_blend(
                {c: s[cold_v] for c, s in comps.items()}, targets_cat[cold_v], excl_cat[cold_v], k=k
            )
        hybrid.warm, hybrid.cold = warm, cold_w
        fold_tuned: dict[str, Any] = {
            "ease_l2": l2,
            "als_factors": factors,
            "knn_neighbours": n_nb,
            "warm": warm.as_array().tolist(),
            "cold": cold_w.as_array().tolist(),
            "validation_recall": warm_r,
        }
        if cells is not None:
            # the cell adjustment, on the tuned blend of the same validation shoppers
            blended = hybrid.blend({c: v[ok] for c, v in comps.items()}, n_events[ok])
            params, cells_r = tune_cells(
                blended,
                cells.cell,
                shares[ok],
                targets_cat[ok],
                excl_cat[ok],
                cells,
                k=k,
                p_next={ms: v[ok] for ms, v in p_next.items()},
            )
            hybrid.cells, hybrid.cell_params = cells, params
            hybrid.transitions = transitions[params.min_share]
            fitted_on = sorted(set(fitted_on) | {users[i] for i in ok})
            fold_tuned["cells"] = [params.gamma, params.min_share, params.boost, params.sequence]
            fold_tuned["cells_validation_recall"] = cells_r
        else:
            hybrid.cells = None
        blend_users.append(sorted(fitted_on))
        tuned.append(fold_tuned)
        for i in ti:
            rec = hybrid.recommend(
                profiles[i],
                k=k,
                exclude_ids=split.excluded.get(users[i], frozenset()),
                history=split.train.get(users[i], []),
            )
            tops_h[users[i]] = rec.item_ids.tolist()
    record("item_knn", tops_k)
    record("ease", tops_e)
    record("als", tops_a)
    record("hybrid", tops_h)
    return ProtocolOutput(
        name=split.name,
        k=k,
        users=users,
        recall=recall,
        ndcg=ndcg,
        cold=cold,
        fold_users=folds,
        tuning_users=tuning_users,
        tuned=tuned,
        blend_users=blend_users,
    )
