"""The storefront's candidates held in memory, so a hero request runs no SQL.

A :class:`CandidateSnapshot` holds every servable variant: the approved shared variants per
``(segment id or None, placement)``, each user's segment, and each user's newest personalized
variant with an image per placement. :func:`load_snapshot` builds it with three queries;
:func:`state_version` is a small aggregate stamp of the tables it depends on (variants, the
jobs that give personalized variants their images, segments, memberships). A refresher
thread reads the stamp every ``poll_s`` (0.5 s) and reloads when it changed, so a change made
by any process (the CLI, another replica or worker process) is served within about
``poll_s`` + one reload; the replica that made the change reloads at once (``invalidate``).

The selection is the one of :func:`api.services.hero.load_candidates` (the per-request SQL
path, kept for ``candidates_ttl_s = 0``): the newest personalized image, approved segment
variants (leaving room for one generic), then generic variants, by id.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, case, func
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from data.models import (
    Click,
    CreativeVariant,
    ErasureRecord,
    GenerationJob,
    Impression,
    JobStatus,
    Segment,
    SegmentMembership,
    VariantStatus,
)

_VARIANTS = CreativeVariant.__table__  # type: ignore[attr-defined]
_JOBS = GenerationJob.__table__  # type: ignore[attr-defined]

#: How many of a user's newest variants per placement are looked at for a ready image (the
#: SQL path's ``limit(4)``: older ones are stale taste).
PERSONAL_LOOKBACK = 4


@dataclass(frozen=True)
class Candidate:
    """A servable variant."""

    variant_id: int
    product_id: int
    image_key: str
    source: str


@dataclass
class CandidateSnapshot:
    """Servable variants in memory (see the module docstring). Reads are plain dict lookups;
    :meth:`forget_user` is the only mutation (erasure)."""

    version: tuple[Any, ...] = ()
    shared: dict[tuple[int | None, str], list[Candidate]] = field(default_factory=dict)
    segment_of: dict[str, int] = field(default_factory=dict)
    personal: dict[tuple[str, str], Candidate] = field(default_factory=dict)

    def candidates(self, user_id: str, placement: str, limit: int) -> list[Candidate]:
        """At most ``limit`` candidates for ``user_id`` at ``placement``."""
        out: list[Candidate] = []
        mine = self.personal.get((user_id, placement))
        if mine is not None:
            out.append(mine)
        segment_id = self.segment_of.get(user_id)
        if segment_id is not None:
            # Leave room for one generic candidate, so its click-through keeps being measured.
            out += self.shared.get((segment_id, placement), [])[: max(1, limit - len(out) - 1)]
        out += self.shared.get((None, placement), [])[: max(1, limit - len(out))]
        return out[:limit]

    def forget_user(self, user_id: str) -> None:
        """Drop what is held for ``user_id`` (erasure)."""
        self.segment_of.pop(user_id, None)
        for key in [k for k in self.personal if k[0] == user_id]:
            self.personal.pop(key, None)


def membership_stamp(conn: Connection) -> tuple[Any, ...]:
    """Count and segment-id sum of every membership: a full scan (67 ms of CPU at 1M
    memberships on SQLite), so the refresher reads it every ``MEMBERSHIP_POLL_S`` only."""
    return tuple(
        conn.execute(
            select(func.count(), func.sum(SegmentMembership.segment_id)).select_from(
                SegmentMembership
            )
        ).one()
    )


def state_version(conn: Connection, members: tuple[Any, ...] | None = None) -> tuple[Any, ...]:
    """The stamp of what the snapshot depends on: counts, largest ids, latest update times and
    id sums of approved variants, succeeded jobs, segments, erasure tombstones, and (last,
    :func:`membership_stamp`, or ``members`` when given: the refresher's cached value) of
    memberships. Any create, approve, retire, edit, delete, finished job, segment rebuild
    (every rebuild stamps its segments' ``updated_at``) or erasure (a tombstone) changes it
    without the membership scan; a membership written any other way shows at the next scan."""
    v = _VARIANTS.c
    variants = conn.execute(
        sa_select(
            func.count(),
            func.max(v.id),
            func.max(v.updated_at),
            func.sum(case((v.status == VariantStatus.approved, v.id), else_=0)),
            func.count(v.image_key),
        )
    ).one()
    jobs = conn.execute(
        select(func.count(), func.max(GenerationJob.finished_at)).where(
            GenerationJob.status == JobStatus.succeeded
        )
    ).one()
    segments = conn.execute(
        select(
            func.max(Segment.updated_at),
            func.count(),
            select(func.count()).select_from(ErasureRecord).scalar_subquery(),
        ).select_from(Segment)
    ).one()
    members = members if members is not None else membership_stamp(conn)
    return (*variants, *jobs, *segments, *members)


#: How many trailing items of :func:`state_version` are the membership stamp.
MEMBERS_STAMP_LEN = 2


def load_snapshot(conn: Connection) -> CandidateSnapshot:
    """Every servable candidate (three queries), stamped with :func:`state_version` read
    first, so a change racing the load is picked up by the next poll."""
    version = state_version(conn)
    v = _VARIANTS.c
    shared: dict[tuple[int | None, str], list[Candidate]] = defaultdict(list)
    rows = conn.execute(
        sa_select(v.id, v.segment_id, v.placement, v.product_id, v.image_key)
        .where(v.user_id.is_(None), v.status == VariantStatus.approved, v.image_key.is_not(None))
        .order_by(v.id)
    )
    for vid, segment_id, placement, product_id, image_key in rows:
        if vid and image_key:
            source = "generic" if segment_id is None else "segment"
            shared[(segment_id, placement)].append(
                Candidate(int(vid), int(product_id), str(image_key), source)
            )
    segment_of = {
        str(u): int(s)
        for u, s in conn.execute(select(SegmentMembership.user_id, SegmentMembership.segment_id))
    }
    personal: dict[tuple[str, str], Candidate] = {}
    seen: dict[tuple[str, str], int] = {}
    job = _JOBS.c
    user_rows = conn.execute(
        sa_select(v.id, v.user_id, v.placement, v.product_id, v.image_key, job.result_key)
        .select_from(
            _VARIANTS.outerjoin(
                _JOBS,
                and_(job.brief_hash == v.brief_hash, job.status == JobStatus.succeeded),
            )
        )
        .where(v.user_id.is_not(None), v.status != VariantStatus.retired)
        .order_by(v.user_id, v.placement, v.updated_at.desc(), v.id.desc())
    )
    for vid, user_id, placement, product_id, image_key, result_key in user_rows:
        key = (str(user_id), str(placement))
        n = seen.get(key, 0)
        seen[key] = n + 1
        if key in personal or n >= PERSONAL_LOOKBACK or vid is None:
            continue
        image = image_key or result_key
        if image:
            personal[key] = Candidate(int(vid), int(product_id), str(image), "personalized")
    return CandidateSnapshot(
        version=version, shared=dict(shared), segment_of=segment_of, personal=personal
    )


def click_stats(conn: Session | Connection) -> dict[int, tuple[int, int]]:
    """``variant id -> (impressions, clicks)`` (two grouped queries)."""
    views = dict(
        conn.execute(
            select(Impression.variant_id, func.count())
            .where(col(Impression.variant_id).is_not(None))
            .group_by(col(Impression.variant_id))
        ).all()
    )
    clicks = dict(
        conn.execute(
            select(Impression.variant_id, func.count())
            .join(Click, col(Click.impression_id) == col(Impression.id))
            .group_by(col(Impression.variant_id))
        ).all()
    )
    return {int(v): (int(n), int(clicks.get(v, 0))) for v, n in views.items() if v is not None}


class ClickStats:
    """Impressions and clicks per variant, refreshed at most every ``ttl_s`` seconds
    (one grouped query), so the hot path reads a dict. The memory hot path never queries:
    :meth:`current` reads, the refresher thread calls :meth:`reload`."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl = ttl_s
        self._at = -1e18
        self._stats: dict[int, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def current(self) -> dict[int, tuple[int, int]]:
        """The last statistics read (memory only)."""
        return self._stats

    def due(self) -> bool:
        """Whether ``ttl_s`` passed since the last read."""
        return time.monotonic() - self._at > self._ttl

    def reload(self, conn: Session | Connection) -> None:
        now = time.monotonic()
        stats = click_stats(conn)
        with self._lock:
            self._stats = stats
            self._at = now

    def get(self, session: Session) -> dict[int, tuple[int, int]]:
        if not self.due():
            return self._stats
        with self._lock:
            if not self.due():
                return self._stats
        self.reload(session)
        return self._stats

    def invalidate(self) -> None:
        self._at = -1e18
