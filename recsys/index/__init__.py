"""Vector indexes behind the ``VectorIndex`` protocol."""

from recsys.index.base import VectorIndex

__all__ = ["VectorIndex"]
