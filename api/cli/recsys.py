"""recsys commands: ``index build``, ``profile``, ``segments build``, ``recommend``,
``evaluate recsys``."""

from __future__ import annotations

import json
from typing import Any

import typer

from api.cli.app import app, evaluate_app, index_app, segments_app
from api.cli.common import fail, load_settings, open_engine, print_json


def _profile_json(profile: Any, products: dict[int, str]) -> dict[str, Any]:
    d = profile.to_dict()
    d.pop("embedding", None)
    for i in d["interests"]:
        i.pop("centroid", None)
        i["medoid_sku"] = products.get(i["medoid_id"])
    d["reference_skus"] = [products.get(i) for i in d["reference_ids"]]
    d["style_terms"] = [
        {"term": t, "facet": f, "score": round(s, 3)} for t, f, s in d["style_terms"]
    ]
    return d


def _skus(engine: Any) -> dict[int, str]:
    from sqlmodel import Session, select

    from data.models import Product

    with Session(engine) as session:
        rows = session.exec(select(Product.id, Product.sku))
        return {int(i): str(s) for i, s in rows if i is not None}


def _echo_protocol(name: str, summary: dict[str, Any]) -> None:
    """One table per protocol: recall@10 and NDCG@10 with their 95% intervals, then the same
    for cold-start shoppers, for held-out products the shopper had / had not seen before and,
    on the demo, for one- and two-interest shoppers."""
    parts = [(name, summary)] + [
        (f"{name} / {label}", summary[key])
        for key, label in (
            ("cold_start", "cold start"),
            ("target_seen", "target seen before"),
            ("target_unseen", "target new to the shopper"),
            ("one_interest", "one-interest shoppers (demo)"),
            ("two_interests", "two-interest shoppers (demo)"),
        )
        if key in summary
    ]
    for label, part in parts:
        typer.echo(f"\n{label}: {part.get('n_users', 0)} shoppers")
        if part.get("n_targets_excluded"):
            typer.echo(
                f"  {part['n_targets_excluded']} of them bought again a product bought before "
                "(excluded for every recommender: unreachable)"
            )
        recs = sorted(
            k[len("recall_at_10_") :]
            for k in part
            if k.startswith("recall_at_10_") and not k.endswith("_ci95")
        )
        for r in recs:
            lo, hi = part[f"recall_at_10_{r}_ci95"]
            nlo, nhi = part[f"ndcg_at_10_{r}_ci95"]
            typer.echo(
                f"  {r:12s} recall@10 {part[f'recall_at_10_{r}']:.3f} [{lo:.3f}, {hi:.3f}]  "
                f"NDCG@10 {part[f'ndcg_at_10_{r}']:.3f} [{nlo:.3f}, {nhi:.3f}]"
            )
        if "hybrid_lift_over_best_baseline" in part:
            lo, hi = part["hybrid_lift_over_best_baseline_ci95"]
            typer.echo(
                f"  hybrid / {part['best_baseline']}: "
                f"{part['hybrid_lift_over_best_baseline']:.3f} [{lo:.3f}, {hi:.3f}]"
            )


@index_app.command("build")
def index_build(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Embed every product with CLIP (unchanged products come from the cache) and save
    the vector index under the state folder."""
    from recsys.catalog import build_index

    settings = load_settings()
    engine = open_engine(settings)
    out = build_index(engine, config=settings.recsys, home=settings.home)
    d = {k: (str(v) if k == "index_path" else v) for k, v in out.__dict__.items()}
    if as_json:
        print_json(d)
    else:
        state = "unchanged" if out.skipped else f"{out.embedded} embedded, {out.reused} reused"
        typer.echo(f"index: {out.n_products} products ({state}) -> {out.index_path}")


@app.command("profile")
def profile(
    user_id: str = typer.Argument(..., help="The store's user id."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Recompute the profile from the current events first."
    ),
) -> None:
    """Show a shopper's taste profile: interests, style terms, reference products."""
    from sqlmodel import Session

    from api.services.profile_refresh import refresh_profiles
    from data.models import User
    from recsys.profile_store import get_profile

    settings = load_settings()
    engine = open_engine(settings)
    with Session(engine) as session:
        if session.get(User, user_id) is None:
            fail(f"user_id: no user {user_id!r}")
    p = None if rebuild else get_profile(engine, user_id=user_id)
    if p is None:
        try:
            refresh_profiles(engine, settings=settings)
        except FileNotFoundError as e:
            fail(str(e))
        p = get_profile(engine, user_id=user_id)
    if p is None:
        fail(f"user_id {user_id!r}: no profile could be built")
    d = _profile_json(p, _skus(engine))
    if as_json:
        print_json(d)
        return
    typer.echo(
        f"user {p.user_id}  source={p.source}  events={p.n_events}  hash={p.profile_hash[:12]}"
    )
    typer.echo(
        "style terms: " + ", ".join(f"{t['term']} ({t['score']:+.2f})" for t in d["style_terms"])
    )
    for n, it in enumerate(d["interests"], 1):
        terms = ", ".join(t[0] for t in it["terms"][:4])
        typer.echo(
            f"interest {n}: weight {it['weight']:.2f}, {len(it['item_ids'])} items, "
            f"medoid {it['medoid_sku']}: {terms}"
        )
    typer.echo("references: " + ", ".join(str(s) for s in d["reference_skus"]))


@segments_app.command("build")
def segments_build(
    seed: int = typer.Option(0, help="Seed of k-means."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if nothing changed."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Cluster shoppers' profiles into segments (k chosen by silhouette); segment ids
    stay stable when membership barely moves."""
    from api.services.profile_refresh import refresh_profiles
    from recsys.segment_store import build_segments

    settings = load_settings()
    engine = open_engine(settings)
    try:
        refresh_profiles(engine, settings=settings)
        out = build_segments(
            engine, config=settings.recsys, home=settings.home, seed=seed, force=force
        )
        if not out.skipped:
            # cold-start shoppers fall back to the new segments
            refresh_profiles(engine, settings=settings)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    if as_json:
        print_json(out.__dict__)
    else:
        state = " (unchanged)" if out.skipped else ""
        typer.echo(f"segments: k={out.k}{state}, sizes {out.sizes}")


@app.command("recommend")
def recommend(
    user_id: str = typer.Argument(..., help="The store's user id."),
    k: int = typer.Option(10, min=1, max=200, help="How many products."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Products to feature for a shopper from the hybrid recommender (collaborative +
    CLIP interests, purchases excluded, diversified), each with why: the history product
    behind it and the interest it serves."""
    from api.services.profile_refresh import refresh_profiles
    from recsys.profile_store import get_profile
    from recsys.serving import recommend_for_user

    settings = load_settings()
    engine = open_engine(settings)
    try:
        if get_profile(engine, user_id=user_id) is None:
            refresh_profiles(engine, settings=settings)
        rec = recommend_for_user(
            engine, user_id=user_id, config=settings.recsys, home=settings.home, k=k
        )
    except (FileNotFoundError, KeyError) as e:
        fail(str(e).strip("'\""))
    skus = _skus(engine)
    items: list[dict[str, Any]] = [
        {"product_id": int(i), "sku": skus.get(int(i)), "score": round(float(s), 4)}
        for i, s in zip(rec.item_ids, rec.scores, strict=True)
    ]
    for n, it in enumerate(items):
        if rec.because_ids is not None:
            b = int(rec.because_ids[n])
            it["because_product_id"] = b if b >= 0 else None
            it["because_sku"] = skus.get(b) if b >= 0 else None
        if rec.interest_index is not None:
            it["interest"] = int(rec.interest_index[n]) + 1
    if as_json:
        print_json({"user_id": user_id, "policy": rec.policy, "items": items})
    else:
        for n, it in enumerate(items, 1):
            why = []
            if it.get("because_sku"):
                why.append(f"because you viewed {it['because_sku']}")
            if "interest" in it:
                why.append(f"interest {it['interest']}")
            tail = f"  ({'; '.join(why)})" if why else ""
            typer.echo(f"{n:2d}. {it['sku']}  {it['score']:+.3f}{tail}")


@evaluate_app.command("recsys")
def evaluate_recsys_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    skip_clip: bool = typer.Option(False, "--skip-clip", help="Skip the CLIP metrics."),
    protocols: str = typer.Option(
        "leave_last_out,time_split,new_products",
        "--protocols",
        help="Comma-separated recommender protocols to run ('' = none): leave_last_out, "
        "time_split, new_products.",
    ),
    n_bootstrap: int = typer.Option(
        1000, "--n-bootstrap", min=10, help="Bootstrap resamples of the 95% intervals."
    ),
    seed: int = typer.Option(0, help="Seed of the folds, the bootstrap and ALS."),
) -> None:
    """Acceptance figures on the demo world: CLIP recall@5 and zero-shot accuracy, colour
    recovery, two-interest match, leave-last-out recall@10 / NDCG@10 vs popularity; then
    popularity, item-kNN, EASE, ALS, the interest recommender and the hybrid on
    leave-last-out, a global time split and new products, with bootstrap 95% intervals
    (keys recall_at_10_<name>, ndcg_at_10_<name> per protocol). Builds the demo world and
    the index first when missing."""
    from sqlmodel import Session, select

    from data.demo.attributes import CATEGORY_GROUPS
    from data.models import DemoTaste
    from recsys.catalog import build_index, load_embedder
    from recsys.evaluation.recommenders import evaluate_recsys

    settings = load_settings()
    engine = open_engine(settings)
    with Session(engine) as session:
        has_world = session.exec(select(DemoTaste.user_id).limit(1)).first() is not None
    if not has_world:
        from data.demo.build import build_demo_world

        build_demo_world(engine, home=settings.home, seed=settings.seed)
    embedder = load_embedder(settings.recsys)
    build_index(engine, config=settings.recsys, home=settings.home, embedder=embedder)
    out: dict[str, Any] = {}
    if not skip_clip:
        from recsys.training.clip_eval import evaluate_clip

        clip = evaluate_clip(embedder)
        out.update(clip.recsys_keys())
        out["clip_model_id"] = clip.model_id
    rs = evaluate_recsys(
        engine,
        config=settings.recsys,
        home=settings.home,
        group_of_category=CATEGORY_GROUPS,
        embedder=embedder,
    )
    out.update(rs.as_dict())
    out["recall_lift_over_popularity"] = (
        out["recall_at_10"] / out["recall_at_10_popularity"]
        if out["recall_at_10_popularity"]
        else None
    )
    names = [p.strip() for p in protocols.split(",") if p.strip()]
    if names:
        from recsys.evaluation.recommenders import evaluate_recommenders

        try:
            rec = evaluate_recommenders(
                engine,
                config=settings.recsys,
                home=settings.home,
                seed=seed,
                n_bootstrap=n_bootstrap,
                protocols=names,
                embedder=embedder,
                progress=not as_json,
            )
        except ValueError as e:
            fail(str(e))
        out["protocols"] = {n: rec[n] for n in names}
        # the headline keys of the default protocol, at the top level as well
        if "leave_last_out" in rec:
            for key, v in rec["leave_last_out"].items():
                if key.startswith(("recall_at_", "ndcg_at_")) and not key.endswith("_ci95"):
                    out.setdefault(key, v)
    if as_json:
        typer.echo(json.dumps(out, sort_keys=True))
        return
    for key in sorted(out):
        if key != "protocols":
            typer.echo(f"{key:32s} {out[key]}")
    for name, summary in out.get("protocols", {}).items():
        _echo_protocol(name, summary)
