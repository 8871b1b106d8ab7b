"""The units of work that write the queue: a message's rows, delivery outcomes (with what they
cause: bounces, acknowledgements, receipt events) and settling a message.

Plain functions of a synchronous ``Connection``; ``MailQueue`` runs them through its ``Units``.
On the queue's own SQLite connection the per-message statements go through the sqlite3 driver
(``mailsvc.storage.sqlite_fast``), elsewhere through SQLAlchemy.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from mailsvc.domain.outcome import stored_text
from mailsvc.storage import acks, autoreplies, sqlite_fast
from mailsvc.storage.db import utcnow
from mailsvc.storage.queue import leases
from mailsvc.storage.queue.model import AckRequest, Outgoing, ReceiptUpdate, route_for
from mailsvc.storage.queue.statements import (
    INSERT_DELIVERY,
    INSERT_MESSAGE,
    RECORD_OUTCOME,
    SETTLE,
    SQLITE_INSERT_DELIVERY,
    SQLITE_INSERT_MESSAGE,
    SQLITE_QUEUE_ID,
    SQLITE_RECORD_OUTCOME,
    SQLITE_SETTLE,
)
from mailsvc.storage.sessions import add_delivery_events
from mailsvc.storage.spool import stored_size
from mailsvc.storage.tables import deliveries, messages


def insert_rows(
    conn: Connection,
    local_domains: Sequence[str] | None,
    mail_from: str,
    recipients: Sequence[str],
    body: bytes,
    client: str,
    origin: str,
    *,
    parts: str | None = None,
) -> tuple[int, str]:
    queue_id = secrets.token_hex(8)
    now = utcnow()
    if sqlite_fast.driver(conn) is not None:  # the queue's own SQLite thread: the hot path
        return _insert_rows_sqlite(
            conn, local_domains, queue_id, now, mail_from, recipients, body, client, origin, parts
        ), queue_id
    ((message_id, queue_id),) = insert_many_rows(
        conn, local_domains, [(mail_from, recipients, body, parts)], client, origin
    )
    return message_id, queue_id


def insert_many_rows(
    conn: Connection,
    local_domains: Sequence[str] | None,
    items: Sequence[tuple[str, Sequence[str], bytes, str | None]],
    client: str,
    origin: str,
) -> list[tuple[int, str]]:
    """Queue several messages ``(mail_from, recipients, body, parts)`` in two statements (one
    for the messages, one for all their deliveries); their (row id, queue id) in order."""
    if not items:
        return []
    now = utcnow()
    queue_ids = [secrets.token_hex(8) for _ in items]
    result = conn.execute(
        INSERT_MESSAGE.returning(messages.c.id, sort_by_parameter_order=True),
        [
            {
                "queue_id": queue_id,
                "mail_from": mail_from,
                "received_at": now,
                "size": stored_size(body, parts),
                "client": client,
                "body": body,
                "status": "queued",
                "origin": origin,
                "parts": parts,
            }
            for queue_id, (mail_from, _, body, parts) in zip(queue_ids, items, strict=True)
        ],
    )
    row_ids = [int(r[0]) for r in result]
    rows = [
        {
            "message_id": message_id,
            "recipient": rcpt,
            "route": route_for(rcpt, local_domains),
            "status": "queued",
            "attempts": 0,
            "next_attempt_at": now,
            "updated_at": now,
        }
        for message_id, (_, recipients, _, _) in zip(row_ids, items, strict=True)
        for rcpt in recipients
    ]
    conn.execute(INSERT_DELIVERY, rows)
    if conn.dialect.name == "postgresql" and rows:  # wake the other nodes at the commit
        leases.notify(conn, [str(row["route"]) for row in rows])
    return list(zip(row_ids, queue_ids, strict=True))


def _insert_rows_sqlite(
    conn: Connection,
    local_domains: Sequence[str] | None,
    queue_id: str,
    now: datetime,
    mail_from: str,
    recipients: Sequence[str],
    body: bytes,
    client: str,
    origin: str,
    parts: str | None,
) -> int:
    """The same rows as ``insert_rows``, written through the sqlite3 driver directly: two
    prepared statements, without SQLAlchemy's compile-and-bind round per statement (a third
    of the enqueue's CPU). Values are stored exactly as SQLAlchemy stores them."""
    cursor = sqlite_fast.driver(conn).cursor()
    try:
        with sqlite_fast.as_dbapi_error("enqueue"):
            stamp = sqlite_fast.datetime_to_db(now)
            size = stored_size(body, parts)
            cursor.execute(
                SQLITE_INSERT_MESSAGE,
                (queue_id, mail_from, stamp, size, client, body, "queued", origin, parts),
            )
            message_id: int = cursor.lastrowid
            cursor.executemany(
                SQLITE_INSERT_DELIVERY,
                [
                    (message_id, rcpt, route_for(rcpt, local_domains), "queued", 0, stamp, stamp)
                    for rcpt in recipients
                ],
            )
    finally:
        cursor.close()
    return message_id


def record_rows(
    conn: Connection,
    local_domains: Sequence[str] | None,
    message_id: int,
    outcomes: Sequence[tuple[int, str, str, datetime | None]],
    follow_ups: Sequence[Outgoing],
    ack: AckRequest | None,
    error: str | None,
    receipts: ReceiptUpdate | None,
    note: str | None = None,
    *,
    node: str | None = None,
    late: list[int] | None = None,
) -> list[str]:
    """Store an attempt's outcomes and what they cause, in the caller's transaction.

    ``node`` (claims with leases, PostgreSQL): only outcomes of deliveries still claimed by
    this node are stored; the ids of the others (taken over by another node after their lease
    passed) are appended to ``late``. When none is still ours nothing is written: the node
    that took them over makes its own attempt, bounce, acknowledgement and receipts.
    """
    now = utcnow()
    queued: list[str] = []
    if node is not None:
        ours = leases.still_mine(conn, [o[0] for o in outcomes], node)
        if len(ours) < len(outcomes):
            gone = [o for o in outcomes if o[0] not in ours]
            if late is not None:
                late.extend(o[0] for o in gone)
            if not ours:
                return []
            outcomes = [o for o in outcomes if o[0] in ours]
            if receipts is not None:
                receipts = _receipts_of(receipts, conn, [o[0] for o in gone])
    raw = sqlite_fast.driver(conn)
    if raw is not None:
        stamp = sqlite_fast.datetime_to_db(now)
        with sqlite_fast.as_dbapi_error("record"):
            raw.executemany(
                SQLITE_RECORD_OUTCOME,
                [
                    (
                        status,
                        reply,
                        sqlite_fast.datetime_to_db(next_at) if next_at else stamp,
                        stamp,
                        i,
                    )
                    for i, status, reply, next_at in outcomes
                ],
            )
    else:
        conn.execute(
            RECORD_OUTCOME,
            [
                {
                    "delivery_id": delivery_id,
                    "new_status": status,
                    "reply": reply,
                    "next_at": next_at or now,
                    "now": now,
                }
                for delivery_id, status, reply, next_at in outcomes
            ],
        )
    for out in follow_ups:
        queued.append(
            insert_rows(
                conn, local_domains, out.mail_from, out.recipients, out.body, "", out.origin
            )[1]
        )
    notes = [note] if note else []
    if ack is not None:
        queue_id, ack_note = _acknowledge(conn, local_domains, message_id, ack, now)
        if queue_id:
            queued.append(queue_id)
        notes.append(ack_note)
    if notes:
        autoreplies.add_note(conn, message_id, "; ".join(notes))
    if receipts is not None and receipts.events:
        add_delivery_events(conn, message_id, receipts.events)
    if error is not None and any(o[1] == "dead" for o in outcomes):
        conn.execute(
            update(messages)
            .where(messages.c.id == message_id)
            .values(status="dead", error=stored_text(error)[:10000])
        )
    settle(conn, message_id)
    return queued


def _receipts_of(receipts: ReceiptUpdate, conn: Connection, gone: Sequence[int]) -> ReceiptUpdate:
    """``receipts`` without the events of the deliveries in ``gone``."""
    recipients = set(
        conn.execute(select(deliveries.c.recipient).where(deliveries.c.id.in_(gone))).scalars()
    )
    return ReceiptUpdate(tuple(e for e in receipts.events if e[0] not in recipients))


def _acknowledge(
    conn: Connection,
    local_domains: Sequence[str] | None,
    message_id: int,
    ack: AckRequest,
    now: datetime,
) -> tuple[str | None, str]:
    """The acknowledgement's queue id (None: none queued) and a note saying what happened."""
    if ack.forget_before is not None:
        acks.purge(conn, ack.forget_before)
    raw = sqlite_fast.driver(conn)
    if raw is not None:
        with sqlite_fast.as_dbapi_error("acknowledge"):
            (original,) = raw.execute(SQLITE_QUEUE_ID, (message_id,)).fetchone()
    else:
        original = conn.execute(
            select(messages.c.queue_id).where(messages.c.id == message_id)
        ).scalar_one()
    fresh = [
        c
        for c in ack.councillors
        if acks.claim(
            conn,
            sender=ack.sender,
            councillor=c,
            day=ack.day,
            original_queue_id=original,
            now=now,
        )
    ]
    if not fresh:
        return None, "no acknowledgement: already acknowledged today"
    if ack.hourly_caps is not None:
        capped = autoreplies.take_hourly(
            conn,
            now=now,
            domain=ack.cap_domain,
            max_total=ack.hourly_caps[0],
            max_per_domain=ack.hourly_caps[1],
        )
        if capped is not None:
            # Not acknowledged after all: a later message of the day may still be.
            acks.release(conn, sender=ack.sender, councillors_=fresh, day=ack.day)
            return None, f"no acknowledgement: {capped}"
    names = acks.display_names(conn, fresh)
    out = ack.compose([(names.get(a.lower(), ""), a) for a in fresh])
    if out is None:
        return None, "no acknowledgement: could not be composed"
    queue_id = insert_rows(
        conn, local_domains, out.mail_from, out.recipients, out.body, "", out.origin
    )[1]
    acks.attach_ack(conn, sender=ack.sender, councillors_=fresh, day=ack.day, ack_queue_id=queue_id)
    return queue_id, f"acknowledged as {queue_id}"


def settle(conn: Connection, message_id: int) -> None:
    # Privacy: a body is kept only until every recipient is settled for good (a dead letter
    # keeps it, so that it can be retried).
    raw = sqlite_fast.driver(conn)
    if raw is not None:
        with sqlite_fast.as_dbapi_error("settle"):
            raw.execute(SQLITE_SETTLE, (message_id, message_id))
    else:
        conn.execute(SETTLE, {"message_id": message_id})
