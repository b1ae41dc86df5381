"""The composition root: builds every component from settings, once, in dependency order.

``build_components(settings, loaders=...)`` makes the immutable :class:`Components`: the
cheap parts (engine, image store, job queue, limiter, metrics, erasure guard), then the slow
ones the ``loaders`` name (the recommender over the saved index, the hero generator; each
failure is recorded in ``readiness``, not raised, so the storefront still answers from what
is ready), then the services over them (orchestrator, hero service) and the worker. The
FastAPI lifespan calls it with :func:`default_loaders` in a thread, then
:func:`start_components` (the worker thread) and, on shutdown, :func:`stop_components`.

Each service receives only the collaborators it uses; routes see them through ``Components``
and the ports of api/ports.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Engine

from api.auth import KeyVerifier
from api.logging import get_logger
from api.metrics import ApiMetrics
from api.ports import ImageStorePort, JobQueuePort, Report, UserIndex, WorkerPort
from api.ratelimit import RateLimiter, make_rate_limiter
from api.services.creations import creation_handler
from api.services.erasure import ErasureGuard, load_user_secret
from api.services.hero import HeroService
from api.services.orchestration import Orchestrator
from api.settings import Settings
from data.db import init_db, make_engine
from genservice.edits.jobs import EditJobHandler
from genservice.handler import GeneratorJobHandler, HeroRenderer, JobObserver
from genservice.jobs import JobQueue
from genservice.storage import ImageStore, LocalImageStore
from genservice.worker import JobHandler, Worker
from recsys.recommend import ProductRecommender

log = get_logger("composition")

T = TypeVar("T")

#: Builds the analytics report from the components (default: recsys's, in
#: api/services/analytics.py).
ReportBuilder = Callable[["Components"], Report]
#: Builds the in-process worker over the job queue and a handler (tests pass fast polling).
WorkerFactory = Callable[[JobQueue, JobHandler], WorkerPort]


@dataclass
class Readiness:
    """What the lifespan managed to load; ``/readyz`` reports each part (the database part
    is checked again on every ``/readyz``)."""

    database: bool = False
    index: bool = False
    generator: bool = False
    errors: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, bool]:
        return {"database": self.database, "index": self.index, "generator": self.generator}

    @property
    def ready(self) -> bool:
        return self.database and self.index and self.generator


@dataclass(frozen=True)
class Loaders:
    """The slow parts :func:`build_components` loads: each a zero-argument loader, or None
    for "not in this deployment" (tests pass doubles)."""

    index: Callable[[], ProductRecommender] | None = None
    generator: Callable[[], HeroRenderer] | None = None


@dataclass(frozen=True)
class Components:
    """Everything the app uses, built once by :func:`build_components`. ``None`` means "not
    available in this deployment"."""

    settings: Settings
    engine: Engine
    metrics: ApiMetrics
    limiter: RateLimiter
    keys: KeyVerifier
    #: Tombstones of erased users, shared by every per-user writer.
    guard: ErasureGuard
    #: Builds briefs from users and segments (recsys + genservice) and submits their jobs.
    orchestrator: Orchestrator
    #: The storefront decision service.
    hero: HeroService
    readiness: Readiness
    images: ImageStorePort | None = None
    jobs: JobQueuePort | None = None
    worker: WorkerPort | None = None
    generator: HeroRenderer | None = None
    #: The product recommender (``.index`` the vector index, ``.recommend(profile, ...)``).
    index: ProductRecommender | None = None
    #: Indexes holding per-user vectors, erased with the user. The product index holds no
    #: user data.
    user_indexes: list[UserIndex] = field(default_factory=list)
    #: Builds the analytics report (None: recsys's).
    report_builder: ReportBuilder | None = None
    #: Small per-app caches (the analytics report), guarded by ``lock``.
    cache: dict[str, object] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


# ----------------------------------------------------------------------------- adapters


class _ImageStoreAdapter:
    """Adapts genservice's ImageStore to :class:`ImageStorePort` (adds ``content_type``;
    invalid keys read as unknown)."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store

    def get(self, key: str) -> bytes:
        try:
            return bytes(self.store.get(key))
        except (FileNotFoundError, ValueError) as exc:
            raise KeyError(key) from exc

    def content_type(self, key: str) -> str:
        return _content_type_from_key(key)

    def exists(self, key: str) -> bool:
        try:
            return bool(self.store.exists(key))
        except ValueError:
            return False

    def delete(self, key: str) -> bool:
        try:
            return bool(self.store.delete(key))
        except ValueError:
            return False

    def put(self, data: bytes, content_type: str) -> str:
        return str(self.store.put(data, content_type))


def _content_type_from_key(key: str) -> str:
    lower = key.lower()
    if lower.endswith(".webp"):
        return "image/webp"
    if lower.endswith((".jpg", ".jpeg")):
        return "image/jpeg"
    return "image/png"


# ----------------------------------------------------------------------------- building


def images_dir(settings: Settings) -> Path:
    """Where generated images live (``generation.image_store_dir`` or ``<home>/images``)."""
    configured = settings.generation.image_store_dir
    return Path(configured) if configured else settings.data.images_dir


def build_image_store(settings: Settings) -> ImageStorePort:
    """genservice's local content-addressed store under :func:`images_dir`."""
    return _ImageStoreAdapter(LocalImageStore(images_dir(settings)))


def build_job_queue(settings: Settings, engine: Engine) -> JobQueue:
    """genservice's persisted job queue on ``engine``."""
    return JobQueue.from_config(engine, settings.generation, seed=settings.seed)


def job_metrics(metrics: ApiMetrics) -> JobObserver:
    """Records each job's wall time by outcome in ``metrics``."""

    def observe(status: str, seconds: float) -> None:
        metrics.job_duration.labels(status).observe(seconds)

    return observe


def make_job_handler(
    generator: HeroRenderer, *, metrics: ApiMetrics | None = None
) -> GeneratorJobHandler:
    """The job handler of the server's in-process worker: renders each job's brief with
    ``generator`` and records its wall time in ``metrics``."""
    return GeneratorJobHandler(
        lambda: generator, observe=job_metrics(metrics) if metrics is not None else None
    )


def build_job_handler(settings: Settings) -> EditJobHandler:
    """The handler ``tailorshot worker`` processes run: edit jobs (genservice.edits.jobs) and
    hero jobs with one generator per process, loaded by :func:`load_generator` on
    :meth:`~genservice.edits.jobs.EditJobHandler.warmup`."""
    hero = GeneratorJobHandler(lambda: load_generator(settings))
    images = build_image_store(settings)
    inner = creation_handler(hero, settings, images)  # creation jobs (issue 21), then heroes
    return EditJobHandler(inner, images, warmup=hero.warmup, scenes=hero.warmup)


def load_generator(settings: Settings) -> HeroRenderer:
    """Load the configured hero generator (slow: the diffusion pipeline loads here, not on
    the first job)."""
    from genservice.generator import HeroGenerator

    gen = HeroGenerator.from_config(settings.generation, home=settings.home)
    gen.backend.load()
    return gen


def load_recommender(settings: Settings, engine: Engine) -> ProductRecommender:
    """The product recommender over the saved vector index (``<home>/index``), with event
    popularity: ``.index`` is the index, ``.recommend(profile, k=, exclude_ids=)``."""
    from recsys.serving import load_recommender as load

    return load(engine, config=settings.recsys, home=settings.home)


def default_loaders(settings: Settings, engine: Engine) -> Loaders:
    """What a server loads: the recommender, and the generator when ``api.load_generator``."""
    return Loaders(
        index=lambda: load_recommender(settings, engine),
        generator=(lambda: load_generator(settings)) if settings.api.load_generator else None,
    )


def _check_database(engine: Engine, readiness: Readiness) -> None:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        readiness.database = True
    except Exception as exc:
        readiness.errors["database"] = type(exc).__name__


def _load(name: str, loader: Callable[[], T] | None, readiness: Readiness) -> T | None:
    """Run ``loader``; a failure is recorded in ``readiness`` (and logged), not raised."""
    if loader is None:
        return None
    try:
        loaded = loader()
    except Exception as exc:
        readiness.errors[name] = f"{type(exc).__name__}: {exc}"[:300]
        log.warning("could not load %s: %s", name, readiness.errors[name])
        return None
    return loaded


def build_components(
    settings: Settings,
    *,
    engine: Engine | None = None,
    loaders: Loaders | None = None,
    make_worker: WorkerFactory | None = None,
    report_builder: ReportBuilder | None = None,
) -> Components:
    """Every component, in dependency order. Without ``loaders`` nothing slow is loaded (the
    CLI's use); the server passes :func:`default_loaders`. The worker is built (not started:
    :func:`start_components`) when a generator is loaded and either ``make_worker`` is given
    or ``api.run_worker`` is set."""
    settings.home.mkdir(parents=True, exist_ok=True)
    if engine is None:
        engine = make_engine(settings.data.resolved_database_url())
    init_db(engine)
    api = settings.api
    loaders = loaders or Loaders()
    readiness = Readiness()
    _check_database(engine, readiness)
    index = _load("index", loaders.index, readiness)
    readiness.index = index is not None
    generator = _load("generator", loaders.generator, readiness)
    readiness.generator = generator is not None
    metrics = ApiMetrics()
    images = build_image_store(settings)
    queue = build_job_queue(settings, engine)
    configured = api.user_hash_secret.get_secret_value() if api.user_hash_secret else None
    guard = ErasureGuard(engine, load_user_secret(settings.home, configured))
    orchestrator = Orchestrator(
        settings=settings,
        engine=engine,
        guard=guard,
        jobs=queue,
        images=images,
        recommender=index,
    )
    hero = HeroService(api, metrics=metrics, guard=guard, personalizer=orchestrator)
    worker: WorkerPort | None = None
    if generator is not None and (make_worker is not None or api.run_worker):
        heroes = make_job_handler(generator, metrics=metrics)
        handler = EditJobHandler(
            creation_handler(heroes, settings, images), images, scenes=lambda: generator
        )
        if make_worker is not None:
            worker = make_worker(queue, handler)
        else:
            worker = Worker.from_config(queue, handler, settings.generation)
    return Components(
        settings=settings,
        engine=engine,
        metrics=metrics,
        limiter=make_rate_limiter(api.rate_limit_backend, api.redis_url),
        keys=KeyVerifier(engine, ttl_s=api.key_cache_ttl_s, version_poll_s=api.key_version_poll_s),
        guard=guard,
        orchestrator=orchestrator,
        hero=hero,
        readiness=readiness,
        images=images,
        jobs=queue,
        worker=worker,
        generator=generator,
        index=index,
        report_builder=report_builder,
    )


def start_components(comps: Components) -> None:
    """Start the worker thread (when there is one)."""
    if comps.worker is not None:
        comps.worker.start()


def stop_components(comps: Components) -> None:
    """Graceful stop: background enqueues end, the worker finishes its current job (bounded
    wait), then the engine closes."""
    comps.hero.close()
    if comps.worker is not None:
        try:
            comps.worker.stop(timeout=comps.settings.api.shutdown_timeout_s)
        except Exception:
            log.warning("worker did not stop cleanly", exc_info=True)
    comps.engine.dispose()
