"""Profile computation time per user (ms): clustering, terms, references.

On the demo world in ``--home`` (built with ``tailorshot demo --no-serve`` and
``tailorshot index build``) when it is there; otherwise on a synthetic catalog of random unit
vectors (``--synthetic``). Prints one JSON object.

    .venv/bin/python bench/bench_profiles.py --home var
    .venv/bin/python bench/bench_profiles.py --synthetic --events 50
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np


def _synthetic(n_items: int, n_users: int, n_events: int, dim: int, seed: int):  # type: ignore[no-untyped-def]
    from recsys.profiles import HistoryEvent, ItemVectors
    from recsys.terms import StyleTermScorer, StyleVocabulary

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_items, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    items = ItemVectors(ids=np.arange(1, n_items + 1), vectors=x)
    vocab = StyleVocabulary.load()
    t = rng.standard_normal((len(vocab.terms), dim)).astype(np.float32)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    scorer = StyleTermScorer.calibrate(vocabulary=vocab, term_embeddings=t, catalog_vectors=x)
    kinds = ["view"] * 80 + ["click"] * 15 + ["add_to_cart"] * 4 + ["purchase"] * 1
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    histories = {}
    for u in range(n_users):
        centres = rng.choice(n_items, size=2, replace=False)
        near = [np.argsort(-(x @ x[c]))[:30] for c in centres]
        evs = []
        for _ in range(n_events):
            pool = near[int(rng.random() < 0.4)]
            evs.append(
                HistoryEvent(
                    product_id=int(items.ids[rng.choice(pool)]),
                    kind=str(rng.choice(kinds)),
                    ts=t0 + timedelta(hours=float(rng.uniform(0, 1000))),
                )
            )
        histories[f"u{u}"] = evs
    return items, scorer, histories


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--home", type=Path, default=Path("var"))
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--events", type=int, default=50, help="Events per synthetic user.")
    ap.add_argument("--items", type=int, default=10_000, help="Synthetic catalog size.")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from recsys.config import RecsysConfig
    from recsys.profiles import ProfileBuilder

    config = RecsysConfig()
    source = "synthetic"
    if not args.synthetic and (args.home / "index" / "products.npz").is_file():
        from data.db import make_engine
        from recsys.catalog import load_item_vectors, load_scorer
        from recsys.histories import load_histories

        engine = make_engine(f"sqlite:///{(args.home / 'tailorshot.db').resolve()}")
        items, model_id = load_item_vectors(args.home)
        scorer = load_scorer(config=config, home=args.home, items=items, model_id=model_id)
        histories = load_histories(engine)
        source = f"demo world at {args.home} ({model_id})"
    else:
        items, scorer, histories = _synthetic(
            args.items, args.users, args.events, args.dim, args.seed
        )
    builder = ProfileBuilder.from_config(config, scorer=scorer)
    users = sorted(histories)[: args.users]
    for u in users[:5]:  # warm-up (imports, BLAS)
        builder.build(u, histories[u], items)
    times = []
    for u in users:
        t = time.perf_counter()
        builder.build(u, histories[u], items)
        times.append((time.perf_counter() - t) * 1000.0)
    ms = np.array(times)
    n_events = np.array([len(histories[u]) for u in users])
    print(
        json.dumps(
            {
                "source": source,
                "users": len(users),
                "events_per_user_mean": round(float(n_events.mean()), 1),
                "n_items": len(items),
                "dim": items.dim,
                "ms_per_user_mean": round(float(ms.mean()), 3),
                "ms_per_user_p50": round(float(np.percentile(ms, 50)), 3),
                "ms_per_user_p99": round(float(np.percentile(ms, 99)), 3),
                "users_per_s": round(1000.0 / float(ms.mean()), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
