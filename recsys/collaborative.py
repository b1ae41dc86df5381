"""Collaborative filtering on a log-weighted shopper x product matrix.

The matrix holds ``log1p(sum of event weights)`` per (shopper, product) with view 1, click 2,
add-to-cart 3, purchase 4: a shopper who viewed a product three times and bought it once
gets ``log1p(7)``. Every model is one small class with hyperparameters checked on
construction, ``fit(matrix)`` and ``scores(rows)``: a row is any shopper's history folded into
the same columns, so a shopper the model never saw is scored without refitting.

- :class:`MostPopularRecommender`: distinct shoppers per product.
- :class:`ItemKNNRecommender`: cosine item-item similarity (optionally top-n neighbours).
- :class:`EASERecommender`: EASE^R (Steck 2019), closed form, dense ``(n_items, n_items)``;
  refuses catalogs above ``max_items`` (the dense matrix would not fit).
- :class:`ALSRecommender`: implicit-feedback ALS (Hu, Koren, Volinsky 2008) from the
  ``implicit`` library (imported here only); scales to 1M x 100k.
- :class:`CollaborativeEnsemble`: the mean of several models' z-scored scores.

:func:`make_collaborative` picks EASE + ALS + item-kNN below a product-count threshold, ALS
above.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from recsys.profiles import HistoryEvent
from recsys.recommend import Recommendations

__all__ = [
    "EVENT_WEIGHTS",
    "ALSRecommender",
    "CollaborativeEnsemble",
    "CollaborativeModel",
    "EASERecommender",
    "Interactions",
    "ItemKNNRecommender",
    "MostPopularRecommender",
    "make_collaborative",
    "top_k_excluding",
]

#: Weight of one event per kind in the interaction matrix (before ``log1p``).
EVENT_WEIGHTS: dict[str, float] = {"view": 1.0, "click": 2.0, "add_to_cart": 3.0, "purchase": 4.0}

#: Largest catalog for which EASE's dense item x item matrix is built (float64: 800 MB at 10k).
EASE_MAX_ITEMS = 10_000
#: Neighbours per product of the hybrid's item-kNN (bounds its similarity matrix's size).
KNN_NEIGHBOURS = 200


@dataclass(frozen=True)
class Interactions:
    """``matrix`` float32 CSR ``(n_users, n_items)`` of ``log1p(sum of event weights)``;
    ``user_ids`` its row labels, ``item_ids`` int64 ``(n_items,)`` its column labels."""

    user_ids: tuple[str, ...]
    item_ids: np.ndarray
    matrix: sp.csr_matrix
    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        ids = np.asarray(self.item_ids, dtype=np.int64)
        object.__setattr__(self, "item_ids", ids)
        if self.matrix.shape != (len(self.user_ids), len(ids)):
            raise ValueError(
                f"matrix: expected shape ({len(self.user_ids)}, {len(ids)}), "
                f"got {self.matrix.shape}"
            )
        object.__setattr__(self, "_row", {u: r for r, u in enumerate(self.user_ids)})
        object.__setattr__(self, "_col", {int(i): c for c, i in enumerate(ids.tolist())})

    @classmethod
    def from_histories(
        cls,
        histories: Mapping[str, Sequence[HistoryEvent]],
        *,
        item_ids: Iterable[int] | None = None,
        weights: Mapping[str, float] = EVENT_WEIGHTS,
    ) -> Interactions:
        """One row per shopper of ``histories`` (sorted ids); columns ``item_ids`` (default:
        every product with an event). Events on other products or of unknown kinds are
        ignored."""
        if item_ids is None:
            item_ids = sorted({e.product_id for evs in histories.values() for e in evs})
        ids = np.asarray(sorted({int(i) for i in item_ids}), dtype=np.int64)
        users = tuple(sorted(histories))
        col = {int(i): c for c, i in enumerate(ids.tolist())}
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for r, u in enumerate(users):
            acc: dict[int, float] = {}
            for e in histories[u]:
                c = col.get(int(e.product_id))
                w = weights.get(e.kind)
                if c is not None and w is not None:
                    acc[c] = acc.get(c, 0.0) + float(w)
            for c, v in acc.items():
                rows.append(r)
                cols.append(c)
                vals.append(float(np.log1p(v)))
        m = sp.csr_matrix(
            (np.asarray(vals, np.float32), (rows, cols)), shape=(len(users), len(ids))
        )
        return cls(user_ids=users, item_ids=ids, matrix=m, weights=dict(weights))

    def row_of(self, user_id: str) -> int | None:
        """Row index of ``user_id`` (None if absent)."""
        return self._row.get(user_id)  # type: ignore[attr-defined, no-any-return]

    def cols_of(self, item_ids: Iterable[int]) -> np.ndarray:
        """Column index per item id, int64; -1 for products not in the matrix."""
        col: dict[int, int] = self._col  # type: ignore[attr-defined]
        return np.array([col.get(int(i), -1) for i in item_ids], dtype=np.int64)

    def fold_in(self, events: Sequence[HistoryEvent]) -> sp.csr_matrix:
        """A history as one row ``(1, n_items)`` in this matrix's columns and weighting."""
        acc: dict[int, float] = {}
        col: dict[int, int] = self._col  # type: ignore[attr-defined]
        for e in events:
            c = col.get(int(e.product_id))
            w = self.weights.get(e.kind)
            if c is not None and w is not None:
                acc[c] = acc.get(c, 0.0) + float(w)
        cols = sorted(acc)
        vals = np.log1p(np.array([acc[c] for c in cols], dtype=np.float64)).astype(np.float32)
        return sp.csr_matrix(
            (vals, (np.zeros(len(cols), np.int64), cols)), shape=(1, len(self.item_ids))
        )

    def item_counts(self) -> np.ndarray:
        """Distinct shoppers per column, float64 ``(n_items,)``."""
        return np.asarray(self.matrix.getnnz(axis=0), dtype=np.float64)


def _as_csr(name: str, x: Any, n_items: int | None = None) -> sp.csr_matrix:
    if not sp.issparse(x):
        raise TypeError(f"{name}: expected a scipy.sparse matrix, got {type(x).__name__}")
    m = sp.csr_matrix(x, dtype=np.float32)
    if n_items is not None and m.shape[1] != n_items:
        raise ValueError(f"{name}: expected {n_items} columns, got {m.shape[1]}")
    return m


class CollaborativeModel(Protocol):
    """What every collaborative model offers (and :class:`HybridRecommender` needs)."""

    name: str

    def fit(self, matrix: sp.csr_matrix) -> Any: ...

    def scores(self, rows: sp.csr_matrix) -> np.ndarray: ...

    def explain(self, row: sp.csr_matrix, cols: np.ndarray) -> np.ndarray: ...


class _Base:
    """Shared ``recommend`` over ``scores``; subclasses set ``name`` and ``_n_items``."""

    name = "base"
    _n_items: int | None = None

    def _check_fitted(self, rows: Any) -> sp.csr_matrix:
        if self._n_items is None:
            raise RuntimeError(f"{type(self).__name__}: call fit(matrix) first")
        return _as_csr("rows", rows, self._n_items)

    def scores(self, rows: sp.csr_matrix) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def explain(self, row: sp.csr_matrix, cols: np.ndarray) -> np.ndarray:
        """The history column that contributes most to each of ``cols`` (-1 when none);
        by default the history item the shopper engaged with most."""
        r = _as_csr("row", row)
        if r.nnz == 0:
            return np.full(len(cols), -1, dtype=np.int64)
        return np.full(len(cols), int(r.indices[int(np.argmax(r.data))]), dtype=np.int64)

    def recommend(
        self,
        row: sp.csr_matrix,
        *,
        item_ids: np.ndarray,
        k: int = 10,
        exclude_ids: Collection[int] = (),
    ) -> Recommendations:
        """Top ``k`` of ``item_ids`` (the matrix's column labels) for one history ``row``
        ``(1, n_items)``, never one of ``exclude_ids``."""
        if k < 1:
            raise ValueError(f"k: expected >= 1, got {k}")
        s = self.scores(row)[0].astype(np.float64)
        ids = np.asarray(item_ids, dtype=np.int64)
        if ids.shape != s.shape:
            raise ValueError(f"item_ids: expected {s.shape[0]} ids, got {ids.shape}")
        picked = top_k_excluding(s, k, np.isin(ids, list(exclude_ids)))
        return Recommendations(item_ids=ids[picked], scores=s[picked], policy=self.name)


def top_k_excluding(scores: np.ndarray, k: int, excluded: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` best of ``scores`` ``(n,)``, best first, skipping ``excluded``
    (bool ``(n,)``); ties go to the lower index."""
    s = np.asarray(scores, dtype=np.float64).copy()
    if excluded is not None and excluded.any():
        s[excluded] = -np.inf
    n_ok = int(np.isfinite(s).sum())
    k = min(k, n_ok)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
    # exact order (and id tie-break) among the partition's survivors and any ties at its edge
    edge = s[part].min()
    cand = np.flatnonzero(s >= edge)
    order = cand[np.lexsort((cand, -s[cand]))]
    return order[:k].astype(np.int64)


class MostPopularRecommender(_Base):
    """Scores every product by its number of distinct shoppers (the same for everyone)."""

    name = "popularity"

    def fit(self, matrix: sp.csr_matrix) -> MostPopularRecommender:
        m = _as_csr("matrix", matrix)
        self._counts = np.asarray(m.getnnz(axis=0), dtype=np.float32)
        self._n_items = m.shape[1]
        return self

    def scores(self, rows: sp.csr_matrix) -> np.ndarray:
        """``(n_rows, n_items)`` float32: the counts, repeated."""
        r = self._check_fitted(rows)
        return np.broadcast_to(self._counts, (r.shape[0], self._counts.shape[0])).copy()


class ItemKNNRecommender(_Base):
    """``score(u, i) = sum_j x_uj * cos(i, j)`` with cosine over the matrix's columns
    (``cos(i, i) = 0``); ``n_neighbours`` keeps each item's most similar (None = all)."""

    name = "item_knn"

    def __init__(self, *, n_neighbours: int | None = None) -> None:
        if n_neighbours is not None and n_neighbours < 1:
            raise ValueError(f"n_neighbours: expected >= 1 or None, got {n_neighbours}")
        self.n_neighbours = n_neighbours

    def fit(self, matrix: sp.csr_matrix) -> ItemKNNRecommender:
        m = _as_csr("matrix", matrix)
        g = (m.T @ m).tocsr().astype(np.float64)
        norms = np.sqrt(np.maximum(g.diagonal(), 0.0))
        inv = np.where(norms > 0, 1.0 / np.maximum(norms, 1e-30), 0.0)
        s = sp.diags(inv) @ g @ sp.diags(inv)
        s = sp.csr_matrix(s)
        s.setdiag(0.0)
        s.eliminate_zeros()
        if self.n_neighbours is not None:
            s = _keep_top_per_column(s, self.n_neighbours)
        self._sim = s.astype(np.float32).tocsr()
        self._n_items = m.shape[1]
        return self

    @property
    def similarity(self) -> sp.csr_matrix:
        """Item x item cosine, float32 CSR (zero diagonal)."""
        return self._sim

    def scores(self, rows: sp.csr_matrix) -> np.ndarray:
        """``(n_rows, n_items)`` float32."""
        r = self._check_fitted(rows)
        return np.asarray((r @ self._sim).todense(), dtype=np.float32)

    def explain(self, row: sp.csr_matrix, cols: np.ndarray) -> np.ndarray:
        r = _as_csr("row", row)
        if r.nnz == 0:
            return np.full(len(cols), -1, dtype=np.int64)
        contrib = self._sim[r.indices][:, cols].toarray() * r.data[:, None]
        return r.indices[np.argmax(contrib, axis=0)].astype(np.int64)


def _keep_top_per_column(s: sp.csr_matrix, n: int) -> sp.csr_matrix:
    c = s.tocsc()
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for j in range(c.shape[1]):
        lo, hi = c.indptr[j], c.indptr[j + 1]
        v, idx = c.data[lo:hi], c.indices[lo:hi]
        if len(v) > n:
            keep = np.argpartition(-v, n - 1)[:n]
            v, idx = v[keep], idx[keep]
        rows.append(idx)
        cols.append(np.full(len(idx), j))
        vals.append(v)
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=s.shape
    )


class EASERecommender(_Base):
    """EASE^R: ``B = I - P diag(1 / diag(P))`` with ``P = (X^T X + lambda I)^-1`` (zero
    diagonal); ``score = x_u B``. Dense: refuses more than ``max_items`` products."""

    name = "ease"

    def __init__(self, *, l2: float = 200.0, max_items: int = EASE_MAX_ITEMS) -> None:
        if not l2 > 0:
            raise ValueError(f"l2: expected > 0, got {l2}")
        if max_items < 1:
            raise ValueError(f"max_items: expected >= 1, got {max_items}")
        self.l2 = float(l2)
        self.max_items = int(max_items)

    def fit(self, matrix: sp.csr_matrix) -> EASERecommender:
        m = _as_csr("matrix", matrix)
        n = m.shape[1]
        if n > self.max_items:
            raise ValueError(
                f"matrix: EASE needs a dense {n} x {n} item matrix; expected at most "
                f"max_items={self.max_items} products (use ALSRecommender above that)"
            )
        import scipy.linalg

        g = (m.T @ m).astype(np.float64).toarray()
        g[np.diag_indices(n)] += self.l2
        # in place where possible: at 10k products each dense float64 copy is 800 MB
        p = scipy.linalg.inv(g, overwrite_a=True, check_finite=False)
        del g
        p /= -np.diag(p)[None, :]
        p[np.diag_indices(n)] = 0.0
        self._b = p.astype(np.float32)
        self._n_items = n
        return self

    @property
    def weights(self) -> np.ndarray:
        """``B``, float32 ``(n_items, n_items)``, zero diagonal."""
        return self._b

    def scores(self, rows: sp.csr_matrix) -> np.ndarray:
        """``(n_rows, n_items)`` float32."""
        r = self._check_fitted(rows)
        # row by row from the rows of B each history touches: scipy's sparse @ dense would
        # copy all of B (n_items^2 floats) on every call
        out = np.zeros((r.shape[0], self._b.shape[1]), dtype=np.float32)
        for i in range(r.shape[0]):
            lo, hi = r.indptr[i], r.indptr[i + 1]
            if hi > lo:
                out[i] = r.data[lo:hi] @ self._b[r.indices[lo:hi]]
        return out

    def explain(self, row: sp.csr_matrix, cols: np.ndarray) -> np.ndarray:
        r = _as_csr("row", row)
        if r.nnz == 0:
            return np.full(len(cols), -1, dtype=np.int64)
        contrib = self._b[r.indices][:, cols] * r.data[:, None]
        return r.indices[np.argmax(contrib, axis=0)].astype(np.int64)


class ALSRecommender(_Base):
    """Implicit-feedback ALS (``implicit.cpu.als``): confidence ``1 + alpha * x``,
    ``factors`` dimensions, ``regularization``, ``iterations`` sweeps, seeded by ``seed``.
    ``scores`` folds each row in with one exact least-squares user step, so a shopper the
    model never saw is scored like one it did."""

    name = "als"

    def __init__(
        self,
        *,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 2.0,
        iterations: int = 15,
        seed: int = 0,
        num_threads: int = 0,
    ) -> None:
        for name, v in (("factors", factors), ("iterations", iterations)):
            if v < 1:
                raise ValueError(f"{name}: expected >= 1, got {v}")
        if regularization < 0 or alpha <= 0:
            raise ValueError(
                f"regularization >= 0 and alpha > 0 expected, got {regularization}, {alpha}"
            )
        self.factors = int(factors)
        self.regularization = float(regularization)
        self.alpha = float(alpha)
        self.iterations = int(iterations)
        self.seed = int(seed)
        self.num_threads = int(num_threads)

    def fit(self, matrix: sp.csr_matrix, *, show_progress: bool = False) -> ALSRecommender:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits  # a dependency of implicit

        m = _as_csr("matrix", matrix)
        # implicit parallelises over users itself; a multi-threaded BLAS underneath it
        # oversubscribes the cores (implicit checks, and warns, when the model is made)
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.seed,
                num_threads=self.num_threads,
                calculate_training_loss=False,
            )
            model.fit(m, show_progress=show_progress)
        self._items = np.asarray(model.item_factors, dtype=np.float64)
        self._users = np.asarray(model.user_factors, dtype=np.float32)
        self._yty = self._items.T @ self._items
        self._n_items = m.shape[1]
        return self

    @property
    def item_factors(self) -> np.ndarray:
        """float64 ``(n_items, factors)``."""
        return self._items

    def user_factors(self, rows: sp.csr_matrix) -> np.ndarray:
        """One exact ALS user step per row, float64 ``(n_rows, factors)``:
        ``(Y^T Y + reg I + Y^T (C_u - I) Y)^-1 Y^T C_u p_u`` with confidence ``C = alpha * x``
        on the row's products (implicit's own equations, ``user_linear_equation``)."""
        r = self._check_fitted(rows)
        y = self._items
        base = self._yty + self.regularization * np.eye(y.shape[1])
        out = np.zeros((r.shape[0], y.shape[1]))
        for i in range(r.shape[0]):
            lo, hi = r.indptr[i], r.indptr[i + 1]
            if lo == hi:
                continue
            idx, c = r.indices[lo:hi], self.alpha * r.data[lo:hi].astype(np.float64)
            yi = y[idx]
            a = base + (yi.T * (c - 1.0)) @ yi
            out[i] = np.linalg.solve(a, yi.T @ c)
        return out

    def scores(self, rows: sp.csr_matrix) -> np.ndarray:
        """``(n_rows, n_items)`` float32: folded-in user factors times item factors."""
        return (self.user_factors(rows) @ self._items.T).astype(np.float32)


class CollaborativeEnsemble(_Base):
    """The mean of several fitted-or-not models' row-wise z-scored scores (e.g. EASE + ALS:
    their errors differ, so the mean ranks better than either on the demo's time split).
    ``explain`` comes from the first model that has one."""

    name = "ensemble"

    def __init__(self, models: Sequence[CollaborativeModel]) -> None:
        if not models:
            raise ValueError("models: expected at least one collaborative model, got none")
        self.models = list(models)

    @classmethod
    def from_fitted(
        cls, models: Sequence[CollaborativeModel], n_items: int
    ) -> CollaborativeEnsemble:
        """An ensemble of models already fitted on one ``(n_users, n_items)`` matrix."""
        out = cls(models)
        out._n_items = int(n_items)
        return out

    def fit(self, matrix: sp.csr_matrix) -> CollaborativeEnsemble:
        m = _as_csr("matrix", matrix)
        for model in self.models:
            model.fit(m)
        self._n_items = m.shape[1]
        return self

    def scores(self, rows: sp.csr_matrix) -> np.ndarray:
        """``(n_rows, n_items)`` float32: mean of the models' per-row z-scores."""
        r = self._check_fitted(rows)
        total = np.zeros((r.shape[0], r.shape[1]), dtype=np.float64)
        for model in self.models:
            s = np.asarray(model.scores(r), dtype=np.float64)
            sd = s.std(axis=1, keepdims=True)
            total += (s - s.mean(axis=1, keepdims=True)) / np.where(sd > 1e-12, sd, 1.0)
        return (total / len(self.models)).astype(np.float32)

    def explain(self, row: sp.csr_matrix, cols: np.ndarray) -> np.ndarray:
        for model in self.models:
            if isinstance(model, (EASERecommender, ItemKNNRecommender)):
                return model.explain(row, cols)
        return super().explain(row, cols)


def make_collaborative(
    n_items: int,
    *,
    ease_l2: float = 200.0,
    ease_max_items: int = EASE_MAX_ITEMS,
    als_factors: int = 64,
    knn_neighbours: int | None = KNN_NEIGHBOURS,
    seed: int = 0,
) -> CollaborativeModel:
    """EASE + ALS + item-kNN (:class:`CollaborativeEnsemble`) when EASE's dense
    ``n_items x n_items`` matrix fits (``n_items <= ease_max_items``), else ALS alone (memory
    linear in shoppers + products)."""
    als = ALSRecommender(factors=als_factors, seed=seed)
    if n_items <= ease_max_items:
        return CollaborativeEnsemble(
            [
                EASERecommender(l2=ease_l2, max_items=ease_max_items),
                als,
                ItemKNNRecommender(n_neighbours=knn_neighbours),
            ]
        )
    return als
