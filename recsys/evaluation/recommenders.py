"""Recommender evaluation over a database with events: the demo world's acceptance figures
(profiles against the shoppers' true tastes, leave-last-out recall / NDCG against
popularity) and the baselines-vs-hybrid comparison on the protocols of
:mod:`recsys.evaluation.protocols`. Needs the product vectors (``build_index`` first)."""

from __future__ import annotations

import time
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from data.models import DemoTaste, Event, Product
from recsys.catalog import EmbedderSource, load_item_vectors, load_scorer, make_product_index
from recsys.cells import load_facets
from recsys.config import RecsysConfig
from recsys.evaluation.protocols import (
    ProtocolOutput,
    ProtocolSplit,
    drop_products,
    global_time_split,
    run_protocol,
    split_before,
)
from recsys.evaluation.ranking import mean_at_k, ndcg_at_k, recall_at_k
from recsys.histories import load_histories
from recsys.histories import popularity as popularity_of
from recsys.profile_store import popularity_fallback
from recsys.profiles import ColdStart, HistoryEvent, ProfileBuilder
from recsys.progress import progress_bar
from recsys.recommend import InterestRecommender, PopularityRecommender
from recsys.terms import StyleTerm

__all__ = [
    "RecsysEvalOutput",
    "evaluate_recommenders",
    "evaluate_recsys",
    "last_purchase_cutoffs",
    "target_seen_before",
    "targets_excluded",
]


@dataclass(frozen=True)
class RecsysEvalOutput:
    """Acceptance figures on the demo world (fractions in [0, 1]).

    ``colour_recovery``: users with >= ``min_events`` events whose profile's best colour term
    is their true dominant colour. ``two_interest_match``: two-interest users whose two
    heaviest interests are their two true (colour, category group) pairs (an interest's colour
    is its best colour term, its group the weighted majority group of its items);
    ``two_interest_colour_match`` compares colours only. ``recall_at_10``/``ndcg_at_10``:
    each user's last purchase held out; the profile is built from the events before that
    purchase's session (the views and cart adds leading to it are not seen); purchases
    before are excluded; the popularity baseline ranks by distinct users in those histories.
    """

    n_users: int
    colour_recovery: float
    colour_recovery_n: int
    two_interest_match: float
    two_interest_colour_match: float
    two_interest_n: int
    recall_at_10: float
    recall_at_10_popularity: float
    ndcg_at_10: float
    ndcg_at_10_popularity: float
    leave_last_out_n: int
    model_id: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _interest_group(item_ids: Sequence[int], group_of: Mapping[int, str]) -> str:
    counts: dict[str, int] = {}
    for i in item_ids:
        g = group_of.get(int(i))
        if g is not None:
            counts[g] = counts.get(g, 0) + 1
    return max(sorted(counts), key=lambda g: counts[g]) if counts else ""


def _best_colour(terms: Sequence[StyleTerm]) -> str:
    return next((t.term for t in terms if t.facet == "colour"), "")


def last_purchase_cutoffs(
    engine: Engine, histories: Mapping[str, Sequence[HistoryEvent]]
) -> tuple[dict[str, datetime], dict[str, int]]:
    """Leave-last-out: per shopper with a purchase, the start of their last purchase's
    session (their history must end before it) and the product bought."""
    with Session(engine) as session:
        sessions = {
            (str(u), int(p), ts): sess
            for u, p, ts, sess in session.exec(
                select(Event.user_id, Event.product_id, Event.ts, Event.session).where(
                    Event.kind == "purchase"
                )
            )
        }
        session_start: dict[tuple[str, str], datetime] = {}
        for u, sess, ts in session.exec(select(Event.user_id, Event.session, Event.ts)):
            key = (str(u), str(sess))
            if key not in session_start or ts < session_start[key]:
                session_start[key] = ts
    cutoff: dict[str, datetime] = {}
    target: dict[str, int] = {}
    for u, evs in histories.items():
        buys = [e for e in evs if e.kind == "purchase"]
        if not buys:
            continue
        last = buys[-1]
        sess = sessions.get((u, last.product_id, last.ts))
        start = session_start.get((u, str(sess)), last.ts) if sess is not None else last.ts
        cutoff[u] = min(start, last.ts)
        target[u] = last.product_id
    return cutoff, target


def target_seen_before(split: ProtocolSplit, users: Sequence[str]) -> np.ndarray:
    """bool ``(len(users),)``: whether some relevant product of each test shopper is one they
    had an event on in their training history (a revisit rather than a discovery)."""
    out = np.zeros(len(users), dtype=bool)
    for n, u in enumerate(users):
        had = {e.product_id for e in split.train.get(u, [])}
        out[n] = bool(split.relevant.get(u, frozenset()) & had)
    return out


def targets_excluded(split: ProtocolSplit, users: Sequence[str]) -> np.ndarray:
    """bool ``(len(users),)``: whether every relevant product of each test shopper is one the
    protocol excludes for them (an earlier purchase bought again), so no recommender can
    place it: the share of such shoppers is recall the protocol makes unreachable."""
    out = np.zeros(len(users), dtype=bool)
    for n, u in enumerate(users):
        rel = split.relevant.get(u, frozenset())
        out[n] = bool(rel) and rel <= split.excluded.get(u, frozenset())
    return out


def evaluate_recommenders(
    engine: Engine,
    *,
    config: RecsysConfig,
    home: Path,
    k: int = 10,
    seed: int = 0,
    n_bootstrap: int = 1000,
    protocols: Sequence[str] = ("leave_last_out", "time_split", "new_products"),
    embedder: EmbedderSource = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Popularity, item-kNN, EASE, ALS, the interest recommender and the hybrid on the
    leave-last-out, global time split and new-product protocols
    (:mod:`recsys.evaluation.protocols`); per protocol its summary (recall / NDCG at ``k``
    with bootstrap 95% intervals, the hybrid's lift over the best baseline), the cold-start
    shoppers' (<= 2 training events) summary, the summaries of shoppers whose relevant
    product they had an event on before (``target_seen``) or not (``target_unseen``), how many
    shoppers' relevant products are all earlier purchases the protocol excludes
    (``n_targets_excluded``: unreachable for every recommender), and what each fold tuned; on
    the demo world (``DemoTaste`` rows) also the summaries of its one- and two-interest
    shoppers (``one_interest``, ``two_interests``)."""
    known = {"leave_last_out", "time_split", "new_products"}
    if set(protocols) - known:
        raise ValueError(f"protocols: expected some of {sorted(known)}, got {list(protocols)}")
    items, model_id = load_item_vectors(home)
    scorer = load_scorer(
        config=config, home=home, items=items, model_id=model_id, embedder=embedder
    )
    builder = ProfileBuilder.from_config(config, scorer=scorer, catalog_vectors=items.vectors)
    histories = load_histories(engine)
    cutoff, target = last_purchase_cutoffs(engine, histories)
    index = make_product_index(config, items.dim, n=len(items.ids))
    index.upsert(items.ids, items.vectors)
    bar = progress_bar(progress)
    facets = load_facets(engine)
    with Session(engine) as session:  # the demo's true tastes, for the per-interest breakdown
        n_interests = {
            str(t.user_id): len(dict(t.taste).get("interests") or [])
            for t in session.exec(select(DemoTaste))
        }
    out: dict[str, Any] = {"model_id": model_id, "k": k, "seed": seed}

    def run(split: ProtocolSplit) -> ProtocolOutput:
        popularity = popularity_of(split.train)
        cold = ColdStart(popularity=popularity_fallback(items, popularity, scorer, config))
        interest = InterestRecommender.from_config(config, index=index, popularity=popularity)
        return run_protocol(
            split,
            items=items,
            profile_of=lambda u, h: builder.build(u, h, items, cold_start=cold),
            interest_recommend=lambda p, kk, ex: interest.recommend(
                p, k=kk, exclude_ids=ex
            ).item_ids.tolist(),
            k=k,
            seed=seed,
            hybrid_params={"temperature": config.recommend_temperature},
            facets=facets,
            progress=bar,
        )

    llo = split_before(histories, cutoff, target)
    for name in protocols:
        if name == "leave_last_out":
            split = llo
            res = run(split)
            mask = None
        elif name == "time_split":
            split = global_time_split(histories)
            res = run(split)
            mask = None
        else:
            split, new = drop_products(llo, items.ids.tolist(), seed=seed)
            res = run(split)
            mask = np.array(
                [bool(res_rel & new) for res_rel in (split.relevant[u] for u in res.users)]
            )
        everyone = np.ones(len(res.users), bool) if mask is None else mask
        summary = res.summary(n_bootstrap=n_bootstrap, seed=seed, mask=mask)
        summary["cold_start"] = res.summary(
            n_bootstrap=n_bootstrap, seed=seed, mask=res.cold & everyone
        )
        # error analysis: shoppers with a relevant product they had an event on before
        # (a revisit) and shoppers whose relevant products are all new to them
        seen = target_seen_before(split, res.users)
        summary["target_seen"] = res.summary(
            n_bootstrap=n_bootstrap, seed=seed, mask=seen & everyone
        )
        summary["target_unseen"] = res.summary(
            n_bootstrap=n_bootstrap, seed=seed, mask=~seen & everyone
        )
        if n_interests:
            ni = np.array([n_interests.get(u, 0) for u in res.users])
            for key, sel in (("one_interest", ni == 1), ("two_interests", ni == 2)):
                summary[key] = res.summary(n_bootstrap=n_bootstrap, seed=seed, mask=sel & everyone)
        # repurchases: the protocol excludes earlier purchases for every recommender
        summary["n_targets_excluded"] = int((targets_excluded(split, res.users) & everyone).sum())
        summary["tuned"] = res.tuned
        out[name] = summary
    return out


def evaluate_recsys(
    engine: Engine,
    *,
    config: RecsysConfig,
    home: Path,
    group_of_category: Mapping[str, str],
    min_events: int = 10,
    k: int = 10,
    embedder: EmbedderSource = None,
    progress: bool = True,
) -> RecsysEvalOutput:
    """The acceptance figures (see :class:`RecsysEvalOutput`) from the ``DemoTaste`` rows,
    events and product vectors (``build_index`` first). ``group_of_category`` maps a product
    category to its demo category group."""
    t0 = time.perf_counter()
    with Session(engine) as session:
        tastes = {str(t.user_id): dict(t.taste) for t in session.exec(select(DemoTaste))}
        group_of = {
            int(pid): group_of_category.get(str(cat), "")  # type: ignore[arg-type]
            for pid, cat in session.exec(select(Product.id, Product.category))
        }
    if not tastes:
        raise ValueError(
            "no DemoTaste rows: build the demo world first (tailorshot demo --no-serve)"
        )
    items, model_id = load_item_vectors(home)
    scorer = load_scorer(
        config=config, home=home, items=items, model_id=model_id, embedder=embedder
    )
    builder = ProfileBuilder.from_config(config, scorer=scorer, catalog_vectors=items.vectors)
    histories = load_histories(engine)

    colour_hits: list[bool] = []
    pair_hits: list[bool] = []
    colour_pair_hits: list[bool] = []
    users = sorted(u for u in tastes if u in histories)
    for u in progress_bar(progress)(users, "profiles vs true tastes", len(users)):
        evs = histories[u]
        if len(evs) < max(min_events, builder.min_events):
            continue
        taste = tastes[u]
        profile = builder.build(u, evs, items)
        colour_hits.append(_best_colour(profile.style_terms) == taste.get("dominant_colour"))
        true = taste.get("interests", [])
        if len(true) == 2:
            top = profile.interests[:2]
            got = {(_best_colour(i.terms), _interest_group(i.item_ids, group_of)) for i in top}
            want = {(str(t["colour"]), str(t["group"])) for t in true}
            pair_hits.append(len(top) == 2 and got == want)
            colour_pair_hits.append(
                len(top) == 2 and {c for c, _ in got} == {str(t["colour"]) for t in true}
            )

    cutoff, target = last_purchase_cutoffs(engine, histories)
    train = load_histories(engine, before=cutoff)
    popularity = popularity_of(train)
    index = make_product_index(config, items.dim, n=len(items.ids))
    index.upsert(items.ids, items.vectors)
    recommender = InterestRecommender.from_config(config, index=index, popularity=popularity)
    baseline = PopularityRecommender(popularity=popularity)
    cold = ColdStart(popularity=popularity_fallback(items, popularity, scorer, config))
    ours: dict[Hashable, Sequence[Hashable]] = {}
    pops: dict[Hashable, Sequence[Hashable]] = {}
    relevant: dict[Hashable, Collection[Hashable]] = {}
    eval_users = sorted(target)
    for u in progress_bar(progress)(eval_users, "leave-last-out", len(eval_users)):
        hist = train.get(u, [])
        bought = {e.product_id for e in hist if e.kind == "purchase"}
        profile = builder.build(u, hist, items, cold_start=cold)
        ours[u] = recommender.recommend(profile, k=k, exclude_ids=bought).item_ids.tolist()
        pops[u] = baseline.recommend(k=k, exclude_ids=bought).item_ids.tolist()
        relevant[u] = [target[u]]
    return RecsysEvalOutput(
        n_users=len(users),
        colour_recovery=float(np.mean(colour_hits)) if colour_hits else float("nan"),
        colour_recovery_n=len(colour_hits),
        two_interest_match=float(np.mean(pair_hits)) if pair_hits else float("nan"),
        two_interest_colour_match=(
            float(np.mean(colour_pair_hits)) if colour_pair_hits else float("nan")
        ),
        two_interest_n=len(pair_hits),
        recall_at_10=mean_at_k(recall_at_k, ours, relevant, k),
        recall_at_10_popularity=mean_at_k(recall_at_k, pops, relevant, k),
        ndcg_at_10=mean_at_k(ndcg_at_k, ours, relevant, k),
        ndcg_at_10_popularity=mean_at_k(ndcg_at_k, pops, relevant, k),
        leave_last_out_n=len(relevant),
        model_id=model_id,
        seconds=time.perf_counter() - t0,
    )
