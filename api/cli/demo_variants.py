"""What ``tailorshot demo`` adds for the API: a first set of approved variants per segment
(rendered by the generator), the other placements recomposed from their kept scenes
(``tailorshot batch cover``'s own code path), one demo key per role, and example ``curl``
calls."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select
from tqdm import tqdm

from api.auth import create_key, generate_key
from api.batch.cover import CoverSummary, run_cover
from api.services.variants import record_change
from api.settings import Settings
from data.models import (
    CreativeVariant,
    Event,
    Role,
    Segment,
    VariantStatus,
)
from genservice.brief import CreativeBrief
from genservice.errors import SafetyViolation
from genservice.handler import HeroRenderer

DEMO_ACTOR = "system:demo"


@dataclass(frozen=True)
class DemoVariantsOutput:
    """Variants created (ids), segments skipped because they had enough, wall seconds, and
    the renders that failed (``"segment 3"`` / ``"generic"`` -> the error, last one wins)."""

    created: list[int]
    skipped_segments: list[int]
    seconds: float
    failed: dict[str, str] = field(default_factory=dict)


Render = Callable[[Sequence[CreativeBrief]], list[Any]]


#: A render the image check refused is tried again with these seed offsets (a demo variant is
#: a picture of the product, any scene will do; the same seed would be refused again).
SAFETY_RETRY_SEED_OFFSETS = (7919, 15838)


def _render_one_by_one(generator: HeroRenderer) -> Render:
    """Render each brief with ``generator.generate``; a refused image comes back as its
    ``SafetyViolation`` (as in a batch), any other failure propagates."""

    def render(part: Sequence[CreativeBrief]) -> list[Any]:
        out: list[Any] = []
        for b in part:
            try:
                out.append(generator.generate(b))
            except SafetyViolation as exc:
                out.append(exc)
        return out

    return render


def _batch_render(settings: Settings) -> Render:
    """The configured ``HeroGenerator``, loaded now, rendering briefs in batches; a failed
    render comes back as its exception (the others still count)."""
    from api.composition import load_generator
    from genservice.generator import HeroGenerator

    gen = load_generator(settings)
    assert isinstance(gen, HeroGenerator)  # load_generator builds the configured HeroGenerator

    def render(part: Sequence[CreativeBrief]) -> list[Any]:
        return gen.generate_batch(part, return_exceptions=True)

    return render


def _popular_products(session: Session, n: int) -> list[int]:
    rows = session.exec(
        select(Event.product_id, func.count())
        .group_by(col(Event.product_id))
        .order_by(func.count().desc(), col(Event.product_id))
        .limit(n)
    ).all()
    return [int(r[0]) for r in rows]


def seed_demo_variants(
    settings: Settings,
    engine: Engine,
    *,
    seed: int,
    per_segment: int = 2,
    generic: int = 2,
    placement: str = "banner",
    generator: HeroRenderer | None = None,
    progress: bool = True,
) -> DemoVariantsOutput:
    """Render and approve ``per_segment`` variants for every segment (its example products,
    its style terms, seeds ``seed, seed+1, ...``) and ``generic`` variants of the most popular
    products with no terms, at ``placement``. Idempotent: segments (and the generic set)
    that already have enough approved variants at ``placement`` are skipped; identical briefs
    hit the generator's result cache.

    ``generator`` defaults to the configured ``HeroGenerator`` (loaded here: slow), which
    renders ``generation.max_batch`` briefs at a time; a given generator renders one by one.
    """
    if per_segment < 0 or generic < 0:
        raise ValueError(f"per_segment and generic: expected >= 0, got {per_segment}, {generic}")
    from api.composition import build_components
    from api.services.orchestration import terms_of

    t0 = time.perf_counter()
    comps = build_components(settings, engine=engine)
    orch = comps.orchestrator
    todo: list[
        tuple[int | None, int, list[tuple[str, float]], int]
    ] = []  # segment, product, terms, seed
    skipped: list[int] = []
    with Session(engine) as session:
        shared = select(func.count()).where(
            CreativeVariant.placement == placement,
            CreativeVariant.status == VariantStatus.approved,
            col(CreativeVariant.user_id).is_(None),
        )
        for seg in session.exec(select(Segment).order_by(col(Segment.id))):
            have = int(session.exec(shared.where(CreativeVariant.segment_id == seg.id)).one())
            if have >= per_segment:
                skipped.append(int(seg.id))  # type: ignore[arg-type]
                continue
            products = list(seg.example_product_ids) or _popular_products(session, per_segment)
            for i in range(have, per_segment):
                if products:
                    todo.append(
                        (seg.id, products[i % len(products)], terms_of(seg.terms), seed + i)
                    )
        have_generic = int(
            session.exec(shared.where(col(CreativeVariant.segment_id).is_(None))).one()
        )
        popular = _popular_products(session, max(generic, 1))
        for i in range(have_generic, generic):
            if popular:
                todo.append((None, popular[i % len(popular)], [], seed + i))
        briefs = [
            orch.make_brief(
                session,
                product_id=pid,
                placement=placement,
                terms=terms,
                reference_product_ids=[],
                seed=s,
            )
            for _, pid, terms, s in todo
        ]
    created: list[int] = []
    failed: dict[str, str] = {}
    if not briefs:
        return DemoVariantsOutput(created, skipped, time.perf_counter() - t0)
    render = _render_one_by_one(generator) if generator is not None else _batch_render(settings)
    batch = max(1, int(settings.generation.max_batch))
    outputs: list[Any] = []
    bar = tqdm(total=len(briefs), desc="demo variants", disable=not progress)
    for start in range(0, len(briefs), batch):
        part = briefs[start : start + batch]
        outputs += render(part)
        bar.update(len(part))
    bar.close()
    base_seeds = [t[3] for t in todo]
    for offset in SAFETY_RETRY_SEED_OFFSETS:
        refused = [i for i, out in enumerate(outputs) if isinstance(out, SafetyViolation)]
        if not refused:
            break
        with Session(engine) as session:
            for i in refused:
                segment_id, pid, terms, _ = todo[i]
                todo[i] = (segment_id, pid, terms, base_seeds[i] + offset)
                briefs[i] = orch.make_brief(
                    session, product_id=pid, placement=placement, terms=terms,
                    reference_product_ids=[], seed=base_seeds[i] + offset,
                )  # fmt: skip
        again = render([briefs[i] for i in refused])
        for i, out in zip(refused, again, strict=True):
            outputs[i] = out
    with Session(engine) as session:
        for (segment_id, pid, _terms, s), brief, out in zip(todo, briefs, outputs, strict=True):
            if isinstance(out, BaseException) or out is None:
                # A failed render (e.g. the safety checker): the others still count.
                owner = "generic" if segment_id is None else f"segment {segment_id}"
                failed[owner] = repr(out)[:200]
                continue
            v = CreativeVariant(
                segment_id=segment_id,
                product_id=pid,
                placement=placement,
                brief_hash=brief.brief_hash,
                brief=brief.to_dict(),
                terms=[[t.term, t.weight] for t in brief.style_terms],
                image_key=out.image_key,
                status=VariantStatus.approved,
                created_by=DEMO_ACTOR,
            )
            session.add(v)
            session.flush()
            assert v.id is not None
            created_detail = {"brief_hash": brief.brief_hash, "seed": s}
            approved_detail = {"from": "draft", "to": "approved"}
            record_change(
                session, variant_id=v.id, actor=DEMO_ACTOR, action="create", detail=created_detail
            )
            record_change(
                session, variant_id=v.id, actor=DEMO_ACTOR, action="approve", detail=approved_detail
            )
            created.append(v.id)
        session.commit()
    return DemoVariantsOutput(created, skipped, time.perf_counter() - t0, failed)


def approve_and_cover(
    settings: Settings,
    engine: Engine,
    *,
    seed: int,
    per_segment: int = 2,
    generic: int = 2,
    cover: bool = True,
    generator: HeroRenderer | None = None,
    delivery: bool = True,
    progress: bool = True,
) -> tuple[DemoVariantsOutput, CoverSummary | None]:
    """:func:`seed_demo_variants` (banners), then, when ``cover``, what ``tailorshot batch
    cover`` runs (:func:`api.batch.cover.run_cover`): every segment and the generic pool
    gets its square and story recomposed from an approved banner's kept scene, with no
    diffusion run (~15-45 CPU s each on a CPU with the delivery path). Idempotent: a rerun
    renders and recomposes nothing. ``delivery=False``: the classic compose path (tiny test
    models). Returns the seeding and the coverage summaries (``None`` without ``cover``)."""
    made = seed_demo_variants(
        settings,
        engine,
        seed=seed,
        per_segment=per_segment,
        generic=generic,
        generator=generator,
        progress=progress,
    )
    if not cover:
        return made, None
    return made, run_cover(settings, engine, delivery=delivery, progress=progress)


def demo_keys(engine: Engine, *, seed: int = 0) -> dict[str, str]:
    """One API key per role, derived from ``seed`` (so the demo can print them again) and
    stored hashed; idempotent. Demo keys are guessable from the seed: never use in production."""
    out: dict[str, str] = {}
    with Session(engine) as session:
        for role in Role:
            key = generate_key(seed=f"{role.value}:{seed}")
            created = create_key(session, role=role, name=f"demo-{role.value}", key=key)
            out[role.value] = created.key
        session.commit()
    return out


def curl_examples(keys: dict[str, str], base_url: str = "http://127.0.0.1:8000") -> str:
    """Example ``curl`` calls for each role (a block of shell text)."""
    b = base_url.rstrip("/")
    s, m = keys.get("storefront", "$STOREFRONT_KEY"), keys.get("marketer", "$MARKETER_KEY")
    a, ad = keys.get("analyst", "$ANALYST_KEY"), keys.get("admin", "$ADMIN_KEY")
    event = (
        '{"events": [{"event_id": "ev-1", "user_id": "u00001", "product_id": 1, '
        '"kind": "view", "ts": "2026-01-01T12:00:00Z"}]}'
    )
    ct = "-H 'Content-Type: application/json'"
    return f"""# storefront: a hero for a shopper (then follow image_url), a click, events
curl -s -H 'Authorization: Bearer {s}' '{b}/v1/hero?user_id=u00001&placement=banner'
curl -s -H 'Authorization: Bearer {s}' '{b}/v1/hero?user_id=u00001&placement=story'
curl -s -X POST -H 'Authorization: Bearer {s}' '{b}/v1/impressions/IMPRESSION_ID/click'
curl -s -X POST -H 'Authorization: Bearer {s}' {ct} \\
  -d '{event}' '{b}/v1/events'

# marketer: segments, previews, approve, history, a one-off generation
curl -s -H 'X-API-Key: {m}' '{b}/v1/segments'
curl -s -X POST -H 'X-API-Key: {m}' {ct} \\
  -d '{{"product_id": 1, "n": 2}}' '{b}/v1/segments/1/previews'
curl -s -H 'X-API-Key: {m}' '{b}/v1/variants?status=draft'
curl -s -X POST -H 'X-API-Key: {m}' '{b}/v1/variants/VARIANT_ID/approve'
curl -s -H 'X-API-Key: {m}' '{b}/v1/variants/VARIANT_ID/history'
curl -s -X POST -H 'X-API-Key: {m}' -H 'Idempotency-Key: try-1' {ct} \\
  -d '{{"product_id": 1, "terms": [{{"term": "teal", "weight": 1.5}}]}}' '{b}/v1/generations'

# analyst: click-through estimates (JSON) and the report page
curl -s -H 'Authorization: Bearer {a}' '{b}/v1/analytics/ctr'
curl -s -H 'Authorization: Bearer {a}' '{b}/v1/analytics/report' -o report.html

# admin: erase a shopper; ops (no key): health, readiness, metrics
curl -s -X DELETE -H 'Authorization: Bearer {ad}' '{b}/v1/users/u00001'
curl -s '{b}/readyz'; curl -s '{b}/metrics' | head
"""
