"""Result cache: brief hash → image key, persisted in a small SQLite file, so the same brief
never runs twice."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genservice.storage import ImageStore


@dataclass(frozen=True)
class CachedResult:
    """A finished generation: where its image is and what it was made with."""

    brief_hash: str
    image_key: str
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0


class ResultCache:
    """Brief hash → image key in SQLite (``path``; ``":memory:"`` for tests).

    With a ``store``, an entry whose image file disappeared counts as a miss. Thread-safe.
    """

    def __init__(self, path: str | Path, *, store: ImageStore | None = None) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.store = store
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        with self._lock, self._conn:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS results (brief_hash TEXT PRIMARY KEY, "
                "image_key TEXT NOT NULL, metadata TEXT NOT NULL, created_at REAL NOT NULL)"
            )
        self.hits = 0
        self.misses = 0

    def get(self, brief_hash: str) -> CachedResult | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT image_key, metadata, created_at FROM results WHERE brief_hash = ?",
                (brief_hash,),
            ).fetchone()
        if row is None or (self.store is not None and not self.store.exists(row[0])):
            self.misses += 1
            return None
        self.hits += 1
        return CachedResult(brief_hash, row[0], json.loads(row[1]), row[2])

    def put(self, brief_hash: str, image_key: str, metadata: dict[str, Any] | None = None) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)",
                (brief_hash, image_key, json.dumps(metadata or {}, sort_keys=True), time.time()),
            )

    def delete(self, brief_hash: str) -> bool:
        with self._lock, self._conn:
            cur = self._conn.execute("DELETE FROM results WHERE brief_hash = ?", (brief_hash,))
        return cur.rowcount > 0

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def get_or_generate(
        self, brief_hash: str, generate: Callable[[], CachedResult]
    ) -> tuple[CachedResult, bool]:
        """The cached result, or ``generate()`` stored then returned; ``(result, hit)``.
        On a hit ``generate`` is never called."""
        hit = self.get(brief_hash)
        if hit is not None:
            return hit, True
        result = generate()
        if result.brief_hash != brief_hash:
            raise ValueError(
                f"generate: expected a result for brief {brief_hash}, got {result.brief_hash}"
            )
        self.put(brief_hash, result.image_key, result.metadata)
        return result, False

    def close(self) -> None:
        with self._lock:
            self._conn.close()
