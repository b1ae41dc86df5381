"""Write the demo world into the database and the state folder (idempotent, seconds).

``build_demo_world(engine, home=..., seed=0)`` renders every product (studio shot
``home/catalog/<sku>.png`` and RGBA cut-out ``home/catalog/cutouts/<sku>.png``), inserts
products, users, events (``source="demo"``) and the true tastes (``DemoTaste``) in one
transaction with bulk inserts, then writes ``home/demo_manifest.json``. A second run with the
same arguments finds the manifest, checks the database still holds the world, and returns in
milliseconds; an interrupted run is completed by the next one (only missing rows and files
are written).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Table, func, insert, select
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session
from tqdm import tqdm

from data.db import init_db
from data.demo.render import on_studio_background, render_product
from data.demo.world import DemoWorld, build_world
from data.files import atomic_write, atomic_write_json
from data.models import DemoTaste, Event, EventKind, Product, User, utcnow

MANIFEST_NAME = "demo_manifest.json"
MANIFEST_VERSION = 1
EVENT_SOURCE = "demo"
SKU_PREFIX = "demo-"
_CHUNK = 5000
# Core tables (typed column access for bulk statements).
_PRODUCT: Table = Product.__table__  # type: ignore[attr-defined]
_EVENT: Table = Event.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DemoBuildOutput:
    """What ``build_demo_world`` did.

    ``products``/``users``/``events`` are the world's sizes; ``*_inserted`` what this run added.
    """

    home: str
    seed: int
    products: int
    users: int
    events: int
    skipped: bool  # True when the world was already complete (nothing written)
    images_rendered: int = 0
    products_inserted: int = 0
    users_inserted: int = 0
    events_inserted: int = 0
    tastes_inserted: int = 0
    seconds: float = 0.0
    digest: str = ""


def product_image_path(sku: str) -> str:
    """Studio shot path relative to the state folder."""
    return f"catalog/{sku}.png"


def product_cutout_path(sku: str) -> str:
    """RGBA cut-out path relative to the state folder."""
    return f"catalog/cutouts/{sku}.png"


#: Catalog renders are made at delivery resolution (long side >= 768 px), so a hero never
#: enlarges a product beyond 1.25x; the models that read them at 32-64 px downsample.
DELIVERY_IMAGE_SIZE = 768


def render_seed(seed: int, index: int) -> int:
    """The render seed of the ``index``-th product of the world built with ``seed``."""
    return (seed * 1_000_003 + index * 7919 + 17) & 0x7FFFFFFF


def _db_name(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _demo_counts(conn: Connection) -> dict[str, int]:
    products = conn.execute(
        select(func.count()).select_from(Product).where(Product.sku.like(f"{SKU_PREFIX}%"))  # type: ignore[attr-defined]
    ).scalar_one()
    tastes = conn.execute(select(func.count()).select_from(DemoTaste)).scalar_one()
    events = conn.execute(
        select(func.count()).select_from(Event).where(Event.source == EVENT_SOURCE)  # type: ignore[arg-type]
    ).scalar_one()
    return {"products": int(products), "tastes": int(tastes), "events": int(events)}


def build_demo_world(
    engine: Engine,
    *,
    home: Path,
    seed: int = 0,
    n_products: int = 400,
    n_users: int = 1200,
    weeks: int = 6,
    image_size: int = DELIVERY_IMAGE_SIZE,
    progress: bool = True,
) -> DemoBuildOutput:
    """Build the demo world into ``engine`` and ``home`` (tables are created if missing).

    Raises ``ValueError`` if ``home`` already holds a demo world built with other arguments.
    """
    t_start = time.perf_counter()
    home = Path(home)
    if not isinstance(image_size, int) or image_size < 128:
        raise ValueError(f"image_size: expected an int >= 128, got {image_size!r}")
    params = {
        "seed": seed,
        "n_products": n_products,
        "n_users": n_users,
        "weeks": weeks,
        "image_size": image_size,
    }
    manifest_path = home / MANIFEST_NAME
    manifest = _read_manifest(manifest_path)
    old = {k: manifest.get(k) for k in params} if manifest is not None else None
    init_db(engine)
    with engine.connect() as conn:
        counts = _demo_counts(conn)
    if manifest is not None and manifest.get("database") == _db_name(engine) and old is not None:
        # Another render size alone is not another world: the images are redone below.
        same_world = {k: v for k, v in old.items() if k != "image_size"} == {
            k: v for k, v in params.items() if k != "image_size"
        }
        if not same_world and counts["products"] > 0:
            raise ValueError(
                f"home: {home} already holds a demo world built with {old}; got {params}. "
                "Use a fresh state folder (TAILORSHOT_HOME) or the same arguments."
            )
        if old == params and counts["products"] == n_products and counts["tastes"] > 0:
            return DemoBuildOutput(
                home=str(home),
                seed=seed,
                products=n_products,
                users=n_users,
                events=int(manifest.get("counts", {}).get("events", counts["events"])),
                skipped=True,
                seconds=time.perf_counter() - t_start,
                digest=str(manifest.get("digest", "")),
            )
    # Images on disk from a world built with other arguments have the same file names: redo them.
    stale_images = old is not None and old != params

    world = build_world(seed=seed, n_products=n_products, n_users=n_users, weeks=weeks)
    rendered = _write_images(
        world, home, image_size=image_size, progress=progress, overwrite=stale_images
    )
    with engine.begin() as conn:
        inserted = _insert_world(conn, world)
    digest = world.digest()
    out = DemoBuildOutput(
        home=str(home),
        seed=seed,
        products=len(world.products),
        users=len(world.shoppers),
        events=len(world.events),
        skipped=False,
        images_rendered=rendered,
        seconds=time.perf_counter() - t_start,
        digest=digest,
        **inserted,
    )
    manifest_data = {
        "version": MANIFEST_VERSION,
        **params,
        "database": _db_name(engine),
        "digest": digest,
        "counts": {"products": out.products, "users": out.users, "events": out.events},
        "built_at": utcnow().isoformat(),
        "seconds": round(out.seconds, 3),
    }
    atomic_write_json(manifest_path, manifest_data, indent=2, sort_keys=True)
    return out


def _save_png(img: Any, path: Path) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a truncated image."""
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG", compress_level=1), durable=False)


def _render_one(job: tuple[str, dict[str, str], str, int, int, str]) -> str:
    """Render and save one product's cut-out and studio shot.

    ``job`` is ``(sku, attributes, category, size, seed, home)``; returns the sku.
    """
    sku, attributes, category, size, seed, home = job
    rgba = render_product(attributes, category=category, size=size, seed=seed)
    _save_png(rgba, Path(home) / product_cutout_path(sku))
    _save_png(on_studio_background(rgba), Path(home) / product_image_path(sku))
    return sku


def _write_images(
    world: DemoWorld, home: Path, *, image_size: int, progress: bool, overwrite: bool = False
) -> int:
    """Render missing (or, with ``overwrite``, all) studio shots and cut-outs; returns how
    many products were rendered.

    In-process on purpose: on the busy 2-CPU build machine a process pool measured slower
    (start-up and contention), and spawned workers would re-import callers' scripts.
    """
    (home / "catalog" / "cutouts").mkdir(parents=True, exist_ok=True)
    jobs = [
        (p.sku, dict(p.attributes), p.category, image_size, render_seed(world.seed, i), str(home))
        for i, p in enumerate(world.products)
        if overwrite
        or not (
            (home / product_image_path(p.sku)).exists()
            and (home / product_cutout_path(p.sku)).exists()
        )
    ]
    for job in tqdm(jobs, desc="rendering demo catalog", unit="img", disable=not progress):
        _render_one(job)
    return len(jobs)


def _chunks(rows: list[dict[str, Any]], n: int = _CHUNK) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), n):
        yield rows[i : i + n]


def _existing(conn: Connection, column: Any, values: Iterable[str]) -> set[str]:
    """Which of ``values`` are already in ``column`` (queried in chunks to bound the IN list)."""
    vals = list(values)
    found: set[str] = set()
    for i in range(0, len(vals), 900):
        part = vals[i : i + 900]
        found.update(conn.execute(select(column).where(column.in_(part))).scalars())
    return found


def _insert_world(conn: Connection, world: DemoWorld) -> dict[str, int]:
    """Insert whatever part of ``world`` is missing; returns the ``*_inserted`` counts."""
    now = utcnow()
    skus = [p.sku for p in world.products]
    have = _existing(conn, Product.sku, skus)
    if have:
        # Demo skus already present must be this world's products, not another seed's.
        mine = {p.sku: (p.category, dict(p.attributes)) for p in world.products}
        for i in range(0, len(skus), 900):
            part = skus[i : i + 900]
            stmt = select(_PRODUCT.c.sku, _PRODUCT.c.category, _PRODUCT.c.attributes)
            for sku, category, attributes in conn.execute(stmt.where(_PRODUCT.c.sku.in_(part))):
                if (category, dict(attributes or {})) != mine[sku]:
                    raise ValueError(
                        f"database: product {sku!r} belongs to another demo world "
                        f"({category}, {attributes}); build seed {world.seed} into a fresh "
                        "database or use the seed it was built with"
                    )
    rows = [
        {
            "sku": p.sku,
            "title": p.title,
            "description": p.description,
            "category": p.category,
            "attributes": dict(p.attributes),
            "image": product_image_path(p.sku),
            "price": p.price,
            "created_at": now,
            "updated_at": now,
        }
        for p in world.products
        if p.sku not in have
    ]
    for chunk in _chunks(rows):
        conn.execute(insert(Product), chunk)
    sku_to_id: dict[str, int] = {}
    for i in range(0, len(skus), 900):
        part = skus[i : i + 900]
        rows_ = conn.execute(select(_PRODUCT.c.sku, _PRODUCT.c.id).where(_PRODUCT.c.sku.in_(part)))
        sku_to_id.update({str(sku): int(pid) for sku, pid in rows_})

    user_ids = [t.user_id for t in world.shoppers]
    have_users = _existing(conn, User.id, user_ids)
    user_rows = [{"id": u, "created_at": now} for u in user_ids if u not in have_users]
    for chunk in _chunks(user_rows):
        conn.execute(insert(User), chunk)

    have_tastes = _existing(conn, DemoTaste.user_id, user_ids)
    taste_rows = [
        {"user_id": t.user_id, "taste": t.to_json()}
        for t in world.shoppers
        if t.user_id not in have_tastes
    ]
    for chunk in _chunks(taste_rows, 1000):
        conn.execute(insert(DemoTaste), chunk)

    have_events = set(
        conn.execute(select(_EVENT.c.event_id).where(_EVENT.c.source == EVENT_SOURCE)).scalars()
    )
    kinds = {k.value: k for k in EventKind}
    event_rows = [
        {
            "event_id": e.event_id,
            "user_id": e.user_id,
            "product_id": sku_to_id[e.sku],
            "kind": kinds[e.kind],
            "ts": e.ts,
            "session": e.session,
            "source": EVENT_SOURCE,
        }
        for e in world.events
        if e.event_id not in have_events
    ]
    for chunk in _chunks(event_rows):
        conn.execute(insert(Event), chunk)
    return {
        "products_inserted": len(rows),
        "users_inserted": len(user_rows),
        "events_inserted": len(event_rows),
        "tastes_inserted": len(taste_rows),
    }


def load_taste(session: Session, *, user_id: str) -> dict[str, Any]:
    """The stored true taste of a demo shopper (``Taste.to_json()`` format).

    Raises ``LookupError`` naming the user when there is none.
    """
    row = session.get(DemoTaste, user_id)
    if row is None:
        raise LookupError(
            f"user_id: no demo taste stored for {user_id!r} (is this a demo shopper?)"
        )
    return dict(row.taste)


def load_tastes(session: Session) -> dict[str, dict[str, Any]]:
    """Every stored demo taste, keyed by user id."""
    return {row.user_id: dict(row.taste) for row in session.execute(select(DemoTaste)).scalars()}


def output_as_dict(out: DemoBuildOutput) -> dict[str, Any]:
    """``DemoBuildOutput`` as a JSON-ready dict."""
    return asdict(out)
