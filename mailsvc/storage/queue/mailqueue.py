"""``MailQueue``: the repository over the queue tables, as the rest of the service sees it.

Each delivery has a route, decided once at enqueue from the recipient's domain: ``lmtp`` for the
council's own domain (the mailbox store), ``smtp`` for every other domain (the smarthost).
Workers claim the due deliveries of one message on one route at a time, so a message becomes one
LMTP transaction for its local recipients and one SMTP transaction for the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailsvc.domain.outcome import stored_text
from mailsvc.errors import StorageUnavailable
from mailsvc.storage.db import utcnow
from mailsvc.storage.queue import admin, leases
from mailsvc.storage.queue.claim import Claim, claim_rows
from mailsvc.storage.queue.model import (
    AckRequest,
    DeliveryRow,
    MessageDetail,
    Outgoing,
    QueuedMessage,
    ReceiptUpdate,
    Retried,
    origin_from_client,
    route_for,
)
from mailsvc.storage.queue.writes import insert_many_rows, insert_rows, record_rows
from mailsvc.storage.spool import spool_name
from mailsvc.storage.tables import deliveries, messages
from mailsvc.storage.units import Units, units_for

log = logging.getLogger(__name__)

# What ``on_lease_event`` is called with (and the counters' names for them).
TAKEOVERS = "delivery_takeovers"
LATE_OUTCOMES = "delivery_late_outcomes"


class MailQueue:
    """Repository over the queue tables. Every write is one committed transaction.

    The hot path — enqueue, claim, record — runs as whole units of work (``units``): one
    synchronous function and one transaction each, on the database's own thread for SQLite, so
    a message costs three thread hops rather than one per statement.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        local_domains: Sequence[str] | None = None,
        *,
        node: str | None = None,
        lease_seconds: float = 120.0,
    ) -> None:
        self.engine = engine
        self.local_domains = (
            None if local_domains is None else tuple(d.lower() for d in local_domains)
        )
        # Claims with leases (mailsvc.storage.queue.leases) on PostgreSQL, where several nodes
        # may share the queue; SQLite has one node and keeps its fast path.
        self.leased = engine.dialect.name == "postgresql"
        self.node = node or f"{socket.gethostname().split('.')[0]}-{os.getpid()}"
        self.lease_seconds = lease_seconds
        # The deliveries this queue holds in flight under a lease: delivery id -> message id
        # (renewed by mailsvc.relay.delivery.claims while they are attempted).
        self.held: dict[int, int] = {}
        # Called with (TAKEOVERS or LATE_OUTCOMES, how many): the delivery workers count them.
        self.on_lease_event: Callable[[str, int], None] | None = None
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
        parts: str | None = None,
    ) -> str:
        """Store a message durably (committed, fsync'd) and return its queue id.

        Group commit: messages arriving while a commit is in progress are written together in
        the next transaction, so concurrent sessions share one fsync. Each caller still returns
        only after its own message is committed. The null reverse path is stored as "".
        ``parts`` names what is stored beside ``body`` (a spool file: ``storage.spool``).

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
            origin or origin_from_client(client),
            parts,
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
        return [
            insert_rows(conn, self.local_domains, *request[:5], parts=request[5])[1]
            for request in requests
        ]

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
            return insert_rows(
                sync_conn,
                self.local_domains,
                mail_from,
                recipients,
                body,
                client,
                origin,
                parts=parts,
            )

        return await conn.run_sync(insert)

    async def insert_many(
        self,
        conn: AsyncConnection,
        items: Sequence[tuple[str, Sequence[str], bytes, str | None]],
        client: str,
        origin: str,
    ) -> list[tuple[int, str]]:
        """Queue several messages ``(mail_from, recipients, body, parts)`` inside the caller's
        transaction, in two statements; their (row id, queue id) in order."""

        def insert(sync_conn: Connection) -> list[tuple[int, str]]:
            return insert_many_rows(sync_conn, self.local_domains, items, client, origin)

        return await conn.run_sync(insert)

    async def release_claims(self) -> int:
        """At start-up: deliveries left in flight by a crash become due again (at-least-once).

        With leases only this node's own claims (a restarted node): another node's may be
        in progress, and are taken over only once their lease has passed."""
        if self.leased:
            return await self.units.run(functools.partial(leases.release_own, node=self.node))

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
        if self.leased:
            return await self._claim_leased(route, limit)
        return await self.units.run(
            functools.partial(claim_rows, route=route, limit=limit), durable=False, inline=True
        )

    async def _claim_leased(self, route: str | None, limit: int) -> Claim:
        leased = await self.units.run(
            functools.partial(
                leases.claim_leased,
                route=route,
                limit=limit,
                node=self.node,
                lease_seconds=self.lease_seconds,
            ),
            durable=False,
        )
        for message in leased.claim.messages:
            for delivery_id, _, _ in message.deliveries:
                self.held[delivery_id] = message.id
        for t in leased.takeovers:
            log.warning(
                "queue %s: delivery %d to <%s> taken over from node %s, whose lease expired: "
                "a duplicate is possible if that node's attempt reached the recipient",
                t.queue_id,
                t.delivery_id,
                t.recipient,
                t.old_node,
            )
        if leased.takeovers and self.on_lease_event is not None:
            self.on_lease_event(TAKEOVERS, len(leased.takeovers))
        return leased.claim

    async def renew_leases(self) -> int:
        """Extend the lease of every claim this queue holds; returns how many are held. A
        claim found taken over (its lease passed before this renewal) is logged and dropped
        from the held ones: its outcome will not be applied."""
        ids = list(self.held)
        if not self.leased or not ids:
            return len(ids)
        kept = await self.units.run(
            functools.partial(
                leases.renew, ids=ids, node=self.node, lease_seconds=self.lease_seconds
            ),
            durable=False,
        )
        for delivery_id in ids:
            # Not renewed and not recorded meanwhile: another node took it over.
            if delivery_id not in kept and self.held.pop(delivery_id, None) is not None:
                log.warning(
                    "delivery %d: lease lost to another node before it was renewed; its "
                    "outcome here will not be applied",
                    delivery_id,
                )
        return len(self.held)

    async def release(self, claimed: Sequence[QueuedMessage]) -> None:
        """Give claimed but unattempted deliveries back (a graceful stop)."""
        ids = [d[0] for m in claimed for d in m.deliveries]
        if not ids:
            return
        for delivery_id in ids:
            self.held.pop(delivery_id, None)
        if self.leased:
            await self.units.run(functools.partial(leases.release_some, ids=ids, node=self.node))
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
        note: str | None = None,
    ) -> list[str]:
        """Store outcomes: (delivery id, new status, reply text, next attempt or None).

        In the same transaction, queue ``follow_ups`` (bounces) and, for the councillors of
        ``ack`` not acknowledged yet that day, an acknowledgement: a crash either keeps all of
        it or none. ``error`` is kept on the message when an outcome is ``dead``. Returns the
        queue ids of the messages queued here. ``note`` (why no acknowledgement or bounce was
        sent) is added to the message's ``auto_reply``, with the acknowledgement's own.
        """

        late: list[int] = []

        def record(conn: Connection) -> list[str]:
            late.clear()  # a unit run again starts over
            return record_rows(
                conn,
                self.local_domains,
                message_id,
                outcomes,
                follow_ups,
                ack,
                error,
                receipts,
                note,
                node=self.node if self.leased else None,
                late=late,
            )

        # Not flushed (see mailsvc.storage.units): outcomes lost to a power failure are
        # deliveries in flight at the crash, attempted again (at-least-once), and what the
        # same transaction queued (a bounce, an acknowledgement) is lost with them and made
        # again then. Unflushed commits become durable with the next enqueue's fsync.
        # No longer renewed from here on (a renewal after this commit would find the rows
        # settled and take them for lost); held again if the unit fails.
        recording = {o[0]: self.held.pop(o[0]) for o in outcomes if o[0] in self.held}
        try:
            queued = await self.units.run(record, durable=False, inline=True)
        except BaseException:
            self.held.update(recording)
            raise
        if late:
            log.warning(
                "message %d: outcome of deliveries %s not applied: their claim was taken over "
                "by another node after its lease expired (that node attempts them again)",
                message_id,
                ", ".join(map(str, late)),
            )
            if self.on_lease_event is not None:
                self.on_lease_event(LATE_OUTCOMES, len(late))
        return queued

    def let_go(self, message_id: int) -> None:
        """Stop renewing the leases of this message's claims: their outcome will not be
        recorded here, so once the lease passes any node (this one too) claims them again."""
        for delivery_id, held_by in list(self.held.items()):
            if held_by == message_id:
                del self.held[delivery_id]

    async def mark_dead(self, message_id: int, error: str) -> None:
        """An unexpected error: keep the message and say why (never drop it)."""
        error = stored_text(error)
        self.let_go(message_id)

        def mark(conn: Connection) -> None:
            if self.leased:
                leases.mark_dead(conn, message_id, self.node, error[:2000])
                conn.execute(
                    update(messages)
                    .where(messages.c.id == message_id)
                    .values(status="dead", error=error[:10000])
                )
                return
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

    # -- spool files (storage.spool) -----------------------------------------------------------

    async def settled(self, message_id: int) -> bool:
        """Whether every delivery of a message is final (its body is no longer kept)."""

        def read(conn: Connection) -> bool:
            status = conn.execute(
                select(messages.c.status).where(messages.c.id == message_id)
            ).scalar_one_or_none()
            return status is None or status == "done"

        return await self.units.run(read)

    async def spool_files_in_use(self) -> set[str]:
        """The spool files named by messages whose body is still kept."""

        def read(conn: Connection) -> set[str]:
            rows = conn.execute(
                select(messages.c.parts).where(
                    messages.c.parts.like('%"spool"%'), messages.c.body.is_not(None)
                )
            ).scalars()
            return {name for name in map(spool_name, rows) if name}

        return await self.units.run(read)

    # -- operators (mailsvc queue …) ----------------------------------------------------------

    async def list_deliveries(self, statuses: Sequence[str] | None = None) -> list[DeliveryRow]:
        return await admin.list_deliveries(self.engine, statuses)

    async def show(self, queue_id: str, *, with_body: bool = False) -> MessageDetail | None:
        """One message with every delivery, or None if there is no such queue id (read in one
        transaction: the message and its deliveries as of the same moment)."""
        return await self.units.run(
            functools.partial(admin.show, queue_id=queue_id, with_body=with_body)
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
        return await self.units.run(
            functools.partial(admin.retry, wanted=wanted, queue_id=queue_id)
        )

    async def delete(self, queue_id: str) -> MessageDetail | None:
        """Remove a message and its deliveries; returns what was removed (None if absent)."""
        return await self.units.run(functools.partial(admin.delete_message, queue_id=queue_id))
