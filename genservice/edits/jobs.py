"""Edit jobs on the generation job queue: the payload (``kind: "edit"``), its hash, and the
handler that runs edit jobs and hands every other job to the hero handler it wraps.

An edit job's payload names a source image in the image store and a chain of edit steps
``[{"op": ..., "params": {...}}, ...]`` (one for a marketer's edit; up to three for a
shopper's customisation: recolor, material, background). Its hash is the sha256 of the
canonical payload, so the same source and steps always map to one job (the queue's
idempotency by ``brief_hash``).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from PIL import Image

from data.models import GenerationJob
from genservice.backends.base import CancelFn, ProgressFn
from genservice.edits import apply_edit
from genservice.edits.base import check_image, edit_png_info, image_sha256, resolve_mask
from genservice.errors import GenerationError, JobCancelled
from genservice.worker import JobHandler, JobResult

#: Job payloads of edits carry this ``kind`` (hero briefs carry none).
EDIT_KIND = "edit"
#: At most this many steps in one edit job.
MAX_STEPS = 4
#: Ops that work inside the product's mask (the others work on the whole image).
MASKED_OPS = frozenset({"recolor", "material", "background", "remove-background"})


class EditImages(Protocol):
    """The image store as the handler needs it (content-addressed ``put`` / ``get``)."""

    def get(self, key: str) -> bytes: ...

    def put(self, data: bytes, content_type: str) -> str: ...


def edit_payload(*, source_key: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The job payload of an edit of the stored image ``source_key`` by ``steps`` (each
    ``{"op": name, "params": {...}}``, JSON-able). Raises ValueError on an empty chain."""
    if not 1 <= len(steps) <= MAX_STEPS:
        raise ValueError(f"steps: expected 1..{MAX_STEPS} edit steps, got {len(steps)}")
    clean = [{"op": str(s["op"]), "params": dict(s.get("params") or {})} for s in steps]
    return {"kind": EDIT_KIND, "source_key": source_key, "steps": clean}


def payload_hash(payload: dict[str, Any]) -> str:
    """sha256 hex (64 characters) of the payload's canonical JSON: the job's ``brief_hash``."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def is_edit(payload: object) -> bool:
    """Whether a job payload is an edit job's."""
    return isinstance(payload, dict) and payload.get("kind") == EDIT_KIND


def needs_generator(step: dict[str, Any]) -> bool:
    """Whether an edit step generates a scene (``background`` with ``prompt`` or ``terms``)."""
    params = step.get("params") or {}
    return step.get("op") == "background" and ("prompt" in params or "terms" in params)


def run_edit(
    payload: dict[str, Any],
    images: EditImages,
    *,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    scenes: Callable[[], Any] | None = None,
) -> JobResult:
    """Run an edit payload: read the source from ``images``, apply each step (progress
    ``(step, n_steps)``; cancel checked between steps and inside a scene's denoising), store
    the PNG (metadata: the ops, the steps' parameters, the source hash; no personal data); the
    stored key and seconds per step. ``scenes()`` gives the hero generator a generated
    background needs (``genservice.edits.scene``); without it such a step fails.
    """
    steps = payload.get("steps") or []
    if not is_edit(payload) or not steps:
        raise GenerationError("not an edit job payload")
    try:
        with Image.open(io.BytesIO(images.get(str(payload["source_key"])))) as im:
            im.load()
            src = im.copy()
    except KeyError:
        raise GenerationError("the edit's source image is gone") from None
    timings: dict[str, float] = {}
    image = src
    models: list[str] = []
    mask: np.ndarray | None = None
    mask_method = ""
    for i, step in enumerate(steps, start=1):
        if should_cancel is not None and should_cancel():
            raise JobCancelled("cancelled")
        op = str(step["op"])
        params = dict(step.get("params") or {})
        t0 = time.perf_counter()
        if needs_generator(step):
            if scenes is None:
                raise GenerationError(f"edit step {i} ({op}): this worker has no scene generator")
            params.update(generator=scenes(), should_cancel=should_cancel)
        try:
            if op in MASKED_OPS and image.size == src.size:
                # One cut-out of the source serves every step: the product's edge stays
                # where it was, and a chain pays for one segmentation, not one per step.
                if mask is None:
                    mask, mask_method, _ = resolve_mask(check_image(src), None)
                params["mask"] = mask
            res = apply_edit(op, image, **params)
        except ValueError as exc:
            raise GenerationError(f"edit step {i} ({op}): {exc}") from None
        image = res.image
        models.append(res.metadata.get("model", ""))
        timings[f"edit_{i}_{op}_s"] = round(time.perf_counter() - t0, 4)
        if progress is not None:
            progress(i, len(steps))
    meta = {
        "edit_op": "+".join(str(s["op"]) for s in steps),
        "edit_params": json.dumps([s.get("params") or {} for s in steps], sort_keys=True)[:2048],
        "source_sha256": image_sha256(src),
        "model": "+".join(models)[:256],
    }
    if mask_method:
        meta["mask_method"] = mask_method
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=edit_png_info(meta))
    key = images.put(buf.getvalue(), "image/png")
    return JobResult(result_key=key, timings=timings)


class EditJobHandler:
    """A ``genservice.worker.JobHandler`` that runs edit jobs itself (:func:`run_edit`) and
    passes every other job to ``inner`` (the hero handler; None: such jobs fail);
    :meth:`warmup` calls ``warmup`` (the inner handler's, e.g. loading its generator);
    ``scenes()`` gives the hero generator of generated backgrounds (None: those fail)."""

    def __init__(
        self,
        inner: JobHandler | None,
        images: EditImages,
        *,
        warmup: Callable[[], object] | None = None,
        scenes: Callable[[], Any] | None = None,
    ) -> None:
        self.inner = inner
        self.images = images
        self._warmup = warmup
        self.scenes = scenes

    def warmup(self) -> object:
        """Warm the inner handler (None when there is nothing to warm)."""
        return self._warmup() if self._warmup is not None else None

    def __call__(
        self, job: GenerationJob, progress: ProgressFn, should_cancel: CancelFn
    ) -> JobResult | str:
        if is_edit(job.brief):
            return run_edit(
                job.brief,
                self.images,
                progress=progress,
                should_cancel=should_cancel,
                scenes=self.scenes,
            )
        if self.inner is None:
            raise GenerationError("this worker runs edit jobs only")
        return self.inner(job, progress, should_cancel)
