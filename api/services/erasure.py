"""Erasure of one user (``DELETE /v1/users/{id}``): idempotent, one transaction for the rows.

Order of operations (docs/PRIVACY.md), so that no interleaving resurrects a user:

1. a durable tombstone (``ErasureRecord``, keyed hash of the id) is committed first;
2. in-process work for the user is dropped (pending personalization, cached candidates);
3. the user's queued jobs are cancelled, running ones asked to stop, and the erasure waits
   until none runs (else 503: the tombstone stays and a retry finishes);
4. files, cache entries and index entries are deleted, then the rows (one transaction);
5. SQLite: checkpoint with ``secure_delete`` so the bytes leave the file and the WAL.

Every writer of per-user state commits its write, *then* checks the tombstone and undoes the
write when the user is erased (:meth:`ErasureGuard.is_erased`). Either the check runs after
the tombstone commit (the writer undoes), or the write was committed before the tombstone and
step 4 — which starts after the tombstone commit — deletes it.

Erased: the user's events, taste profile, segment membership, demo taste, user row, user-level
variants (with their audit rows, their jobs and their image files, unless another variant
still uses the same content-addressed image) and any user vectors in an index. Impressions stay
for aggregate click-through, with their user link set to NULL.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import bindparam, delete, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from api.logging import get_logger
from api.ports import ImageStorePort, JobQueuePort, UserIndex
from data.db import exclude_event_imports
from data.models import (
    CreativeVariant,
    DemoTaste,
    ErasureRecord,
    Event,
    GenerationJob,
    Impression,
    JobStatus,
    Segment,
    SegmentMembership,
    TasteProfileRecord,
    User,
    VariantChange,
)

if TYPE_CHECKING:
    from api.settings import Settings

log = get_logger("erasure")

_SECRET_FILE = Path("secrets") / "user_hash.key"
_TOMBS = ErasureRecord.__table__  # type: ignore[attr-defined]
_LOOKUP = sa_select(_TOMBS.c.user_key).where(_TOMBS.c.user_key == bindparam("k"))


def load_user_secret(home: Path, configured: str | None = None) -> bytes:
    """The secret of the user-id hash: ``configured`` when given, else 32 random bytes kept
    in ``<home>/secrets/user_hash.key`` (created once, mode 0600)."""
    if configured:
        return configured.encode("utf-8")
    path = Path(home) / _SECRET_FILE
    if path.is_file():
        data = path.read_bytes()
        if len(data) >= 16:
            return data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_bytes(32))
    try:
        os.link(tmp, path)  # atomic and never overwrites: two processes agree on one secret
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def user_key(secret: bytes, user_id: str) -> str:
    """HMAC-SHA256 of ``user_id`` under ``secret``: 64 hex characters."""
    return hmac.new(secret, user_id.encode("utf-8"), hashlib.sha256).hexdigest()


class UserErased(RuntimeError):
    """The user was erased: nothing may be written for them any more."""


class ErasureGuard:
    """Tombstones of erased users and the check every per-user writer makes. Thread-safe.

    Erased users are remembered in memory once seen (erasure is permanent, so positives never
    go stale); a negative answer always reads the database (one primary-key lookup), so an
    erasure made by another process is seen at once.
    """

    def __init__(self, engine: Engine, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError(f"secret: expected >= 16 bytes, got {len(secret)}")
        self.engine = engine
        self._secret = secret
        self._erased: set[str] = set()
        self._lock = threading.Lock()

    def key(self, user_id: str) -> str:
        """The keyed hash of ``user_id`` (what tombstones store)."""
        return user_key(self._secret, user_id)

    def ref(self, user_id: str | None) -> str | None:
        """A short keyed hash for logs (16 hex characters; never the id in the clear)."""
        return None if user_id is None else self.key(user_id)[:16]

    def erased_among(self, user_ids: Iterable[str], session: Session | None = None) -> set[str]:
        """The ids among ``user_ids`` that have a tombstone (reads the database for the rest)."""
        by_key = {self.key(u): u for u in set(user_ids)}
        with self._lock:
            found = {u for k, u in by_key.items() if k in self._erased}
        rest = [k for k in by_key if by_key[k] not in found]
        if rest:

            def lookup(s: Session) -> list[str]:
                return list(
                    s.exec(
                        select(ErasureRecord.user_key).where(col(ErasureRecord.user_key).in_(rest))
                    ).all()
                )

            if session is not None:
                hits = lookup(session)
            else:
                with Session(self.engine) as s:
                    hits = lookup(s)
            if hits:
                with self._lock:
                    self._erased.update(hits)
                found |= {by_key[k] for k in hits}
        return found

    def erased_in_batches(self, user_ids: set[str], *, batch: int = 5_000) -> set[str]:
        """:meth:`erased_among` for a bulk import's users: nothing to hash or look up while no
        tombstone exists (one ``EXISTS`` query), else lookups of ``batch`` keys at a time."""
        if not user_ids:
            return set()
        with Session(self.engine) as s:
            if s.exec(select(ErasureRecord.user_key).limit(1)).first() is None:
                return set()
            ids = sorted(user_ids)
            found: set[str] = set()
            for i in range(0, len(ids), batch):
                found |= self.erased_among(ids[i : i + batch], session=s)
        return found

    def known_erased(self, user_id: str) -> bool:
        """Whether ``user_id`` is known here to be erased (memory only, no database)."""
        if not self._erased:  # none known: skip the HMAC (the hero path asks every request)
            return False
        k = self.key(user_id)
        with self._lock:
            return k in self._erased

    def is_erased(self, user_id: str, session: Session | None = None) -> bool:
        """Whether ``user_id`` was erased (see the class docstring for the cost). One Core
        primary-key lookup (no ORM): it runs on every hero request."""
        k = self.key(user_id)
        with self._lock:
            if k in self._erased:
                return True
        if session is not None:
            hit = session.connection().execute(_LOOKUP, {"k": k}).first()
        else:
            with self.engine.connect() as conn:
                hit = conn.execute(_LOOKUP, {"k": k}).first()
        if hit is None:
            return False
        with self._lock:
            self._erased.add(k)
        return True

    def tombstone(self, user_id: str) -> None:
        """Commit the tombstone of ``user_id`` (idempotent): step 1 of an erasure."""
        k = self.key(user_id)
        with Session(self.engine) as s:
            if s.get(ErasureRecord, k) is None:
                s.add(ErasureRecord(user_key=k))
                try:
                    s.commit()
                except IntegrityError:  # a concurrent erasure of the same user
                    s.rollback()
        with self._lock:
            self._erased.add(k)


class JobDeps(Protocol):
    """What discarding a user's jobs needs (the orchestrator and the components have it)."""

    @property
    def engine(self) -> Engine: ...
    @property
    def jobs(self) -> JobQueuePort | None: ...
    @property
    def images(self) -> ImageStorePort | None: ...


class UserCaches(Protocol):
    """In-process per-user state an erasure drops (the storefront's hero service)."""

    def forget_user(self, user_id: str) -> None: ...
    def invalidate(self) -> None: ...


class ResultCachePort(Protocol):
    """genservice's brief hash → image cache, as far as erasure deletes from it."""

    def delete(self, brief_hash: str) -> object: ...


class ErasureDeps(JobDeps, Protocol):
    """What a whole erasure needs (``api.composition.Components`` has it)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def guard(self) -> ErasureGuard: ...
    @property
    def hero(self) -> UserCaches | None: ...
    @property
    def user_indexes(self) -> Sequence[UserIndex]: ...


def guard_for(comps: ErasureDeps) -> ErasureGuard:
    """The app's :class:`ErasureGuard` (built once by the composition root)."""
    return comps.guard


def guard_from_settings(settings: Settings, engine: Engine) -> ErasureGuard:
    """An :class:`ErasureGuard` for a batch job (CLI, demo build) that has no components."""
    cfg = settings.api
    configured = cfg.user_hash_secret.get_secret_value() if cfg.user_hash_secret else None
    return ErasureGuard(engine, load_user_secret(settings.home, configured))


def user_job_ids(session: Session, *, user_id: str) -> list[str]:
    """Ids of the jobs rendering the user's own variants (not shared with other variants)."""
    variants = list(session.exec(select(CreativeVariant).where(CreativeVariant.user_id == user_id)))
    hashes = {v.brief_hash for v in variants}
    ids = {v.job_id for v in variants if v.job_id}
    if hashes:
        shared = set(
            session.exec(
                select(CreativeVariant.brief_hash).where(
                    col(CreativeVariant.brief_hash).in_(list(hashes)),
                    (col(CreativeVariant.user_id).is_(None)) | (CreativeVariant.user_id != user_id),
                )
            ).all()
        )
        own = hashes - shared
        if own:
            ids |= set(
                session.exec(
                    select(GenerationJob.id).where(col(GenerationJob.brief_hash).in_(list(own)))
                ).all()
            )
    return sorted(ids)


def stop_user_jobs(comps: JobDeps, session: Session, *, user_id: str, wait_s: float) -> bool:
    """Cancel the user's queued jobs and ask running ones to stop; True once none of them is
    queued or running (waits up to ``wait_s`` seconds; a job a retry requeued is cancelled
    again)."""
    if comps.jobs is None:
        return True
    deadline = time.monotonic() + wait_s
    while True:
        ids = user_job_ids(session, user_id=user_id)
        live: list[str] = []
        if ids:
            live = list(
                session.exec(
                    select(GenerationJob.id).where(
                        col(GenerationJob.id).in_(ids),
                        col(GenerationJob.status).in_([JobStatus.queued, JobStatus.running]),
                    )
                ).all()
            )
        session.rollback()  # end the read: the queue writes through its own connection
        if not live:
            return True
        for job_id in live:
            comps.jobs.cancel(job_id)
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def discard_job(comps: JobDeps, *, job_id: str, brief_hash: str, wait_s: float) -> bool:
    """Undo a job submitted for a user erased meanwhile: unless another variant still uses
    ``brief_hash``, cancel it, wait until it stops, then delete its row and its image. True
    when nothing of it is left (or it is shared)."""
    if comps.jobs is None:
        return True
    with Session(comps.engine) as s:
        if s.exec(
            select(CreativeVariant.id).where(CreativeVariant.brief_hash == brief_hash)
        ).first():
            return True
    deadline = time.monotonic() + wait_s
    while True:
        job = comps.jobs.cancel(job_id)
        if job is None or job.status not in (JobStatus.queued, JobStatus.running):
            break
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    if job is not None:
        if job.result_key and comps.images is not None:
            with Session(comps.engine) as s:
                used = s.exec(
                    select(CreativeVariant.id).where(CreativeVariant.image_key == job.result_key)
                ).first()
            if used is None:
                comps.images.delete(job.result_key)
        with Session(comps.engine) as s:
            s.execute(delete(GenerationJob).where(col(GenerationJob.id) == job_id))
            s.commit()
    return True


def sweep_erased(comps: ErasureDeps, session: Session) -> ErasureOutput:
    """Erase again every user whose tombstone exists but who still has rows (a profile build
    that read the user list before an erasure, or a writer that crashed between its commit and
    its undo). Reads the distinct user ids of the per-user tables, so it is a batch job
    (``tailorshot erasure-sweep``), not a request path. Returns the summed counts."""
    guard = guard_for(comps)
    ids: set[str] = set()
    for column in (Event.user_id, TasteProfileRecord.user_id, SegmentMembership.user_id,
                   DemoTaste.user_id, User.id, CreativeVariant.user_id,
                   Impression.user_id):  # fmt: skip
        ids |= {u for u in session.exec(select(column).distinct()).all() if u}
    session.rollback()
    totals: dict[str, int] = {}
    for uid in sorted(guard.erased_among(ids)):
        out = erase_everywhere(comps, session, user_id=uid)
        for name, value in out.counts().items():
            totals[name] = totals.get(name, 0) + value
    total = ErasureOutput(user_id="*", errors=[], **totals)
    return total


def erase_everywhere(
    comps: ErasureDeps,
    session: Session,
    *,
    user_id: str,
    result_cache: ResultCachePort | None = None,
) -> ErasureOutput:
    """The whole erasure of ``user_id`` in the documented order (module docstring). Raises
    :class:`ErasureIncomplete` when a running job did not stop in time or a file could not be
    deleted; the tombstone stays, so a retry finishes the work."""
    if not user_id or len(user_id) > 128:
        raise ValueError(f"user_id: expected 1..128 characters, got {len(user_id)}")
    from data.db import checkpoint

    guard = guard_for(comps)
    guard.tombstone(user_id)  # 1
    if comps.hero is not None:  # 2
        comps.hero.forget_user(user_id)
    wait_s = float(comps.settings.api.erasure_job_wait_s)
    for attempt in range(5):
        # 3 again on every attempt: a personalization that passed its tombstone check just
        # before step 1 may submit a job after step 3 looked; step 4 never deletes a live job.
        if not stop_user_jobs(comps, session, user_id=user_id, wait_s=wait_s):  # 3
            raise ErasureIncomplete(user_id, ["a job of the user is still running"])
        try:  # 4
            out = erase_user(
                session,
                user_id=user_id,
                images=comps.images,
                result_cache=result_cache,
                user_indexes=comps.user_indexes,
            )
            break
        except (IntegrityError, JobsStillLive) as exc:
            # IntegrityError: an event batch was inserting for the user (it purges itself on
            # its tombstone check); its uncommitted rows held the user row. JobsStillLive: a
            # job of the user started after step 3. Retry once they are done.
            session.rollback()
            if attempt == 4:
                raise ErasureIncomplete(user_id, ["concurrent writes; retry"]) from exc
            time.sleep(0.05 * (attempt + 1))
    try:
        checkpoint(comps.engine)  # 5
    except Exception as exc:  # a busy reader delays the checkpoint; the next one catches up
        log.warning("checkpoint after erasure failed", extra={"error": type(exc).__name__})
    if comps.hero is not None:
        comps.hero.invalidate()
    log.info("erasure done", extra={"user": guard.ref(user_id), "erased": out.total})
    return out


@dataclass(frozen=True)
class ErasureOutput:
    """What was erased (counts); all zeros on a second call."""

    user_id: str
    events: int = 0
    profiles: int = 0
    memberships: int = 0
    variants: int = 0
    jobs: int = 0
    images: int = 0
    index_entries: int = 0
    impressions_unlinked: int = 0
    user_rows: int = 0
    errors: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """The counts by name (every field but ``user_id`` and ``errors``)."""
        return {k: v for k, v in vars(self).items() if k not in ("user_id", "errors")}

    @property
    def total(self) -> int:
        return sum(self.counts().values())


class ErasureIncomplete(RuntimeError):
    """Some files or index entries could not be erased; the rows were kept for a retry."""

    def __init__(self, user_id: str, errors: list[str]) -> None:
        super().__init__(f"erasure of a user incomplete ({len(errors)} errors); retry")
        self.user_id = user_id
        self.errors = errors


class JobsStillLive(ErasureIncomplete):
    """A job of the user is queued or running: its row is kept (a worker completing a job
    whose row was deleted would leave its image behind); stop the job, then retry."""


def rowcount(res: Any) -> int:
    """Rows a Core statement touched (0 when the driver does not say)."""
    return int(getattr(res, "rowcount", 0) or 0)


def erase_user(
    session: Session,
    *,
    user_id: str,
    images: ImageStorePort | None = None,
    result_cache: ResultCachePort | None = None,
    user_indexes: Sequence[UserIndex] | None = None,
) -> ErasureOutput:
    """Erase ``user_id`` (see the module docstring); commits. ``images`` is an image store
    with ``delete(key)``; ``result_cache`` has ``delete(brief_hash)`` (genservice's brief →
    image cache); each of ``user_indexes`` has ``remove_user(user_id) -> int``."""
    if not user_id or len(user_id) > 128:
        raise ValueError(f"user_id: expected 1..128 characters, got {len(user_id)}")
    variants = list(session.exec(select(CreativeVariant).where(CreativeVariant.user_id == user_id)))
    variant_ids = [v.id for v in variants if v.id is not None]
    keys = {v.image_key for v in variants if v.image_key}
    hashes = {v.brief_hash for v in variants}
    job_ids = {v.job_id for v in variants if v.job_id}
    # Jobs rendered the user's brief: their result keys are the user's images too.
    jobs = list(
        session.exec(
            select(GenerationJob).where(
                col(GenerationJob.id).in_(list(job_ids))
                | col(GenerationJob.brief_hash).in_(list(hashes))
            )
        )
    ) if (job_ids or hashes) else []  # fmt: skip
    keys |= {j.result_key for j in jobs if j.result_key}
    # Keep what other (segment or other users') variants still use.
    shared_hashes = set(
        session.exec(
            select(CreativeVariant.brief_hash).where(
                col(CreativeVariant.brief_hash).in_(list(hashes)),
                (col(CreativeVariant.user_id).is_(None)) | (CreativeVariant.user_id != user_id),
            )
        ).all()
    ) if hashes else set()  # fmt: skip
    shared_keys = set(
        session.exec(
            select(CreativeVariant.image_key).where(
                col(CreativeVariant.image_key).in_(list(keys)),
                (col(CreativeVariant.user_id).is_(None)) | (CreativeVariant.user_id != user_id),
            )
        ).all()
    ) if keys else set()  # fmt: skip
    erasable_jobs = [j.id for j in jobs if j.brief_hash not in shared_hashes]
    live = (JobStatus.queued, JobStatus.running)
    if any(j.status in live for j in jobs if j.id in erasable_jobs):
        raise JobsStillLive(user_id, ["a job of the user is queued or running"])
    erasable_keys = sorted(keys - shared_keys)

    # Files and index entries first, rows last: if anything fails midway the rows still
    # point at what is left, so a retry finds and erases it (deleting twice is harmless).
    errors: list[str] = []
    n_images = 0
    if images is not None:
        for key in erasable_keys:
            try:
                if images.delete(key):
                    n_images += 1
            except Exception as exc:
                errors.append(f"image {key[:12]}: {type(exc).__name__}")
    if result_cache is not None:
        for h in sorted(hashes - shared_hashes):
            try:
                result_cache.delete(h)
            except Exception as exc:
                errors.append(f"result cache: {type(exc).__name__}")
    n_index = 0
    for index in user_indexes or []:
        try:
            n_index += int(index.remove_user(user_id) or 0)
        except Exception as exc:
            errors.append(f"index: {type(exc).__name__}")
    if errors:
        # Nothing is deleted from the database: a retry finds the same rows and files.
        raise ErasureIncomplete(user_id, errors)
    # PostgreSQL: bulk event imports' open chunks commit first, new ones wait (no foreign key
    # on events there; data.db.exclude_event_imports).
    exclude_event_imports(session)
    membership = session.get(SegmentMembership, user_id)
    if membership is not None:
        seg = session.get(Segment, membership.segment_id)
        if seg is not None and seg.size > 0:
            seg.size -= 1
            session.add(seg)
    counts: dict[str, int] = {}
    counts["events"] = rowcount(session.execute(delete(Event).where(col(Event.user_id) == user_id)))
    counts["profiles"] = rowcount(
        session.execute(
            delete(TasteProfileRecord).where(col(TasteProfileRecord.user_id) == user_id)
        )
    )
    counts["memberships"] = rowcount(
        session.execute(delete(SegmentMembership).where(col(SegmentMembership.user_id) == user_id))
    )
    session.execute(delete(DemoTaste).where(col(DemoTaste.user_id) == user_id))
    if variant_ids:
        session.execute(delete(VariantChange).where(col(VariantChange.variant_id).in_(variant_ids)))
        counts["variants"] = rowcount(
            session.execute(delete(CreativeVariant).where(col(CreativeVariant.id).in_(variant_ids)))
        )
    if erasable_jobs:
        # Fenced: a job requeued and claimed since the check above keeps its row (and the
        # whole transaction rolls back) until it has stopped.
        counts["jobs"] = rowcount(
            session.execute(
                delete(GenerationJob).where(
                    col(GenerationJob.id).in_(erasable_jobs), col(GenerationJob.status).not_in(live)
                )
            )
        )
        if counts["jobs"] != len(erasable_jobs):
            session.rollback()
            raise JobsStillLive(user_id, ["a job of the user started meanwhile"])
    counts["impressions_unlinked"] = rowcount(
        session.execute(
            update(Impression).where(col(Impression.user_id) == user_id).values(user_id=None)
        )
    )
    counts["user_rows"] = rowcount(session.execute(delete(User).where(col(User.id) == user_id)))
    session.commit()

    out = ErasureOutput(
        user_id=user_id, images=n_images, index_entries=n_index, errors=errors, **counts
    )
    log.info("user erased", extra={"erased": out.total, "errors": len(errors)})
    return out
