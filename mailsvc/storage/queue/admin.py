"""What operators do to the queue (``mailsvc queue list|show|retry|delete``, the clerk pages):
each a unit of work of one transaction, run by ``MailQueue``. Not on the hot path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, delete, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from mailsvc.storage.db import utcnow
from mailsvc.storage.queue.model import DeliveryRow, MessageDetail, Retried
from mailsvc.storage.tables import deliveries, messages


async def list_deliveries(engine: AsyncEngine, statuses: Sequence[str] | None) -> list[DeliveryRow]:
    query = _delivery_rows()
    if statuses:
        query = query.where(deliveries.c.status.in_(list(statuses)))
    async with engine.connect() as conn:
        rows = (await conn.execute(query.order_by(deliveries.c.id))).all()
    return [DeliveryRow(*row) for row in rows]


def show(conn: Connection, *, queue_id: str, with_body: bool) -> MessageDetail | None:
    msg = conn.execute(
        select(
            messages.c.id,
            messages.c.queue_id,
            messages.c.mail_from,
            messages.c.received_at,
            messages.c.size,
            messages.c.client,
            messages.c.origin,
            messages.c.status,
            messages.c.error,
            messages.c.body.is_not(None).label("body_kept"),
            messages.c.parts,
        ).where(messages.c.queue_id == queue_id)
    ).first()
    if msg is None:
        return None
    rows = conn.execute(
        _delivery_rows().where(deliveries.c.message_id == msg.id).order_by(deliveries.c.id)
    ).all()
    body = None
    if with_body:
        body = conn.execute(select(messages.c.body).where(messages.c.id == msg.id)).scalar_one()
    return MessageDetail(
        queue_id=msg.queue_id,
        mail_from=msg.mail_from,
        received_at=msg.received_at,
        size=msg.size,
        client=msg.client,
        origin=msg.origin,
        status=msg.status,
        error=msg.error,
        body_kept=bool(msg.body_kept),
        deliveries=tuple(DeliveryRow(*row) for row in rows),
        body=body,
        parts=msg.parts,
    )


def retry(conn: Connection, *, wanted: tuple[str, ...], queue_id: str | None) -> list[Retried]:
    """Deliveries in ``wanted`` statuses (of one message, or all) due now; dead letters queued
    again. Only messages that still have their body."""
    now = utcnow()
    query = (
        select(
            deliveries.c.id,
            deliveries.c.message_id,
            messages.c.queue_id,
            deliveries.c.recipient,
            deliveries.c.status,
        )
        .select_from(deliveries.join(messages, messages.c.id == deliveries.c.message_id))
        .where(deliveries.c.status.in_(wanted), messages.c.body.is_not(None))
    )
    if queue_id is not None:
        query = query.where(messages.c.queue_id == queue_id)
    rows = conn.execute(query.order_by(deliveries.c.id)).all()
    if not rows:
        return []
    conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_([r.id for r in rows]))
        .values(status="queued", next_attempt_at=now, updated_at=now)
    )
    conn.execute(
        update(messages)
        .where(
            messages.c.id.in_({r.message_id for r in rows}),
            messages.c.status == "dead",
        )
        .values(status="queued", error=None)
    )
    return [Retried(r.queue_id, r.recipient, r.status) for r in rows]


def delete_message(conn: Connection, *, queue_id: str) -> MessageDetail | None:
    detail = show(conn, queue_id=queue_id, with_body=False)
    if detail is None:
        return None
    ids = select(messages.c.id).where(messages.c.queue_id == queue_id).scalar_subquery()
    conn.execute(delete(deliveries).where(deliveries.c.message_id == ids))
    conn.execute(delete(messages).where(messages.c.queue_id == queue_id))
    return detail


def _delivery_rows() -> Select[Any]:
    """Rows shaped like DeliveryRow, joined to their message."""
    return select(
        deliveries.c.id,
        messages.c.queue_id,
        deliveries.c.recipient,
        deliveries.c.status,
        deliveries.c.attempts,
        deliveries.c.next_attempt_at,
        deliveries.c.last_reply,
        deliveries.c.route,
        messages.c.mail_from,
        deliveries.c.updated_at,
    ).select_from(deliveries.join(messages, messages.c.id == deliveries.c.message_id))
