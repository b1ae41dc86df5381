"""The narrow ports routes and services see their collaborators through, so tests can pass
doubles and other backends (S3, a remote queue) can plug in. The composition root
(api/composition.py) builds the adapters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from data.models import GenerationJob
from genservice.brief import CreativeBrief


@runtime_checkable
class ImageStorePort(Protocol):
    """Content-addressed image bytes. ``get`` raises ``KeyError`` for an unknown key."""

    def get(self, key: str) -> bytes: ...

    def content_type(self, key: str) -> str: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> bool: ...

    def put(self, data: bytes, content_type: str) -> str: ...


@runtime_checkable
class JobQueuePort(Protocol):
    """Persisted generation jobs (``genservice.jobs.JobQueue``): ``submit_brief`` is
    idempotent by brief hash and returns the job id; ``cancel`` returns the job after the
    change (None when unknown)."""

    def submit_brief(self, brief: CreativeBrief) -> str: ...

    def get(self, job_id: str) -> GenerationJob | None: ...

    def cancel(self, job_id: str) -> GenerationJob | None: ...

    def queue_depth(self) -> int: ...


@runtime_checkable
class WorkerPort(Protocol):
    """A background worker running jobs; ``stop`` waits for the current job to end."""

    def start(self) -> None: ...

    def stop(self, *, graceful: bool = True, timeout: float | None = None) -> bool: ...


class UserIndex(Protocol):
    """An index holding per-user vectors, erased with the user."""

    def remove_user(self, user_id: str) -> int: ...


class Report(Protocol):
    """The analytics report: a JSON summary and a self-contained HTML page."""

    @property
    def summary(self) -> Mapping[str, Any]: ...

    @property
    def html(self) -> str: ...
