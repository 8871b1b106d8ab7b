"""The durable mail queue: accepted messages and their per-recipient deliveries."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from mailsvc.errors import StorageUnavailable
from mailsvc.storage.db import deliveries, messages, utcnow

PENDING = ("queued", "deferred")
SETTLED = ("delivered", "failed", "dead")


@dataclass(frozen=True)
class QueuedMessage:
    """A message with the recipients claimed for one delivery attempt."""

    id: int
    queue_id: str
    mail_from: str
    received_at: datetime
    body: bytes
    deliveries: tuple[tuple[int, str, int], ...]  # (delivery id, recipient, attempts so far)


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    queue_id: str
    recipient: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_reply: str | None


class MailQueue:
    """Repository over the queue tables. Every write is one committed transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def enqueue(
        self, mail_from: str, recipients: Sequence[str], body: bytes, client: str = ""
    ) -> str:
        """Store a message durably (committed, fsync'd) and return its queue id."""
        queue_id = secrets.token_hex(8)
        now = utcnow()
        try:
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    messages.insert().values(
                        queue_id=queue_id,
                        mail_from=mail_from,
                        received_at=now,
                        size=len(body),
                        client=client,
                        body=body,
                        status="queued",
                    )
                )
                message_id = result.inserted_primary_key[0]  # type: ignore[index]
                await conn.execute(
                    deliveries.insert(),
                    [
                        {
                            "message_id": message_id,
                            "recipient": rcpt,
                            "status": "queued",
                            "attempts": 0,
                            "next_attempt_at": now,
                            "updated_at": now,
                        }
                        for rcpt in recipients
                    ],
                )
        except SQLAlchemyError as exc:
            raise StorageUnavailable(f"queue could not store the message: {exc}") from exc
        return queue_id

    async def release_claims(self) -> int:
        """At start-up: deliveries left in flight by a crash become due again (at-least-once)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(deliveries)
                .where(deliveries.c.status == "inflight")
                .values(status="queued", next_attempt_at=utcnow(), updated_at=utcnow())
            )
        return result.rowcount

    async def claim_next(self) -> QueuedMessage | None:
        """Claim every due delivery of the oldest due message (one LMTP transaction)."""
        now = utcnow()
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(deliveries.c.message_id)
                    .where(deliveries.c.status.in_(PENDING), deliveries.c.next_attempt_at <= now)
                    .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
                    .limit(1)
                )
            ).first()
            if row is None:
                return None
            message_id = row[0]
            due = (
                await conn.execute(
                    select(deliveries.c.id, deliveries.c.recipient, deliveries.c.attempts).where(
                        deliveries.c.message_id == message_id,
                        deliveries.c.status.in_(PENDING),
                        deliveries.c.next_attempt_at <= now,
                    )
                )
            ).all()
            claimed = await conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.id.in_([d[0] for d in due]),
                    deliveries.c.status.in_(PENDING),
                )
                .values(status="inflight", updated_at=now)
            )
            if claimed.rowcount != len(due):  # another worker took some: let it have them all
                raise StorageUnavailable("claim raced with another worker")
            msg = (
                await conn.execute(
                    select(
                        messages.c.queue_id,
                        messages.c.mail_from,
                        messages.c.received_at,
                        messages.c.body,
                    ).where(messages.c.id == message_id)
                )
            ).one()
        return QueuedMessage(
            id=message_id,
            queue_id=msg.queue_id,
            mail_from=msg.mail_from,
            received_at=msg.received_at,
            body=msg.body or b"",
            deliveries=tuple((d[0], d[1], d[2]) for d in due),
        )

    async def record(
        self,
        message_id: int,
        outcomes: Sequence[tuple[int, str, str, datetime | None]],
    ) -> None:
        """Store outcomes: (delivery id, new status, reply text, next attempt or None)."""
        now = utcnow()
        async with self.engine.begin() as conn:
            for delivery_id, status, reply, next_at in outcomes:
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id == delivery_id)
                    .values(
                        status=status,
                        last_reply=reply,
                        attempts=deliveries.c.attempts + 1,
                        next_attempt_at=next_at or now,
                        updated_at=now,
                    )
                )
            open_left = (
                await conn.execute(
                    select(func.count())
                    .select_from(deliveries)
                    .where(
                        deliveries.c.message_id == message_id,
                        deliveries.c.status.not_in(SETTLED),
                    )
                )
            ).scalar_one()
            if open_left == 0:
                # Privacy: a body is kept only until every recipient is settled.
                await conn.execute(
                    update(messages)
                    .where(messages.c.id == message_id)
                    .values(status="done", body=None)
                )

    async def mark_dead(self, message_id: int, error: str) -> None:
        """An unexpected error: keep the message and say why (never drop it)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.message_id == message_id, deliveries.c.status == "inflight")
                .values(status="dead", last_reply=error[:2000], updated_at=utcnow())
            )
            await conn.execute(
                update(messages)
                .where(messages.c.id == message_id)
                .values(status="dead", error=error[:10000])
            )

    async def next_due_in(self) -> float | None:
        """Seconds until the next pending delivery is due (None if nothing is pending)."""
        async with self.engine.connect() as conn:
            when = (
                await conn.execute(
                    select(func.min(deliveries.c.next_attempt_at)).where(
                        deliveries.c.status.in_(PENDING)
                    )
                )
            ).scalar_one()
        if when is None:
            return None
        delta: float = (when - utcnow()).total_seconds()
        return max(0.0, delta)

    async def list_deliveries(self, statuses: Sequence[str] | None = None) -> list[DeliveryRow]:
        query = select(
            deliveries.c.id,
            messages.c.queue_id,
            deliveries.c.recipient,
            deliveries.c.status,
            deliveries.c.attempts,
            deliveries.c.next_attempt_at,
            deliveries.c.last_reply,
        ).select_from(deliveries.join(messages, and_(messages.c.id == deliveries.c.message_id)))
        if statuses:
            query = query.where(deliveries.c.status.in_(list(statuses)))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(deliveries.c.id))).all()
        return [DeliveryRow(*row) for row in rows]


def backoff(attempts: int, initial: float, maximum: float) -> timedelta:
    """Exponential backoff after ``attempts`` failed attempts (1 → initial)."""
    return timedelta(seconds=min(maximum, initial * (2 ** max(0, attempts - 1))))
