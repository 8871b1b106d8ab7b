"""What ``/metrics`` reads from the database at scrape time (mailsvc.metrics): the queue's
depth, the progress of distributions still being delivered, the receipts of recent ones and the
scheduled jobs' last runs. Read-only, small queries: pending deliveries are few and indexed by
status, and receipts are read only for distributions sent within a window of days.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailsvc.domain.receipt_states import EventKind, EventSource, ReceiptEvent, derive_state
from mailsvc.storage.db import utcnow
from mailsvc.storage.jobruns import JobRun, JobRuns
from mailsvc.storage.queue import PENDING
from mailsvc.storage.tables import (
    deliveries,
    distribution_recipients,
    distributions,
    messages,
    receipt_events,
)

# Deliveries still in the queue: waiting, being attempted, or dead letters awaiting an operator.
QUEUE_STATES = ("queued", "inflight", "deferred", "dead")
# A distribution recipient's delivery, in three words.
PROGRESS = {"queued": "pending", "inflight": "pending", "deferred": "pending"}
PROGRESS |= {"delivered": "sent", "failed": "failed", "dead": "failed"}
_WAITING = (*PENDING, "inflight")


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime  # naive UTC
    queue: dict[str, int]  # QUEUE_STATES -> deliveries
    oldest_waiting: datetime | None  # received_at of the oldest message still waiting
    # Distributions being sent or with deliveries still waiting: id -> PROGRESS state -> count.
    distributions: dict[int, dict[str, int]] = field(default_factory=dict)
    # Councillors' receipts of distributions started within the window: state -> count.
    receipts: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, JobRun] = field(default_factory=dict)
    # In-flight deliveries by (node id, "held" or "expired" lease); "" for a claim without a
    # node (SQLite's single node).
    leases: dict[tuple[str, str], int] = field(default_factory=dict)


async def _leases(conn: AsyncConnection, now: datetime) -> dict[tuple[str, str], int]:
    expired = func.sum(case((deliveries.c.lease_until < now, 1), else_=0))
    rows = await conn.execute(
        select(deliveries.c.node_id, func.count(), expired)
        .where(deliveries.c.status == "inflight")
        .group_by(deliveries.c.node_id)
    )
    out: dict[tuple[str, str], int] = {}
    for node, count, gone in rows.all():
        gone = int(gone or 0)
        out[(node or "", "held")] = int(count) - gone
        out[(node or "", "expired")] = gone
    return out


async def _queue(conn: AsyncConnection) -> tuple[dict[str, int], datetime | None]:
    rows = await conn.execute(
        select(deliveries.c.status, func.count())
        .where(deliveries.c.status.in_(QUEUE_STATES))
        .group_by(deliveries.c.status)
    )
    depth = dict.fromkeys(QUEUE_STATES, 0) | {status: n for status, n in rows.all()}
    oldest = await conn.scalar(
        select(func.min(messages.c.received_at))
        .select_from(deliveries.join(messages, messages.c.id == deliveries.c.message_id))
        .where(deliveries.c.status.in_(_WAITING))
    )
    return depth, oldest


async def _distributions(conn: AsyncConnection) -> dict[int, dict[str, int]]:
    joined = distribution_recipients.join(
        deliveries, deliveries.c.message_id == distribution_recipients.c.queue_message_id
    )
    waiting = select(distribution_recipients.c.distribution_id).select_from(joined)
    waiting = waiting.where(deliveries.c.status.in_(_WAITING))
    sending = select(distributions.c.id).where(distributions.c.status == "sending")
    active = {row[0] for row in (await conn.execute(waiting.union(sending))).all()}
    if not active:
        return {}
    rows = await conn.execute(
        select(distribution_recipients.c.distribution_id, deliveries.c.status, func.count())
        .select_from(joined)
        .where(distribution_recipients.c.distribution_id.in_(active))
        .group_by(distribution_recipients.c.distribution_id, deliveries.c.status)
    )
    out: dict[int, dict[str, int]] = {
        d: dict.fromkeys(("sent", "pending", "failed"), 0) for d in active
    }
    for dist_id, status, count in rows.all():
        state = PROGRESS.get(status)
        if state is not None:
            out[dist_id][state] += count
    return out


async def _receipts(conn: AsyncConnection, since: datetime) -> dict[str, int]:
    recent = (
        select(distribution_recipients.c.id)
        .join(distributions, distributions.c.id == distribution_recipients.c.distribution_id)
        .where(
            distributions.c.status.in_(("sending", "sent")),
            distributions.c.started_at >= since,
            distribution_recipients.c.role == "councillor",
        )
    )
    ids = [row[0] for row in (await conn.execute(recent)).all()]
    if not ids:
        return {}
    events: dict[int, list[ReceiptEvent]] = {i: [] for i in ids}
    rows = await conn.execute(
        select(
            receipt_events.c.recipient_id,
            receipt_events.c.kind,
            receipt_events.c.at,
            receipt_events.c.source,
        ).where(receipt_events.c.recipient_id.in_(recent.scalar_subquery()))
    )
    for recipient_id, kind, at, source in rows.all():
        try:
            events[recipient_id].append(ReceiptEvent(EventKind(kind), at, EventSource(source)))
        except (ValueError, KeyError):  # a kind this version does not know: not counted
            continue
    counts = Counter(derive_state(evs).state.value for evs in events.values())
    return dict(counts)


async def take(engine: AsyncEngine, *, receipt_days: int, now: datetime | None = None) -> Snapshot:
    """Everything in one read transaction."""
    now = now or utcnow()
    async with engine.connect() as conn:
        depth, oldest = await _queue(conn)
        progress = await _distributions(conn)
        receipts = await _receipts(conn, now - timedelta(days=receipt_days))
        leases = await _leases(conn, now)
    jobs = await JobRuns(engine).all()
    return Snapshot(now, depth, oldest, progress, receipts, jobs, leases)
