"""The composition root: builds every component from settings.

``build_components(settings)`` is cheap (engine, image store, job queue, limiter, metrics);
``start_components`` runs in the FastAPI lifespan and does the slow part (loading the
generator and the index, starting the worker thread); ``stop_components`` shuts down
gracefully: the worker finishes (or hands back) its current job, nothing is left half-done.

Routes and services see the collaborators only through the narrow ports below, so tests
can pass doubles and other backends (S3, a remote queue) can plug in.
"""

from __future__ import annotations

import threading
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
    """Persisted generation jobs; ``submit`` is idempotent by brief hash and returns the id."""

    def submit(self, *, brief_hash: str, brief: dict[str, Any]) -> str: ...

    def get(self, job_id: str) -> GenerationJob | None: ...

    def cancel(self, job_id: str) -> bool: ...

    def queue_depth(self) -> int: ...


@runtime_checkable
class WorkerPort(Protocol):
    """A background worker running jobs; ``stop`` waits for the current job to end."""

    def start(self) -> None: ...

    def stop(self, timeout: float | None = None) -> None: ...


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
    index: Any | None = None
    #: Builds briefs from users and segments (recsys + genservice); see api/services/orchestration.
    orchestrator: Any | None = None
    readiness: Readiness = field(default_factory=Readiness)
    #: Loaders run by ``start_components`` (overridable in tests): name -> () -> object.
    loaders: dict[str, Callable[[], Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


# ----------------------------------------------------------------------------- adapters


class _ImageStoreAdapter:
    """Adapts genservice's ImageStore to :class:`ImageStorePort` (its method names differ
    between versions; only this adapter knows them)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def get(self, key: str) -> bytes:
        try:
            out = self.store.get(key)
        except FileNotFoundError as exc:
            raise KeyError(key) from exc
        if out is None:
            raise KeyError(key)
        if isinstance(out, tuple):
            out = out[0]
        return bytes(out)

    def content_type(self, key: str) -> str:
        fn = getattr(self.store, "content_type", None)
        if callable(fn):
            return str(fn(key))
        return _content_type_from_key(key)

    def exists(self, key: str) -> bool:
        fn = getattr(self.store, "exists", None)
        if callable(fn):
            return bool(fn(key))
        try:
            self.get(key)
        except KeyError:
            return False
        return True

    def delete(self, key: str) -> bool:
        fn = getattr(self.store, "delete", None)
        if not callable(fn):
            raise NotImplementedError("the image store cannot delete (erasure needs it)")
        out = fn(key)
        return bool(out) if out is not None else True


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
        job = self.queue.submit(brief_hash=brief_hash, brief=brief)
        return str(getattr(job, "id", job))

    def get(self, job_id: str) -> GenerationJob | None:
        job = self.queue.get(job_id)
        return job if isinstance(job, GenerationJob) or job is None else job

    def cancel(self, job_id: str) -> bool:
        out = self.queue.cancel(job_id)
        return bool(out) if out is not None else True

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
    cls = getattr(storage, "LocalImageStore", None)
    if cls is None:
        return None
    return _ImageStoreAdapter(cls(images_dir(settings)))


def build_job_queue(settings: Settings, engine: Engine) -> JobQueuePort | None:
    """genservice's persisted job queue on ``engine``, or None when unavailable."""
    try:
        from genservice.jobs import JobQueue
    except ImportError:
        log.warning("genservice.jobs is not available; generations are disabled")
        return None
    return _JobQueueAdapter(JobQueue(engine))


def build_job_handler(settings: Settings) -> Callable[..., Any]:
    """The function a worker runs for each job: builds the generator on first use (lazily,
    once per process) and renders the job's brief into the image store.

    Kept for ``tailorshot worker`` processes; the in-app worker uses the generator loaded
    in the lifespan through the same function.
    """
    state: dict[str, Any] = {}
    lock = threading.Lock()

    def handler(*args: Any, **kwargs: Any) -> Any:
        with lock:
            if "handler" not in state:
                state["handler"] = _genservice_handler(settings)
        return state["handler"](*args, **kwargs)

    return handler


def _genservice_handler(settings: Settings, generator: Any | None = None) -> Callable[..., Any]:
    """genservice's own job handler for ``settings`` (with an already-loaded generator)."""
    from genservice import worker as gworker

    factory = getattr(gworker, "make_job_handler", None) or getattr(gworker, "build_job_handler", None)
    if factory is None:
        raise RuntimeError("genservice.worker exposes no job handler factory")
    if generator is not None:
        try:
            return factory(settings=settings, generator=generator)  # type: ignore[no-any-return]
        except TypeError:
            pass
    return factory(settings)  # type: ignore[no-any-return]


def load_generator(settings: Settings) -> Any:
    """Load the configured hero generator (slow: the diffusion pipeline)."""
    from genservice.generator import HeroGenerator

    builder = getattr(HeroGenerator, "from_config", None)
    if callable(builder):
        return builder(settings.generation, home=settings.home)
    return HeroGenerator(settings.generation)


def load_index(settings: Settings) -> Any:
    """Load the product vector index saved under ``<home>/index`` (None if not built)."""
    from recsys import service as rservice

    loader = getattr(rservice, "load_product_index", None)
    if loader is None:
        raise RuntimeError("recsys.service exposes no load_product_index")
    return loader(settings)


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
    comps.loaders = {"index": lambda: load_index(settings)}
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
    except Exception as exc:  # noqa: BLE001 - reported by /readyz
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
        except Exception as exc:  # noqa: BLE001 - reported by /readyz, logged for operators
            comps.readiness.errors[name] = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("could not load %s", name, exc_info=True)
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

        handler = _genservice_handler(comps.settings, comps.generator)
        queue = getattr(comps.jobs, "queue", comps.jobs)
        return Worker(queue, handler)  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - the API still serves without a worker
        log.warning("could not start the generation worker", exc_info=True)
        return None


def stop_components(comps: Components) -> None:
    """Graceful stop: the worker finishes its current job (bounded wait), then the personalizer
    and the engine close."""
    if comps.worker is not None:
        try:
            comps.worker.stop(timeout=comps.settings.api.shutdown_timeout_s)
        except Exception:  # noqa: BLE001
            log.warning("worker did not stop cleanly", exc_info=True)
    orch = comps.orchestrator
    if orch is not None and hasattr(orch, "close"):
        orch.close()
    comps.engine.dispose()
