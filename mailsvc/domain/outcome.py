"""Delivery outcomes, classified once: what a server's reply to one recipient means.

Every route (LMTP to the mailbox store, SMTP to the smarthost) and every consumer (the delivery
workers, the bounce report, the receipts) reads a reply through :func:`classify`:

- 2xx: delivered.
- 4xx: temporary; retried with backoff until ``delivery.retry_period`` has passed.
- 5xx: permanent, except a full mailbox: ``552`` with the enhanced code ``5.2.2`` (RFC 3463 "mailbox
  full") is temporary, as RFC 5321 §4.5.3.1.10 asks of 552 after RCPT. A councillor's full mailbox
  is worth retrying; a message too big (``552 5.3.4``) is not.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import timedelta


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class Reply:
    """One server reply about one recipient."""

    code: int
    text: str

    @property
    def outcome(self) -> Outcome:
        return classify(self.code, self.text)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.DELIVERED

    @property
    def temporary(self) -> bool:
        return self.outcome is Outcome.TEMPORARY

    @property
    def permanent(self) -> bool:
        return self.outcome is Outcome.PERMANENT

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


# C0 controls but tab and newline, DEL, and C1 controls: never meaningful in a reply's text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def stored_text(text: str) -> str:
    """``text`` from another server (a reply, an error quoting it) as it may be stored and
    shown: every control character but tab and newline becomes "?". A NUL byte would be
    refused by PostgreSQL's text type, and escapes or carriage returns would mislead whoever
    reads the queue, the logs or the receipts' evidence."""
    text = text.replace("\r\n", "\n")
    return _CONTROL.sub("?", text)


def enhanced_code(text: str) -> str | None:
    """The enhanced status code at the start of a reply's text ('5.2.2'), if any."""
    match = _ENHANCED.match(text)
    return ".".join(match.groups()) if match else None


def classify(code: int, text: str = "") -> Outcome:
    if 200 <= code < 300:
        return Outcome.DELIVERED
    if 400 <= code < 500:
        return Outcome.TEMPORARY
    if code == 552 and enhanced_code(text) == "5.2.2":
        return Outcome.TEMPORARY  # mailbox full: it may have room tomorrow
    return Outcome.PERMANENT


def settle(reply: Reply, *, age: timedelta, retry_period: timedelta) -> Outcome:
    """What becomes of a delivery after ``reply`` when its message is ``age`` old: a temporary
    failure stays temporary (retried) until the retry period has run out, then it is final."""
    outcome = reply.outcome
    if outcome is Outcome.TEMPORARY and age >= retry_period:
        return Outcome.PERMANENT
    return outcome
