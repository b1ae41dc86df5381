"""``tailorshot demo``: build the demo world and everything served from it (idempotent).

Stages, each skipping work already done: the world (catalog, shoppers, events), recsys
(index, profiles, segments), approved banner variants per segment, their square and story
recomposed from the banners' kept scenes (``tailorshot batch cover``; ``--no-cover``
skips it), personalized heroes for a few shoppers, simulated storefront traffic (impressions
chosen by the exploration policy, clicks drawn from the demo click model, so the analyst page
has real logs), API keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import typer
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select
from tqdm import tqdm

from api.settings import Settings
from data.models import Click, CreativeVariant, Impression, Product, User, VariantStatus


@dataclass
class DemoOutput:
    """What the build did, with each stage's wall and CPU seconds (CPU: this process, all
    its threads)."""

    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    cpu_mark: float = field(default_factory=time.process_time)
    counts: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)


def _stage(out: DemoOutput, name: str, t0: float) -> None:
    out.seconds[name] = round(time.perf_counter() - t0, 2)
    cpu = time.process_time()  # the stages run back to back: CPU since the previous one
    out.cpu_seconds[name] = round(cpu - out.cpu_mark, 2)
    out.cpu_mark = cpu
    typer.echo(
        f"[demo] {name}: {out.seconds[name]:.1f} s wall, {out.cpu_seconds[name]:.1f} s CPU",
        err=True,
    )


def personalize_some(
    settings: Settings, engine: Engine, *, n_users: int, placement: str = "banner"
) -> int:
    """Submit personalized generations for the first ``n_users`` shoppers and run them here
    (a worker until the queue is idle); returns how many personalized variants have images."""
    from api.composition import build_components, build_job_handler
    from api.services.hero import sync_variant_images
    from genservice.jobs import JobQueue
    from genservice.worker import Worker

    comps = build_components(settings, engine=engine)
    orch = comps.orchestrator
    with Session(engine) as session:
        users = list(session.exec(select(User.id).order_by(col(User.id)).limit(n_users)))
    for uid in tqdm(users, desc="personalized briefs", disable=n_users < 1):
        orch.personalize(user_id=uid, placement=placement)
    queue = JobQueue.from_config(engine, settings.generation, seed=settings.seed)
    Worker.from_config(queue, build_job_handler(settings), settings.generation).run(until_idle=True)
    with Session(engine) as session:
        mine = list(
            session.exec(select(CreativeVariant).where(col(CreativeVariant.user_id).is_not(None)))
        )
        sync_variant_images(session, mine)
        return sum(1 for v in mine if v.image_key)


def _image_attributes(product: Product, terms: list[Any]) -> dict[str, str]:
    """What a shopper sees in a hero: the product's attributes plus the scene terms."""
    from data.demo.attributes import LIGHTING, SETTINGS

    attrs = {k: str(v) for k, v in (product.attributes or {}).items()}
    attrs["category"] = product.category
    for t in terms:
        term = str(t[0] if isinstance(t, list | tuple) else t)
        if term in SETTINGS:
            attrs.setdefault("setting", term)
        elif term in LIGHTING:
            attrs.setdefault("lighting", term)
    return attrs


def simulate_traffic(
    settings: Settings, engine: Engine, *, n_requests: int, seed: int, placement: str = "banner"
) -> dict[str, int]:
    """Serve ``n_requests`` heroes to random demo shoppers through the storefront's own
    decision service (so impressions carry the policy's propensities) and draw clicks from
    the demo click model with each shopper's true taste. Skipped when impressions exist."""
    from api.composition import build_components
    from api.services.hero import NoCreative
    from data.demo.build import load_tastes
    from data.demo.click_model import ClickModel

    with Session(engine) as session:
        already = int(session.exec(select(func.count()).select_from(Impression)).one())
        if already:
            return {"impressions": already, "clicks": -1}
        tastes = load_tastes(session)
    quiet = settings.model_copy(deep=True)
    quiet.api.personalize = False  # simulated traffic must not enqueue more generations
    comps = build_components(quiet, engine=engine)
    hero = comps.hero
    model = ClickModel()
    rng = np.random.default_rng(seed)
    users = sorted(tastes)
    shown = clicks = 0
    cache: dict[int, dict[str, str]] = {}
    with Session(engine) as session:
        for _ in tqdm(range(n_requests), desc="storefront traffic"):
            uid = users[int(rng.integers(len(users)))]
            try:
                out = hero.decide(session, user_id=uid, placement=placement)
            except NoCreative:
                continue
            shown += 1
            if out.variant_id not in cache:
                v = session.get(CreativeVariant, out.variant_id)
                p = session.get(Product, out.product_id)
                cache[out.variant_id] = _image_attributes(p, v.terms if v else []) if p else {}
            if model.sample_click(tastes[uid], cache[out.variant_id], rng):
                session.add(Click(impression_id=out.impression_id))
                session.commit()
                clicks += 1
    hero.close()
    return {"impressions": shown, "clicks": clicks}


def build_demo(
    settings: Settings,
    *,
    seed: int = 0,
    personalized_users: int = 12,
    traffic: int = 3000,
    base_url: str | None = None,
    cover: bool = True,
) -> DemoOutput:
    """Build the demo world into ``settings.home``; print keys and example calls.
    ``cover=False`` leaves square and story uncovered (saves ~15-45 CPU s per recomposition;
    ``tailorshot batch cover`` covers them later)."""
    from api.cli.common import open_engine
    from api.cli.demo_variants import approve_and_cover, curl_examples, demo_keys
    from api.services.profile_refresh import refresh_recsys
    from data.demo.build import build_demo_world, output_as_dict

    out = DemoOutput()
    engine = open_engine(settings)
    t0 = time.perf_counter()
    out.counts["world"] = output_as_dict(build_demo_world(engine, home=settings.home, seed=seed))
    _stage(out, "world", t0)

    t0 = time.perf_counter()
    refresh_recsys(engine, settings=settings, seed=seed)
    _stage(out, "recsys", t0)

    t0 = time.perf_counter()
    made, covered = approve_and_cover(
        settings, engine, seed=seed, per_segment=2, generic=2, cover=cover
    )
    out.counts["segment_variants_created"] = len(made.created)
    if made.failed:
        out.counts["segment_variants_failed"] = made.failed
        typer.echo(f"[demo] renders that failed (a rerun retries them): {made.failed}", err=True)
    if covered is not None:
        out.counts["coverage"] = covered.as_dict()
        typer.echo(
            f"[demo] coverage: {covered.recomposed} recomposed, {covered.retired} retired "
            f"in {covered.seconds:.1f} s; still refused: {covered.refused or 'nothing'}",
            err=True,
        )
    _stage(out, "segment variants and coverage", t0)

    t0 = time.perf_counter()
    out.counts["personalized_variants"] = personalize_some(
        settings, engine, n_users=personalized_users
    )
    _stage(out, "personalized variants", t0)

    t0 = time.perf_counter()
    out.counts["traffic"] = simulate_traffic(settings, engine, n_requests=traffic, seed=seed)
    _stage(out, "storefront traffic", t0)

    out.keys = demo_keys(engine, seed=seed)
    with Session(engine) as session:
        approved = int(
            session.exec(
                select(func.count())
                .select_from(CreativeVariant)
                .where(CreativeVariant.status == VariantStatus.approved)
            ).one()
        )
        served = sorted(
            set(
                session.exec(
                    select(CreativeVariant.placement).where(
                        CreativeVariant.status == VariantStatus.approved,
                        col(CreativeVariant.user_id).is_(None),
                    )
                ).all()
            )
        )
    out.counts["approved_variants"] = approved
    url = base_url or f"http://{settings.api.host}:{settings.api.port}"
    if covered is None:
        how = "coverage skipped (--no-cover): run `tailorshot batch cover`"
    else:
        how = f"{covered.recomposed} recomposed from kept scenes in this run"
        refused = sorted({p for r in covered.refused.values() for p in r})
        if refused:
            how += f"; still refused somewhere: {', '.join(refused)} (`tailorshot batch cover`)"
    typer.echo(
        f"""
tailorshot demo is built in {settings.home.resolve()} ({sum(out.seconds.values()):.0f} s).

  API docs      {url}/docs
  Pages         {url}/ui/   (log in with the marketer or analyst key below)
  Health        {url}/healthz   {url}/readyz   {url}/metrics
  Placements    {", ".join(served) or "none"} served to segments ({how})

Demo API keys (derived from the demo seed: for this demo only):
"""
        + "\n".join(f"  {role:<11} {key}" for role, key in out.keys.items())
        + "\n\nExample calls:\n"
        + curl_examples(out.keys, url)
    )
    return out
