"""Privacy: a user's erasure from the API, with genservice's brief → image cache included."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlmodel import Session

from api.services.erasure import ErasureOutput, erase_everywhere
from api.settings import Settings
from genservice.scenes import SceneStore

if TYPE_CHECKING:
    from api.composition import Components
    from genservice.cache import ResultCache


def result_cache_path(settings: Settings) -> Path:
    """genservice's brief → image cache file (the one ``HeroGenerator.from_config`` opens)."""
    gen = settings.generation
    return Path(gen.result_cache_file or settings.home / "cache" / "results.sqlite")


def open_result_cache(settings: Settings) -> ResultCache | None:
    """The result cache file opened on its own connection (an API-only replica erases its
    entries too), or None when no generator has written one yet."""
    path = result_cache_path(settings)
    if not path.is_file():
        return None
    from genservice.cache import ResultCache

    return ResultCache(path)


class _WithScenes:
    """The result cache and the kept scenes (``genservice.scenes``) of the erased briefs."""

    def __init__(self, cache: ResultCache | None, scenes: SceneStore) -> None:
        self.cache, self.scenes = cache, scenes

    def delete(self, brief_hash: str) -> bool:
        gone = self.scenes.delete(brief_hash)
        return bool(self.cache.delete(brief_hash)) if self.cache is not None else gone


def erase_user_everywhere(comps: Components, session: Session, *, user_id: str) -> ErasureOutput:
    """:func:`api.services.erasure.erase_everywhere` with the result cache; raises
    ``ErasureIncomplete`` when something could not be erased yet (retry)."""
    cache = open_result_cache(comps.settings)
    try:
        forget = _WithScenes(cache, SceneStore(comps.settings.home / "scenes"))
        return erase_everywhere(comps, session, user_id=user_id, result_cache=forget)
    finally:
        if cache is not None:
            cache.close()
