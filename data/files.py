"""File helpers shared by every layer: atomic writes and paths relative to the state folder.

Atomic writes go to a temporary file in the destination's folder, are fsynced, and replace
the destination with ``os.replace``; the folder is fsynced too. A reader (or a crash) sees
either the old file or the new one, never half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "under_home",
]


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path | str, write: Callable[[Path], None], *, durable: bool = True) -> Path:
    """Atomically create or replace ``path`` with what ``write(tmp)`` writes to ``tmp``.

    ``write`` gets a temporary path in the same folder (so libraries that only save to a
    path — ``torch.save``, ``safetensors``, ``PIL`` — can be used); the parent folder is
    created if missing. ``durable=False`` skips the fsyncs (bulk files that can be rebuilt,
    e.g. thousands of demo renders: still never half-written, maybe lost on power loss).
    Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if durable:
            # Flush the written bytes before the rename makes them visible under ``path``.
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if durable:
        _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return atomic_write(path, write)


def atomic_write_text(path: Path | str, text: str, encoding: str = "utf-8") -> Path:
    """Atomically write ``text`` to ``path``."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: Path | str, obj: Any, **dumps: Any) -> Path:
    """Atomically write ``json.dumps(obj, **dumps)`` to ``path``."""
    return atomic_write_text(path, json.dumps(obj, **dumps))


def under_home(ref: Path | str, home: Path | str) -> Path:
    """A stored file reference as a path: absolute paths as given, relative ones under ``home``
    (the state folder; catalog and result paths are stored relative to it). Not resolved."""
    path = Path(ref)
    return path if path.is_absolute() else Path(home) / path
