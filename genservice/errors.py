"""Exceptions shared by generation, jobs and workers."""

from __future__ import annotations


class GenerationError(RuntimeError):
    """A generation failed (the job may be retried)."""


class JobCancelled(GenerationError):
    """Raised inside a running generation when its job was cancelled (checked every step)."""


class JobTimedOut(GenerationError):
    """Raised inside a running generation when its job ran past its timeout."""


class SafetyViolation(GenerationError):
    """The safety checker flagged the output (or failed): it is never stored or served.

    Not retried: the same brief (same seed) renders the same image again."""

    retryable = False


class FidelityError(GenerationError):
    """The product's pixels in the output differ from the source cut-out (not retried:
    composition is deterministic)."""

    retryable = False
