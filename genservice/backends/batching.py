"""Batching requests for one pipeline call: grouping compatible requests, per-item IP-Adapter
embeddings, step counts, and the paste-back that keeps a product's pixels exact."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from genservice.backends.base import GenerationRequest
from genservice.errors import FidelityError, GenerationError


@dataclass(frozen=True)
class GroupKey:
    """What requests must share to run in one pipeline call."""

    mode: str
    width: int
    height: int
    steps: int
    guidance: float
    strength: float
    n_refs: int
    scale: str


def group_requests(
    requests: Sequence[GenerationRequest], *, default_scale: Any, max_batch: int
) -> list[tuple[GroupKey, list[int]]]:
    """Chunks of request indices that can share one pipeline call: same mode, size, steps,
    guidance, strength, reference count and IP-Adapter scale; at most ``max_batch`` each."""
    groups: dict[GroupKey, list[int]] = {}
    for i, r in enumerate(requests):
        n_refs = 0
        if r.ip_adapter_image_embeds:
            n_refs = int(r.ip_adapter_image_embeds[0].shape[1])
        elif r.ip_adapter_image:
            n_refs = len(r.ip_adapter_image)
        scale = r.ip_adapter_scale if r.ip_adapter_scale is not None else default_scale
        key = GroupKey(
            r.mode,
            r.width,
            r.height,
            r.num_inference_steps,
            float(r.guidance_scale),
            float(r.strength),
            n_refs,
            json.dumps(scale, sort_keys=True) if n_refs else "",
        )
        groups.setdefault(key, []).append(i)
    chunks: list[tuple[GroupKey, list[int]]] = []
    for key, idx in groups.items():
        for s in range(0, len(idx), max_batch):
            chunks.append((key, idx[s : s + max_batch]))
    return chunks


def install_embeds_passthrough(pipe: Any, batch: int) -> Any:
    """Make ``pipe`` take our per-item IP-Adapter embeddings as they are.

    diffusers' ``prepare_ip_adapter_image_embeds`` tiles the given embeddings
    ``batch_size`` times, assuming one reference set shared by the whole batch; with one
    set per item that yields ``batch**2`` rows and every item attends to all items'
    references (the mixing of diffusers issue 9813). Ours are already laid out
    ``(2B, n, dim)`` in the pipeline's [negative..., positive...] order. Returns a
    function that restores the pipeline.
    """
    name = "prepare_ip_adapter_image_embeds"
    had_own = name in pipe.__dict__
    previous = pipe.__dict__.get(name)

    def passthrough(
        ip_adapter_image: Any,
        ip_adapter_image_embeds: Any,
        device: Any,
        num_images_per_prompt: int,
        do_classifier_free_guidance: bool,
    ) -> Any:
        if ip_adapter_image_embeds is None or num_images_per_prompt != batch:
            raise GenerationError(
                f"ip_adapter_image_embeds: expected per-item embeddings for a batch of "
                f"{batch}, got {num_images_per_prompt} images per prompt"
            )
        return [e.to(device) for e in ip_adapter_image_embeds]

    setattr(pipe, name, passthrough)

    def restore() -> None:
        if had_own:
            setattr(pipe, name, previous)
        else:
            delattr(pipe, name)

    return restore


def expected_steps(r: GenerationRequest) -> int:
    """Denoising steps a request runs (img2img and inpainting skip ``1 - strength``)."""
    if r.mode == "txt2img":
        return r.num_inference_steps
    return max(1, min(r.num_inference_steps, int(r.num_inference_steps * r.strength)))


def sized_inputs(
    images: Sequence[Image.Image | None],
    *,
    arg: str,
    size: tuple[int, int],
    mode: str,
    note: str = "",
) -> list[Image.Image]:
    """``images`` converted to ``mode``; each must be ``size`` (width, height)."""
    out = []
    for i, im in enumerate(images):
        if im is None:
            raise ValueError(f"{arg}: expected an image for request {i}, got None")
        if im.size != size:
            raise ValueError(f"{arg}: expected size {size}{note}, got {im.size} for request {i}")
        out.append(im.convert(mode))
    return out


def keep_unmasked_pixels(pixels: np.ndarray, image: Any, mask_image: Any) -> np.ndarray:
    """Paste the original pixels back where the mask is black (< 128: keep) and verify.

    The VAE round trip changes every pixel a little, so the pipeline output alone never keeps
    a product exact. Shapes: ``pixels`` (H, W, 3) uint8; returns the same shape.
    """
    orig = np.asarray(image.convert("RGB"), dtype=np.uint8)
    keep = np.asarray(mask_image.convert("L")) < 128
    out = pixels.copy()
    out[keep] = orig[keep]
    if not np.array_equal(out[keep], orig[keep]):
        raise FidelityError("inpainting: kept pixels differ from the original after paste-back")
    return out
