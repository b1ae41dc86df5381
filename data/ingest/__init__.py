"""Streaming ingestion of a store's catalog and events (CSV, JSONL, Parquet)."""

from data.ingest.catalog import import_catalog
from data.ingest.events import import_events
from data.ingest.importer import BadRow, ImportReport
from data.ingest.readers import detect_format

__all__ = ["BadRow", "ImportReport", "detect_format", "import_catalog", "import_events"]
