"""The ``Embedder`` protocol every embedding model implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image


@runtime_checkable
class Embedder(Protocol):
    """Maps images and texts into one L2-normalised space.

    ``embed_images`` returns float32 of shape ``(len(images), dim)``; ``embed_texts``
    float32 of shape ``(len(texts), dim)``; every row has unit L2 norm.
    ``model_id`` names the weights (it is part of every cache key).
    """

    @property
    def dim(self) -> int: ...

    @property
    def model_id(self) -> str: ...

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...
