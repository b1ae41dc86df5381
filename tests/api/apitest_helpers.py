"""Helpers of the API tests: a small seeded world (products with image files, users,
a segment, approved variants with stored images), one key per role, and an app on a temp
state folder with test doubles for the generator (fast, blocking or broken)."""

from __future__ import annotations

import io
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image
from sqlmodel import Session

from api.app import build_engine, create_app
from api.auth import create_key
from api.composition import Components, Loaders, build_components, build_image_store
from api.settings import ApiConfig, Settings
from data.db import drop_all, make_engine
from data.models import (
    CreativeVariant,
    Event,
    EventKind,
    Product,
    Role,
    Segment,
    SegmentMembership,
    TasteProfileRecord,
    User,
    VariantStatus,
)
from genservice.jobs import JobQueue
from genservice.worker import JobHandler, Worker

ROLES = [r.value for r in Role]


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class FakeOutput:
    image_key: str
    timings: dict[str, float] = field(default_factory=dict)


class FakeGenerator:
    """Stands in for genservice's HeroGenerator: renders a flat image per brief into the
    image store. ``mode``: ``ok``, ``block`` (waits on ``release``: a busy generator) or
    ``broken`` (raises)."""

    def __init__(self, images: Any, mode: str = "ok") -> None:
        self.images = images
        self.mode = mode
        self.release = threading.Event()
        self.started = threading.Event()
        self.calls = 0

    def generate(
        self, brief: Any, *, progress: Any = None, should_cancel: Any = None
    ) -> FakeOutput:
        self.calls += 1
        self.started.set()
        if self.mode == "broken":
            raise RuntimeError("generator is broken /secret/internal/path")
        if self.mode == "block":
            while not self.release.wait(0.02):
                if should_cancel is not None and should_cancel():
                    from genservice.errors import JobCancelled

                    raise JobCancelled("cancelled")
        total = 4
        for step in range(1, total + 1):
            if progress is not None:
                progress(step, total)
        seed = int(brief.seed) % 200
        key = self.images.put(png_bytes((seed, 100, 200)), "image/png")
        return FakeOutput(key, {"total_s": 0.0})


@dataclass
class World:
    product_ids: list[int]
    segment_id: int
    segment_variant_ids: list[int]
    generic_variant_id: int
    users: list[str]
    keys: dict[str, str]


def seed_world(engine: Any, comps: Components, home: Path) -> World:
    """3 products with image files, 3 users (u1, u2 in the segment; u3 without one),
    2 approved segment variants, 1 draft, 1 generic approved variant, events and a profile."""
    (home / "catalog").mkdir(parents=True, exist_ok=True)
    assert comps.images is not None
    with Session(engine, expire_on_commit=False) as s:
        products = []
        for i, (title, cat) in enumerate(
            [("Red tee", "t-shirt"), ("Blue mug", "mug"), ("Oak chair", "chair")]
        ):
            path = home / "catalog" / f"p{i}.png"
            path.write_bytes(png_bytes((50 * i, 80, 120), (64, 64)))
            p = Product(sku=f"sku-{i}", title=title, category=cat, image=f"catalog/p{i}.png")
            s.add(p)
            products.append(p)
        s.flush()
        pids = [int(p.id) for p in products]  # type: ignore[arg-type]
        seg = Segment(
            label="bold",
            size=2,
            terms=[["red", 1.5], ["minimal", 0.7]],
            example_product_ids=pids[:2],
        )
        s.add(seg)
        for u in ("u1", "u2", "u3"):
            s.add(User(id=u))
        s.flush()
        assert seg.id is not None
        s.add(SegmentMembership(user_id="u1", segment_id=seg.id, score=0.9))
        s.add(SegmentMembership(user_id="u2", segment_id=seg.id, score=0.8))
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        for j in range(6):
            s.add(Event(event_id=f"e{j}", user_id="u1", product_id=pids[j % 2], kind=EventKind.view,
                        ts=t0 + timedelta(hours=j)))  # fmt: skip
        s.add(
            Event(event_id="e-u2", user_id="u2", product_id=pids[2], kind=EventKind.purchase, ts=t0)
        )
        s.add(TasteProfileRecord(user_id="u1", profile_hash="h1", data={"not": "a profile"}))
        variants = []
        for k in range(3):
            key = comps.images.put(png_bytes((10 * k, 200, 30)), "image/png")  # type: ignore[attr-defined]
            v = CreativeVariant(
                segment_id=seg.id, product_id=pids[k % 3], placement="banner", brief_hash=f"seg{k}",
                image_key=key, status=VariantStatus.approved if k < 2 else VariantStatus.draft,
            )  # fmt: skip
            s.add(v)
            variants.append(v)
        gkey = comps.images.put(png_bytes((1, 2, 3)), "image/png")  # type: ignore[attr-defined]
        generic = CreativeVariant(product_id=pids[2], placement="banner", brief_hash="gen0",
                                  image_key=gkey, status=VariantStatus.approved)  # fmt: skip
        s.add(generic)
        keys = {role: create_key(s, role=role, name=f"test-{role}").key for role in ROLES}
        s.commit()
        return World(
            product_ids=pids,
            segment_id=int(seg.id),
            segment_variant_ids=[int(v.id) for v in variants[:2]],  # type: ignore[arg-type]
            generic_variant_id=int(generic.id),  # type: ignore[arg-type]
            users=["u1", "u2", "u3"],
            keys=keys,
        )


def make_settings(home: Path, *, database_url: str | None = None, **api: Any) -> Settings:
    base: dict[str, Any] = {
        "load_generator": False,
        "run_worker": False,
        "personalize": True,
        "personalize_interval_s": 0.0,
        "stats_ttl_s": 0.0,
        "candidates_ttl_s": 0.0,
        "key_cache_ttl_s": 0.0,
    }
    base.update(api)
    return Settings(home=home, database_url=database_url, api=ApiConfig(**base))


@dataclass
class Env:
    client: TestClient
    comps: Components
    world: World
    generator: FakeGenerator
    home: Path

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.world.keys[role]}"}


@dataclass
class FakeReport:
    summary: dict[str, Any]
    html: str


def build_env(
    tmp_path: Path,
    *,
    mode: str = "ok",
    worker: bool = False,
    real_report: bool = False,
    database_url: str | None = None,
    generator_class: type[FakeGenerator] | None = None,
    **api: Any,
) -> Generator[Env, None, None]:
    """An app on a fresh state folder, seeded; ``mode`` of the fake generator; ``worker``
    runs genservice's real worker on it; ``real_report`` uses recsys's (slow) report;
    ``database_url`` (default: SQLite under the state folder) must name an empty database."""
    home = tmp_path / "home"
    settings = make_settings(home, database_url=database_url, **api)
    gen = (generator_class or FakeGenerator)(build_image_store(settings), mode=mode)

    def make_worker(queue: JobQueue, handler: JobHandler) -> Worker:
        return Worker(
            queue,
            handler,
            poll_interval=0.02,
            heartbeat_interval=0.2,
            stale_after=5.0,
            cancel_check_interval=0.02,
            progress_interval=0.0,
            maintenance_interval=0.0,
        )

    comps = build_components(
        settings,
        engine=build_engine(settings),
        loaders=Loaders(index=lambda: object(), generator=lambda: gen),  # type: ignore[arg-type, return-value]
        make_worker=make_worker if worker else None,
        report_builder=None
        if real_report
        else (lambda c: FakeReport({"source": "fake"}, "<html>fake</html>")),
    )
    world = seed_world(comps.engine, comps, home)
    app = create_app(settings, components=comps)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Env(client=client, comps=comps, world=world, generator=gen, home=home)
    gen.release.set()


def empty_database_url(backend: str, request: Any) -> str | None:
    """``None`` for SQLite (each env makes its own file); for ``postgres`` the test database's
    URL with every table dropped first."""
    if backend != "postgres":
        return None
    url: str = request.getfixturevalue("pg_database_url")
    eng = make_engine(url)
    drop_all(eng)
    eng.dispose()
    return url
