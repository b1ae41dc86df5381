"""The composition root: builds every component from settings.

``build_components(settings)`` is cheap (engine, image store, job queue, limiter, metrics);
``start_components`` runs in the FastAPI lifespan and does the slow part (loading the
generator and the index, starting the worker thread); ``stop_components`` shuts down
gracefully: the worker finishes (or hands back) its current job, nothing is left half-done.

Routes and services see the collaborators only through the narrow ports below, so tests
can pass doubles and other backends (S3, a remote queue) can plug in.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.engine import Engine

from api.auth import KeyVerifier
from api.logging import get_logger
from api.metrics import ApiMetrics
from api.ratelimit import RateLimiter, make_rate_limiter
from api.settings import Settings
from data.db import init_db, make_engine
from data.models import GenerationJob

log = get_logger("composition")


@runtime_checkable
class ImageStorePort(Protocol):
    """Content-addressed image bytes. ``get`` raises ``KeyError`` for an unknown key."""

    def get(self, key: str) -> bytes: ...

    def content_type(self, key: str) -> str: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> bool: ...


@runtime_checkable
class JobQueuePort(Protocol):
    """Persisted generation jobs; ``submit`` is idempotent by brief hash and returns the job
    id; ``cancel`` returns the job after the change (None when unknown)."""

    def submit(self, *, brief_hash: str, brief: dict[str, Any]) -> str: ...

    def get(self, job_id: str) -> GenerationJob | None: ...

    def cancel(self, job_id: str) -> GenerationJob | None: ...

    def queue_depth(self) -> int: ...


@runtime_checkable
class WorkerPort(Protocol):
    """A background worker running jobs; ``stop`` waits for the current job to end."""

    def start(self) -> None: ...

    def stop(self, *, graceful: bool = True, timeout: float | None = None) -> bool: ...


@dataclass
class Readiness:
    """What the lifespan managed to load; ``/readyz`` reports each part."""

    database: bool = False
    index: bool = False
    generator: bool = False
    errors: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, bool]:
        return {"database": self.database, "index": self.index, "generator": self.generator}

    @property
    def ready(self) -> bool:
        return self.database and self.index and self.generator


@dataclass
class Components:
    """Everything the app uses. ``None`` means "not available in this deployment"."""

    settings: Settings
    engine: Engine
    metrics: ApiMetrics
    limiter: RateLimiter
    keys: KeyVerifier
    images: ImageStorePort | None = None
    jobs: JobQueuePort | None = None
    worker: WorkerPort | None = None
    generator: Any | None = None
    #: The product recommender (``recsys.recommend.InterestRecommender``) over the index.
    index: Any | None = None
    #: Builds briefs from users and segments (recsys + genservice); see api/services/orchestration.
    orchestrator: Any = None
    #: Indexes holding per-user vectors (each with ``remove_user(user_id) -> int``), erased
    #: with the user. The product index holds no user data.
    user_indexes: list[Any] = field(default_factory=list)
    #: The storefront decision service (api/services/hero.HeroService), made by the app.
    hero: Any = None
    readiness: Readiness = field(default_factory=Readiness)
    #: Loaders run by ``start_components`` (overridable in tests): name -> () -> object.
    loaders: dict[str, Callable[[], Any]] = field(default_factory=dict)
    #: Builds the analytics report: ``(components) -> ReportOutput`` (None: recsys's).
    report_builder: Callable[[Any], Any] | None = None
    #: Small per-app caches (the analytics report), guarded by ``lock``.
    cache: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


# ----------------------------------------------------------------------------- adapters


class _ImageStoreAdapter:
    """Adapts genservice's ImageStore to :class:`ImageStorePort` (adds ``content_type``;
    invalid keys read as unknown)."""

    def __init__(self, store: Any) -> None:
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


class _JobQueueAdapter:
    """Adapts genservice's JobQueue to :class:`JobQueuePort`."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def submit(self, *, brief_hash: str, brief: dict[str, Any]) -> str:
        out = self.queue.submit(brief_hash=brief_hash, brief=brief)
        return str(out.job.id)

    def get(self, job_id: str) -> GenerationJob | None:
        return self.queue.get(job_id)  # type: ignore[no-any-return]

    def cancel(self, job_id: str) -> GenerationJob | None:
        return self.queue.cancel(job_id)  # type: ignore[no-any-return]

    def queue_depth(self) -> int:
        return int(self.queue.queue_depth())


# ----------------------------------------------------------------------------- building


def images_dir(settings: Settings) -> Path:
    """Where generated images live (``generation.image_store_dir`` or ``<home>/images``)."""
    configured = settings.generation.image_store_dir
    return Path(configured) if configured else settings.data.images_dir


def build_image_store(settings: Settings) -> ImageStorePort | None:
    """genservice's local content-addressed store, or None when genservice lacks one."""
    try:
        from genservice import storage
    except ImportError:
        log.warning("genservice.storage is not available; images are not served")
        return None
    return _ImageStoreAdapter(storage.LocalImageStore(images_dir(settings)))


def build_job_queue(settings: Settings, engine: Engine) -> JobQueuePort | None:
    """genservice's persisted job queue on ``engine``, or None when unavailable."""
    try:
        from genservice.jobs import JobQueue
    except ImportError:
        log.warning("genservice.jobs is not available; generations are disabled")
        return None
    return _JobQueueAdapter(JobQueue.from_config(engine, settings.generation, seed=settings.seed))


def make_job_handler(
    generator: Any | Callable[[], Any], *, metrics: ApiMetrics | None = None
) -> Callable[..., Any]:
    """A ``genservice.worker.JobHandler`` rendering each job's brief with ``generator`` (or a
    zero-argument factory called once, on the first job). Reports progress, honours cancel
    and records the job's wall time in ``metrics``."""
    from genservice.brief import CreativeBrief
    from genservice.worker import JobResult

    state: dict[str, Any] = {}
    lock = threading.Lock()

    def get_generator() -> Any:
        if hasattr(generator, "generate"):
            return generator
        with lock:
            if "generator" not in state:
                state["generator"] = generator()
        return state["generator"]

    def handler(job: GenerationJob, progress: Callable[[int, int], None],
                should_cancel: Callable[[], bool]) -> Any:  # fmt: skip
        t0 = time.perf_counter()
        status = "failed"
        try:
            brief = CreativeBrief.from_dict(job.brief)
            out = get_generator().generate(brief, progress=progress, should_cancel=should_cancel)
            status = "succeeded"
            return JobResult(result_key=out.image_key, timings=dict(out.timings))
        finally:
            if metrics is not None:
                metrics.job_duration.labels(status).observe(time.perf_counter() - t0)

    return handler


class GeneratorJobHandler:
    """A job handler over one generator per process, built by ``factory`` on first use;
    :meth:`warmup` builds it ahead of the first job (the backend warms up its configured
    sizes while loading), so no shopper's job pays for loading or compilation."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.warmup: Callable[[], Any] = functools.cache(factory)
        self._handler = make_job_handler(self.warmup)

    def __call__(
        self,
        job: GenerationJob,
        progress: Callable[[int, int], None],
        should_cancel: Callable[[], bool],
    ) -> Any:
        return self._handler(job, progress, should_cancel)


def build_job_handler(settings: Settings) -> Callable[..., Any]:
    """The handler ``tailorshot worker`` processes run: a :class:`GeneratorJobHandler` over
    the generator of ``settings`` (one per process)."""
    return GeneratorJobHandler(lambda: load_generator(settings))


def load_generator(settings: Settings) -> Any:
    """Load the configured hero generator (slow: the diffusion pipeline)."""
    from genservice.generator import HeroGenerator

    gen = HeroGenerator.from_config(settings.generation, home=settings.home)
    load = getattr(gen.backend, "load", None)
    if callable(load):
        load()  # here, in the lifespan, not on the first job
    return gen


def load_recommender(settings: Settings, engine: Engine) -> Any:
    """The product recommender over the saved vector index (``<home>/index``), with event
    popularity: ``.index`` is the index, ``.recommend(profile, k=, exclude_ids=)``."""
    from recsys.service import load_recommender as load

    return load(engine, config=settings.recsys, home=settings.home)


def build_components(settings: Settings, *, engine: Engine | None = None) -> Components:
    """Cheap components (no model is loaded): see :func:`start_components` for the rest."""
    settings.home.mkdir(parents=True, exist_ok=True)
    if engine is None:
        engine = make_engine(settings.data.resolved_database_url())
    init_db(engine)
    api = settings.api
    comps = Components(
        settings=settings,
        engine=engine,
        metrics=ApiMetrics(),
        limiter=make_rate_limiter(api.rate_limit_backend, api.redis_url),
        keys=KeyVerifier(engine, ttl_s=api.key_cache_ttl_s),
        images=build_image_store(settings),
        jobs=build_job_queue(settings, engine),
    )
    comps.loaders = {"index": lambda: load_recommender(settings, engine)}
    if api.load_generator:
        comps.loaders["generator"] = lambda: load_generator(settings)
    from api.services.orchestration import Orchestrator

    comps.orchestrator = Orchestrator(comps)
    return comps


def start_components(comps: Components) -> None:
    """Slow start: load the index and the generator (each failure is recorded, not raised,
    so the storefront still answers from what is ready) and start the worker."""
    from sqlalchemy import text

    try:
        with comps.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        comps.readiness.database = True
    except Exception as exc:
        comps.readiness.errors["database"] = type(exc).__name__
    for name in ("index", "generator"):
        loader = comps.loaders.get(name)
        if loader is None:
            if getattr(comps, name) is not None:
                setattr(comps.readiness, name, True)
            continue
        try:
            setattr(comps, name, loader())
            setattr(comps.readiness, name, getattr(comps, name) is not None)
        except Exception as exc:
            comps.readiness.errors[name] = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("could not load %s: %s", name, comps.readiness.errors[name])
    if comps.worker is None and comps.settings.api.run_worker and comps.generator is not None:
        comps.worker = _build_worker(comps)
    if comps.worker is not None:
        comps.worker.start()


def _build_worker(comps: Components) -> WorkerPort | None:
    """genservice's worker thread on the loaded generator, or None when unavailable."""
    if comps.jobs is None:
        return None
    try:
        from genservice.worker import Worker

        handler = make_job_handler(comps.generator, metrics=comps.metrics)
        queue = getattr(comps.jobs, "queue", comps.jobs)
        return Worker.from_config(queue, handler, comps.settings.generation)  # type: ignore[arg-type]
    except Exception:
        log.warning("could not start the generation worker", exc_info=True)
        return None


def stop_components(comps: Components) -> None:
    """Graceful stop: the worker finishes its current job (bounded wait), then the personalizer
    and the engine close."""
    if comps.worker is not None:
        try:
            comps.worker.stop(timeout=comps.settings.api.shutdown_timeout_s)
        except Exception:
            log.warning("worker did not stop cleanly", exc_info=True)
    orch = comps.orchestrator
    if orch is not None and hasattr(orch, "close"):
        orch.close()
    comps.engine.dispose()
