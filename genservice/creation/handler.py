"""Creation jobs on the generation job queue: the payload (``kind: "creation"``, see
:mod:`genservice.creation.request`) and the handler that runs creation jobs and hands every
other job to the handler it wraps (edits, heroes).

A creation's candidates are stored in the image store; the job's ``result_key`` is the first
and its ``timings`` carry ``candidate_keys`` (all of them, in seed order) and
``product_upscale`` (per candidate) beside the seconds per stage.
"""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Callable
from typing import Any, Protocol

from PIL import Image

from data.models import GenerationJob
from genservice.backends.base import CancelFn, ProgressFn
from genservice.creation.request import CreationRejected, CreationRequest, is_creation
from genservice.errors import GenerationError
from genservice.worker import JobHandler, JobResult


class Creates(Protocol):
    """What the handler needs of a creator (``genservice.creation.pipeline.Creator``)."""

    def create(
        self,
        request: CreationRequest,
        *,
        sketch: Image.Image | None = None,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> Any: ...


class SketchImages(Protocol):
    def get(self, key: str) -> bytes: ...


def run_creation(
    payload: dict[str, Any],
    creator: Creates,
    images: SketchImages,
    *,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> JobResult:
    """Run a creation payload (its sketch read from ``images``); the first candidate's key,
    with all keys under ``timings["candidate_keys"]``."""
    try:
        req = CreationRequest.from_payload(payload)
    except (CreationRejected, TypeError) as exc:
        raise GenerationError(f"not a valid creation payload: {exc}") from None
    sketch = None
    if req.sketch_key:
        try:
            with Image.open(io.BytesIO(images.get(req.sketch_key))) as im:
                im.load()
                sketch = im.copy()
        except KeyError:
            raise GenerationError("the creation's sketch is gone") from None
    try:
        out = creator.create(req, sketch=sketch, progress=progress, should_cancel=should_cancel)
    except CreationRejected as exc:
        raise GenerationError(str(exc)) from None
    keys = list(out.keys)
    if not keys:
        raise GenerationError("creation: no candidate was stored")
    timings: dict[str, Any] = dict(out.timings)
    timings["candidate_keys"] = keys
    timings["product_upscale"] = [round(float(c.product_upscale), 4) for c in out.candidates]
    timings["source"] = out.source
    return JobResult(result_key=keys[0], timings=timings)


class CreationJobHandler:
    """A ``genservice.worker.JobHandler`` that runs creation jobs with a creator built by
    ``factory`` on first use, and passes every other job to ``inner``."""

    def __init__(
        self,
        inner: JobHandler | None,
        factory: Callable[[], Creates],
        images: SketchImages,
        *,
        warmup: Callable[[], object] | None = None,
    ) -> None:
        self.inner = inner
        self.images = images
        self._build = functools.cache(factory)
        self._lock = threading.Lock()
        self._warmup = warmup

    def creator(self) -> Creates:
        with self._lock:
            return self._build()

    def warmup(self) -> object:
        """Warm the inner handler (the creator itself loads on its first job)."""
        return self._warmup() if self._warmup is not None else None

    def __call__(
        self, job: GenerationJob, progress: ProgressFn, should_cancel: CancelFn
    ) -> JobResult | str:
        if is_creation(job.brief):
            return run_creation(
                job.brief,
                self.creator(),
                self.images,
                progress=progress,
                should_cancel=should_cancel,
            )
        if self.inner is None:
            raise GenerationError("this worker does not run hero jobs")
        return self.inner(job, progress, should_cancel)
