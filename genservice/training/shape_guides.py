"""Compute the shipped category shape guides (:mod:`genservice.creation.shape_guide`) from
studio renders of the demo world's *training* products; ``python -m
genservice.training.shape_guides`` rewrites ``genservice/creation/shape_guides.json``.

Kept in the training package: serving code reads the shipped file and never imports the
render pipeline (the import-linter contract ``serving-apart``).
"""

from __future__ import annotations

import json

from genservice.creation.shape_guide import GUIDES_FILE, ShapeGuides, build_guides
from genservice.training.controlnet import render_pairs

__all__ = ["compute_guides"]


def compute_guides(n: int = 720, *, seed: int = 0, side: int = 64) -> ShapeGuides:
    """Guides from ``n`` studio renders of training products (``render_pairs``, seeded)."""
    return build_guides(render_pairs(n=n, size=side, seed=seed, held_out=False), side)


if __name__ == "__main__":  # pragma: no cover - rewrites the shipped file
    guides = compute_guides()
    guides.save(GUIDES_FILE)
    print(json.dumps({"file": str(GUIDES_FILE), "counts": guides.counts}))
