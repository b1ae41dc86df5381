"""Coverage in a batch: an auto-approved variant keeps its owner covered at every placement
(``api.services.recompose``) in the commit that approves it.

The driver recomposes (Ray actors only render): :class:`LazyRecomposer` answers "was a
scene kept?" from the scene folder alone and builds the hero generator (the same spec the
renderers use) only when a recomposition is actually needed, so a batch that renders every
placement never loads a model in the driver.
"""

from __future__ import annotations

from pathlib import Path

from api.batch.render import GeneratorSpec
from genservice.brief import CreativeBrief
from genservice.generator import HeroOutput
from genservice.recompose import Recomposer
from genservice.scenes import SceneStore

__all__ = ["LazyRecomposer"]


class LazyRecomposer:
    """A :class:`genservice.recompose.Recomposer` over ``spec``'s generator, built on the
    first :meth:`recompose`; scenes are read from ``<home>/scenes`` (where
    ``HeroGenerator.from_config`` keeps them)."""

    def __init__(self, spec: GeneratorSpec) -> None:
        self.spec = spec
        self.scenes = SceneStore(Path(spec.home) / "scenes")
        self._recomposer: Recomposer | None = None
        self.composed = 0

    def has_scene(self, brief_hash: str) -> bool:
        return self.scenes.exists(brief_hash)

    def recompose(self, brief: CreativeBrief, source_hash: str) -> HeroOutput:
        if self._recomposer is None:
            self._recomposer = Recomposer(self.spec.build())
        out = self._recomposer.recompose(brief, source_hash)
        self.composed += 1
        return out
