"""Structured JSON logs with request ids.

Every request gets an id (the caller's ``X-Request-ID`` when it is a short safe token, else a
new one), echoed in the response header, attached to every log line written while the request
runs, and returned in error bodies.
"""

from __future__ import annotations

import contextvars
import json
import logging
import random
import re
import sys
import time
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tailorshot_request_id", default=None
)

_SAFE_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def new_request_id(incoming: str | None = None) -> str:
    """``incoming`` when it is 1–128 safe characters, else a fresh 32-hex id (128 random
    bits from the process's generator: a request id is a label, not a secret, and this
    costs no system call per request)."""
    if incoming and _SAFE_ID.match(incoming):
        return incoming
    return f"{random.getrandbits(128):032x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id and any ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            out["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            # Tracebacks go to the log (operators), never into response bodies (clients).
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class AccessLogScrubber(logging.Filter):
    """Removes personal data from uvicorn's access log lines: the query string (``user_id``)
    and the id in ``/v1/users/{user_id}`` paths. uvicorn's record args are
    ``(client, method, path, http_version, status)``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path = args[2].split("?", 1)[0]
            if path.startswith("/v1/users/"):
                path = "/v1/users/{user_id}"
            record.args = (*args[:2], path, *args[3:])
        return True


class JsonStderrHandler(logging.StreamHandler):
    """Records to stderr as JSON lines (:class:`JsonFormatter`)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(JsonFormatter())


def log_json(name: str, level: str = "INFO") -> logging.Logger:
    """Send logger ``name``'s records at ``level`` and above to stderr as JSON lines instead
    of the root logger's handlers; idempotent (one :class:`JsonStderrHandler` per logger)."""
    logger = logging.getLogger(name)
    logger.setLevel(level.upper())
    if not any(isinstance(h, JsonStderrHandler) for h in logger.handlers):
        logger.addHandler(JsonStderrHandler())
    logger.propagate = False
    return logger


def configure_logging(level: str = "INFO") -> None:
    """Send the ``tailorshot`` logger's records to stderr as JSON lines (idempotent), and
    scrub uvicorn's access log (:class:`AccessLogScrubber`)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessLogScrubber) for f in access.filters):
        access.addFilter(AccessLogScrubber())
    log_json("tailorshot", level)


def get_logger(name: str) -> logging.Logger:
    """A child of the ``tailorshot`` logger."""
    return logging.getLogger(f"tailorshot.{name}")
