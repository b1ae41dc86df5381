"""The product recommender the storefront, the segment builder and ``tailorshot recommend``
use, fitted on every shopper's events over the saved product vectors and index."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlalchemy.engine import Engine

from recsys.catalog import load_item_vectors, load_product_index
from recsys.cells import (
    DEFAULT_CELLS,
    CellTransitions,
    ProductCells,
    category_communities,
    load_facets,
)
from recsys.collaborative import Interactions, make_collaborative
from recsys.config import RecsysConfig
from recsys.histories import load_histories, popularity, purchased_ids
from recsys.hybrid import HybridRecommender
from recsys.index.base import VectorIndex
from recsys.profile_store import get_profile
from recsys.profiles import HistoryEvent, ItemVectors
from recsys.recommend import InterestRecommender, ProductRecommender, Recommendations

__all__ = [
    "HYBRID_ALS_FACTORS",
    "HYBRID_EASE_L2",
    "load_recommender",
    "make_hybrid",
    "recommend_for_user",
]

#: EASE's l2 and ALS's factors in the hybrid: what the demo's validation folds chose
#: (l2 50 and 100, factors 32 in both).
HYBRID_EASE_L2 = 100.0
HYBRID_ALS_FACTORS = 32


def load_recommender(
    engine: Engine, *, config: RecsysConfig, home: Path, kind: str = "hybrid", seed: int = 0
) -> ProductRecommender:
    """``kind="hybrid"`` (default) a :class:`~recsys.hybrid.HybridRecommender` fitted on every
    shopper's events (EASE below the product-count threshold, ALS above), ``kind="interest"``
    the CLIP-only :class:`InterestRecommender`; both over the saved vector index."""
    if kind not in ("hybrid", "interest"):
        raise ValueError(f"kind: expected 'hybrid' or 'interest', got {kind!r}")
    index = load_product_index(home)
    histories = load_histories(engine)
    if kind == "interest":
        return InterestRecommender.from_config(
            config, index=index, popularity=popularity(histories)
        )
    return make_hybrid(
        histories,
        items=load_item_vectors(home)[0],
        config=config,
        seed=seed,
        index=index,
        facets=load_facets(engine),
    )


def make_hybrid(
    histories: Mapping[str, Sequence[HistoryEvent]],
    *,
    items: ItemVectors,
    config: RecsysConfig,
    seed: int = 0,
    index: VectorIndex | None = None,
    facets: Mapping[int, tuple[str, str]] | None = None,
) -> HybridRecommender:
    """A :class:`~recsys.hybrid.HybridRecommender` fitted on ``histories`` with the default
    blend weights and cell parameters (those tuned on the demo's validation shoppers);
    ``facets`` (product id -> (colour, category)) turns on the interest cells
    (:mod:`recsys.cells`), with category communities from ``histories``' sessions."""
    inter = Interactions.from_histories(
        histories,
        item_ids=set(items.ids.tolist()) | {e.product_id for h in histories.values() for e in h},
    )
    collab = make_collaborative(
        len(inter.item_ids), ease_l2=HYBRID_EASE_L2, als_factors=HYBRID_ALS_FACTORS, seed=seed
    )
    collab.fit(inter.matrix)
    cells = None
    transitions = None
    if facets:
        category_of = {int(i): str(f[1]) for i, f in facets.items()}
        cells = ProductCells(
            items.ids,
            {int(i): str(f[0]) for i, f in facets.items()},
            category_of,
            category_communities(histories, category_of),
        )
        transitions = CellTransitions.fit(histories, cells, DEFAULT_CELLS.min_share)
    hybrid = HybridRecommender(
        collaborative=collab,
        interactions=inter,
        items=items,
        temperature=config.recommend_temperature,
        cells=cells,
        histories=histories,
        transitions=transitions,
    )
    hybrid.index = index
    return hybrid


def recommend_for_user(
    engine: Engine,
    *,
    user_id: str,
    config: RecsysConfig,
    home: Path,
    k: int = 10,
    recommender: ProductRecommender | None = None,
) -> Recommendations:
    """Products to feature for ``user_id`` (purchases excluded, explained), from the hybrid
    recommender by default; needs a stored profile."""
    profile = get_profile(engine, user_id=user_id)
    if profile is None:
        raise KeyError(f"user_id {user_id!r}: no taste profile (build profiles first)")
    rec = recommender or load_recommender(engine, config=config, home=home)
    return rec.recommend(profile, k=k, exclude_ids=purchased_ids(engine, user_id=user_id))
