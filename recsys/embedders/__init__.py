"""Image and text embedders (one shared space)."""

from recsys.embedders.base import Embedder

__all__ = ["Embedder"]
