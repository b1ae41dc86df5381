"""Transitional re-exports of the recsys services' old home; import from the new modules.

``recsys.catalog`` (product vectors, index, style-term cache), ``recsys.histories``,
``recsys.profile_store``, ``recsys.segment_store``, ``recsys.serving`` (the recommender),
``recsys.build`` (all at once) and ``recsys.evaluation.recommenders``. To be deleted once
the importers outside recsys have moved (see /work/prompts/NOTES.md, #13 D).
"""

from __future__ import annotations

from recsys.build import RecsysBuildOutput, build_recsys
from recsys.catalog import (
    IndexBuildOutput,
    build_index,
    load_embedder,
    load_item_vectors,
    load_scorer,
)
from recsys.evaluation.recommenders import (
    RecsysEvalOutput,
    evaluate_recommenders,
    evaluate_recsys,
    last_purchase_cutoffs,
)
from recsys.histories import load_histories, purchased_ids
from recsys.profile_store import ProfilesBuildOutput, build_profiles, get_profile
from recsys.segment_store import SegmentsBuildOutput, build_segments
from recsys.serving import load_recommender, make_hybrid, recommend_for_user

__all__ = [
    "IndexBuildOutput",
    "ProfilesBuildOutput",
    "RecsysBuildOutput",
    "RecsysEvalOutput",
    "SegmentsBuildOutput",
    "build_index",
    "build_profiles",
    "build_recsys",
    "build_segments",
    "evaluate_recommenders",
    "evaluate_recsys",
    "get_profile",
    "last_purchase_cutoffs",
    "load_embedder",
    "load_histories",
    "load_item_vectors",
    "load_recommender",
    "load_scorer",
    "make_hybrid",
    "purchased_ids",
    "recommend_for_user",
]
