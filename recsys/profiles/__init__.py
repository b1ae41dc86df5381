"""Multi-interest taste profiles (PinnerSage-style) from a shopper's events.

Each event weighs ``event_weights[kind] * 0.5 ** (age / half_life)``; weights are summed per
item. The user's distinct history items are clustered (agglomerative, cut at a distance
threshold) into interests: each interest has a medoid item, a centroid (normalised weighted
mean) and an importance (its share of the decayed weight). Small interests (noise: stray
views) are dropped. Users with too little history fall back to their segment, then to the
catalog's popular items.

Decay is measured from the user's latest event (or ``now``): every weight shares the same
factor whichever reference time is used, and only relative weights matter, so the profile
(and its hash) change only when the events do.
"""

from recsys.profiles.builder import ProfileBuilder
from recsys.profiles.clustering import (
    DEFAULT_EVENT_WEIGHTS,
    cluster_items,
    decayed_weights,
    merge_close_centroids,
    threshold_from_quantile,
)
from recsys.profiles.model import (
    PROFILE_VERSION,
    ColdStart,
    FallbackProfile,
    HistoryEvent,
    Interest,
    ItemVectors,
    TasteProfile,
)

__all__ = [
    "DEFAULT_EVENT_WEIGHTS",
    "PROFILE_VERSION",
    "ColdStart",
    "FallbackProfile",
    "HistoryEvent",
    "Interest",
    "ItemVectors",
    "ProfileBuilder",
    "TasteProfile",
    "cluster_items",
    "decayed_weights",
    "merge_close_centroids",
    "threshold_from_quantile",
]
