"""Taste-profile refreshes guarded against erasure (the offline writers of per-user rows).

``recsys`` builds every profile (and the segment memberships) from a user list it reads once,
so a user erased during the build can get a row written afterwards. The guarded refresh
follows the rule of every per-user writer (``api.services.erasure``): the build commits,
then the rows of users erased meanwhile are deleted. A row written before an erasure's
tombstone is deleted by that erasure (its row deletion starts after the tombstone commit);
one written after it is seen here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import Session, col, select

from api.logging import get_logger
from api.services.erasure import ErasureGuard, guard_from_settings, rowcount
from data.models import ErasureRecord, Segment, SegmentMembership, TasteProfileRecord
from recsys.build import RecsysBuildOutput, build_recsys
from recsys.catalog import EmbedderSource
from recsys.profile_store import ProfilesBuildOutput, build_profiles

if TYPE_CHECKING:
    from api.settings import Settings

log = get_logger("profile_refresh")
_T = TypeVar("_T")


def undo_erased_profiles(guard: ErasureGuard) -> int:
    """Delete the taste profiles and segment memberships of erased users; the count deleted.

    The undo half of a guarded profile refresh: run it *after* the refresh committed. A row the
    refresh wrote before an erasure's tombstone is deleted by that erasure (step 4 starts after
    the tombstone), one it wrote after is seen here. Cheap when nobody was erased (one read of
    the tombstones); otherwise hashes every stored profile's user id (~1 s per million)."""
    with Session(guard.engine) as s:
        keys = set(s.exec(select(ErasureRecord.user_key)).all())
        if not keys:
            return 0
        owners = set(s.exec(select(TasteProfileRecord.user_id)).all())
        owners |= set(s.exec(select(SegmentMembership.user_id)).all())
        erased = sorted(u for u in owners if guard.key(u) in keys)
        n = 0
        for uid in erased:
            membership = s.get(SegmentMembership, uid)
            if membership is not None:
                seg = s.get(Segment, membership.segment_id)
                if seg is not None and seg.size > 0:
                    seg.size -= 1
                    s.add(seg)
            for table in (SegmentMembership, TasteProfileRecord):
                n += rowcount(s.execute(delete(table).where(col(table.user_id) == uid)))
        s.commit()
    if erased:
        log.info("refresh wrote rows of erased users: undone", extra={"rows": n})
    return n


def _retry_stale(build: Callable[[], _T], attempts: int = 3) -> _T:
    """Run an idempotent build again when an erasure deleted a row between the build's read
    and its update (``StaleDataError``); unchanged work is skipped, so a retry redoes little."""
    for attempt in range(attempts):
        try:
            return build()
        except StaleDataError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def refresh_profiles(
    engine: Engine,
    *,
    settings: Settings,
    embedder: EmbedderSource = None,
    progress: bool = True,
    force: bool = False,
) -> ProfilesBuildOutput:
    """:func:`recsys.profile_store.build_profiles` guarded against erasure: the build commits,
    then the rows it wrote for users erased meanwhile are deleted (:func:`undo_erased_profiles`).
    """
    out = _retry_stale(
        lambda: build_profiles(
            engine,
            config=settings.recsys,
            home=settings.home,
            embedder=embedder,
            progress=progress,
            force=force,
        )
    )
    undo_erased_profiles(guard_from_settings(settings, engine))
    return out


def refresh_recsys(
    engine: Engine,
    *,
    settings: Settings,
    seed: int = 0,
    embedder: EmbedderSource = None,
    progress: bool = True,
) -> RecsysBuildOutput:
    """:func:`recsys.build.build_recsys` (index, profiles, segments, profiles again) guarded
    like :func:`refresh_profiles`."""
    out = _retry_stale(
        lambda: build_recsys(
            engine,
            settings_or_config=settings,
            home=settings.home,
            seed=seed,
            embedder=embedder,
            progress=progress,
        )
    )
    undo_erased_profiles(guard_from_settings(settings, engine))
    return out
