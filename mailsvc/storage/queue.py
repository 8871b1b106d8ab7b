"""The durable mail queue: accepted messages and their per-recipient deliveries.

Each delivery has a route, decided once at enqueue from the recipient's domain: ``lmtp`` for the
council's own domain (the mailbox store), ``smtp`` for every other domain (the smarthost).
Workers claim the due deliveries of one message on one route at a time, so a message becomes one
LMTP transaction for its local recipients and one SMTP transaction for the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailsvc.errors import StorageUnavailable
from mailsvc.storage import acks, sqlite_fast
from mailsvc.storage.db import utcnow
from mailsvc.storage.sessions import add_delivery_events
from mailsvc.storage.tables import deliveries, messages
from mailsvc.storage.units import Units, units_for

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


def _origin_from_client(client: str) -> str:
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


@dataclass(frozen=True)
class Retried:
    queue_id: str
    recipient: str
    previous_status: str


class MailQueue:
    """Repository over the queue tables. Every write is one committed transaction.

    The hot path — enqueue, claim, record — runs as whole units of work (``units``): one
    synchronous function and one transaction each, on the database's own thread for SQLite, so
    a message costs three thread hops rather than one per statement.
    """

    def __init__(self, engine: AsyncEngine, local_domains: Sequence[str] | None = None) -> None:
        self.engine = engine
        self.local_domains = (
            None if local_domains is None else tuple(d.lower() for d in local_domains)
        )
        self.units: Units = units_for(engine)
        self._pending_enqueues: list[tuple[tuple[Any, ...], asyncio.Future[str]]] = []
        self._committer: asyncio.Task[None] | None = None

    def route_for(self, recipient: str) -> str:
        return route_for(recipient, self.local_domains)

    async def close(self) -> None:
        """Commit what is waiting, then close the queue's own database connection."""
        await self.flush()
        await self.units.close()

    async def enqueue(
        self,
        mail_from: str,
        recipients: Sequence[str],
        body: bytes,
        client: str = "",
        *,
        origin: str | None = None,
        alone: bool = False,
    ) -> str:
        """Store a message durably (committed, fsync'd) and return its queue id.

        Group commit: messages arriving while a commit is in progress are written together in
        the next transaction, so concurrent sessions share one fsync. Each caller still returns
        only after its own message is committed. The null reverse path is stored as "".

        ``alone``: the caller is the only session at work, so nothing could join its commit;
        with no commit in progress the message is then committed at once, on this thread when
        the database's thread is idle (see ``ThreadUnits``).
        """
        if mail_from == "<>":
            mail_from = ""
        request = (
            mail_from,
            tuple(recipients),
            body,
            client,
            origin or _origin_from_client(client),
        )
        if (
            alone
            and not self._pending_enqueues
            and (self._committer is None or self._committer.done())
        ):
            try:
                ids = await self.units.run(
                    functools.partial(self._insert_all, [request]), inline=True
                )
            except SQLAlchemyError as exc:
                raise StorageUnavailable(f"queue could not store the message: {exc}") from exc
            return ids[0]
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending_enqueues.append((request, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending())
        return await future

    async def flush(self) -> None:
        """Wait until enqueues in progress are committed (before the engine is closed, or a
        commit could be cut off mid-way and its callers left waiting)."""
        while self._committer is not None and not self._committer.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._committer)

    async def _commit_pending(self) -> None:
        while self._pending_enqueues:
            batch, self._pending_enqueues = self._pending_enqueues, []
            try:
                ids = await self.units.run(
                    functools.partial(self._insert_all, [request for request, _ in batch])
                )
            except (SQLAlchemyError, StorageUnavailable) as exc:
                error = StorageUnavailable(f"queue could not store the message: {exc}")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            except BaseException as exc:  # cancelled or unexpected: no caller may hang
                for _, future in batch:
                    if not future.done():
                        future.set_exception(
                            StorageUnavailable(f"queue could not store the message: {exc!r}")
                        )
                raise
            for (_, future), queue_id in zip(batch, ids, strict=True):
                if not future.done():
                    future.set_result(queue_id)

    def _insert_all(self, requests: Sequence[tuple[Any, ...]], conn: Connection) -> list[str]:
        return [self._insert_rows(conn, *request)[1] for request in requests]

    async def insert(
        self,
        conn: AsyncConnection,
        mail_from: str,
        recipients: Sequence[str],
        body: bytes,
        client: str,
        origin: str,
        *,
        parts: str | None = None,
    ) -> tuple[int, str]:
        """Queue a message inside the caller's transaction; returns (row id, queue id)."""

        def insert(sync_conn: Connection) -> tuple[int, str]:
            return self._insert_rows(
                sync_conn, mail_from, recipients, body, client, origin, parts=parts
            )

        return await conn.run_sync(insert)

    def _insert_rows(
        self,
        conn: Connection,
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
            return self._insert_rows_sqlite(
                conn, queue_id, now, mail_from, recipients, body, client, origin, parts
            ), queue_id
        result = conn.execute(
            _INSERT_MESSAGE,
            {
                "queue_id": queue_id,
                "mail_from": mail_from,
                "received_at": now,
                "size": len(body),
                "client": client,
                "body": body,
                "status": "queued",
                "origin": origin,
                "parts": parts,
            },
        )
        message_id = result.inserted_primary_key[0]  # type: ignore[index]
        conn.execute(
            _INSERT_DELIVERY,
            [
                {
                    "message_id": message_id,
                    "recipient": rcpt,
                    "route": self.route_for(rcpt),
                    "status": "queued",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "updated_at": now,
                }
                for rcpt in recipients
            ],
        )
        return int(message_id), queue_id

    def _insert_rows_sqlite(
        self,
        conn: Connection,
        queue_id: str,
        now: datetime,
        mail_from: str,
        recipients: Sequence[str],
        body: bytes,
        client: str,
        origin: str,
        parts: str | None,
    ) -> int:
        """The same rows as ``_insert_rows``, written through the sqlite3 driver directly: two
        prepared statements, without SQLAlchemy's compile-and-bind round per statement (a third
        of the enqueue's CPU). Values are stored exactly as SQLAlchemy stores them."""
        cursor = sqlite_fast.driver(conn).cursor()
        try:
            with sqlite_fast.as_dbapi_error("enqueue"):
                stamp = sqlite_fast.datetime_to_db(now)
                cursor.execute(
                    _SQLITE_INSERT_MESSAGE,
                    (queue_id, mail_from, stamp, len(body), client, body, "queued", origin, parts),
                )
                message_id: int = cursor.lastrowid
                cursor.executemany(
                    _SQLITE_INSERT_DELIVERY,
                    [
                        (message_id, rcpt, self.route_for(rcpt), "queued", 0, stamp, stamp)
                        for rcpt in recipients
                    ],
                )
        finally:
            cursor.close()
        return message_id

    async def release_claims(self) -> int:
        """At start-up: deliveries left in flight by a crash become due again (at-least-once)."""

        def release(conn: Connection) -> int:
            now = utcnow()
            result = conn.execute(
                update(deliveries)
                .where(deliveries.c.status == "inflight")
                .values(status="queued", next_attempt_at=now, updated_at=now)
            )
            return int(result.rowcount or 0)

        return await self.units.run(release)

    async def claim_next(self, route: str | None = None) -> QueuedMessage | None:
        """Claim every due delivery of the oldest due message on one route (one transaction).

        With ``route`` None any route is taken: the route of the oldest due delivery.
        """
        claimed = await self.claim_batch(route, 1)
        return claimed[0] if claimed else None

    async def claim_batch(self, route: str | None, limit: int) -> list[QueuedMessage]:
        """Claim the due deliveries of up to ``limit`` of the oldest due messages, each on one
        route, in one transaction (fewer round trips per message under load)."""
        return (await self.claim(route, limit)).messages

    async def claim(self, route: str | None, limit: int) -> Claim:
        """As :meth:`claim_batch`, and say whether more is due now or when it will be: the
        delivery workers' dispatcher needs no second look at an empty queue."""
        # Not flushed: a claim lost to a power failure is a delivery in flight, retried anyway.
        # Inline when it can be: a claim without fsync is shorter than the hand-off to the
        # database thread and back.
        return await self.units.run(
            functools.partial(_claim_rows, route=route, limit=limit), durable=False, inline=True
        )

    async def release(self, claimed: Sequence[QueuedMessage]) -> None:
        """Give claimed but unattempted deliveries back (a graceful stop)."""
        ids = [d[0] for m in claimed for d in m.deliveries]
        if not ids:
            return

        def release(conn: Connection) -> None:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(ids), deliveries.c.status == "inflight")
                .values(status="queued", updated_at=utcnow())
            )

        await self.units.run(release)

    async def record(
        self,
        message_id: int,
        outcomes: Sequence[tuple[int, str, str, datetime | None]],
        *,
        follow_ups: Sequence[Outgoing] = (),
        ack: AckRequest | None = None,
        error: str | None = None,
        receipts: ReceiptUpdate | None = None,
    ) -> list[str]:
        """Store outcomes: (delivery id, new status, reply text, next attempt or None).

        In the same transaction, queue ``follow_ups`` (bounces) and, for the councillors of
        ``ack`` not acknowledged yet that day, an acknowledgement: a crash either keeps all of
        it or none. ``error`` is kept on the message when an outcome is ``dead``. Returns the
        queue ids of the messages queued here.
        """

        def record(conn: Connection) -> list[str]:
            return self._record_rows(conn, message_id, outcomes, follow_ups, ack, error, receipts)

        # Not flushed (see mailsvc.storage.units): outcomes lost to a power failure are
        # deliveries in flight at the crash, attempted again (at-least-once), and what the
        # same transaction queued (a bounce, an acknowledgement) is lost with them and made
        # again then. Unflushed commits become durable with the next enqueue's fsync.
        return await self.units.run(record, durable=False, inline=True)

    def _record_rows(
        self,
        conn: Connection,
        message_id: int,
        outcomes: Sequence[tuple[int, str, str, datetime | None]],
        follow_ups: Sequence[Outgoing],
        ack: AckRequest | None,
        error: str | None,
        receipts: ReceiptUpdate | None,
    ) -> list[str]:
        now = utcnow()
        queued: list[str] = []
        raw = sqlite_fast.driver(conn)
        if raw is not None:
            stamp = sqlite_fast.datetime_to_db(now)
            with sqlite_fast.as_dbapi_error("record"):
                raw.executemany(
                    _SQLITE_RECORD_OUTCOME,
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
                _RECORD_OUTCOME,
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
                self._insert_rows(conn, out.mail_from, out.recipients, out.body, "", out.origin)[1]
            )
        if ack is not None:
            queue_id = self._acknowledge(conn, message_id, ack, now)
            if queue_id:
                queued.append(queue_id)
        if receipts is not None and receipts.events:
            add_delivery_events(conn, message_id, receipts.events)
        if error is not None and any(o[1] == "dead" for o in outcomes):
            conn.execute(
                update(messages)
                .where(messages.c.id == message_id)
                .values(status="dead", error=error[:10000])
            )
        _settle(conn, message_id)
        return queued

    def _acknowledge(
        self, conn: Connection, message_id: int, ack: AckRequest, now: datetime
    ) -> str | None:
        if ack.forget_before is not None:
            acks.purge(conn, ack.forget_before)
        raw = sqlite_fast.driver(conn)
        if raw is not None:
            with sqlite_fast.as_dbapi_error("acknowledge"):
                (original,) = raw.execute(_SQLITE_QUEUE_ID, (message_id,)).fetchone()
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
            return None
        names = acks.display_names(conn, fresh)
        out = ack.compose([(names.get(a.lower(), ""), a) for a in fresh])
        if out is None:
            return None
        queue_id = self._insert_rows(conn, out.mail_from, out.recipients, out.body, "", out.origin)[
            1
        ]
        acks.attach_ack(
            conn, sender=ack.sender, councillors_=fresh, day=ack.day, ack_queue_id=queue_id
        )
        return queue_id

    async def mark_dead(self, message_id: int, error: str) -> None:
        """An unexpected error: keep the message and say why (never drop it)."""

        def mark(conn: Connection) -> None:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.message_id == message_id, deliveries.c.status == "inflight")
                .values(status="dead", last_reply=error[:2000], updated_at=utcnow())
            )
            conn.execute(
                update(messages)
                .where(messages.c.id == message_id)
                .values(status="dead", error=error[:10000])
            )

        await self.units.run(mark)

    # -- operators (mailsvc queue …) ----------------------------------------------------------

    async def list_deliveries(self, statuses: Sequence[str] | None = None) -> list[DeliveryRow]:
        query = _delivery_rows()
        if statuses:
            query = query.where(deliveries.c.status.in_(list(statuses)))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(deliveries.c.id))).all()
        return [DeliveryRow(*row) for row in rows]

    async def show(self, queue_id: str, *, with_body: bool = False) -> MessageDetail | None:
        """One message with every delivery, or None if there is no such queue id (read in one
        transaction: the message and its deliveries as of the same moment)."""
        return await self.units.run(
            functools.partial(_show, queue_id=queue_id, with_body=with_body)
        )

    async def retry(
        self,
        queue_id: str | None = None,
        *,
        deferred: bool = False,
        dead: bool = False,
    ) -> list[Retried]:
        """Make deliveries due now: one message's pending and dead ones, every deferred one,
        or every dead one. Dead letters become queued again. Returns what was changed."""
        if queue_id is not None:
            wanted: tuple[str, ...] = ("queued", "deferred", "dead")
        else:
            wanted = (("deferred",) if deferred else ()) + (("dead",) if dead else ())
        if not wanted:
            return []

        def retry(conn: Connection) -> list[Retried]:
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

        return await self.units.run(retry)

    async def delete(self, queue_id: str) -> MessageDetail | None:
        """Remove a message and its deliveries; returns what was removed (None if absent)."""

        def delete_one(conn: Connection) -> MessageDetail | None:
            detail = _show(conn, queue_id=queue_id, with_body=False)
            if detail is None:
                return None
            ids = select(messages.c.id).where(messages.c.queue_id == queue_id).scalar_subquery()
            conn.execute(delete(deliveries).where(deliveries.c.message_id == ids))
            conn.execute(delete(messages).where(messages.c.queue_id == queue_id))
            return detail

        return await self.units.run(delete_one)


def _show(conn: Connection, *, queue_id: str, with_body: bool) -> MessageDetail | None:
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
    )


# The hot path's statements, built once (only their parameters change from call to call):
# SQLAlchemy then skips building and re-keying them for its statement cache on every call.
# Status sets are spelled as ORs of equalities (which SQLite's planner turns into an IN on the
# index): an IN of literal values would be an "expanding" parameter, rebuilt at every call.


def _status_in(*values: str) -> ColumnElement[bool]:
    return or_(*(deliveries.c.status == v for v in values))


def _status_not_in(*values: str) -> ColumnElement[bool]:
    return and_(*(deliveries.c.status != v for v in values))


_INSERT_MESSAGE = messages.insert()
_INSERT_DELIVERY = deliveries.insert()
_SQLITE_INSERT_MESSAGE = (
    "INSERT INTO messages (queue_id, mail_from, received_at, size, client, body, status, "
    "origin, parts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_INSERT_DELIVERY = (
    "INSERT INTO deliveries (message_id, recipient, route, status, attempts, next_attempt_at, "
    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_RECORD_OUTCOME = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("delivery_id"))
    .values(
        status=bindparam("new_status"),
        last_reply=bindparam("reply"),
        attempts=deliveries.c.attempts + 1,
        next_attempt_at=bindparam("next_at"),
        updated_at=bindparam("now"),
    )
)
# The message is done (its body dropped) once none of its deliveries is open.
_SETTLE = (
    update(messages)
    .where(
        messages.c.id == bindparam("message_id"),
        ~exists().where(
            deliveries.c.message_id == bindparam("message_id"),
            _status_not_in(*FINAL),
        ),
    )
    .values(status="done", body=None, error=None)
)
_DUE = and_(_status_in(*PENDING), deliveries.c.next_attempt_at <= bindparam("now"))
_OLDEST_DUE = (
    select(deliveries.c.message_id, deliveries.c.route)
    .where(_DUE)
    .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
    .limit(bindparam("rows"))
)
_OLDEST_DUE_ON_ROUTE = (
    select(deliveries.c.message_id, deliveries.c.route)
    .where(_DUE, deliveries.c.route == bindparam("route"))
    .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
    .limit(bindparam("rows"))
)
_DUE_OF_MESSAGES = select(
    deliveries.c.id,
    deliveries.c.message_id,
    deliveries.c.route,
    deliveries.c.recipient,
    deliveries.c.attempts,
).where(deliveries.c.message_id.in_(bindparam("message_ids", expanding=True)), _DUE)
_TAKE = (
    update(deliveries)
    .where(
        deliveries.c.id.in_(bindparam("delivery_ids", expanding=True)),
        _status_in(*PENDING),
    )
    .values(status="inflight", updated_at=bindparam("now"))
)
_BODIES = select(
    messages.c.id,
    messages.c.queue_id,
    messages.c.mail_from,
    messages.c.received_at,
    messages.c.body,
    messages.c.origin,
    messages.c.parts,
).where(messages.c.id.in_(bindparam("message_ids", expanding=True)))
_DUE_OF_MESSAGE = select(*_DUE_OF_MESSAGES.selected_columns).where(
    deliveries.c.message_id == bindparam("message_ids"), _DUE
)
_TAKE_ONE = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("delivery_ids"), _status_in(*PENDING))
    .values(status="inflight", updated_at=bindparam("now"))
)
_BODY = select(*_BODIES.selected_columns).where(messages.c.id == bindparam("message_ids"))
_NEXT_DUE = select(func.min(deliveries.c.next_attempt_at)).where(_status_in(*PENDING))
_NEXT_DUE_ON_ROUTE = _NEXT_DUE.where(deliveries.c.route == bindparam("route"))


@dataclass(frozen=True)
class Claim:
    """What one claim took, and what it saw of the rest of the queue."""

    messages: list[QueuedMessage]
    # True when more may be due now (the claim stopped at its limit).
    more: bool
    # Seconds until the next pending delivery on the route is due, when nothing more is due
    # now (None: nothing pends).
    next_due_in: float | None = None


def _claim_rows(conn: Connection, route: str | None, limit: int) -> Claim:
    """The claim as one unit of work: pick the oldest due messages, mark their due deliveries
    on one route in flight, and read the bodies."""
    raw = sqlite_fast.driver(conn)
    if route is not None and raw is not None and sqlite_fast.RETURNING:
        with sqlite_fast.as_dbapi_error("claim"):
            return _claim_rows_sqlite(raw, route, limit)
    now = utcnow()
    rows_wanted = limit * 4  # a message with several recipients appears several times
    params: dict[str, Any] = {"now": now, "rows": rows_wanted}
    if route is not None:
        params["route"] = route
    candidates = conn.execute(_OLDEST_DUE if route is None else _OLDEST_DUE_ON_ROUTE, params).all()
    picked: dict[int, str] = {}
    for message_id, chosen in candidates:
        if len(picked) >= limit:
            break
        picked.setdefault(message_id, chosen)
    more = len(picked) >= limit or len(candidates) >= rows_wanted
    if not picked:
        return Claim([], False, _next_due_in(conn, route, now))
    # One message (the usual case without a backlog): the same statements with "=", which
    # spare SQLAlchemy expanding an IN list on every call.
    one = len(picked) == 1
    ids: Any = next(iter(picked)) if one else list(picked)
    rows = conn.execute(
        _DUE_OF_MESSAGE if one else _DUE_OF_MESSAGES, {"message_ids": ids, "now": now}
    ).all()
    due = [r for r in rows if r.route == picked[r.message_id]]
    if len(due) == 1:
        claimed = conn.execute(_TAKE_ONE, {"delivery_ids": due[0].id, "now": now})
    else:
        claimed = conn.execute(_TAKE, {"delivery_ids": [d.id for d in due], "now": now})
    if claimed.rowcount != len(due):  # another process took some: let it have them all
        raise StorageUnavailable("claim raced with another worker")
    bodies = {m.id: m for m in conn.execute(_BODY if one else _BODIES, {"message_ids": ids}).all()}
    out = []
    for message_id, chosen in picked.items():
        msg = bodies[message_id]
        mine = [d for d in due if d.message_id == message_id]
        out.append(
            QueuedMessage(
                id=message_id,
                queue_id=msg.queue_id,
                mail_from=msg.mail_from,
                received_at=msg.received_at,
                body=msg.body or b"",
                deliveries=tuple((d.id, d.recipient, d.attempts) for d in mine),
                route=chosen,
                origin=msg.origin,
                parts=msg.parts,
            )
        )
    return Claim(out, more, None if more else _next_due_in(conn, route, now))


# The claim of the delivery workers' dispatcher (a route given) through the sqlite3 driver:
# three statements instead of five, without SQLAlchemy's compile-and-bind round for each. The
# same choice as _claim_rows: the oldest due messages on the route, all their due deliveries
# on it, taken in one UPDATE … RETURNING (SQLite 3.35 and later).
_SQLITE_RECORD_OUTCOME = (
    "UPDATE deliveries SET status = ?, last_reply = ?, attempts = attempts + 1, "
    "next_attempt_at = ?, updated_at = ? WHERE id = ?"
)
# Written out, not built: the statuses are FINAL (checked by a test).
_SQLITE_SETTLE = (
    "UPDATE messages SET status = 'done', body = NULL, error = NULL WHERE id = ? AND NOT "
    "EXISTS (SELECT 1 FROM deliveries WHERE message_id = ? "
    "AND status != 'delivered' AND status != 'failed')"
)
_SQLITE_QUEUE_ID = "SELECT queue_id FROM messages WHERE id = ?"
# Written out, not built: the statuses are PENDING (checked by a test).
_SQLITE_OLDEST_DUE = (
    "SELECT message_id FROM deliveries WHERE (status = 'queued' OR status = 'deferred') "
    "AND next_attempt_at <= ? AND route = ? ORDER BY next_attempt_at, id LIMIT ?"
)
# "{ids}": as many "?" as message ids.
_SQLITE_TAKE = (
    "UPDATE deliveries SET status = 'inflight', updated_at = ? WHERE message_id IN ({ids}) "
    "AND route = ? AND (status = 'queued' OR status = 'deferred') AND next_attempt_at <= ? "
    "RETURNING id, message_id, recipient, attempts"
)
_SQLITE_BODIES = (
    "SELECT id, queue_id, mail_from, received_at, body, origin, parts FROM messages "
    "WHERE id IN ({ids})"
)
_SQLITE_NEXT_DUE = (
    "SELECT min(next_attempt_at) FROM deliveries "
    "WHERE (status = 'queued' OR status = 'deferred') AND route = ?"
)


def _claim_rows_sqlite(raw: Any, route: str, limit: int) -> Claim:
    now = utcnow()
    stamp = sqlite_fast.datetime_to_db(now)
    rows_wanted = limit * 4  # a message with several recipients appears several times
    candidates = raw.execute(_SQLITE_OLDEST_DUE, (stamp, route, rows_wanted)).fetchall()
    picked: list[int] = []
    for (message_id,) in candidates:
        if len(picked) >= limit:
            break
        if message_id not in picked:
            picked.append(message_id)
    more = len(picked) >= limit or len(candidates) >= rows_wanted
    if not picked:
        return Claim([], False, _next_due_in_sqlite(raw, route, now))
    marks = ", ".join("?" * len(picked))
    taken = raw.execute(_SQLITE_TAKE.format(ids=marks), (stamp, *picked, route, stamp)).fetchall()
    mine: dict[int, list[tuple[int, str, int]]] = {}
    for delivery_id, message_id, recipient, attempts in sorted(taken):
        mine.setdefault(message_id, []).append((delivery_id, recipient, attempts))
    bodies = {
        row[0]: row for row in raw.execute(_SQLITE_BODIES.format(ids=marks), picked).fetchall()
    }
    out = []
    for message_id in picked:
        _, queue_id, mail_from, received_at, body, origin, parts = bodies[message_id]
        out.append(
            QueuedMessage(
                id=message_id,
                queue_id=queue_id,
                mail_from=mail_from,
                received_at=sqlite_fast.datetime_from_db(received_at),
                body=body or b"",
                deliveries=tuple(mine.get(message_id, ())),
                route=route,
                origin=origin,
                parts=parts,
            )
        )
    return Claim(out, more, None if more else _next_due_in_sqlite(raw, route, now))


def _next_due_in_sqlite(raw: Any, route: str, now: datetime) -> float | None:
    (when,) = raw.execute(_SQLITE_NEXT_DUE, (route,)).fetchone()
    if when is None:
        return None
    return max(0.0, (sqlite_fast.datetime_from_db(when) - now).total_seconds())


def _next_due_in(conn: Connection, route: str | None, now: datetime) -> float | None:
    if route is None:
        when: datetime | None = conn.execute(_NEXT_DUE).scalar_one()
    else:
        when = conn.execute(_NEXT_DUE_ON_ROUTE, {"route": route}).scalar_one()
    if when is None:
        return None
    return max(0.0, (when - now).total_seconds())


def _settle(conn: Connection, message_id: int) -> None:
    # Privacy: a body is kept only until every recipient is settled for good (a dead letter
    # keeps it, so that it can be retried).
    raw = sqlite_fast.driver(conn)
    if raw is not None:
        with sqlite_fast.as_dbapi_error("settle"):
            raw.execute(_SQLITE_SETTLE, (message_id, message_id))
    else:
        conn.execute(_SETTLE, {"message_id": message_id})


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


def backoff(attempts: int, initial: float, maximum: float) -> timedelta:
    """Exponential backoff after ``attempts`` failed attempts (1 → initial)."""
    return timedelta(seconds=min(maximum, initial * (2 ** max(0, attempts - 1))))
