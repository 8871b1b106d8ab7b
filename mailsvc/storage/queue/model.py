"""What the queue stores and hands out: statuses, routes, origins, and the row types.

Pure values (no database): the delivery workers, the acceptors and the operators' commands
read and build these; ``MailQueue`` (``mailsvc.storage.queue.mailqueue``) writes and reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

PENDING = ("queued", "deferred")
SETTLED = ("delivered", "failed", "dead")
# Settled for good: nothing will ever read the body again.
FINAL = ("delivered", "failed")
STATUSES = ("queued", "inflight", "deferred", "delivered", "failed", "dead")

ROUTE_LMTP = "lmtp"
ROUTE_SMTP = "smtp"
ROUTES = (ROUTE_LMTP, ROUTE_SMTP)

# Where a message came from (messages.origin).
ORIGIN_INBOUND = "inbound"  # a resident, through the inbound SMTP server
ORIGIN_SUBMISSION = "submission"  # a councillor, through the submission server
ORIGIN_WELCOME = "welcome"
ORIGIN_DSN = "dsn"
ORIGIN_ACK = "ack"
ORIGIN_LOCAL = "local"  # anything else the service writes itself
ORIGIN_DISTRIBUTION = "distribution"  # session documents to a councillor (receipts tracked)
ORIGIN_REMINDER = "reminder"


def route_for(recipient: str, local_domains: Sequence[str] | None) -> str:
    """``lmtp`` for a recipient in one of ``local_domains``, ``smtp`` otherwise.

    ``None`` means every recipient is local (the queue before routes existed).
    """
    if local_domains is None:
        return ROUTE_LMTP
    domain = recipient.rpartition("@")[2].lower()
    return ROUTE_LMTP if domain in local_domains else ROUTE_SMTP


def origin_from_client(client: str) -> str:
    # Callers that predate origins: the inbound server passes the client IP, provisioning
    # passes "welcome".
    if client == ORIGIN_WELCOME:
        return ORIGIN_WELCOME
    return ORIGIN_INBOUND if client else ORIGIN_LOCAL


@dataclass(frozen=True)
class QueuedMessage:
    """A message with the recipients claimed for one delivery attempt on one route."""

    id: int
    queue_id: str
    mail_from: str
    received_at: datetime
    body: bytes
    deliveries: tuple[tuple[int, str, int], ...]  # (delivery id, recipient, attempts so far)
    route: str = ROUTE_LMTP
    origin: str = ORIGIN_LOCAL
    # JSON naming attachment parts stored once on disk (mailsvc.relay.delivery.body); None: the body
    # is the whole message.
    parts: str | None = None


@dataclass(frozen=True)
class ReceiptUpdate:
    """Receipt events a delivery attempt produced for a distribution message (same transaction
    as the outcomes): (recipient address, event kind, time, source, evidence)."""

    events: tuple[tuple[str, str, datetime, str, str], ...]


@dataclass(frozen=True)
class Outgoing:
    """A message to queue in the same transaction as the delivery outcomes that caused it."""

    mail_from: str
    recipients: tuple[str, ...]
    body: bytes
    origin: str


@dataclass(frozen=True)
class AckRequest:
    """Acknowledge to ``sender`` the delivery to ``councillors`` — each at most once a day.

    ``compose`` is called inside the transaction with the councillors not acknowledged yet that
    day as (display name, address) pairs (never an empty list) and returns the message to
    queue, or None to send nothing.
    """

    sender: str
    councillors: tuple[str, ...]
    day: date
    compose: Callable[[Sequence[tuple[str, str]]], Outgoing | None]
    # Keys of days before this one are forgotten on the way (None: keep them).
    forget_before: date | None = None
    # Hourly caps (in total, per resident's domain) and the domain counted; None: no caps.
    hourly_caps: tuple[int, int] | None = None
    cap_domain: str = ""


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    queue_id: str
    recipient: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_reply: str | None
    route: str = ROUTE_LMTP
    mail_from: str = ""
    updated_at: datetime | None = None


@dataclass(frozen=True)
class MessageDetail:
    """What an operator sees of one queued message (the body only when asked for)."""

    queue_id: str
    mail_from: str
    received_at: datetime
    size: int
    client: str
    origin: str
    status: str
    error: str | None
    body_kept: bool
    deliveries: tuple[DeliveryRow, ...] = field(default=())
    body: bytes | None = None
    parts: str | None = None  # what is stored beside the body (storage.spool, delivery.body)


@dataclass(frozen=True)
class Retried:
    queue_id: str
    recipient: str
    previous_status: str


def backoff(attempts: int, initial: float, maximum: float) -> timedelta:
    """Exponential backoff after ``attempts`` failed attempts (1 → initial)."""
    return timedelta(seconds=min(maximum, initial * (2 ** max(0, attempts - 1))))
