"""Helpers of the web-page tests: a small, realistic seeded world (demo-rendered products and
scenes, two segments, draft / approved / retired / personalized variants, logged impressions
with clicks, one key per role), a fake generator that reports progress step by step, and a
real uvicorn process on a free port.

The world is written through the data layer directly, so these tests depend on the tables,
not on the recsys or diffusion pipelines.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.auth import create_key
from data.models import (
    Click,
    CreativeVariant,
    Impression,
    Product,
    Role,
    Segment,
    SegmentMembership,
    User,
    VariantStatus,
    utcnow,
)
from tests.support.liveserver import spawn_uvicorn, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "test-artifacts" / "web"
#: Seconds per step of the live server's FakeGenerator (read by ``live_app``).
FAKE_STEP_ENV = "TAILORSHOT_TEST_FAKE_STEP_S"
CHROMIUM = Path("/usr/bin/chromium")
#: Debian's Chromium, headless, quiet: no sandbox (containers), no GPU, no background traffic.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: (category, colour, pattern, material, style): titles follow the demo world's convention.
PRODUCTS: list[tuple[str, str, str, str, str]] = [
    ("t-shirt", "red", "solid", "cotton", "minimalist"),
    ("sneaker", "red", "striped", "canvas", "sporty"),
    ("mug", "white", "solid", "ceramic", "minimalist"),
    ("handbag", "red", "solid", "leather", "luxury"),
    ("chair", "brown", "solid", "wood", "vintage"),
    ("lamp", "brown", "checked", "wood", "vintage"),
    ("hoodie", "green", "solid", "wool", "bohemian"),
    ("watch", "black", "solid", "leather", "luxury"),
]
#: True click-through per arm of the seeded impressions (what the analyst page estimates).
TRUE_CTR = {"personalized": 0.10, "segment": 0.06, "generic": 0.035}


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def _title(category: str, colour: str, pattern: str, material: str, style: str) -> str:
    pat = "" if pattern == "solid" else f"{pattern} "
    return f"{style.capitalize()} {colour} {pat}{material} {category.replace('-', '-')}"


def render_cutout(index: int, size: int = 160) -> Image.Image:
    """The demo renderer's RGBA cut-out of ``PRODUCTS[index]`` (deterministic)."""
    from data.demo.render import render_product

    cat, colour, pattern, material, style = PRODUCTS[index]
    attrs = {"colour": colour, "pattern": pattern, "material": material, "style": style}
    return render_product(attrs, category=cat, size=size, seed=index)


def render_scene_png(
    index: int, setting: str, lighting: str, *, seed: int, size: int = 256
) -> bytes:
    """A hero-like scene: product ``index`` placed in ``setting`` under ``lighting``."""
    from data.demo.render import compose_scene

    scene = compose_scene(
        render_cutout(index), setting=setting, lighting=lighting, size=size, seed=seed
    )
    return png_bytes(scene.image)


@dataclass
class UiWorld:
    """Ids of what :func:`seed_ui_world` wrote. ``member`` belongs to the segment whose only
    variants are drafts (``draft_variant_id`` first): approving it makes it the member's hero."""

    product_ids: list[int]
    segment_ids: list[int]
    draft_variant_id: int
    second_draft_variant_id: int
    approved_variant_ids: list[int]
    generic_variant_id: int
    member: str
    shopper_with_personal: str
    keys: dict[str, str]
    impressions: int
    clicks: int
    clicks_by_arm: dict[str, tuple[int, int]] = field(default_factory=dict)


def seed_ui_world(
    engine: Engine,
    images: Any,
    home: Path,
    *,
    n_impressions: int = 900,
    epsilon: float = 0.2,
    seed: int = 4,
) -> UiWorld:
    """Write the world into ``engine`` and ``images`` (an image store with ``put``).

    Segment 1 ("Bold reds"): users u001–u030, two draft variants (with images), nothing
    approved. Segment 2 ("Warm naturals"): users u031–u060, two approved variants, personalized
    variants for u031–u045. One retired generic variant. ``n_impressions`` impressions of
    segment-2 shoppers logged by an epsilon-greedy policy (``epsilon``) over
    personalized / segment / generic candidates, clicks drawn with ``TRUE_CTR``.
    """
    rng = np.random.default_rng(seed)
    (home / "catalog").mkdir(parents=True, exist_ok=True)
    with Session(engine, expire_on_commit=False) as s:
        products: list[Product] = []
        for i, (cat, colour, pattern, material, style) in enumerate(PRODUCTS):
            from data.demo.render import on_studio_background

            rel = f"catalog/ui-{i}.png"
            on_studio_background(render_cutout(i)).convert("RGB").save(home / rel)
            attrs = {"colour": colour, "pattern": pattern, "material": material, "style": style}
            p = Product(
                sku=f"UI-{i:03d}",
                title=_title(cat, colour, pattern, material, style),
                category=cat,
                attributes=attrs,
                image=rel,
                price=20.0 + 7 * i,
            )
            s.add(p)
            products.append(p)
        s.flush()
        pids = [int(p.id) for p in products]  # type: ignore[arg-type]
        seg1 = Segment(
            label="Bold reds · minimalist",
            size=30,
            terms=[
                ["red", 0.31],
                ["minimalist", 0.22],
                ["cotton", 0.18],
                ["studio", 0.12],
                ["soft light", 0.09],
            ],
            example_product_ids=pids[:4],
        )
        seg2 = Segment(
            label="Warm naturals · vintage",
            size=30,
            terms=[
                ["brown", 0.27],
                ["wood", 0.21],
                ["vintage", 0.19],
                ["living room", 0.14],
                ["golden hour", 0.10],
            ],
            example_product_ids=pids[4:8],
        )
        s.add(seg1)
        s.add(seg2)
        users = [f"u{i:03d}" for i in range(1, 61)]
        for u in users:
            s.add(User(id=u))
        s.flush()
        assert seg1.id is not None and seg2.id is not None
        for u in users:
            seg_id = seg1.id if int(u[1:]) <= 30 else seg2.id
            s.add(SegmentMembership(user_id=u, segment_id=seg_id, score=0.8))

        def variant(
            pidx: int, setting: str, lighting: str, vseed: int, **kw: Any
        ) -> CreativeVariant:
            key = images.put(render_scene_png(pidx, setting, lighting, seed=vseed), "image/png")
            terms = kw.pop("terms", [[setting, 1.0], [lighting, 0.8]])
            v = CreativeVariant(
                product_id=pids[pidx],
                placement="banner",
                brief_hash=f"ui-{pidx}-{setting}-{vseed}-{kw.get('user_id')}",
                terms=terms,
                image_key=key,
                created_by="marketer:seed",
                **kw,
            )
            s.add(v)
            return v

        red_terms = [["red", 1.0], ["minimalist", 0.8], ["studio", 0.6]]
        d1 = variant(0, "studio", "soft light", 1, segment_id=seg1.id, terms=red_terms)
        d2 = variant(
            1,
            "city street",
            "neon",
            2,
            segment_id=seg1.id,
            terms=[["red", 1.0], ["sporty", 0.7], ["city street", 0.6]],
        )
        a1 = variant(
            4,
            "living room",
            "golden hour",
            3,
            segment_id=seg2.id,
            status=VariantStatus.approved,
            terms=[["brown", 1.0], ["wood", 0.8], ["living room", 0.6]],
        )
        a2 = variant(
            5,
            "forest",
            "overcast",
            4,
            segment_id=seg2.id,
            status=VariantStatus.approved,
            terms=[["vintage", 1.0], ["forest", 0.7]],
        )
        gen = variant(2, "kitchen", "soft light", 5, status=VariantStatus.retired, terms=[])
        personal: dict[str, CreativeVariant] = {}
        for j, u in enumerate(users[30:45]):
            personal[u] = variant(
                4 + j % 2,
                "mountains" if j % 2 else "desert",
                "golden hour",
                10 + j % 2,
                user_id=u,
                status=VariantStatus.approved,
                terms=[["brown", 1.0], ["mountains", 0.6]],
            )
        s.flush()

        # Impressions of an epsilon-greedy logging policy: greedy = personalized if on offer,
        # else the first segment variant; epsilon spread uniformly over the candidates.
        eps = epsilon
        t0 = utcnow() - timedelta(days=7)
        clicks: list[Click] = []
        by_arm: dict[str, list[int]] = {}
        for n in range(n_impressions):
            u = users[30 + int(rng.integers(30))]
            cands: list[tuple[CreativeVariant, str]] = []
            if u in personal:
                cands.append((personal[u], "personalized"))
            cands += [(a1, "segment"), (a2, "segment"), (gen, "generic")]
            k = len(cands)
            probs = np.full(k, eps / k)
            probs[0] += 1 - eps
            choice = int(rng.choice(k, p=probs))
            v, arm = cands[choice]
            imp = Impression(
                user_id=u,
                placement="banner",
                variant_id=v.id,
                product_id=v.product_id,
                arm=arm,
                policy="epsilon_greedy",
                propensity=float(probs[choice]),
                candidates=[[str(c.id), float(p)] for (c, _), p in zip(cands, probs, strict=True)],
                ts=t0 + timedelta(minutes=7 * n),
            )
            s.add(imp)
            stat = by_arm.setdefault(arm, [0, 0])
            stat[0] += 1
            if rng.random() < TRUE_CTR[arm]:
                clicks.append(Click(impression_id=imp.id, ts=imp.ts + timedelta(seconds=5)))
                stat[1] += 1
        s.flush()  # impressions before their clicks (no ORM relationship orders them)
        s.add_all(clicks)
        keys = {r.value: create_key(s, role=r, name=f"ui-{r.value}").key for r in Role}
        s.commit()
        return UiWorld(
            product_ids=pids,
            segment_ids=[int(seg1.id), int(seg2.id)],
            draft_variant_id=int(d1.id),  # type: ignore[arg-type]
            second_draft_variant_id=int(d2.id),  # type: ignore[arg-type]
            approved_variant_ids=[int(a1.id), int(a2.id)],  # type: ignore[arg-type]
            generic_variant_id=int(gen.id),  # type: ignore[arg-type]
            member="u001",
            shopper_with_personal="u031",
            keys=keys,
            impressions=n_impressions,
            clicks=len(clicks),
            clicks_by_arm={a: (v[0], v[1]) for a, v in by_arm.items()},
        )


@dataclass
class UiEnv:
    """The app in-process on a seeded world (see ``conftest.ui_env``)."""

    client: Any  # fastapi.testclient.TestClient
    comps: Any  # api.composition.Components
    world: UiWorld
    home: Path

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.world.keys[role]}"}


@dataclass
class FakeOutput:
    image_key: str
    timings: dict[str, float] = field(default_factory=dict)


class FakeGenerator:
    """Stands in for genservice's HeroGenerator: ``steps`` progress reports ``step_s`` apart
    (so a page can watch them), then a demo scene of the brief's product, coloured by the
    brief's first style term when that is a known setting."""

    def __init__(self, images: Any, *, steps: int = 6, step_s: float = 0.15) -> None:
        self.images = images
        self.steps = steps
        self.step_s = step_s
        self.calls = 0
        self._lock = threading.Lock()

    def generate(
        self,
        brief: Any,
        *,
        progress: Callable[[int, int], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> FakeOutput:
        from data.demo.attributes import SETTINGS

        with self._lock:
            self.calls += 1
        for step in range(1, self.steps + 1):
            time.sleep(self.step_s)
            if should_cancel is not None and should_cancel():
                from genservice.errors import JobCancelled

                raise JobCancelled("cancelled")
            if progress is not None:
                progress(step, self.steps)
        terms = [t.term for t in brief.style_terms]
        setting = next((t for t in terms if t in SETTINGS), "beach")
        sku_index = int(brief.seed) % len(PRODUCTS)
        title = str(brief.product.title).lower()
        for i, spec in enumerate(PRODUCTS):
            if spec[0] in title and spec[1] in title:
                sku_index = i
        data = render_scene_png(sku_index, setting, "golden hour", seed=int(brief.seed) + 99)
        return FakeOutput(self.images.put(data, "image/png"), {"total_s": self.steps * self.step_s})


# ----------------------------------------------------------------------------- live server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def live_env(home: Path) -> dict[str, str]:
    """Environment of the uvicorn process: temp state folder, fast start (no real generator,
    no index, no background personalization), small bootstrap for the analytics report."""
    return {
        **os.environ,
        "TAILORSHOT_HOME": str(home),
        "TAILORSHOT_DATABASE_URL": "",
        "TAILORSHOT_API__LOAD_GENERATOR": "false",
        "TAILORSHOT_API__PERSONALIZE": "false",
        "TAILORSHOT_API__REPORT_BOOTSTRAP": "50",
        "TAILORSHOT_API__KEY_CACHE_TTL_S": "0",
        "TAILORSHOT_API__CANDIDATES_TTL_S": "0",
        "TAILORSHOT_API__LOG_LEVEL": "WARNING",
        "TAILORSHOT_GENERATION__WORKER_POLL_INTERVAL_S": "0.05",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]),
    }


@dataclass
class LiveServer:
    base: str
    proc: subprocess.Popen[bytes]
    home: Path
    world: UiWorld

    def stop(self) -> str:
        """SIGTERM, wait, and return what the server printed."""
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out.decode(errors="replace")


def start_live_server(
    home: Path,
    *,
    seed: int = 4,
    n_impressions: int = 900,
    epsilon: float = 0.2,
    step_s: float = 0.15,
    report_bootstrap: int = 50,
) -> LiveServer:
    """Seed ``home`` and start ``uvicorn live_app:create --factory`` on a free port (the app
    with a :class:`FakeGenerator` taking ``step_s`` per step, and the in-process worker);
    waits until ``/healthz`` answers."""
    from api.composition import build_image_store
    from api.settings import Settings
    from data.db import init_db, make_engine

    settings = Settings(home=home, database_url=None)
    home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.data.resolved_database_url())
    init_db(engine)
    store = build_image_store(settings)
    world = seed_ui_world(
        engine, store, home, n_impressions=n_impressions, epsilon=epsilon, seed=seed
    )
    engine.dispose()
    port = free_port()
    proc = spawn_uvicorn(
        port=port,
        env={
            **live_env(home),
            "TAILORSHOT_API__REPORT_BOOTSTRAP": str(report_bootstrap),
            FAKE_STEP_ENV: str(step_s),
        },
        cwd=ROOT,
        app="live_app:create",
    )
    base = f"http://127.0.0.1:{port}"
    wait_healthy(proc, base, timeout_s=90)
    return LiveServer(base=base, proc=proc, home=home, world=world)
