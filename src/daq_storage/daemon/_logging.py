"""The daemon's log lines: ISO-8601 UTC time, level, message and ``key=value`` fields,
or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["configure_logging", "log_event"]

log = logging.getLogger("daq_storage.daemon")


# --------------------------------------------------------------------- logging
def _now_iso(created: float) -> str:
    return datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


class _TextFormatter(logging.Formatter):
    """``<ISO time> <LEVEL> <message> key=value ...`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_now_iso(record.created), record.levelname, record.getMessage()]
        parts += [f"{key}={_text(value)}" for key, value in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return line


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    text = str(value)
    return json.dumps(text) if not text or any(c.isspace() or c == '"' for c in text) else text


class _JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``message`` and the
    record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": _now_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            payload.setdefault(key, value)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(*, log_json: bool = False, stream: TextIO | None = None) -> logging.Handler:
    """Log the ``daq_storage`` logger's INFO and above to ``stream`` (stderr), one line
    per event: ISO-8601 UTC time, level, message, ``key=value`` fields; with
    ``log_json`` one JSON object per line. Returns the handler (remove it to undo)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_JsonFormatter() if log_json else _TextFormatter())
    logger = logging.getLogger("daq_storage")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # one line per event, not a second copy from the root
    return handler


def log_event(level: int, message: str, **fields: Any) -> None:
    """Log ``message`` on the daemon's logger with ``fields`` for the formatters."""
    log.log(level, message, extra={"fields": fields})
