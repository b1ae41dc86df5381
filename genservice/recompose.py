"""A hero for another placement from a kept scene: no diffusion run.

A brief rendered for one placement left its product-free scene in the generator's
:class:`~genservice.scenes.SceneStore`. :class:`Recomposer` turns that scene into the hero of
the same brief at another placement through the hero generator's own composition path
(``HeroGenerator._prepare`` and ``_finish``: product cut-out, the scene cropped to the new
aspect, ghosts erased, restored to the placement's size, product placed on the scene's
surface with its light matched, contact shadow, headline or brand kit, the fidelity and
safety checks, encoding with metadata, the image store). Only the backend's pipeline is not
called. The result is not written to the result cache: the derived brief is not what a
diffusion run of it would draw, so a real render of it must never be answered by it.
"""

from __future__ import annotations

import dataclasses
import hashlib

from PIL import Image

from genservice.backends.base import GenerationOutput
from genservice.brief import CreativeBrief, Placement
from genservice.compose import crop_to_aspect
from genservice.errors import GenerationError
from genservice.generator import HeroGenerator, HeroOutput
from genservice.scenes import SceneStore

__all__ = ["Recomposer", "derived_brief", "derived_hash"]


def derived_brief(source: CreativeBrief, placement: Placement) -> CreativeBrief:
    """``source`` at ``placement`` (every other field kept)."""
    return dataclasses.replace(source, placement=placement)


def derived_hash(source_hash: str, placement: str) -> str:
    """The key of a recomposition of brief ``source_hash`` at ``placement`` (sha256 hex). It
    never equals a brief hash, so a derived variant is never mistaken for a rendered one."""
    return hashlib.sha256(f"recomposed:v1:{source_hash}:{placement}".encode()).hexdigest()


class Recomposer:
    """Recompositions with ``generator`` (its backend is never asked to generate)."""

    def __init__(self, generator: HeroGenerator) -> None:
        if generator.scenes is None:
            raise ValueError("generator: expected a HeroGenerator that keeps scenes, got none")
        self.generator = generator
        self.scenes: SceneStore = generator.scenes

    def has_scene(self, brief_hash: str) -> bool:
        """Whether a scene of ``brief_hash`` was kept."""
        return self.scenes.exists(brief_hash)

    def recompose(self, brief: CreativeBrief, source_hash: str) -> HeroOutput:
        """:meth:`compose` on the kept scene of brief ``source_hash``; GenerationError when
        none was kept."""
        scene = self.scenes.get(source_hash)
        if scene is None:
            raise GenerationError(f"no scene kept for brief {source_hash[:12]}")
        return self.compose(brief, scene)

    def compose(self, brief: CreativeBrief, scene: Image.Image) -> HeroOutput:
        """The hero of ``brief`` (the target placement) on ``scene``: checked, stored, not
        cached. Raises ``FidelityError``, ``SafetyViolation`` or ``GenerationError``."""
        gen = self.generator
        # The references only steer the diffusion run, which is over: leave them out (they
        # would be loaded or looked up for nothing).
        prep = gen._prepare(dataclasses.replace(brief, references=(), reference_embedding_ids=()))
        if scene.width < 8 or scene.height < 8:
            raise GenerationError(f"scene: expected at least 8x8 pixels, got {scene.size}")
        if gen.imaging is None:  # the classic path resizes the scene it is given as it is
            scene = crop_to_aspect(scene.convert("RGB"), brief.placement.aspect)
        out = GenerationOutput(
            image=scene.convert("RGB"),
            seed=brief.seed,
            model_id=gen.backend.model_id,
            steps_run=0,
        )
        hero = gen._finish(prep, out)
        return dataclasses.replace(hero, brief_hash=brief.brief_hash)
