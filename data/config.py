"""Data-layer configuration: where state lives and which database to use."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class DataConfig(BaseModel):
    """State folder and database location.

    ``home`` holds the SQLite database, images, indexes and caches. ``database_url``
    overrides the SQLite default (for example ``postgresql+psycopg://...``).
    """

    home: Path = Field(default=Path("var"))
    database_url: str | None = None

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL in force: ``database_url`` or SQLite under ``home``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'tailorshot.db').resolve()}"

    @property
    def images_dir(self) -> Path:
        return self.home / "images"

    @property
    def index_dir(self) -> Path:
        return self.home / "index"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"
