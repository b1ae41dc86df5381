"""The backend's vocabulary (diffusers-style) and the ``Backend`` protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from PIL import Image

#: ``progress(step, total)``: called after each denoising step (1-based step).
ProgressFn = Callable[[int, int], None]
#: Polled after each step; returning True raises ``JobCancelled``.
CancelFn = Callable[[], bool]


@dataclass
class GenerationRequest:
    """One image to generate, named as diffusers names pipeline arguments.

    ``image`` + ``mask_image`` (white = repaint, black = keep) select inpainting; ``image``
    alone selects image-to-image with ``strength``. ``ip_adapter_image`` are reference images
    (PIL) and ``ip_adapter_image_embeds`` precomputed embeddings (one tensor per adapter,
    shape ``(2, n_images, dim)`` with classifier-free guidance: negative first);
    ``ip_adapter_scale`` is a float or per-block dict (``{"up": {"block_0": [0, 1, 0]}}``).
    ``seed`` makes the output reproducible: each request gets its own generator even in a batch.
    """

    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    num_inference_steps: int = 20
    guidance_scale: float = 5.0
    seed: int = 0
    image: Image.Image | None = None
    mask_image: Image.Image | None = None
    strength: float = 1.0
    ip_adapter_image: Sequence[Image.Image] | None = None
    ip_adapter_image_embeds: list[Any] | None = None
    ip_adapter_scale: float | dict[str, Any] | None = None
    #: Content hashes of ``ip_adapter_image`` (cache keys); computed when missing.
    reference_hashes: Sequence[str] | None = None

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 8 or value % 8:
                raise ValueError(f"{name}: expected a positive multiple of 8, got {value!r}")
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps: expected >= 1, got {self.num_inference_steps}")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength: expected in (0, 1], got {self.strength}")
        if self.mask_image is not None and self.image is None:
            raise ValueError("mask_image: inpainting needs `image` too, got mask_image only")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {self.seed!r}")

    @property
    def mode(self) -> str:
        """``"inpaint"``, ``"img2img"`` or ``"txt2img"``."""
        if self.mask_image is not None:
            return "inpaint"
        if self.image is not None:
            return "img2img"
        return "txt2img"


@dataclass
class GenerationOutput:
    """One generated image (RGB, ``width x height``) and how it was made."""

    image: Image.Image
    seed: int
    model_id: str
    steps_run: int
    timings: dict[str, float] = field(default_factory=dict)
    #: The decoded float pixels before rounding, ``(H, W, 3)`` float32 in [0, 1] (if known).
    array: Any = None


@runtime_checkable
class Backend(Protocol):
    """A text-to-image engine. Implementations must be safe to call from several threads."""

    model_id: str

    def generate(
        self,
        request: GenerationRequest,
        *,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> GenerationOutput:
        """Run one request; raises ``JobCancelled`` when ``should_cancel()`` turns true."""
        ...

    def generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        *,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> list[GenerationOutput]:
        """Run several requests; compatible ones share pipeline calls. Same order as input."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` for the text encoder, without begin/end tokens."""
        ...

    @property
    def max_tokens(self) -> int:
        """The text encoder's token limit including begin/end tokens."""
        ...

    @property
    def native_size(self) -> int:
        """The model's native image side in pixels (for example 512 for SD 1.5)."""
        ...

    @property
    def size_multiple(self) -> int:
        """Canvas sides must be multiples of this many pixels (VAE factor x UNet levels)."""
        ...

    @property
    def supports_ip_adapter(self) -> bool:
        """True when reference images can condition generation (an IP-Adapter is present)."""
        ...

    def load(self) -> Any:
        """Load the model now (idempotent; slow), warming up the configured sizes."""
        ...

    def warmup(
        self,
        sizes: Sequence[tuple[int, int]] | None = None,
        *,
        batch_sizes: Sequence[int] | None = None,
    ) -> dict[tuple[int, int, int], float]:
        """Run each ``(width, height)`` x batch size not yet warmed up once; returns seconds
        per newly warmed ``(width, height, batch)``."""
        ...

    def embeds_by_id(self, ids: Sequence[str]) -> Any:
        """Cached reference embeddings by content hash, ``(2, len(ids), dim)``; raises
        ``GenerationError`` for an unknown id."""
        ...
