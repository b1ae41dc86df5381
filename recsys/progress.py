"""One progress-bar shape for the recsys builds and evaluations (tqdm when enabled)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Progress", "progress_bar"]

#: ``progress(iterable, description, total or None) -> iterable``
Progress = Callable[[Iterable[Any], str, int | None], Iterable[Any]]


def progress_bar(enabled: bool) -> Progress:
    """A :data:`Progress` that wraps in tqdm when ``enabled``, else passes through."""

    def wrap(it: Iterable[Any], desc: str, total: int | None) -> Iterable[Any]:
        if not enabled:
            return it
        from tqdm import tqdm

        return tqdm(it, desc=desc, total=total, unit="it", leave=False)

    return wrap
