"""The relay log: metadata of residents' messages to councillors (no bodies), kept for a
retention period (GDPR/RODO), with the time each councillor replied.

Rows are buffered briefly and written in one transaction, so logging adds no commit to the path
that answers 250 (the message itself is committed before that, by the queue). A crash can lose
at most the last flush interval of metadata, never a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, or_, select
from sqlalchemy import update as sql_update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from mailsvc.storage.db import utcnow
from mailsvc.storage.tables import deliveries, messages, relay_log
from mailsvc.storage.units import EngineUnits, Units

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelayEntry:
    received_at: datetime
    queue_id: str
    message_id: str | None
    sender: str
    recipients: tuple[str, ...]
    size: int


@dataclass(frozen=True)
class CouncillorStats:
    recipient: str
    received: int
    replied: int
    median_reply_seconds: float | None


class RelayLog:
    def __init__(
        self, engine: AsyncEngine, flush_interval: float = 0.5, *, units: Units | None = None
    ) -> None:
        self.engine = engine
        # The queue's units of work, when given: the log's writes then take turns with the
        # queue's instead of meeting them at SQLite's lock.
        self.units: Units = units or EngineUnits(engine)
        self.flush_interval = flush_interval
        self._pending: list[RelayEntry] = []
        self._task: asyncio.Task[None] | None = None

    def record(self, entry: RelayEntry) -> None:
        self._pending.append(entry)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.flush_interval)
        await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        rows = [
            {
                "received_at": e.received_at,
                "queue_id": e.queue_id,
                "message_id": e.message_id,
                "sender": e.sender,
                "recipient": rcpt,
                "size": e.size,
                "status": "accepted",
            }
            for e in batch
            for rcpt in e.recipients
        ]

        def write(conn: Connection) -> None:
            conn.execute(relay_log.insert(), rows)

        try:
            await self.units.run(write)
        except Exception:
            log.exception("relay log: could not write %d rows (metadata only)", len(rows))

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def record_reply(self, councillor: str, message_ids: Sequence[str]) -> int:
        """A councillor answered: stamp the first reply time on the messages it answers."""
        if not message_ids:
            return 0
        await self.flush()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                sql_update(relay_log)
                .where(
                    relay_log.c.recipient == councillor,
                    relay_log.c.message_id.in_(list(message_ids)),
                    relay_log.c.replied_at.is_(None),
                )
                .values(replied_at=utcnow())
            )
        return result.rowcount

    async def refresh_status(self) -> int:
        """Copy each delivery's final state, and what became of the automatic answers to the
        message (``auto_reply``), into the log (the queue rows are purged later)."""
        async with self.engine.begin() as conn:
            pending = (
                await conn.execute(
                    select(relay_log.c.id, deliveries.c.status)
                    .select_from(
                        relay_log.join(messages, messages.c.queue_id == relay_log.c.queue_id).join(
                            deliveries,
                            and_(
                                deliveries.c.message_id == messages.c.id,
                                deliveries.c.recipient == relay_log.c.recipient,
                            ),
                        )
                    )
                    .where(
                        # "dead" can still change: an operator may retry a dead letter.
                        relay_log.c.status.in_(("accepted", "dead")),
                        relay_log.c.status != deliveries.c.status,
                        deliveries.c.status.in_(("delivered", "failed", "dead")),
                    )
                )
            ).all()
            for row_id, status in pending:
                await conn.execute(
                    sql_update(relay_log).where(relay_log.c.id == row_id).values(status=status)
                )
            # What became of the acknowledgement (or bounce), decided at delivery.
            notes = (
                await conn.execute(
                    select(relay_log.c.id, messages.c.auto_reply)
                    .select_from(
                        relay_log.join(messages, messages.c.queue_id == relay_log.c.queue_id)
                    )
                    .where(
                        messages.c.auto_reply.is_not(None),
                        or_(
                            relay_log.c.auto_reply.is_(None),
                            relay_log.c.auto_reply != messages.c.auto_reply,
                        ),
                    )
                )
            ).all()
            for row_id, note in notes:
                await conn.execute(
                    sql_update(relay_log).where(relay_log.c.id == row_id).values(auto_reply=note)
                )
        return len(pending) + len(notes)

    async def purge(self, older_than: datetime) -> int:
        """Forget metadata past retention, and settled queue rows of the same age."""
        async with self.engine.begin() as conn:
            removed = (
                await conn.execute(delete(relay_log).where(relay_log.c.received_at < older_than))
            ).rowcount
            old = select(messages.c.id).where(
                messages.c.received_at < older_than, messages.c.status.in_(("done",))
            )
            await conn.execute(delete(deliveries).where(deliveries.c.message_id.in_(old)))
            await conn.execute(
                delete(messages).where(
                    messages.c.received_at < older_than, messages.c.status.in_(("done",))
                )
            )
        return removed

    async def stats(self, since: datetime | None = None) -> list[CouncillorStats]:
        await self.flush()
        query = select(relay_log.c.recipient, relay_log.c.received_at, relay_log.c.replied_at)
        if since is not None:
            query = query.where(relay_log.c.received_at >= since)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        per: dict[str, list[tuple[datetime, datetime | None]]] = {}
        for rcpt, received, replied in rows:
            per.setdefault(rcpt, []).append((received, replied))
        out = []
        for rcpt, items in sorted(per.items()):
            delays = [(r - s).total_seconds() for s, r in items if r is not None]
            out.append(
                CouncillorStats(
                    rcpt, len(items), len(delays), statistics.median(delays) if delays else None
                )
            )
        return out
