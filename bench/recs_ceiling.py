"""How high leave-last-out recall@10 can go on the demo world: a ceiling from the generator.

Analysis only (never a recommender's input): the demo world (``data.demo.world``) draws every
session's views from a softmax over products given the shopper's hidden taste, and clicks,
add-to-carts and purchases from how well the product matches that taste. Ranking each
shopper's products by the generator's own purchase propensity (taste known exactly, the
session's interest unknown: a mixture over the shopper's interest weights and browsing)
is the best any recommender can do on average, up to the sampling of the held-out purchase.
Same protocol as ``tailorshot evaluate recsys``: each shopper's last purchase is held out, the
history ends at the start of its session, earlier purchases are excluded.

Variants say where the signal is: without the secondary preferences (pattern, material,
style), with flat category preferences, and with the session's interest known (optimistic).
Prints one JSON object.

    nice -n 10 .venv/bin/python bench/recs_ceiling.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import defaultdict
from typing import Any

import numpy as np

from data.demo import world as w


def _softmax(a: np.ndarray) -> np.ndarray:
    p = np.exp(a - a.max())
    return p / p.sum()


def ceiling(seed: int = 0, k: int = 10) -> dict[str, Any]:
    """Recall@``k`` of the generator's propensities (see the module docstring)."""
    world = w.build_world(seed=seed)
    cat = w._Catalog(list(world.products))
    index = {p.sku: i for i, p in enumerate(world.products)}
    events: dict[str, list[w.DemoEvent]] = defaultdict(list)
    for e in world.events:
        events[e.user_id].append(e)
    variants = ("taste_known", "no_secondary", "flat_categories", "interest_known")
    hits: dict[str, list[bool]] = {v: [] for v in variants}
    n_interests: list[int] = []
    seen_before: list[bool] = []
    for taste in world.shoppers:
        evs = events[taste.user_id]
        last = [e for e in evs if e.kind == "purchase"][-1]
        cut = min(min(e.ts for e in evs if e.session == last.session), last.ts)
        history = [e for e in evs if e.ts < cut]
        excluded = [index[e.sku] for e in history if e.kind == "purchase"]
        target = index[last.sku]
        seen_before.append(target in {index[e.sku] for e in history})
        n_interests.append(len(taste.interests))
        for v in variants:
            t = taste
            if v == "flat_categories":
                t = dataclasses.replace(t, categories=dict.fromkeys(t.categories, 1 / 9))
            sec = w._secondary(t, cat) * (0.0 if v == "no_secondary" else 1.0)
            util = w._utility(t, cat, sec)
            buy = (
                w._sigmoid(-3.12 + 0.6 * util)
                * w._sigmoid(-2.55 + 0.32 * util)
                * w._sigmoid(-1.4 + 0.12 * util)
            )
            views = [
                _softmax(w._interest_affinity(t, i, cat, sec)) for i in range(len(t.interests))
            ]
            if v == "interest_known":
                mix = max(views, key=lambda p: p[target])
            else:
                weights = [i.weight for i in t.interests]
                mix = w._BROWSE_PROB * _softmax(w._interest_affinity(t, None, cat, sec)) + (
                    1 - w._BROWSE_PROB
                ) * sum(wi * p for wi, p in zip(weights, views, strict=True))
            s = mix * buy
            s[excluded] = -1.0
            hits[v].append(target in np.argsort(-s, kind="stable")[:k])
    ni = np.array(n_interests)
    out: dict[str, Any] = {"seed": seed, "k": k, "n_users": len(ni)}
    for v in variants:
        h = np.array(hits[v])
        out[f"recall_at_{k}_{v}"] = round(float(h.mean()), 4)
        out[f"recall_at_{k}_{v}_one_interest"] = round(float(h[ni == 1].mean()), 4)
        out[f"recall_at_{k}_{v}_two_interests"] = round(float(h[ni == 2].mean()), 4)
    out["two_interest_share"] = round(float((ni == 2).mean()), 4)
    out["target_seen_before"] = round(float(np.mean(seen_before)), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    print(json.dumps(ceiling(seed=args.seed, k=args.k), sort_keys=True))


if __name__ == "__main__":
    main()
