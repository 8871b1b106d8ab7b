"""DSNs and MDNs arriving at the report addresses (``bounces+TOKEN@``), at the SMTP door:
credited to the distribution's receipts by ``receipts.sink``, answered from the reply table."""

from __future__ import annotations

import logging
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from mailsvc.errors import StorageUnavailable
from mailsvc.receipts.sink import ReportSink
from mailsvc.relay.smtp import replies

log = logging.getLogger(__name__)


class _Envelope(Protocol):
    rcpt_tos: list[str]


async def accept_reports(sink: ReportSink, envelope: _Envelope, content: bytes) -> str | None:
    """At DATA: credit the report to the report addresses among the recipients and take them
    off the envelope. Returns the reply when nothing else is left to deliver, else None."""
    ours = [r for r in envelope.rcpt_tos if sink.is_report_address(r)]
    if not ours:
        return None
    try:
        await sink.accept(content, ours)
    except (StorageUnavailable, SQLAlchemyError) as exc:
        log.error("report not stored: %s", exc)
        return replies.S451_STORAGE
    envelope.rcpt_tos = [r for r in envelope.rcpt_tos if not sink.is_report_address(r)]
    return None if envelope.rcpt_tos else replies.S250_REPORT
