"""A tiny store for the batch tests: products with studio shots, two segments, a few
shoppers with events and profiles-free history, and a tiny random diffusion model (built once
per test process). Deterministic: two calls give byte-identical worlds."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image, ImageDraw
from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.settings import Settings
from data.db import init_db, make_engine
from data.models import Event, EventKind, Product, Segment, User
from genservice.config import GenerationConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_MODEL: Path | None = None


def tiny_model_dir() -> Path:
    """A tiny random SD pipeline (seed 0), built once per process in a temporary folder."""
    global _MODEL
    if _MODEL is None:
        from genservice.training.random_pipelines import build_tiny_pipeline

        root = Path(tempfile.mkdtemp(prefix="tailorshot-batch-"))
        atexit.register(shutil.rmtree, root, True)
        _MODEL = build_tiny_pipeline(root / "sd-tiny", seed=0, with_ip_adapter=False)
    return _MODEL


def product_image(i: int, size: int = 96) -> Image.Image:
    """A studio shot of product ``i``: a coloured rounded body on near-white (RGB)."""
    colour = ((37 * i) % 200 + 30, (91 * i) % 200 + 30, (53 * i) % 200 + 30)
    im = Image.new("RGB", (size, size), (248, 248, 246))
    d = ImageDraw.Draw(im)
    d.rounded_rectangle((24, 18, 66, 80), radius=8, fill=colour)
    d.ellipse((60, 36, 84, 62), outline=colour, width=6)
    return im


SEGMENT_TERMS = (
    [["beach", 1.2], ["golden hour", 0.8], ["minimal", 0.5]],
    [["studio", 1.1], ["soft light", 0.9], ["marble", 0.4]],
)


def build_world(home: Path, *, n_products: int = 20, n_users: int = 6) -> tuple[Settings, Engine]:
    """Settings (tiny model, 2 steps, CPU) and a database with ``n_products`` products, two
    segments and ``n_users`` shoppers with events on the first products."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "catalog").mkdir(exist_ok=True)
    settings = Settings(
        home=home,
        generation=GenerationConfig(
            model=str(tiny_model_dir()),
            device="cpu",
            num_inference_steps=2,
            safety_checker="heuristic",
            max_batch=4,
        ),
    )
    engine = make_engine(settings.data.resolved_database_url())
    init_db(engine)
    t0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    with Session(engine) as s:
        for i in range(1, n_products + 1):
            path = f"catalog/P{i:03d}.png"
            product_image(i).save(home / path)
            s.add(Product(id=i, sku=f"P{i:03d}", title=f"Mug {i}", category="mug", image=path))
        for k, terms in enumerate(SEGMENT_TERMS, start=1):
            s.add(Segment(id=k, label=f"segment {k}", size=3, terms=terms, example_product_ids=[k]))
        for u in range(n_users):
            s.add(User(id=f"u{u:03d}"))
        s.commit()
        for u in range(n_users):
            uid = f"u{u:03d}"
            for j in range(u + 1):
                s.add(
                    Event(
                        event_id=f"{uid}-{j}",
                        user_id=uid,
                        product_id=1 + (u + j) % n_products,
                        kind=EventKind.view,
                        ts=t0 + timedelta(hours=u * 10 + j),
                    )
                )
        s.commit()
    return settings, engine


def build_banner_world(home: Path) -> tuple[Settings, Engine]:
    """:func:`build_world` with 2 products and 2 shoppers, ``u000`` a member of segment 1."""
    from data.models import SegmentMembership

    settings, engine = build_world(home, n_products=2, n_users=2)
    with Session(engine) as s:
        s.add(SegmentMembership(user_id="u000", segment_id=1, score=1.0))
        s.commit()
    return settings, engine


#: ``tailorshot batch variants``: one banner for segment 1, approved with its own terms.
AUTO_APPROVE_BANNER_ARGS = [
    "batch", "variants", "--segments", "1", "--placements", "banner", "--products", "1",
    "--auto-approve", "--vocabulary", ",".join(t for t, _ in SEGMENT_TERMS[0]),
    "--executor", "local", "--json",
]  # fmt: skip
