"""Repository for council sessions, their documents, distributions and receipt events.

The distributions table is the truth about what is to be sent and when; the recipients table,
written in the same transaction as each queued message, makes "each councillor gets each
distribution exactly once" a unique key; receipt events are only ever appended.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, and_, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailsvc.domain.receipt_states import EventKind, EventSource, ReceiptEvent
from mailsvc.storage import chain, sqlite_fast
from mailsvc.storage.db import utcnow
from mailsvc.storage.tables import (
    agenda_items,
    council_sessions,
    distribution_recipients,
    distributions,
    documents,
    receipt_events,
    reminder_rounds,
)


@dataclass(frozen=True)
class CouncilSessionRow:
    id: int
    number: str
    kind: str
    starts_at: datetime  # local time
    place: str
    title: str
    status: str
    created_at: datetime
    created_by: str


@dataclass(frozen=True)
class AgendaItemRow:
    id: int
    session_id: int
    position: int
    title: str


@dataclass(frozen=True)
class DocumentRow:
    id: int
    session_id: int
    agenda_item_id: int | None
    sha256: str
    filename: str
    media_type: str
    doc_kind: str
    size: int
    pages: int | None
    added_at: datetime
    replaced_by: int | None


@dataclass(frozen=True)
class DistributionRow:
    id: int
    session_id: int
    kind: str
    status: str
    due_at: datetime  # UTC
    committee: str | None
    document_ids: tuple[int, ...]
    note: str
    replies_to: int | None
    override_reason: str | None
    created_at: datetime
    created_by: str
    started_at: datetime | None
    sent_at: datetime | None
    late: bool


@dataclass(frozen=True)
class RecipientRow:
    id: int
    distribution_id: int
    address: str
    name: str
    role: str
    message_id: str
    queue_message_id: int | None


def _fields(r: object, cls: type[Any]) -> dict[str, Any]:
    m = r._mapping  # type: ignore[attr-defined]
    return {k: m[k] for k in cls.__dataclass_fields__ if k in m}


def _session(r: object) -> CouncilSessionRow:
    return CouncilSessionRow(**_fields(r, CouncilSessionRow))


def _document(r: object) -> DocumentRow:
    return DocumentRow(**_fields(r, DocumentRow))


def _distribution(r: object) -> DistributionRow:
    m = r._mapping  # type: ignore[attr-defined]
    values = _fields(r, DistributionRow)
    values["document_ids"] = tuple(int(i) for i in (m["document_ids"] or "").split(",") if i)
    values["late"] = bool(m["late"])
    return DistributionRow(**values)


def _recipient(r: object) -> RecipientRow:
    return RecipientRow(**_fields(r, RecipientRow))


_SQLITE_RECIPIENTS_OF_MESSAGE = (
    "SELECT id, distribution_id, address FROM distribution_recipients WHERE queue_message_id = ?"
)


def add_delivery_events(
    conn: Connection,
    queue_message_id: int,
    events: Iterable[tuple[str, str, datetime, str, str]],
) -> int:
    """Append delivery events for the recipients of one queued distribution message, inside
    the caller's (synchronous) transaction: the queue's unit of work that records the outcomes.
    (address, kind, at, source, evidence); unknown addresses are skipped. Each event is linked
    into its distribution's hash chain (mailsvc.storage.chain)."""
    raw = sqlite_fast.driver(conn)
    if raw is not None:  # the queue's own SQLite connection: straight through the driver
        with sqlite_fast.as_dbapi_error("delivery events"):
            found = raw.execute(_SQLITE_RECIPIENTS_OF_MESSAGE, (queue_message_id,)).fetchall()
            wanted = _delivery_events(found, events)
            return chain.append_sqlite(raw, wanted)
    result = conn.execute(
        select(
            distribution_recipients.c.id,
            distribution_recipients.c.distribution_id,
            distribution_recipients.c.address,
        ).where(distribution_recipients.c.queue_message_id == queue_message_id)
    ).all()
    return chain.append(conn, _delivery_events(result, events))


def _delivery_events(
    recipients: Iterable[Any], events: Iterable[tuple[str, str, datetime, str, str]]
) -> list[chain.NewEvent]:
    """The events of known recipients, given their (id, distribution id, address) rows."""
    known = {address.lower(): (rid, dist, address) for rid, dist, address in recipients}
    return [
        chain.NewEvent.make(*known[address.lower()], kind, source, at, evidence)
        for address, kind, at, source, evidence in events
        if address.lower() in known
    ]


def _append_for_recipients(
    conn: Connection,
    events: Sequence[tuple[int, EventKind, EventSource, str, datetime]],
    once: bool,
) -> int:
    """``chain.append`` for events given by recipient id (the recipients looked up)."""
    recipients = chain.recipients_of(conn, (e[0] for e in events))
    return chain.append(
        conn,
        [
            chain.NewEvent.make(rid, *recipients[rid], kind, source, at, evidence)
            for rid, kind, source, evidence, at in events
        ],
        once=once,
    )


class ReceiptStore:
    """Sessions, documents, distributions, recipients and their receipt events."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def _first(self, query: Select[Any]) -> Row[Any] | None:
        async with self.engine.connect() as conn:
            row: Row[Any] | None = (await conn.execute(query)).first()
        return row

    # --- sessions -------------------------------------------------------------------------

    async def create_session(
        self,
        *,
        number: str,
        kind: str,
        starts_at: datetime,
        place: str,
        title: str,
        actor: str,
        agenda: Sequence[str] = (),
    ) -> CouncilSessionRow:
        now = utcnow()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                insert(council_sessions).values(
                    number=number,
                    kind=kind,
                    starts_at=starts_at,
                    place=place,
                    title=title,
                    status="planned",
                    created_at=now,
                    created_by=actor,
                )
            )
            session_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            for position, item in enumerate(agenda, start=1):
                await conn.execute(
                    insert(agenda_items).values(
                        session_id=session_id, position=position, title=item
                    )
                )
        found = await self.session_by_id(session_id)
        assert found is not None
        return found

    async def session(self, number: str) -> CouncilSessionRow | None:
        row = await self._first(select(council_sessions).where(council_sessions.c.number == number))
        return _session(row) if row else None

    async def session_by_id(self, session_id: int) -> CouncilSessionRow | None:
        row = await self._first(select(council_sessions).where(council_sessions.c.id == session_id))
        return _session(row) if row else None

    async def list_sessions(self) -> list[CouncilSessionRow]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(council_sessions).order_by(council_sessions.c.starts_at)
            )
            return [_session(r) for r in rows]

    async def update_session(self, session_id: int, **values: object) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(council_sessions).where(council_sessions.c.id == session_id).values(**values)
            )

    async def agenda(self, session_id: int) -> list[AgendaItemRow]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(agenda_items)
                .where(agenda_items.c.session_id == session_id)
                .order_by(agenda_items.c.position)
            )
            return [AgendaItemRow(r.id, r.session_id, r.position, r.title) for r in rows]

    async def add_agenda_item(self, session_id: int, title: str) -> AgendaItemRow:
        async with self.engine.begin() as conn:
            last = (
                await conn.execute(
                    select(func.max(agenda_items.c.position)).where(
                        agenda_items.c.session_id == session_id
                    )
                )
            ).scalar()
            position = int(last or 0) + 1
            result = await conn.execute(
                insert(agenda_items).values(session_id=session_id, position=position, title=title)
            )
        return AgendaItemRow(
            int(result.inserted_primary_key[0]),  # type: ignore[index]
            session_id,
            position,
            title,
        )

    # --- documents ------------------------------------------------------------------------

    async def add_document(
        self,
        *,
        session_id: int,
        agenda_item_id: int | None,
        sha256: str,
        filename: str,
        media_type: str,
        doc_kind: str,
        size: int,
        pages: int | None,
        actor: str,
        replaces: int | None = None,
    ) -> DocumentRow:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                insert(documents).values(
                    session_id=session_id,
                    agenda_item_id=agenda_item_id,
                    sha256=sha256,
                    filename=filename,
                    media_type=media_type,
                    doc_kind=doc_kind,
                    size=size,
                    pages=pages,
                    added_at=utcnow(),
                    added_by=actor,
                )
            )
            doc_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            if replaces is not None:
                await conn.execute(
                    update(documents).where(documents.c.id == replaces).values(replaced_by=doc_id)
                )
            row = (await conn.execute(select(documents).where(documents.c.id == doc_id))).one()
        return _document(row)

    async def documents(self, session_id: int) -> list[DocumentRow]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(documents)
                .where(documents.c.session_id == session_id)
                .order_by(documents.c.id)
            )
            return [_document(r) for r in rows]

    async def documents_by_id(self, ids: Sequence[int]) -> list[DocumentRow]:
        if not ids:
            return []
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(documents).where(documents.c.id.in_(list(ids))))
            found = {r.id: _document(r) for r in rows}
        return [found[i] for i in ids if i in found]

    # --- distributions --------------------------------------------------------------------

    async def create_distribution(
        self,
        *,
        session_id: int,
        kind: str,
        due_at: datetime,
        committee: str | None,
        document_ids: Sequence[int],
        note: str,
        replies_to: int | None,
        override_reason: str | None,
        actor: str,
    ) -> DistributionRow:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                insert(distributions).values(
                    session_id=session_id,
                    kind=kind,
                    status="scheduled",
                    due_at=due_at,
                    committee=committee,
                    document_ids=",".join(str(i) for i in document_ids),
                    note=note,
                    replies_to=replies_to,
                    override_reason=override_reason,
                    created_at=utcnow(),
                    created_by=actor,
                    late=0,
                )
            )
            dist_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        found = await self.distribution(dist_id)
        assert found is not None
        return found

    async def distribution(self, distribution_id: int) -> DistributionRow | None:
        row = await self._first(select(distributions).where(distributions.c.id == distribution_id))
        return _distribution(row) if row else None

    async def distributions(
        self, *, session_id: int | None = None, statuses: Sequence[str] | None = None
    ) -> list[DistributionRow]:
        query = select(distributions).order_by(distributions.c.due_at, distributions.c.id)
        if session_id is not None:
            query = query.where(distributions.c.session_id == session_id)
        if statuses is not None:
            query = query.where(distributions.c.status.in_(list(statuses)))
        async with self.engine.connect() as conn:
            return [_distribution(r) for r in await conn.execute(query)]

    async def cancel_distribution(self, distribution_id: int) -> bool:
        """Cancel a distribution that has not started; False if it already went out."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(distributions)
                .where(
                    distributions.c.id == distribution_id,
                    distributions.c.status == "scheduled",
                )
                .values(status="cancelled")
            )
        return result.rowcount == 1

    async def start_sending(self, distribution_id: int, *, late: bool) -> bool:
        """scheduled -> sending, once: the caller that gets True sends. A distribution left in
        "sending" by a crash is resumed by ``resumable`` (recipients already done are skipped)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(distributions)
                .where(
                    distributions.c.id == distribution_id,
                    distributions.c.status == "scheduled",
                )
                .values(status="sending", started_at=utcnow(), late=int(late))
            )
        return result.rowcount == 1

    async def finish_sending(self, distribution_id: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(distributions)
                .where(
                    distributions.c.id == distribution_id,
                    distributions.c.status == "sending",
                )
                .values(status="sent", sent_at=utcnow())
            )

    # --- recipients and events ------------------------------------------------------------

    async def recipient_addresses(self, distribution_id: int) -> set[str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(distribution_recipients.c.address).where(
                    distribution_recipients.c.distribution_id == distribution_id
                )
            )
            return {r.address.lower() for r in rows}

    async def recipients(self, distribution_id: int) -> list[RecipientRow]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(distribution_recipients)
                .where(distribution_recipients.c.distribution_id == distribution_id)
                .order_by(distribution_recipients.c.id)
            )
            return [_recipient(r) for r in rows]

    async def recipient(self, recipient_id: int) -> RecipientRow | None:
        row = await self._first(
            select(distribution_recipients).where(distribution_recipients.c.id == recipient_id)
        )
        return _recipient(row) if row else None

    @staticmethod
    async def insert_recipients(
        conn: AsyncConnection,
        *,
        distribution_id: int,
        recipients: Sequence[tuple[str, str, str, str]],
        at: datetime,
    ) -> list[int]:
        """Several recipients ``(address, name, role, message id)`` of one distribution, not
        queued yet, in one statement; their ids in order."""
        if not recipients:
            return []
        result = await conn.execute(
            insert(distribution_recipients).returning(
                distribution_recipients.c.id, sort_by_parameter_order=True
            ),
            [
                {
                    "distribution_id": distribution_id,
                    "address": address,
                    "name": name,
                    "role": role,
                    "message_id": message_id,
                    "queue_message_id": None,
                    "created_at": at,
                }
                for address, name, role, message_id in recipients
            ],
        )
        return [int(r[0]) for r in result]

    @staticmethod
    async def claim_recipients(
        conn: AsyncConnection,
        *,
        distribution_id: int,
        recipients: Sequence[tuple[str, str, str, str]],
        at: datetime,
    ) -> dict[str, int]:
        """Like ``insert_recipients``, but a recipient another sender has already written (the
        unique distribution and address) is left out instead of failing the transaction:
        INSERT … ON CONFLICT DO NOTHING. The row is the claim: written in the transaction that
        queues the message, it makes the message go once however many nodes (a leader that
        lost its lead mid-send, the one that took over) send the distribution at once — on
        PostgreSQL the second insert waits for the first transaction and then does nothing.
        Returns address -> recipient id of the rows this call wrote."""
        if not recipients:
            return {}
        dialect = pg_dialect if conn.dialect.name == "postgresql" else sqlite_dialect
        result = await conn.execute(
            dialect.insert(distribution_recipients)
            .on_conflict_do_nothing(index_elements=["distribution_id", "address"])
            .returning(distribution_recipients.c.id, distribution_recipients.c.address),
            [
                {
                    "distribution_id": distribution_id,
                    "address": address,
                    "name": name,
                    "role": role,
                    "message_id": message_id,
                    "queue_message_id": None,
                    "created_at": at,
                }
                for address, name, role, message_id in recipients
            ],
        )
        return {str(r.address): int(r.id) for r in result}

    @staticmethod
    async def set_queue_messages(conn: AsyncConnection, pairs: Sequence[tuple[int, int]]) -> None:
        """``(recipient id, queue message id)`` for several recipients, in one statement."""
        if pairs:
            await conn.execute(
                update(distribution_recipients)
                .where(distribution_recipients.c.id == bindparam("recipient_id"))
                .values(queue_message_id=bindparam("queue_message_id")),
                [{"recipient_id": r, "queue_message_id": q} for r, q in pairs],
            )

    @staticmethod
    async def insert_events(
        conn: AsyncConnection,
        events: Sequence[tuple[int, EventKind, EventSource, str, datetime]],
    ) -> None:
        """Several receipt events ``(recipient id, kind, source, evidence, at)`` in the
        caller's transaction, linked into their distributions' hash chains."""
        if events:
            await conn.run_sync(_append_for_recipients, events, False)

    @staticmethod
    async def insert_event(
        conn: AsyncConnection,
        recipient_id: int,
        kind: EventKind,
        source: EventSource,
        evidence: str,
        at: datetime,
    ) -> None:
        await conn.run_sync(
            _append_for_recipients, [(recipient_id, kind, source, evidence, at)], False
        )

    async def add_event(
        self,
        recipient_id: int,
        kind: EventKind,
        source: EventSource,
        evidence: str,
        *,
        at: datetime | None = None,
        once: bool = False,
    ) -> bool:
        """Append one event (committed). ``once``: not if the recipient already has one of this
        kind (an acknowledgement clicked twice keeps its first time). True if added."""
        async with self.engine.begin() as conn:
            added = await conn.run_sync(
                _append_for_recipients,
                [(recipient_id, kind, source, evidence, at or utcnow())],
                once,
            )
        return added > 0

    async def events(self, recipient_ids: Sequence[int]) -> dict[int, list[ReceiptEvent]]:
        """Events per recipient, oldest first."""
        out: dict[int, list[ReceiptEvent]] = {i: [] for i in recipient_ids}
        if not recipient_ids:
            return out
        async with self.engine.connect() as conn:
            for start in range(0, len(recipient_ids), 500):
                chunk = list(recipient_ids[start : start + 500])
                rows = await conn.execute(
                    select(receipt_events)
                    .where(receipt_events.c.recipient_id.in_(chunk))
                    .order_by(receipt_events.c.at, receipt_events.c.id)
                )
                for r in rows:
                    out[r.recipient_id].append(
                        ReceiptEvent(EventKind(r.kind), r.at, EventSource(r.source), r.evidence)
                    )
        return out

    async def recipients_with_kind(self, distribution_id: int, kind: EventKind) -> set[int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(receipt_events.c.recipient_id)
                .join(
                    distribution_recipients,
                    distribution_recipients.c.id == receipt_events.c.recipient_id,
                )
                .where(
                    and_(
                        distribution_recipients.c.distribution_id == distribution_id,
                        receipt_events.c.kind == kind.value,
                    )
                )
                .distinct()
            )
            return {r.recipient_id for r in rows}

    # --- reminders ------------------------------------------------------------------------

    async def reminder_done(self, distribution_id: int, offset_key: str) -> bool:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(reminder_rounds.c.id).where(
                        reminder_rounds.c.distribution_id == distribution_id,
                        reminder_rounds.c.offset_key == offset_key,
                    )
                )
            ).first()
        return row is not None

    @staticmethod
    async def insert_reminder_round(
        conn: AsyncConnection, distribution_id: int, offset_key: str, reminded: int
    ) -> None:
        await conn.execute(
            insert(reminder_rounds).values(
                distribution_id=distribution_id,
                offset_key=offset_key,
                done_at=utcnow(),
                reminded=reminded,
            )
        )

    @staticmethod
    async def claim_reminder_round(
        conn: AsyncConnection, distribution_id: int, offset_key: str, reminded: int
    ) -> bool:
        """The round's row, unless another sender has written it (ON CONFLICT DO NOTHING):
        the claim of the round's reminders, written first in their transaction. False: the
        round is someone else's (the caller rolls back what it did)."""
        dialect = pg_dialect if conn.dialect.name == "postgresql" else sqlite_dialect
        result = await conn.execute(
            dialect.insert(reminder_rounds)
            .on_conflict_do_nothing(index_elements=["distribution_id", "offset_key"])
            .values(
                distribution_id=distribution_id,
                offset_key=offset_key,
                done_at=utcnow(),
                reminded=reminded,
            )
        )
        return bool(result.rowcount == 1)
