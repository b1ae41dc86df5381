"""The storefront decision: which hero image a user sees, answered from what is ready.

Candidates (at most ``api.max_candidates``), for the requested placement:

1. ``personalized`` — the newest user-level variant of this user whose image exists;
2. ``segment`` — approved variants of the user's segment;
3. ``generic`` — approved variants of no segment and no user.

The exploration policy chooses among them (the greedy choice follows the order above through
per-source priors until logged clicks say otherwise); the impression is logged with the
propensity of the choice and the whole distribution. When the user has no personalized hero
yet, a personalized generation is enqueued *in the background* (bounded queue, per-user rate
limit, deduplicated by brief hash). Nothing here waits on a diffusion run or on the generator:
a busy or broken generator only means no new personalized images.

Two paths with the same choice: the server's memory hot path (:meth:`HeroService.start`,
:meth:`HeroService.decide_now`; candidates from ``hero_snapshot``, impressions buffered by
``impressions``: no SQL per request) when ``api.candidates_ttl_s > 0``, and the per-request
SQL path :meth:`HeroService.decide` (committed impression; the CLI, and ``candidates_ttl_s = 0``
for strict read-your-writes).
"""

from __future__ import annotations

import gc
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.logging import get_logger
from api.metrics import ApiMetrics
from api.services.erasure import ErasureGuard
from api.services.hero_snapshot import (
    MEMBERS_STAMP_LEN,
    Candidate,
    CandidateSnapshot,
    ClickStats,
    load_snapshot,
    state_version,
)
from api.services.hero_sql import load_candidates, sync_variant_images, variant_image_keys
from api.services.impressions import ImpressionBuffer, candidates_json, new_impression_id
from api.services.orchestration import PersonalizeOutput
from api.services.policy import ArmStats, HeroPolicy, make_hero_policy
from api.settings import ApiConfig
from data.models import Impression, new_id, utcnow
from recsys.policies import hash_uniform

__all__ = [
    "HeroDecision",
    "HeroService",
    "NoCreative",
    "load_candidates",
    "sync_variant_images",
    "variant_image_keys",
]

_IMPRESSIONS = Impression.__table__  # type: ignore[attr-defined]

#: Seconds between polls of the state stamp (changes by any process are served within this
#: plus one reload).
POLL_S = 0.5
#: Seconds between reads of the membership part of the stamp (a full scan; rebuilds and
#: erasures also change the cheap part, so they show within ``POLL_S``).
MEMBERSHIP_POLL_S = 5.0
#: A snapshot is reloaded at least this often even when the stamp did not change (a safety
#: net; ``api.candidates_ttl_s`` when larger). A reload reads every membership and personal
#: variant, so it is not repeated every few seconds: changes show through the stamp.
SNAPSHOT_MAX_AGE_S = 60.0
#: The impression buffer: flushed every ``FLUSH_S`` seconds or at ``FLUSH_ROWS`` rows; beyond
#: ``BUFFER_CAPACITY`` queued rows requests write their impression synchronously.
FLUSH_S = 0.05
FLUSH_ROWS = 500
BUFFER_CAPACITY = 20_000

#: Candidate sets whose arms are kept (cleared when full; rebuilt on the next decision).
MAX_PLANS = 50_000

log = get_logger("hero")

#: A distribution as logged: ``(variant id, p)`` pairs, and the same as the JSON column's text
#: (encoded once per candidate set: a buffered row then holds only atomic values, which the
#: garbage collector does not track, so rows waiting in the buffer cost it nothing).
_Logged = tuple[list[tuple[str, float]], str]


def freeze_heap() -> None:
    """Collect the young generations, then move every object alive to the collector's
    permanent generation (``gc.freeze``): called after start-up and after each snapshot load.

    Why: a full (generation 2) collection traverses every tracked object; with the ~170k
    objects a server holds after start-up it paused the event loop for 100-400 ms (wall; one
    was 109 ms of CPU) 4 times in a 10 s ``wrk`` run of the hero path at 16 connections
    (``bench/bench_hero.py --wrk``, load ~9): all 16 requests in flight waited. Frozen
    objects are never traversed again, so a full collection visits only what is new (the
    next snapshot is frozen in turn). Frozen objects are still freed by reference counting;
    cyclic garbage frozen with them (the young generations are collected first, so only
    older garbage) waits for :meth:`HeroService.close`, which unfreezes."""
    gc.collect(1)
    gc.freeze()


class Personalizer(Protocol):
    """Builds a user's brief and submits its job (``orchestration.Orchestrator``)."""

    def personalize(self, *, user_id: str, placement: str) -> PersonalizeOutput | None: ...


@dataclass(frozen=True)
class HeroDecision:
    """The decision as logged: the chosen candidate, the impression and its propensity."""

    impression_id: str
    variant_id: int
    product_id: int
    image_key: str
    source: str
    policy: str
    propensity: float
    candidates: list[tuple[str, float]]


class NoCreative(LookupError):
    """No servable variant exists for this placement yet."""


class HeroService:
    """Decides and logs hero impressions; owns the background personalizer.

    ``personalizer`` None: no personalized generations (no job queue in this deployment)."""

    def __init__(
        self,
        config: ApiConfig,
        *,
        metrics: ApiMetrics,
        guard: ErasureGuard,
        personalizer: Personalizer | None,
        policy: HeroPolicy | None = None,
        engine: Engine | None = None,
    ) -> None:
        cfg = config
        self.cfg = cfg
        self.metrics = metrics
        self.guard = guard
        self.personalizer = personalizer
        self.policy = policy or make_hero_policy(cfg)
        self.stats = ClickStats(cfg.stats_ttl_s)
        self._counter = itertools.count()
        self._last_enqueue: dict[str, float] = {}
        self._enqueue_lock = threading.Lock()
        self._pending = 0
        self._executor: ThreadPoolExecutor | None = None
        self._candidates: dict[tuple[str, str], tuple[float, list[Candidate]]] = {}
        self._candidates_lock = threading.Lock()
        # The memory hot path (started by :meth:`start`; see :meth:`decide_now`).
        self.engine = engine if engine is not None else guard.engine
        self.impressions: ImpressionBuffer | None = None
        self._snapshot: CandidateSnapshot | None = None
        self._loaded_at = -1e18
        self._reload_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self._closed = False
        self._load_pending = False
        self._children: dict[tuple[str, str], Any] = {}
        # Arms and logged distribution per candidate set (see :meth:`_plan`).
        self._plans: dict[tuple[int, ...], tuple[list[ArmStats], _Logged | None]] = {}
        self._plans_stats: object = None
        # The hero route's response bytes around the impression id (``storefront.hero_body``).
        self.body_parts: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}

    # -- decision ---------------------------------------------------------------------

    def _draw(self, user_id: str, placement: str) -> float:
        """The uniform draw of the next decision (both paths: the same seeded traffic gives
        the same choices); ``next`` on ``itertools.count`` is atomic under the GIL."""
        return hash_uniform(self.cfg.seed, next(self._counter), user_id, placement)

    def _arms(self, session: Session, candidates: list[Candidate]) -> list[ArmStats]:
        return self._arms_from(self.stats.get(session), candidates)

    def _arms_from(
        self, stats: dict[int, tuple[int, int]], candidates: list[Candidate]
    ) -> list[ArmStats]:
        k = self.cfg.prior_strength
        arms = []
        for c in candidates:
            views, clicks = stats.get(c.variant_id, (0, 0))
            prior = float(self.cfg.prior_ctr.get(c.source, 0.02))
            prior = min(max(prior, 1e-4), 1 - 1e-4)
            arms.append(ArmStats(alpha=clicks + prior * k, beta=views - clicks + (1 - prior) * k))
        return arms

    def decide(self, session: Session, *, user_id: str, placement: str) -> HeroDecision:
        """Choose, log the impression (committed), and return what was shown.

        Raises :class:`NoCreative` when nothing is servable for ``placement``.
        """
        guard = self.guard
        erased = guard.known_erased(user_id)  # memory only: the hot path stays cheap
        candidates = self.candidates(session, user_id=user_id, placement=placement)
        if erased:
            candidates = [c for c in candidates if c.source != "personalized"]
        m = self.metrics
        if not erased:
            self.maybe_personalize(user_id=user_id, placement=placement, candidates=candidates)
        if not candidates:
            raise NoCreative(f"no approved creative for placement {placement!r} yet")
        u = self._draw(user_id, placement)
        decision = self.policy.decide(self._arms(session, candidates), u)
        chosen = candidates[decision.index]
        dist = [
            (str(c.variant_id), round(float(p), 10))
            for c, p in zip(candidates, decision.distribution, strict=True)
        ]
        impression_id = new_id()
        # A Core insert: the ORM unit of work costs more than the rest of the decision.
        session.execute(
            _IMPRESSIONS.insert().values(
                id=impression_id,
                user_id=None if erased else user_id,
                placement=placement,
                variant_id=chosen.variant_id,
                product_id=chosen.product_id,
                arm=chosen.source,
                policy=self.policy.name,
                propensity=decision.propensity,
                candidates=[[k, p] for k, p in dist],
                position=0,
                ts=utcnow(),
            )
        )
        session.commit()
        if not erased and guard.is_erased(user_id, session):
            # Erased while deciding: the impression keeps its aggregate value, not the user.
            session.execute(
                update(_IMPRESSIONS).where(_IMPRESSIONS.c.id == impression_id).values(user_id=None)
            )
            session.commit()
        m.impressions.labels(self.policy.name).inc()
        m.hero_source.labels(chosen.source).inc()
        return HeroDecision(
            impression_id=impression_id,
            variant_id=chosen.variant_id,
            product_id=chosen.product_id,
            image_key=chosen.image_key,
            source=chosen.source,
            policy=self.policy.name,
            propensity=decision.propensity,
            candidates=dist,
        )

    # -- the memory hot path (server) ---------------------------------------------------

    @property
    def memory_path(self) -> bool:
        """Whether the memory hot path is configured: ``candidates_ttl_s > 0`` (0 keeps the
        per-request SQL path with a committed impression each: strict read-your-writes)."""
        return self.cfg.candidates_ttl_s > 0 and not self._closed

    def ready(self) -> bool:
        """Whether :meth:`decide_now` can answer (started, not closed)."""
        return self._snapshot is not None and not self._closed

    def start(self) -> None:
        """Load the candidates snapshot and click statistics, start the refresher thread and
        the impression buffer (idempotent; reads the database: call it off the event loop)."""
        with self._start_lock:
            if self._snapshot is not None or self._closed:
                return
            buffer = ImpressionBuffer(
                self.engine,
                user_key=self.guard.key,
                interval_s=FLUSH_S,
                max_rows=FLUSH_ROWS,
                capacity=BUFFER_CAPACITY,
            )
            with self.engine.connect() as conn:
                self.stats.reload(conn)
            buffer.start()
            self.impressions = buffer
            self._load_pending = True
            self._reload()  # last: a snapshot makes ready() true
            self._stop.clear()
            self._refresher = threading.Thread(
                target=self._refresh_loop, name="hero-refresh", daemon=True
            )
            self._refresher.start()

    def _reload(self) -> None:
        """Read a new snapshot now (serialised with the refresher), then freeze the heap."""
        with self._reload_lock:
            now = time.monotonic()
            with self.engine.connect() as conn:
                snapshot = load_snapshot(conn)
            self._snapshot = snapshot
            self._loaded_at = now
            freeze_heap()

    def _refresh_loop(self) -> None:
        """Every ``POLL_S``: reload the snapshot when the state stamp changed (or it is older
        than ``SNAPSHOT_MAX_AGE_S``), and the click statistics every ``stats_ttl_s``."""
        members_at = time.monotonic()  # the snapshot's load read the membership stamp
        while not self._stop.wait(POLL_S):
            try:
                snap = self._snapshot
                now = time.monotonic()
                full = snap is None or now - members_at >= MEMBERSHIP_POLL_S
                cached = None if full else snap.version[-MEMBERS_STAMP_LEN:]  # type: ignore[union-attr]
                with self.engine.connect() as conn:
                    version = state_version(conn, cached)
                    if self.stats.due():
                        self.stats.reload(conn)
                if full:
                    members_at = now
                age = time.monotonic() - self._loaded_at
                max_age = max(self.cfg.candidates_ttl_s, SNAPSHOT_MAX_AGE_S)
                if snap is None or snap.version != version or age > max_age:
                    self._reload()
                    self.metrics.hero_cache.labels("reload").inc()
            except Exception:  # the database may be restarting: serve what we have
                log.warning("hero snapshot refresh failed", exc_info=True)

    def decide_now(
        self, *, user_id: str, placement: str
    ) -> tuple[HeroDecision, dict[str, object] | None]:
        """:meth:`decide` from memory: candidates from the snapshot, statistics from the last
        refresh, the impression queued in the buffer. Returns the decision and, when the
        buffer is full, the impression row the caller must write synchronously
        (``self.impressions.write([row])``, off the event loop). Needs :meth:`start`.

        Raises :class:`NoCreative` when nothing is servable for ``placement``."""
        snap, buffer = self._snapshot, self.impressions
        assert snap is not None and buffer is not None, "start() first"
        erased = self.guard.known_erased(user_id)
        candidates = snap.candidates(user_id, placement, self.cfg.max_candidates)
        if erased:
            candidates = [c for c in candidates if c.source != "personalized"]
        else:
            self.maybe_personalize(user_id=user_id, placement=placement, candidates=candidates)
        if not candidates:
            raise NoCreative(f"no approved creative for placement {placement!r} yet")
        # The request that loaded the snapshot counts as the miss (metrics as the old cache).
        first, self._load_pending = self._load_pending, False
        self._counter_of("cache", "miss" if first else "hit").inc()
        arms, logged = self._plan(candidates)
        decision = self.policy.decide(arms, self._draw(user_id, placement))
        if logged is None:
            logged = self._log_plan(candidates, decision.distribution)
        dist = logged[0]
        chosen = candidates[decision.index]
        row: dict[str, object] = {
            "id": new_impression_id(),
            "user_id": None if erased else user_id,
            "placement": placement,
            "variant_id": chosen.variant_id,
            "product_id": chosen.product_id,
            "arm": chosen.source,
            "policy": self.policy.name,
            "propensity": decision.propensity,
            "candidates": logged[1],  # JSON text, shared by the rows of these candidates
            "position": 0,
            "ts": utcnow(),
        }
        overflow = None if buffer.offer(row) else row
        self._counter_of("impressions", self.policy.name).inc()
        self._counter_of("source", chosen.source).inc()
        out = HeroDecision(
            impression_id=str(row["id"]),
            variant_id=chosen.variant_id,
            product_id=chosen.product_id,
            image_key=chosen.image_key,
            source=chosen.source,
            policy=self.policy.name,
            propensity=decision.propensity,
            candidates=dist,
        )
        return out, overflow

    def _plan(self, candidates: list[Candidate]) -> tuple[list[ArmStats], _Logged | None]:
        """The arms of ``candidates`` and their logged distribution (None until the first
        decision on them), kept per candidate set while the click statistics stay the same
        (they change at a reload), so a decision does no per-arm arithmetic."""
        stats = self.stats.current()
        if stats is not self._plans_stats or len(self._plans) >= MAX_PLANS:
            self._plans, self._plans_stats = {}, stats
        key = tuple(c.variant_id for c in candidates)  # a variant id fixes its source
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = (self._arms_from(stats, candidates), None)
        return plan

    def _log_plan(self, candidates: list[Candidate], distribution: Any) -> _Logged:
        """``(variant id, p)`` pairs of a distribution as logged, kept with the plan."""
        dist = [
            (str(c.variant_id), round(float(p), 10))
            for c, p in zip(candidates, distribution, strict=True)
        ]
        logged: _Logged = (dist, candidates_json(self.engine, [[k, p] for k, p in dist]))
        key = tuple(c.variant_id for c in candidates)
        plan = self._plans.get(key)
        if plan is not None:
            self._plans[key] = (plan[0], logged)
        return logged

    def _counter_of(self, family: str, label: str) -> Any:
        """The labelled metric child, looked up once (``labels()`` costs more than ``inc()``)."""
        child = self._children.get((family, label))
        if child is None:
            metric = {
                "cache": self.metrics.hero_cache,
                "impressions": self.metrics.impressions,
                "source": self.metrics.hero_source,
            }[family]
            child = self._children[(family, label)] = metric.labels(label)
        return child

    def flush_impressions(self) -> int:
        """Write the buffered impressions now (blocking); 0 without a buffer."""
        return self.impressions.flush() if self.impressions is not None else 0

    def candidates(self, session: Session, *, user_id: str, placement: str) -> list[Candidate]:
        """:func:`load_candidates`, cached per (user, placement) for ``candidates_ttl_s``
        seconds (the hot path then touches the database only to log the impression)."""
        ttl = self.cfg.candidates_ttl_s
        key = (user_id, placement)
        now = time.monotonic()
        if ttl > 0:
            hit = self._candidates.get(key)
            if hit is not None and hit[0] > now:
                self.metrics.hero_cache.labels("hit").inc()
                return hit[1]
        self.metrics.hero_cache.labels("miss").inc()
        found = load_candidates(
            session, user_id=user_id, placement=placement, limit=self.cfg.max_candidates
        )
        if ttl > 0:
            with self._candidates_lock:
                if len(self._candidates) >= 100_000:
                    self._candidates.clear()  # bounded memory; entries are cheap to rebuild
                self._candidates[key] = (now + ttl, found)
        return found

    def forget_user(self, user_id: str) -> None:
        """Drop what this process holds for ``user_id`` (erasure step 2): cached candidates
        and the enqueue rate-limit entries. Queued personalization of the user is skipped by
        the tombstone check it makes before any work."""
        with self._candidates_lock:
            for key in [k for k in self._candidates if k[0] == user_id]:
                del self._candidates[key]
        with self._enqueue_lock:
            for name in [k for k in self._last_enqueue if k.split("|", 1)[0] == user_id]:
                del self._last_enqueue[name]
        if self._snapshot is not None:
            self._snapshot.forget_user(user_id)
        if self.impressions is not None:
            self.impressions.forget_user(user_id)

    def invalidate(self) -> None:
        """Forget cached candidates and click statistics (after approvals, retirements,
        edits and erasures, so they show at once on this replica)."""
        with self._candidates_lock:
            self._candidates.clear()
        self.stats.invalidate()
        if self.ready():
            self._reload()  # this replica at once; others at their next stamp poll

    # -- background personalization ----------------------------------------------------

    def maybe_personalize(
        self, *, user_id: str, placement: str, candidates: list[Candidate]
    ) -> bool:
        """Enqueue a personalized generation for ``user_id`` in the background when the user
        has none ready, at most once per ``personalize_interval_s``; never blocks."""
        if not self.cfg.personalize or self.personalizer is None:
            return False
        if candidates and candidates[0].source == "personalized":
            return False
        now = time.monotonic()
        with self._enqueue_lock:
            last = self._last_enqueue.get(f"{user_id}|{placement}")
            if last is not None and now - last < self.cfg.personalize_interval_s:
                self.metrics.enqueued.labels("rate_limited").inc()
                return False
            if self._pending >= self.cfg.personalize_queue:
                self.metrics.enqueued.labels("dropped").inc()
                return False
            if len(self._last_enqueue) > 100_000:
                self._last_enqueue.clear()
            self._last_enqueue[f"{user_id}|{placement}"] = now
            self._pending += 1
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="personalize")
            executor = self._executor
        executor.submit(self._personalize, user_id, placement)
        return True

    def _personalize(self, user_id: str, placement: str) -> None:
        try:
            assert self.personalizer is not None  # maybe_personalize checked it
            out = self.personalizer.personalize(user_id=user_id, placement=placement)
            outcome = (
                "skipped" if out is None else ("deduplicated" if out.deduplicated else "enqueued")
            )
            self.metrics.enqueued.labels(outcome).inc()
        except Exception:
            self.metrics.enqueued.labels("error").inc()
            log.warning(
                "personalized enqueue failed",
                exc_info=True,
                extra={"user": self.guard.ref(user_id)},
            )
        finally:
            with self._enqueue_lock:
                self._pending -= 1

    def drain(self, timeout: float = 10.0) -> None:
        """Wait for queued background enqueues (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._enqueue_lock:
                if self._pending == 0:
                    return
            time.sleep(0.01)

    def close(self) -> None:
        """Stop accepting background work; queued enqueues finish."""
        with self._enqueue_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        with self._start_lock:
            self._closed = True
            refresher, self._refresher = self._refresher, None
        self._stop.set()
        if refresher is not None:
            refresher.join(5.0)
        if self.impressions is not None:
            try:
                self.impressions.close()  # graceful shutdown: every buffered impression
            except Exception:
                log.error("buffered impressions could not be written at shutdown", exc_info=True)
        gc.unfreeze()  # what freeze_heap kept is collectable again
