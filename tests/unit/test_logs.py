"""The service's log format (``logging.format``) and the [metrics]/[logging] settings."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from mailsvc import logs
from mailsvc.config import load_settings
from mailsvc.errors import ConfigError


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, put back as it was (handlers, level) after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_json_lines_parse_and_carry_time_level_logger_message_and_exception(
    root_logger: logging.Logger,
) -> None:
    out = io.StringIO()
    logs.configure("json", logging.INFO, stream=out)
    log = logging.getLogger("mailsvc.relay.delivery.worker")
    log.info("queue %s to=<%s> status=%s", "abc123", "jan@example.org", "delivered")
    try:
        raise RuntimeError("the database went away\nsecond line")
    except RuntimeError:
        log.exception("job %s failed", "reminders")
    log.debug("not written below INFO")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # one object per line, newlines escaped inside
    first, second = map(json.loads, lines)
    assert first.keys() == {"time", "level", "logger", "message"}
    assert first["level"] == "INFO"
    assert first["logger"] == "mailsvc.relay.delivery.worker"
    assert first["message"] == "queue abc123 to=<jan@example.org> status=delivered"
    assert first["time"].endswith("Z") and first["time"][10] == "T"
    assert second["level"] == "ERROR" and second["message"] == "job reminders failed"
    assert second["exception"].startswith("Traceback (most recent call last):")
    assert second["exception"].endswith("RuntimeError: the database went away\nsecond line")


def test_a_second_configure_replaces_the_first_and_text_stays_the_default(
    root_logger: logging.Logger,
) -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.configure("json", logging.INFO, stream=first)
    logs.configure("text", logging.INFO, process="delivery", stream=second)
    logging.getLogger("mailsvc").warning("hello")
    assert first.getvalue() == ""
    assert second.getvalue().rstrip().endswith("WARNING mailsvc[delivery]: hello")


def test_log_format_and_metrics_port_from_the_file_and_the_environment() -> None:
    default = load_settings(env={})
    assert (default.logging.format, default.metrics.port, default.metrics.host) == (
        "text",
        0,
        "127.0.0.1",
    )
    s = load_settings(env={"MAILSVC_LOGGING__FORMAT": "json", "MAILSVC_METRICS__PORT": "9125"})
    assert (s.logging.format, s.metrics.port) == ("json", 9125)
    with pytest.raises(ConfigError, match=r"logging.format = 'xml': expected 'text' or 'json'"):
        load_settings(env={"MAILSVC_LOGGING__FORMAT": "xml"})
    with pytest.raises(ConfigError, match=r"metrics.port = 70000"):
        load_settings(env={"MAILSVC_METRICS__PORT": "70000"})
