"""The job handler: renders a generation job's brief with a hero generator.

``tailorshot worker`` processes and the server's in-process worker both run a
:class:`GeneratorJobHandler`; api only wires it (which generator, which metrics).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Protocol

from data.models import GenerationJob
from genservice.backends.base import CancelFn, ProgressFn
from genservice.brief import CreativeBrief
from genservice.generator import HeroOutput
from genservice.jobs import brief_of
from genservice.worker import JobResult


class HeroRenderer(Protocol):
    """What the handler needs of a generator (``genservice.generator.HeroGenerator``)."""

    def generate(
        self,
        brief: CreativeBrief,
        *,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> HeroOutput: ...


#: Called once per job with its outcome (``succeeded`` or ``failed``) and wall time, seconds.
JobObserver = Callable[[str, float], None]


class GeneratorJobHandler:
    """A ``genservice.worker.JobHandler`` over one generator per process, built by
    ``factory`` on first use; :meth:`warmup` builds it ahead of the first job (the backend
    warms up its configured sizes while loading), so no shopper's job pays for loading or
    compilation. Reports progress, honours cancel, and tells ``observe`` each job's wall
    time."""

    def __init__(
        self, factory: Callable[[], HeroRenderer], *, observe: JobObserver | None = None
    ) -> None:
        self._build = functools.cache(factory)
        self._lock = threading.Lock()
        self.observe = observe

    def warmup(self) -> HeroRenderer:
        """The generator, built on the first call (once, even from several threads)."""
        with self._lock:
            return self._build()

    def __call__(
        self, job: GenerationJob, progress: ProgressFn, should_cancel: CancelFn
    ) -> JobResult:
        t0 = time.perf_counter()
        status = "failed"
        try:
            out = self.warmup().generate(
                brief_of(job), progress=progress, should_cancel=should_cancel
            )
            status = "succeeded"
            return JobResult(result_key=out.image_key, timings=dict(out.timings))
        finally:
            if self.observe is not None:
                self.observe(status, time.perf_counter() - t0)
