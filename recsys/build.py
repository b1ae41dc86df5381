"""Everything recsys serves from, built at once: index, profiles, segments, then the
cold-start profiles again (they fall back to the new segments)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from sqlalchemy.engine import Engine

from recsys.catalog import EmbedderSource, IndexBuildOutput, build_index, load_embedder
from recsys.config import RecsysConfig
from recsys.embedders.base import Embedder
from recsys.profile_store import ProfilesBuildOutput, build_profiles
from recsys.segment_store import SegmentsBuildOutput, build_segments

__all__ = ["HasRecsysConfig", "RecsysBuildOutput", "build_recsys"]

log = logging.getLogger(__name__)


@runtime_checkable
class HasRecsysConfig(Protocol):
    """Root settings that carry a ``recsys`` section (``api.settings.Settings``)."""

    @property
    def recsys(self) -> RecsysConfig: ...


@dataclass(frozen=True)
class RecsysBuildOutput:
    """Each stage's output; ``segments`` None when too few shoppers have a history profile,
    ``profiles_after_segments`` None when the segments did not change."""

    index: IndexBuildOutput
    profiles: ProfilesBuildOutput
    segments: SegmentsBuildOutput | None
    profiles_after_segments: ProfilesBuildOutput | None = None


def build_recsys(
    engine: Engine,
    *,
    settings_or_config: HasRecsysConfig | RecsysConfig,
    home: Path,
    seed: int = 0,
    embedder: EmbedderSource = None,
    progress: bool = True,
) -> RecsysBuildOutput:
    """Index, profiles, segments, then the cold-start profiles again. Idempotent: each stage
    skips unchanged work. ``settings_or_config`` is the root ``Settings`` (its ``recsys``
    section is used) or a :class:`RecsysConfig`."""
    if isinstance(settings_or_config, RecsysConfig):
        config = settings_or_config
    elif isinstance(settings_or_config, HasRecsysConfig) and isinstance(
        settings_or_config.recsys, RecsysConfig
    ):
        config = settings_or_config.recsys
    else:
        raise TypeError(
            "settings_or_config: expected Settings or RecsysConfig, got "
            f"{type(settings_or_config).__name__}"
        )
    if embedder is None:
        cached: list[Embedder] = []

        def lazy() -> Embedder:
            # loaded once, and only if a stage needs to embed something
            if not cached:
                cached.append(load_embedder(config))
            return cached[0]

        embedder = lazy
    idx = build_index(engine, config=config, home=home, embedder=embedder, progress=progress)
    prof = build_profiles(engine, config=config, home=home, embedder=embedder, progress=progress)
    seg: SegmentsBuildOutput | None = None
    again: ProfilesBuildOutput | None = None
    try:
        seg = build_segments(engine, config=config, home=home, seed=seed, progress=progress)
    except ValueError as e:
        log.warning("segments not built: %s", e)
    if seg is not None and not seg.skipped:
        again = build_profiles(
            engine, config=config, home=home, embedder=embedder, progress=progress
        )
    return RecsysBuildOutput(index=idx, profiles=prof, segments=seg, profiles_after_segments=again)
