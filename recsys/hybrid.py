"""The default product recommender: collaborative scores blended with CLIP content scores.

Per shopper and product, four scores are standardised over the catalog (z-scores) and
blended linearly with weights tuned on validation shoppers (:func:`tune_blend`):

- ``collaborative``: a :class:`~recsys.collaborative.CollaborativeModel` (EASE + ALS +
  item-kNN below a product-count threshold, ALS above) on the shopper's history row. A
  product with no interactions has no collaborative score; it gets the mean score of its
  ``n_borrow`` nearest interacted products in CLIP space, so a new
  product is placed by content alone;
- ``interests``: the multi-interest soft maximum of :class:`~recsys.recommend.InterestRecommender`
  ``T * log(sum_k w_k exp(cos(c_k, x) / T))`` over the taste profile's interests;
- ``kernel``: ``log(sum_j p_j exp((cos(x, x_j) - 1) / tau))`` over the history products ``j``
  (``p`` the history row, normalised): close to any product the shopper engaged with;
- ``revisit``: the shopper's own ``log1p(sum of event weights)`` on the product (0 for products
  they never touched): viewed-but-not-bought products are strong candidates, and the
  collaborative models (zero diagonal) do not score a product by itself.

Shoppers with at most ``cold_max_events`` events use their own weights (tuned on cold
validation shoppers). :func:`tune_blend` searches the simplex of weights for the best
validation recall. Learned rankers fitted instead on the same validation folds did not rank
clearly better on the demo's leave-last-out (recall@10, cross-fitted, no MMR; the blend 0.581):
a conditional logit over products on these four components 0.573-0.577; with 19-42 more
features (EASE / ALS / item-kNN scores, log popularity, the history's share of the
product's category, colour, pattern, material and style and their lifts over the catalog, a
colour x learned-category-similarity share, the last sessions' shares, view / click / cart
flags) 0.578-0.589 (in-sample 0.612, so more validation shoppers would not reach 0.61);
gradient-boosted trees on those features 0.570; recency-decayed history rows in EASE
0.50-0.55 vs 0.557. On the demo the generator's own purchase propensities, with each
shopper's true taste, reach 0.757 (``bench/recs_ceiling.py``); the gap is estimating a
taste from ~30 events: the secondary preferences (pattern, material, style) alone are worth
0.07 of that ceiling, and two-interest shoppers (31%) reach 0.351 here against its 0.639.

With the catalog's colour and category (``cells``), the blended scores are then adjusted
for the shopper's interest cells (:mod:`recsys.cells`): a shopper whose sessions keep
returning to two (colour, category community) cells gets the weaker cell's best product
lifted toward the top, and products of their cells a boost (parameters tuned on the same
validation shoppers). On the demo's leave-last-out this moved two-interest shoppers from
0.35 to 0.40 and the whole from 0.580 to 0.602.

The top ``candidates`` are diversified with MMR, and each pick carries
an explanation: the history product that contributes most ("because you viewed ...") and the
interest it serves.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.cells import DEFAULT_CELLS, CellParams, CellTransitions, ProductCells, adjust_scores
from recsys.collaborative import CollaborativeModel, Interactions, top_k_excluding
from recsys.profiles import HistoryEvent, ItemVectors, TasteProfile
from recsys.recommend import Recommendations
from recsys.references import mmr_select

__all__ = [
    "COMPONENTS",
    "BlendWeights",
    "HybridRecommender",
    "tune_blend",
]

#: Score components, in the order of :class:`BlendWeights`.
COMPONENTS: tuple[str, ...] = ("collaborative", "interests", "kernel", "revisit")


@dataclass(frozen=True)
class BlendWeights:
    """Non-negative weights of the z-scored components (they need not sum to 1)."""

    collaborative: float
    interests: float
    kernel: float
    revisit: float = 0.0

    def __post_init__(self) -> None:
        v = self.as_array()
        if np.any(v < 0) or not np.all(np.isfinite(v)) or v.sum() <= 0:
            raise ValueError(f"BlendWeights: expected finite weights >= 0, not all 0, got {v}")

    def as_array(self) -> np.ndarray:
        """float64 ``(4,)`` in :data:`COMPONENTS` order."""
        return np.array(
            [self.collaborative, self.interests, self.kernel, self.revisit], dtype=np.float64
        )

    @classmethod
    def from_array(cls, v: Sequence[float]) -> BlendWeights:
        return cls(*(round(float(x), 6) for x in v))


#: The defaults, from the demo's leave-last-out (collaborative = EASE + ALS + item-kNN): the
#: two validation folds chose warm (0.6, 0.3, 0.0, 0.1) and (0.5, 0.3, 0.1, 0.1), cold
#: (0.1, 0.4, 0.5, 0.0) and (0.0, 0.3, 0.7, 0.0); these are their means.
DEFAULT_WARM = BlendWeights(collaborative=0.55, interests=0.3, kernel=0.05, revisit=0.1)
DEFAULT_COLD = BlendWeights(collaborative=0.05, interests=0.35, kernel=0.6, revisit=0.0)


def _zscore(s: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Row-wise z-scores of ``s`` ``(n, m)``, mean and std over ``valid`` columns."""
    ref = s if valid is None else s[:, valid]
    mu = ref.mean(axis=1, keepdims=True)
    sd = ref.std(axis=1, keepdims=True)
    return (s - mu) / np.where(sd > 1e-12, sd, 1.0)


class HybridRecommender:
    """Collaborative + CLIP content, blended (see the module docstring).

    ``collaborative`` is fitted on ``interactions.matrix``; ``items`` are the catalog's CLIP
    vectors (every product that can be recommended); ``temperature`` (cosine units) as in
    :class:`InterestRecommender`; ``kernel_tau`` (cosine units) the history kernel's width;
    ``mmr_lambda`` 1 = no diversification; ``candidates`` the MMR pool. ``cells`` (the
    catalog's (colour, category community) cells, in ``items.ids`` order) turns on the
    interest-cell adjustment of :mod:`recsys.cells` with ``cell_params``; it needs the
    shopper's timed events: the ``history`` passed to :meth:`recommend`, else
    ``histories[user_id]``. ``transitions`` (fitted with ``cell_params.min_share``) say
    which of two interests the next session serves (``cell_params.sequence``).
    """

    def __init__(
        self,
        *,
        collaborative: CollaborativeModel,
        interactions: Interactions,
        items: ItemVectors,
        warm: BlendWeights = DEFAULT_WARM,
        cold: BlendWeights = DEFAULT_COLD,
        cold_max_events: int = 2,
        temperature: float = 0.05,
        kernel_tau: float = 0.2,
        n_borrow: int = 5,
        mmr_lambda: float = 0.9,
        candidates: int = 50,
        cells: ProductCells | None = None,
        cell_params: CellParams = DEFAULT_CELLS,
        histories: Mapping[str, Sequence[HistoryEvent]] | None = None,
        transitions: CellTransitions | None = None,
    ) -> None:
        if temperature <= 0 or kernel_tau <= 0:
            raise ValueError(
                f"temperature and kernel_tau: expected > 0, got {temperature}, {kernel_tau}"
            )
        if not 0 <= mmr_lambda <= 1:
            raise ValueError(f"mmr_lambda: expected in [0, 1], got {mmr_lambda}")
        if candidates < 1 or n_borrow < 1 or cold_max_events < 0:
            raise ValueError(
                "candidates >= 1, n_borrow >= 1, cold_max_events >= 0 expected, got "
                f"{candidates}, {n_borrow}, {cold_max_events}"
            )
        if cells is not None and not np.array_equal(cells.item_ids, items.ids):
            raise ValueError("cells: expected labels in the order of items.ids")
        self.cells = cells
        self.cell_params = cell_params
        self.transitions = transitions
        self.histories: Mapping[str, Sequence[HistoryEvent]] = histories or {}
        self.collaborative = collaborative
        self.interactions = interactions
        self.items = items
        self.warm = warm
        self.cold = cold
        self.cold_max_events = int(cold_max_events)
        self.temperature = float(temperature)
        self.kernel_tau = float(kernel_tau)
        self.mmr_lambda = float(mmr_lambda)
        self.candidates = int(candidates)
        #: the vector index, when the caller has one (``similar`` does not need it)
        self.index: Any | None = None
        # catalog position -> matrix column (-1: never interacted with)
        cols = interactions.cols_of(items.ids)
        counts = interactions.item_counts()
        has = cols >= 0
        has[has] = counts[cols[has]] > 0
        self._cols = cols
        self._known = has
        # new products borrow the collaborative score of their nearest interacted products:
        # catalog positions ``_new`` (n_new,) and their neighbours ``_borrow`` (n_new, n_borrow)
        known = np.flatnonzero(has)
        self._new = np.flatnonzero(~has) if len(known) else np.zeros(0, np.int64)
        nb = min(n_borrow, len(known))
        self._borrow = np.zeros((len(self._new), nb), dtype=np.int64)
        xk = items.vectors[known]  # float32: ItemVectors guarantees it
        for lo in range(0, len(self._new), 1024):  # chunks bound the (chunk, n_known) block
            sims = items.vectors[self._new[lo : lo + 1024]] @ xk.T
            part = (
                np.argpartition(-sims, nb - 1, axis=1)[:, :nb]
                if nb < len(known)
                else (np.broadcast_to(np.arange(len(known)), sims.shape))
            )
            self._borrow[lo : lo + 1024] = known[part]

    # ------------------------------------------------------------------ scores
    def history_rows(self, histories: Sequence[Sequence[HistoryEvent]]) -> sp.csr_matrix:
        """Histories folded into the interaction matrix's columns, ``(n, n_cols)``."""
        if not histories:
            return sp.csr_matrix((0, len(self.interactions.item_ids)), dtype=np.float32)
        return sp.vstack([self.interactions.fold_in(h) for h in histories]).tocsr()

    def stored_row(self, user_id: str) -> sp.csr_matrix:
        """The row of ``user_id`` in the fitted matrix (empty if the shopper is unknown)."""
        r = self.interactions.row_of(user_id)
        if r is None:
            return sp.csr_matrix((1, len(self.interactions.item_ids)), dtype=np.float32)
        return self.interactions.matrix[r]

    def component_scores(
        self, profiles: Sequence[TasteProfile], rows: sp.csr_matrix
    ) -> dict[str, np.ndarray]:
        """z-scored components, each float64 ``(n, n_catalog)`` in ``items.ids`` order, for
        ``profiles`` and their history ``rows`` ``(n, n_cols)``."""
        n = len(profiles)
        if rows.shape[0] != n:
            raise ValueError(f"rows: expected {n} rows (one per profile), got {rows.shape[0]}")
        x = self.items.vectors  # float32 (n_catalog, dim); no per-query copy
        m = len(self.items.ids)
        collab = np.zeros((n, m))
        if n and self._known.any():
            raw = np.asarray(self.collaborative.scores(rows), dtype=np.float64)
            collab[:, self._known] = raw[:, self._cols[self._known]]
            collab = _zscore(collab, self._known)
            if len(self._new) and self._borrow.shape[1]:
                collab[:, self._new] = collab[:, self._borrow].mean(axis=2)
            # a shopper without any history has no collaborative signal at all
            collab[np.asarray(rows.getnnz(axis=1)) == 0] = 0.0
        interests = np.zeros((n, m))
        for u, p in enumerate(profiles):
            if p.dim != x.shape[1]:
                raise ValueError(
                    f"profile {p.user_id!r}: embedding dim {p.dim} does not match the item "
                    f"vectors' dim {x.shape[1]}"
                )
            c = np.stack([i.centroid for i in p.interests]).astype(np.float32)
            w = np.array([i.weight for i in p.interests], dtype=np.float64)
            s = (x @ c.T).astype(np.float64)
            mx = s.max(axis=1, keepdims=True)
            t = self.temperature
            interests[u] = mx[:, 0] + t * np.log((w / w.sum() * np.exp((s - mx) / t)).sum(1))
        interests = _zscore(interests)
        kernel = interests.copy()  # fallback for shoppers with no catalogued history
        revisit = np.zeros((n, m))
        catalog_of_col = np.full(len(self.interactions.item_ids), -1, dtype=np.int64)
        catalog_of_col[self._cols[self._cols >= 0]] = np.flatnonzero(self._cols >= 0)
        for u in range(n):
            lo, hi = rows.indptr[u], rows.indptr[u + 1]
            pos = catalog_of_col[rows.indices[lo:hi]]
            ok = pos >= 0
            if not ok.any():
                continue
            p = rows.data[lo:hi][ok].astype(np.float64)
            revisit[u, pos[ok]] = p
            k = np.exp(((x @ x[pos[ok]].T).astype(np.float64) - 1.0) / self.kernel_tau)
            kernel[u] = _zscore(np.log(k @ (p / p.sum()) + 1e-300)[None, :])[0]
        return {
            "collaborative": collab,
            "interests": interests,
            "kernel": kernel,
            "revisit": _zscore(revisit),
        }

    def blend(self, components: Mapping[str, np.ndarray], n_events: Sequence[int]) -> np.ndarray:
        """Blended relevance ``(n, n_catalog)``: warm or cold weights per shopper."""
        stack = np.stack([components[c] for c in COMPONENTS], axis=-1)
        cold = np.asarray(n_events) <= self.cold_max_events
        w = np.where(cold[:, None], self.cold.as_array(), self.warm.as_array())
        return np.einsum("nmc,nc->nm", stack, w)

    # ------------------------------------------------------------------ recommend
    def recommend(
        self,
        profile: TasteProfile,
        *,
        k: int = 10,
        exclude_ids: Collection[int] = (),
        history: Sequence[HistoryEvent] | None = None,
    ) -> Recommendations:
        """Top ``k`` products for ``profile`` (never one of ``exclude_ids``: pass the
        shopper's purchases). ``history`` defaults to the shopper's row in the fitted matrix.
        Each pick is explained: ``because_ids`` (a history product, -1 if none) and
        ``interest_index`` (the profile interest nearest it)."""
        if k < 1:
            raise ValueError(f"k: expected >= 1, got {k}")
        if history is not None:
            row = self.interactions.fold_in(history)
            n_events = len(history)
        else:
            row = self.stored_row(profile.user_id)
            n_events = profile.n_events
        comps = self.component_scores([profile], row)
        rel = self.blend(comps, [n_events])[0]
        excluded = np.isin(self.items.ids, np.fromiter((int(i) for i in exclude_ids), np.int64))
        if self.cells is not None and self.cell_params.active:
            timed = history if history is not None else self.histories.get(profile.user_id, ())
            rel = self.adjust_for_cells(rel, excluded, timed)
        top = top_k_excluding(rel, max(self.candidates, k), excluded)
        if len(top) == 0:
            return Recommendations(np.zeros(0, np.int64), np.zeros(0, np.float32))
        r = rel[top]
        spread = float(r.max() - r.min())
        scaled = (r - r.min()) / spread if spread > 0 else np.ones_like(r)
        x = self.items.vectors[top]
        picked = top[mmr_select(scaled, x, k=k, lambda_=self.mmr_lambda)]
        because, interest = self._explain(profile, row, picked)
        return Recommendations(
            item_ids=self.items.ids[picked],
            scores=rel[picked],
            policy="hybrid",
            because_ids=because,
            interest_index=interest,
        )

    def adjust_for_cells(
        self, rel: np.ndarray, excluded: np.ndarray, history: Sequence[HistoryEvent]
    ) -> np.ndarray:
        """``rel`` ``(n_catalog,)`` adjusted for the shopper's interest cells (a copy;
        excluded products keep their score, ``excluded`` only keeps them from setting the
        top score); unchanged without cells or history."""
        if self.cells is None or not history:
            return np.array(rel, dtype=np.float64)
        vec = self.cells.session_vectors(history)  # once: shares and the next-interest chain
        shares = vec.mean(axis=0) if len(vec) else np.zeros(max(self.cells.n_cells, 1))
        picked = self.cells.interest_cells(shares, self.cell_params.min_share)
        p_next = None
        if self.transitions is not None and self.cell_params.sequence > 0:
            if self.transitions.min_share != self.cell_params.min_share:
                raise ValueError(
                    f"transitions: fitted with min_share {self.transitions.min_share}, "
                    f"cell_params has {self.cell_params.min_share}"
                )
            p_next = self.transitions.p_next_of(self.cells, vec)
        masked = np.where(excluded, -np.inf, rel)
        out = adjust_scores(masked, self.cells.cell, picked, self.cell_params, p_next)
        return np.where(excluded, rel, out)

    def _explain(
        self, profile: TasteProfile, row: sp.csr_matrix, picked: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        x = self.items.vectors
        c = np.stack([i.centroid for i in profile.interests]).astype(np.float32)
        interest = np.argmax(x[picked] @ c.T, axis=1).astype(np.int64)
        because = np.full(len(picked), -1, dtype=np.int64)
        if row.nnz == 0:
            return because, interest
        item_ids = self.interactions.item_ids
        cols = self._cols[picked]
        known = self._known[picked]
        if known.any():
            because[known] = item_ids[self.collaborative.explain(row, cols[known])]
        # products without a collaborative link: the nearest history product in CLIP space
        hist_pos = self.items.rows(int(i) for i in item_ids[row.indices] if int(i) in self.items)
        if len(hist_pos):
            nearest = np.argmax(x[picked] @ x[hist_pos].T, axis=1)
            fill = because < 0
            because[fill] = self.items.ids[hist_pos[nearest[fill]]]
        return because, interest

    def similar(
        self, product_id: int, *, k: int = 10, exclude_ids: Collection[int] = ()
    ) -> Recommendations:
        """The ``k`` products nearest ``product_id`` by CLIP cosine (itself excluded)."""
        if product_id not in self.items:
            raise KeyError(f"product_id {product_id} is not in the catalog vectors")
        x = self.items.vectors
        s = (x @ x[self.items.rows([product_id])[0]]).astype(np.float64)
        excluded = np.isin(self.items.ids, [int(product_id), *(int(i) for i in exclude_ids)])
        top = top_k_excluding(s, k, excluded)
        return Recommendations(self.items.ids[top], s[top], policy="similar")


def _ranks_of_targets(rel: np.ndarray, targets: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target column (ties to the lower column, like
    :func:`top_k_excluding`); excluded columns never outrank it."""
    s = np.where(excluded, -np.inf, rel)
    st = s[np.arange(len(targets)), targets][:, None]
    j = np.arange(s.shape[1])[None, :]
    return ((s > st) | ((s == st) & (j < targets[:, None]))).sum(axis=1)


def _stack(
    components: Mapping[str, np.ndarray], targets: np.ndarray, excluded: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """The components present (in :data:`COMPONENTS` order) stacked ``(n, n_catalog, c)``."""
    names = [c for c in COMPONENTS if c in components]
    if not names:
        raise ValueError(f"components: expected some of {COMPONENTS}, got {sorted(components)}")
    n = len(targets)
    if n == 0:
        raise ValueError("targets: expected at least one validation shopper, got none")
    stack = np.stack([np.asarray(components[c], dtype=np.float64) for c in names], axis=-1)
    if stack.shape[:2] != excluded.shape or stack.shape[0] != n:
        raise ValueError(
            f"components {stack.shape[:2]}, excluded {excluded.shape} and targets ({n},) must agree"
        )
    return names, stack


def _weights_of(names: Sequence[str], w: Sequence[float]) -> BlendWeights:
    full = dict.fromkeys(COMPONENTS, 0.0)
    full.update(zip(names, (float(v) for v in w), strict=True))
    return BlendWeights.from_array([full[c] for c in COMPONENTS])


def _recall_of(
    stack: np.ndarray, w: np.ndarray, targets: np.ndarray, excluded: np.ndarray, k: int
) -> tuple[float, float]:
    ranks = _ranks_of_targets(stack @ w, targets, excluded)
    return float((ranks < k).mean()), float((1.0 / (ranks + 1)).mean())


def tune_blend(
    components: Mapping[str, np.ndarray],
    targets: np.ndarray,
    excluded: np.ndarray,
    *,
    k: int = 10,
    step: float = 0.1,
) -> tuple[BlendWeights, float]:
    """The simplex grid point (``step`` apart) of weights maximising recall@``k`` of
    ``targets`` (catalog positions, int ``(n,)``) on validation shoppers, ties broken by
    the mean reciprocal rank, then by grid order. ``components`` each ``(n, n_catalog)``
    (those of :data:`COMPONENTS` that are missing get weight 0); ``excluded`` bool
    ``(n, n_catalog)`` (earlier purchases). Returns (weights, recall)."""
    targets = np.asarray(targets, dtype=np.int64)
    if not 0 < step <= 0.5:
        raise ValueError(f"step: expected in (0, 0.5], got {step}")
    names, stack = _stack(components, targets, excluded)
    m = round(1 / step)
    best: tuple[float, float, tuple[float, ...]] | None = None
    for head in itertools.product(range(m + 1), repeat=len(names) - 1):
        if sum(head) > m:
            continue
        w = (*(a / m for a in head), (m - sum(head)) / m)
        key = _recall_of(stack, np.array(w), targets, excluded, k)
        if best is None or key > best[:2]:
            best = (key[0], key[1], w)
    assert best is not None
    return _weights_of(names, best[2]), best[0]
