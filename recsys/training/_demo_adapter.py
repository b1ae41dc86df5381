"""Adapter from the demo world (``data.demo``) to :class:`ProductSource`."""

from __future__ import annotations

from recsys.training.clip_data import ProductSource


def make_demo_source(*, seed: int = 0) -> ProductSource:
    """Raises ``ImportError`` until the demo world's renderer is available."""
    raise ImportError("data.demo renderer not available yet")
