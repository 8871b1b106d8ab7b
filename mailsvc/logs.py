"""The service's log on stderr: readable lines, or one JSON object per line (``logging.format``)
for a log collector (journald, Loki, Elasticsearch) that should not have to parse text.

A JSON line holds exactly: time (UTC, ISO 8601 with milliseconds), level, logger, message (the
formatted message) and, when there is one, exception (the formatted traceback); ``process``
names a child process ("delivery"). Nothing else of the record is written (no ``extra`` fields,
no arguments apart from the message they were formatted into), so what reaches the log is what
the message says: the service's log lines name no password or token (settings hide theirs from
repr, the web server's access log is off because its URLs carry tokens).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s{tag}: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in the message are escaped)."""

    def __init__(self, process: str = "") -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, str] = {
            "time": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        if self.process:
            line["process"] = self.process
        return json.dumps(line, ensure_ascii=False)


def formatter(log_format: str, process: str = "") -> logging.Formatter:
    """The formatter for ``logging.format`` ("text" or "json")."""
    if log_format == "json":
        return JsonFormatter(process)
    return logging.Formatter(TEXT_FORMAT.format(tag=f"[{process}]" if process else ""))


class _ServiceHandler(logging.StreamHandler[TextIO]):
    """The handler ``configure`` installs (told apart from handlers others installed)."""


def configure(
    log_format: str, level: int, *, process: str = "", stream: TextIO | None = None
) -> logging.Handler:
    """The root logger writes to ``stream`` (stderr) in ``log_format`` from ``level`` up.
    A handler an earlier call installed is replaced (each line is written once); handlers
    others installed (a test runner's) stay."""
    handler = _ServiceHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format, process))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ServiceHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
