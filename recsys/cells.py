"""Interest cells: (colour, category community) pairs a shopper's sessions keep returning to.

A shopper with two interests (say white home goods and orange accessories) gets a top 10
from the collaborative + CLIP blend that mostly serves the interest with more events: a
linear model's score on the whole history is dominated by its majority. On the demo the
purchase is in the minority interest about 40% of the time. Cells make the interests
explicit from catalog facets a store has anyway (each product's colour and category):

- **category communities** (:func:`category_communities`): categories viewed together in
  the same sessions across all shoppers (co-view lift above ``min_lift``), joined into
  connected components (on the demo: apparel, home, accessories);
- a product's **cell** is its (colour, community); a shopper's **cell shares**
  (:meth:`ProductCells.shares`) are the mean, over their sessions (events more than
  ``session_gap_s`` apart start a new one), of each session's event-weighted cell shares,
  so one long session does not outweigh several short ones;
- the shopper's **interest cells** (:meth:`ProductCells.interest_cells`): the top cell and,
  as a second interest when its share is at least ``min_share``, the heaviest cell that
  differs from it in both colour and community (a cell sharing the colour or the community
  is mostly the spill-over of the first interest's sessions);
- :func:`adjust_scores` lifts each interest cell's best product toward the top score
  (``gamma``: 0 none, 1 level with it) when there are two, and adds ``boost`` to every
  product of an interest cell;
- **which interest comes next** (:class:`CellTransitions`): a shopper's sessions, labelled
  by the interest cell they serve, form a sequence; a variable-order Markov chain (the last
  two labels, backing off to the last one, then to the shopper's shares) learned from every
  shopper's training sessions gives the probability that the *next* session serves each
  interest (a sequence-aware recommender in the spirit of Rendle et al.'s personalised
  Markov chains, the states being the shopper's own interests). ``sequence`` scales how
  much that probability moves the two cells (0: not at all). What the chain learns is
  whatever the data shows: persistence (a shopper continues the last visit's interest) or
  alternation.

``gamma``, ``min_share``, ``boost`` and ``sequence`` are tuned on validation shoppers
(:func:`tune_cells`, see :mod:`recsys.evaluation.protocols`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from data.models import Product
from recsys.profiles import HistoryEvent

__all__ = [
    "CELL_GRID",
    "CellParams",
    "CellTransitions",
    "ProductCells",
    "adjust_scores",
    "category_communities",
    "load_facets",
    "next_probabilities",
    "session_labels",
    "sessions_of",
    "tune_cells",
]

#: Events further apart than this (seconds) belong to different sessions.
SESSION_GAP_S = 1800.0
_EVENT_WEIGHTS: dict[str, float] = {"view": 1.0, "click": 2.0, "add_to_cart": 3.0, "purchase": 4.0}


@dataclass(frozen=True)
class CellParams:
    """``gamma`` in [0, 1]: how far each of two interest cells' best product is lifted toward
    the top score; ``min_share`` in (0, 1]: the smallest cell share that counts as an
    interest; ``boost`` >= 0: added to the score of every product in an interest cell
    (scores are blends of z-scores, so 1 is about one standard deviation); ``sequence`` >= 0:
    with two interest cells, each cell's products get ``sequence * log(p / 0.5)`` where ``p``
    (floored at 0.02) is the probability (:class:`CellTransitions`) that the next session
    serves that cell: in log-probability, as a top 10 that maximises expected hits ranks by
    log P(cell) + log P(product | cell)."""

    gamma: float = 0.0
    min_share: float = 0.15
    boost: float = 0.0
    sequence: float = 0.0

    def __post_init__(self) -> None:
        if (
            not 0 <= self.gamma <= 1
            or not 0 < self.min_share <= 1
            or not self.boost >= 0
            or not self.sequence >= 0
        ):
            raise ValueError(
                "CellParams: expected gamma in [0, 1], min_share in (0, 1], boost >= 0, "
                f"sequence >= 0, got {self.gamma}, {self.min_share}, {self.boost}, "
                f"{self.sequence}"
            )

    @property
    def active(self) -> bool:
        return self.gamma > 0 or self.boost > 0 or self.sequence > 0


#: The grid :func:`tune_cells` searches (``gamma``, ``boost`` and ``sequence`` 0 = cells off).
CELL_GRID: tuple[CellParams, ...] = tuple(
    CellParams(gamma=g, min_share=s, boost=b, sequence=q)
    for g, s, b, q in itertools.product(
        (0.0, 0.5, 0.75, 1.0),
        (0.1, 0.15, 0.2),
        (0.0, 0.25, 0.5, 1.0, 2.0),
        (0.0, 1.0, 2.0, 4.0, 8.0),
    )
)

#: The demo's two leave-last-out validation folds (seed 0) chose (gamma, min_share, boost,
#: sequence) = (0.75, 0.15, 0.5, 4) and (0.5, 0.15, 1.0, 2); this is their mean.
DEFAULT_CELLS = CellParams(gamma=0.625, min_share=0.15, boost=0.75, sequence=3.0)


def load_facets(engine: Engine) -> dict[int, tuple[str, str]]:
    """Product id -> (colour, category) for products with both (``attributes["colour"]`` or
    ``["color"]``, and a non-empty category)."""
    out: dict[int, tuple[str, str]] = {}
    with Session(engine) as session:
        for pid, cat, attrs in session.exec(
            select(Product.id, Product.category, Product.attributes)
        ):
            a = attrs or {}
            colour = a.get("colour", a.get("color"))
            if pid is not None and cat and colour:
                out[int(pid)] = (str(colour).lower(), str(cat))
    return out


def sessions_of(
    history: Sequence[HistoryEvent], gap_s: float = SESSION_GAP_S
) -> list[list[HistoryEvent]]:
    """``history`` (time order) cut into sessions wherever two events are > ``gap_s`` apart."""
    out: list[list[HistoryEvent]] = []
    prev = None
    for e in history:
        if prev is None or (e.ts - prev).total_seconds() > gap_s:
            out.append([])
        out[-1].append(e)
        prev = e.ts
    return out


def category_communities(
    histories: Mapping[str, Sequence[HistoryEvent]],
    category_of: Mapping[int, str],
    *,
    min_lift: float = 1.0,
    gap_s: float = SESSION_GAP_S,
) -> dict[str, int]:
    """Category -> community id: categories whose co-view lift within sessions exceeds
    ``min_lift`` are joined (connected components, ids in sorted-category order). The lift of
    categories a, b is ``C[a, b] * C.sum() / (C[a].sum() * C[b].sum())`` where ``C`` sums,
    over sessions, the outer product of the session's category shares."""
    cats = sorted(set(category_of.values()))
    pos = {c: i for i, c in enumerate(cats)}
    co = np.zeros((len(cats), len(cats)))
    for hist in histories.values():
        for sess in sessions_of(hist, gap_s):
            v = np.zeros(len(cats))
            for e in sess:
                c = category_of.get(int(e.product_id))
                if c is not None:
                    v[pos[c]] += 1.0
            if v.sum() > 0:
                v /= v.sum()
                co += np.outer(v, v)
    total = co.sum()
    marg = co.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.where(np.outer(marg, marg) > 0, co * total / np.outer(marg, marg), 0.0)
    comp = np.full(len(cats), -1, dtype=np.int64)
    n = 0
    for a in range(len(cats)):
        if comp[a] >= 0:
            continue
        comp[a] = n
        stack = [a]
        while stack:
            x = stack.pop()
            for y in np.flatnonzero(lift[x] > min_lift):
                if comp[y] < 0:
                    comp[y] = n
                    stack.append(int(y))
        n += 1
    return {c: int(comp[pos[c]]) for c in cats}


class ProductCells:
    """Cell labels of a catalog: ``cell`` int64 ``(n_catalog,)`` = colour index * n_communities
    + community (-1 for products without a colour or category), in ``item_ids`` order."""

    def __init__(
        self,
        item_ids: np.ndarray,
        colour_of: Mapping[int, str],
        category_of: Mapping[int, str],
        communities: Mapping[str, int],
    ) -> None:
        ids = np.asarray(item_ids, dtype=np.int64)
        colours = sorted({str(c) for c in colour_of.values()})
        cpos = {c: i for i, c in enumerate(colours)}
        self.n_communities = max(communities.values(), default=-1) + 1
        self.n_cells = len(colours) * self.n_communities
        cell = np.full(len(ids), -1, dtype=np.int64)
        for j, i in enumerate(ids.tolist()):
            col, cat = colour_of.get(i), category_of.get(i)
            if col is not None and cat in communities:
                cell[j] = cpos[str(col)] * self.n_communities + communities[str(cat)]
        self.item_ids = ids
        self.cell = cell
        self._pos = {int(i): j for j, i in enumerate(ids.tolist())}

    def session_vectors(
        self, history: Sequence[HistoryEvent], gap_s: float = SESSION_GAP_S
    ) -> np.ndarray:
        """float64 ``(n_sessions, n_cells)``: each session's event-weighted cell shares (rows
        sum to 1; sessions without a labelled product are left out)."""
        rows = []
        for sess in sessions_of(history, gap_s):
            v = np.zeros(max(self.n_cells, 1))
            for e in sess:
                j = self._pos.get(int(e.product_id))
                if j is not None and self.cell[j] >= 0:
                    v[self.cell[j]] += _EVENT_WEIGHTS.get(e.kind, 1.0)
            if v.sum() > 0:
                rows.append(v / v.sum())
        return np.array(rows) if rows else np.zeros((0, max(self.n_cells, 1)))

    def shares(self, history: Sequence[HistoryEvent], gap_s: float = SESSION_GAP_S) -> np.ndarray:
        """float64 ``(n_cells,)``: mean over sessions of the session's event-weighted cell
        shares (all zero for an empty history)."""
        v = self.session_vectors(history, gap_s)
        return v.mean(axis=0) if len(v) else np.zeros(max(self.n_cells, 1))

    def interest_cells(self, shares: np.ndarray, min_share: float) -> list[int]:
        """The top cell and, if its share is >= ``min_share``, the heaviest cell differing
        from it in colour and community (see the module docstring); [] without history."""
        if self.n_cells == 0 or shares.max() <= 0:
            return []
        top = int(np.argmax(shares))
        nc = self.n_communities
        cells = np.arange(len(shares))
        distinct = (cells // nc != top // nc) & (cells % nc != top % nc)
        out = [top]
        if distinct.any():
            second = int(cells[distinct][np.argmax(shares[distinct])])
            if shares[second] >= min_share and shares[second] > 0:
                out.append(second)
        return out


def session_labels(vectors: np.ndarray, interest: Sequence[int]) -> list[int]:
    """For two interest cells ``(a, b)``: per session (rows of ``vectors``, oldest first) 0
    if it serves ``a`` more than ``b``, 1 if ``b`` more; sessions serving neither (or both
    equally) are left out."""
    a, b = int(interest[0]), int(interest[1])
    return [0 if v[a] > v[b] else 1 for v in vectors if v[a] != v[b]]


@dataclass(frozen=True)
class CellTransitions:
    """Which of a shopper's two interest cells the next session serves: ``counts[context] =
    (n_second, n)`` over every consecutive pair of labelled sessions (0 = the shopper's top
    cell, 1 = the second) of shoppers with two interest cells, for contexts of the last one
    and the last two labels (oldest first). ``min_count``: a context seen fewer times backs
    off to the shorter one, then to the shopper's own shares."""

    counts: Mapping[tuple[int, ...], tuple[int, int]]
    min_share: float
    min_count: int = 20

    @classmethod
    def fit(
        cls,
        histories: Mapping[str, Sequence[HistoryEvent]],
        cells: ProductCells,
        min_share: float,
        *,
        min_count: int = 20,
        max_shoppers: int = 50_000,
        seed: int = 0,
    ) -> CellTransitions:
        """Count the transitions in ``histories``' sessions (interest cells by ``min_share``);
        above ``max_shoppers`` histories, in a seeded sample of that many (seven contexts
        need no more, and counting costs ~0.2 ms per shopper)."""
        keys = sorted(histories)
        if len(keys) > max_shoppers:
            pick = np.random.default_rng(seed).choice(len(keys), max_shoppers, replace=False)
            keys = [keys[i] for i in sorted(pick.tolist())]
        counts: dict[tuple[int, ...], list[int]] = {}
        for hist in (histories[k] for k in keys):
            vec = cells.session_vectors(hist)
            if len(vec) < 2:
                continue
            interest = cells.interest_cells(vec.mean(axis=0), min_share)
            if len(interest) < 2:
                continue
            labels = session_labels(vec, interest)
            for t in range(1, len(labels)):
                for order in (1, 2):
                    if t >= order:
                        c = counts.setdefault(tuple(labels[t - order : t]), [0, 0])
                        c[0] += labels[t]
                        c[1] += 1
        return cls({k: (v[0], v[1]) for k, v in counts.items()}, min_share, min_count)

    def p_second(self, labels: Sequence[int], prior: float) -> float:
        """P(the next session serves the second cell) after ``labels`` (oldest first): the
        longest context (two labels, then one) seen ``min_count`` times, smoothed toward
        ``prior`` with the weight of two observations; ``prior`` when none is."""
        for order in (2, 1):
            if len(labels) >= order:
                k, n = self.counts.get(tuple(labels[-order:]), (0, 0))
                if n >= self.min_count:
                    return (k + 2.0 * prior) / (n + 2.0)
        return float(prior)

    def p_next(self, cells: ProductCells, history: Sequence[HistoryEvent]) -> float | None:
        """P(the next session serves the shopper's second interest cell) from ``history``
        (time order), or None without two interest cells."""
        return self.p_next_of(cells, cells.session_vectors(history))

    def p_next_of(self, cells: ProductCells, vec: np.ndarray) -> float | None:
        """:meth:`p_next` from the history's :meth:`ProductCells.session_vectors` ``vec``."""
        if len(vec) == 0:
            return None
        shares = vec.mean(axis=0)
        interest = cells.interest_cells(shares, self.min_share)
        if len(interest) < 2:
            return None
        a, b = interest
        prior = float(shares[b] / (shares[a] + shares[b]))
        return self.p_second(session_labels(vec, interest), prior)


def adjust_scores(
    scores: np.ndarray,
    cell: np.ndarray,
    interest_cells: Sequence[int],
    params: CellParams,
    p_next: float | None = None,
) -> np.ndarray:
    """``scores`` float64 ``(n_catalog,)`` (``-inf`` = excluded) with ``boost`` added to the
    interest cells' products and, when there are two cells, each cell shifted by ``gamma``
    times the gap between the top score and its own best product, and by ``sequence *
    log(p / 0.5)`` where ``p`` is the chance the next session serves it (``p_next`` for the second
    cell, ``1 - p_next`` for the first; None: no sequence term). Returns a copy."""
    s = np.array(scores, dtype=np.float64)
    if not params.active or not interest_cells:
        return s
    finite = np.isfinite(s)
    if not finite.any():
        return s
    top = float(s[finite].max())
    two = len(interest_cells) >= 2
    for i, c in enumerate(interest_cells):
        m = (cell == c) & finite
        if not m.any():
            continue
        shift = params.boost
        if two:
            shift += params.gamma * (top - float(s[m].max()))
            if p_next is not None and i < 2:
                p = p_next if i == 1 else 1.0 - p_next
                shift += params.sequence * float(np.log(max(p, 0.02) / 0.5))
        s[m] += shift
    return s


def next_probabilities(
    cells: ProductCells,
    histories: Sequence[Sequence[HistoryEvent]],
    transitions: Mapping[float, CellTransitions],
) -> dict[float, np.ndarray]:
    """min_share -> float64 ``(n,)``: each history's :meth:`CellTransitions.p_next` (nan
    without two interest cells)."""
    return {
        ms: np.array([np.nan if (p := t.p_next(cells, h)) is None else p for h in histories])
        for ms, t in transitions.items()
    }


def tune_cells(
    blended: np.ndarray,
    cell: np.ndarray,
    shares: np.ndarray,
    targets: np.ndarray,
    excluded: np.ndarray,
    cells: ProductCells,
    *,
    k: int = 10,
    grid: Sequence[CellParams] = CELL_GRID,
    p_next: Mapping[float, np.ndarray] | None = None,
) -> tuple[CellParams, float]:
    """The point of ``grid`` maximising recall@``k`` of ``targets`` (catalog positions,
    ``(n,)``) over validation shoppers' ``blended`` scores ``(n, n_catalog)`` adjusted with
    their cell ``shares`` ``(n, n_cells)`` and, for grid points with ``sequence`` > 0, their
    ``p_next[min_share]`` ``(n,)`` (:func:`next_probabilities`; without it those points are
    skipped); ties go to the earlier grid point (cells off first). ``excluded`` bool ``(n,
    n_catalog)``. Returns (params, recall)."""
    if len(targets) == 0:
        raise ValueError("targets: expected at least one validation shopper, got none")
    base = np.where(excluded, -np.inf, blended)
    picked = {
        ms: [cells.interest_cells(shares[i], ms) for i in range(len(targets))]
        for ms in {p.min_share for p in grid}
    }
    best: tuple[float, CellParams] | None = None
    for p in grid:
        if p.sequence > 0 and (p_next is None or p.min_share not in p_next):
            continue
        pn = p_next[p.min_share] if p.sequence > 0 and p_next is not None else None
        hits = 0
        for i in range(len(targets)):
            q = None if pn is None or np.isnan(pn[i]) else float(pn[i])
            s = adjust_scores(base[i], cell, picked[p.min_share][i], p, q)
            t = int(targets[i])
            # rank with ties to the lower column, as top_k_excluding
            rank = int(np.sum(s > s[t]) + np.sum(s[:t] == s[t]))
            hits += rank < k
        r = hits / len(targets)
        if best is None or r > best[0]:
            best = (r, p)
    assert best is not None
    return best[1], best[0]
