"""The durable mail queue: accepted messages and their per-recipient deliveries.

- ``model``: statuses, routes, origins, ``route_for``, ``backoff`` and the row types;
- ``mailqueue``: ``MailQueue``, the repository the service uses (enqueue with group commit,
  claim, record outcomes, operators' commands);
- ``claim``, ``writes``, ``admin``: its units of work (one transaction each);
- ``statements``: the hot path's prebuilt SQL (SQLAlchemy, and raw for the sqlite3 driver);
- ``leases``: claims with leases for several nodes on PostgreSQL (SKIP LOCKED, takeover of
  expired claims, renewal, outcomes only from the claim's holder, NOTIFY at enqueue);
- ``wakeups``: ``QueueListener``, each node's LISTEN for the other nodes' enqueues.

Everything the rest of the service uses is importable from here.
"""

from __future__ import annotations

from mailsvc.storage.queue.claim import Claim
from mailsvc.storage.queue.mailqueue import MailQueue
from mailsvc.storage.queue.model import (
    FINAL,
    ORIGIN_ACK,
    ORIGIN_DISTRIBUTION,
    ORIGIN_DSN,
    ORIGIN_INBOUND,
    ORIGIN_LOCAL,
    ORIGIN_REMINDER,
    ORIGIN_SUBMISSION,
    ORIGIN_WELCOME,
    PENDING,
    ROUTE_LMTP,
    ROUTE_SMTP,
    ROUTES,
    SETTLED,
    STATUSES,
    AckRequest,
    DeliveryRow,
    MessageDetail,
    Outgoing,
    QueuedMessage,
    ReceiptUpdate,
    Retried,
    backoff,
    route_for,
)

__all__ = [
    "FINAL",
    "ORIGIN_ACK",
    "ORIGIN_DISTRIBUTION",
    "ORIGIN_DSN",
    "ORIGIN_INBOUND",
    "ORIGIN_LOCAL",
    "ORIGIN_REMINDER",
    "ORIGIN_SUBMISSION",
    "ORIGIN_WELCOME",
    "PENDING",
    "ROUTES",
    "ROUTE_LMTP",
    "ROUTE_SMTP",
    "SETTLED",
    "STATUSES",
    "AckRequest",
    "Claim",
    "DeliveryRow",
    "MailQueue",
    "MessageDetail",
    "Outgoing",
    "QueuedMessage",
    "ReceiptUpdate",
    "Retried",
    "backoff",
    "route_for",
]
