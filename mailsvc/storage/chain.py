"""Receipt events written as links of their distribution's hash chain, and read back to check.

The chain itself (canonical content, links, verification) is pure: mailsvc.domain.evidence_chain.
Here: every insert of a receipt event goes through ``append`` (SQLAlchemy, any database) or
``append_sqlite`` (the queue's own SQLite connection, straight through the driver); both link
the same events to the same hashes (tests/unit/test_queue_sqlite_paths.py holds them together).

Events of one distribution are written by several transactions at once (delivery workers, the
DSN/MDN sink, the IMAP check, the acknowledgement link, reminders). Each reads the chain head
(``distributions.last_event_hash``/``last_event_seq``) and writes the new one in the same
transaction as its events, holding the distribution's lock in between, so the writers take
turns and the chain never forks:

- SQLite: the database's write lock, taken before the head is read. sqlite3's legacy
  transaction mode (the async engine) runs a read before the transaction's first write outside
  the transaction, where another connection could replace the head before we write; so the
  head is read by a write (a no-op ``UPDATE … RETURNING`` of the distribution row). The
  queue's connection already holds the lock (``BEGIN IMMEDIATE``, mailsvc.storage.units).
- PostgreSQL (any other database): ``SELECT … FOR UPDATE`` of the distribution rows, in id order.

The cost per transaction and distribution: one indexed read of the head (under the lock) and
one update of it, besides the events' own insert; per event, two SHA-256 of a few hundred bytes.
Events given by recipient id (``ReceiptStore``) add one read of their recipients.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import String, insert, select, type_coerce, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ColumnElement

from mailsvc.domain.evidence_chain import (
    ChainHead,
    EventContent,
    StoredEvent,
    extend,
    utc_naive,
)
from mailsvc.storage import sqlite_fast
from mailsvc.storage.tables import (
    council_sessions,
    distribution_recipients,
    distributions,
    receipt_events,
)

# Evidence beyond this is cut before it is stored (and hashed as stored).
MAX_EVIDENCE = 20000


class NewEvent(NamedTuple):
    """One receipt event to append: its recipient, its distribution, what it says (with the
    recipient's address as stored, which its canonical content names)."""

    recipient_id: int
    distribution_id: int
    content: EventContent

    @classmethod
    def make(
        cls,
        recipient_id: int,
        distribution_id: int,
        address: str,
        kind: str,
        source: str,
        at: datetime,
        evidence: str,
    ) -> NewEvent:
        """Values as they will be stored: the time naive UTC, the evidence cut."""
        return cls(
            recipient_id,
            distribution_id,
            EventContent(address, str(kind), str(source), utc_naive(at), evidence[:MAX_EVIDENCE]),
        )


def _by_distribution(events: Iterable[NewEvent]) -> dict[int, list[NewEvent]]:
    """Events per distribution, each in the given order; distributions in id order (the order
    their locks are taken in, the same for every writer)."""
    grouped: dict[int, list[NewEvent]] = {}
    for event in events:
        grouped.setdefault(event.distribution_id, []).append(event)
    return dict(sorted(grouped.items()))


# -- writing through SQLAlchemy ----------------------------------------------------------------


def recipients_of(conn: Connection, recipient_ids: Iterable[int]) -> dict[int, tuple[int, str]]:
    """recipient id → (distribution id, address as stored), for events given by recipient id."""
    ids = sorted(set(recipient_ids))
    found: dict[int, tuple[int, str]] = {}
    for start in range(0, len(ids), 500):
        rows = conn.execute(
            select(
                distribution_recipients.c.id,
                distribution_recipients.c.distribution_id,
                distribution_recipients.c.address,
            ).where(distribution_recipients.c.id.in_(ids[start : start + 500]))
        )
        found.update({r.id: (r.distribution_id, r.address) for r in rows})
    return found


def _lock_heads(conn: Connection, distribution_ids: Sequence[int]) -> dict[int, ChainHead]:
    columns = (distributions.c.id, distributions.c.last_event_hash, distributions.c.last_event_seq)
    where = distributions.c.id.in_(distribution_ids)
    if conn.dialect.name != "sqlite":
        query = select(*columns).where(where).order_by(distributions.c.id).with_for_update()
        rows = conn.execute(query)
    else:
        # A write before the read: the transaction holds SQLite's write lock from here on.
        lock = update(distributions).where(where).values(last_event_seq=columns[2])
        if conn.dialect.update_returning:  # SQLite 3.35 and later: one statement
            rows = conn.execute(lock.returning(*columns))
        else:
            conn.execute(lock)
            rows = conn.execute(select(*columns).where(where))
    return {r.id: ChainHead.of(r.last_event_hash, r.last_event_seq) for r in rows}


def _existing_kinds(conn: Connection, events: Sequence[NewEvent]) -> set[tuple[int, str]]:
    rows = conn.execute(
        select(receipt_events.c.recipient_id, receipt_events.c.kind)
        .where(
            receipt_events.c.recipient_id.in_({e.recipient_id for e in events}),
            receipt_events.c.kind.in_({e.content.kind for e in events}),
        )
        .distinct()
    )
    return {(r.recipient_id, r.kind) for r in rows}


def append(conn: Connection, events: Sequence[NewEvent], *, once: bool = False) -> int:
    """Append ``events`` in the caller's transaction, each linked into its distribution's
    chain. ``once``: leave out an event whose recipient already has one of its kind (looked at
    under the lock, so two concurrent writers cannot both add it). How many were appended."""
    if not events:
        return 0
    grouped = _by_distribution(events)
    heads = _lock_heads(conn, list(grouped))
    if once:
        seen = _existing_kinds(conn, events)
        for distribution_id, items in grouped.items():
            kept = []
            for e in items:
                if (e.recipient_id, e.content.kind) not in seen:
                    seen.add((e.recipient_id, e.content.kind))
                    kept.append(e)
            grouped[distribution_id] = kept
    appended = 0
    for distribution_id, items in grouped.items():
        if not items:
            continue
        links, head = extend(distribution_id, heads[distribution_id], [e.content for e in items])
        conn.execute(
            insert(receipt_events),
            [
                {
                    "recipient_id": e.recipient_id,
                    "kind": e.content.kind,
                    "at": e.content.at,
                    "source": e.content.source,
                    "evidence": e.content.evidence,
                    "seq": link.seq,
                    "prev_hash": link.prev_hash,
                    "content_hash": link.content_hash,
                }
                for e, link in zip(items, links, strict=True)
            ],
        )
        conn.execute(
            update(distributions)
            .where(distributions.c.id == distribution_id)
            .values(last_event_hash=head.hash, last_event_seq=head.seq)
        )
        appended += len(items)
    return appended


# -- writing through the sqlite3 driver (the queue's connection) -------------------------------

_SQLITE_BEGIN = "BEGIN IMMEDIATE"
_SQLITE_HEAD = "SELECT last_event_hash, last_event_seq FROM distributions WHERE id = ?"
_SQLITE_INSERT = (
    "INSERT INTO receipt_events "
    "(recipient_id, kind, at, source, evidence, seq, prev_hash, content_hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_SET_HEAD = "UPDATE distributions SET last_event_hash = ?, last_event_seq = ? WHERE id = ?"


def append_sqlite(raw: sqlite3.Connection, events: Sequence[NewEvent]) -> int:
    """``append`` straight through the driver, inside the caller's transaction (errors as the
    driver raises them: callers wrap them in ``sqlite_fast.as_dbapi_error``)."""
    if not events:
        return 0
    if not raw.in_transaction:
        # Never the case in the queue's units (BEGIN IMMEDIATE); a head read outside a
        # transaction could be replaced by another connection before we write.
        raw.execute(_SQLITE_BEGIN)
    for distribution_id, items in _by_distribution(events).items():
        row = raw.execute(_SQLITE_HEAD, (distribution_id,)).fetchone()
        links, head = extend(distribution_id, ChainHead.of(*row), [e.content for e in items])
        raw.executemany(
            _SQLITE_INSERT,
            [
                (
                    e.recipient_id,
                    e.content.kind,
                    sqlite_fast.datetime_to_db(e.content.at),  # type: ignore[arg-type]  # a time
                    e.content.source,
                    e.content.evidence,
                    link.seq,
                    link.prev_hash,
                    link.content_hash,
                )
                for e, link in zip(items, links, strict=True)
            ],
        )
        raw.execute(_SQLITE_SET_HEAD, (head.hash, head.seq, distribution_id))
    return len(events)


# -- reading back ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistributionChain:
    """One distribution's chain as stored: its head and every event of its recipients."""

    distribution_id: int
    kind: str
    head: ChainHead
    events: list[StoredEvent]


async def session_chains(engine: AsyncEngine, number: str) -> list[DistributionChain] | None:
    """Every distribution of session ``number`` with its head and events (None: no such
    session). One statement, so heads and events come from one snapshot even while the
    service appends."""
    async with engine.connect() as conn:
        session_id = (
            await conn.execute(
                select(council_sessions.c.id).where(council_sessions.c.number == number)
            )
        ).scalar()
        if session_id is None:
            return None
        # The time as stored: on SQLite a value edited by hand need not be a time at all, and
        # must be reported, not fail the read.
        at: ColumnElement[Any] = receipt_events.c.at
        if conn.dialect.name == "sqlite":
            at = type_coerce(receipt_events.c.at, String)
        rows = await conn.execute(
            select(
                distributions.c.id.label("distribution_id"),
                distributions.c.kind.label("distribution_kind"),
                distributions.c.last_event_hash,
                distributions.c.last_event_seq,
                distribution_recipients.c.address,
                receipt_events.c.id,
                receipt_events.c.kind,
                receipt_events.c.source,
                at.label("at"),
                receipt_events.c.evidence,
                receipt_events.c.seq,
                receipt_events.c.prev_hash,
                receipt_events.c.content_hash,
            )
            .select_from(
                distributions.outerjoin(
                    distribution_recipients,
                    distribution_recipients.c.distribution_id == distributions.c.id,
                ).outerjoin(
                    receipt_events, receipt_events.c.recipient_id == distribution_recipients.c.id
                )
            )
            .where(distributions.c.session_id == session_id)
            .order_by(distributions.c.id, receipt_events.c.id)
        )
        chains: dict[int, DistributionChain] = {}
        for r in rows:
            chain = chains.get(r.distribution_id)
            if chain is None:
                head = ChainHead.of(_text(r.last_event_hash), _number(r.last_event_seq))
                chain = DistributionChain(r.distribution_id, r.distribution_kind, head, [])
                chains[r.distribution_id] = chain
            if r.id is not None:
                chain.events.append(_stored(r))
    return list(chains.values())


def _stored(r: Any) -> StoredEvent:
    content = EventContent(
        recipient=str(r.address),
        kind=str(r.kind),
        source=str(r.source),
        at=_time(r.at),
        evidence=str(r.evidence),
    )
    return StoredEvent(r.id, content, _number(r.seq), _text(r.prev_hash), _text(r.content_hash))


def _time(value: object) -> datetime | str:
    """A stored time; what does not read as one (SQLite holds anything) as its text."""
    if isinstance(value, datetime):
        return value
    try:
        return utc_naive(datetime.fromisoformat(str(value)))
    except ValueError:
        return f"unreadable: {value!r}"


def _number(value: object) -> int | None:
    """A stored chain number; anything else SQLite may hold (edited by hand) as -1, which is
    never a valid number."""
    if value is None or isinstance(value, int):
        return value
    return -1


def _text(value: object) -> str | None:
    return None if value is None else str(value)
