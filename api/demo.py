"""``tailorshot demo``: build the demo world and everything served from it (idempotent)."""

from __future__ import annotations

from api.settings import Settings


def build_demo(settings: Settings, *, seed: int = 0) -> None:
    """Build the demo world into ``settings.home``; each stage skips work already done."""
    from data.demo.build import build_demo_world

    from api.cli.common import open_engine

    engine = open_engine(settings)
    build_demo_world(engine, home=settings.home, seed=seed)
