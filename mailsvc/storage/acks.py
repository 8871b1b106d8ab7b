"""Acknowledgements to residents: at most one per (sender, councillor, day).

The unique constraint is what makes "at most once" hold under concurrency: two workers that
deliver two messages of the same resident at the same moment both try to insert the key, and
exactly one insert takes effect (``ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL alike).
The functions take a synchronous connection: they run inside the queue's units of work.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import (
    delete,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import Executable

from mailsvc.storage import sqlite_fast
from mailsvc.storage.tables import acknowledgements, councillors

# Run for every delivered resident message: straight through the driver on the queue's SQLite.
_SQLITE_CLAIM = (
    "INSERT INTO acknowledgements (sender, councillor, day, original_queue_id, created_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_SQLITE_PURGE = "DELETE FROM acknowledgements WHERE day < ?"


def claim(
    conn: Connection,
    *,
    sender: str,
    councillor: str,
    day: date,
    original_queue_id: str,
    now: datetime,
) -> bool:
    """Record the key (sender, councillor, day); True only for the first claim of that key."""
    raw = sqlite_fast.driver(conn)
    if raw is not None:
        with sqlite_fast.as_dbapi_error("acknowledgement key"):
            cursor = raw.execute(
                _SQLITE_CLAIM,
                (
                    sender.lower(),
                    councillor.lower(),
                    sqlite_fast.date_to_db(day),
                    original_queue_id,
                    sqlite_fast.datetime_to_db(now),
                ),
            )
        return bool(cursor.rowcount == 1)
    values = {
        "sender": sender.lower(),
        "councillor": councillor.lower(),
        "day": day,
        "original_queue_id": original_queue_id,
        "created_at": now,
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt: Executable = dialect.insert(acknowledgements).values(values).on_conflict_do_nothing()
    result = conn.execute(stmt)
    return bool(result.rowcount == 1)


def purge(conn: Connection, before: date) -> int:
    """Forget keys of days before ``before``: they hold residents' addresses (RODO)."""
    raw = sqlite_fast.driver(conn)
    if raw is not None:
        with sqlite_fast.as_dbapi_error("acknowledgement purge"):
            return int(raw.execute(_SQLITE_PURGE, (sqlite_fast.date_to_db(before),)).rowcount)
    result = conn.execute(delete(acknowledgements).where(acknowledgements.c.day < before))
    return int(result.rowcount or 0)


def release(conn: Connection, *, sender: str, councillors_: Sequence[str], day: date) -> None:
    """Take back keys claimed in this transaction for an acknowledgement that is not sent."""
    conn.execute(
        delete(acknowledgements).where(
            acknowledgements.c.sender == sender.lower(),
            acknowledgements.c.councillor.in_([c.lower() for c in councillors_]),
            acknowledgements.c.day == day,
            acknowledgements.c.ack_queue_id.is_(None),
        )
    )


def attach_ack(
    conn: Connection,
    *,
    sender: str,
    councillors_: Sequence[str],
    day: date,
    ack_queue_id: str,
) -> None:
    """Note which queued message carried the acknowledgement for these keys."""
    conn.execute(
        update(acknowledgements)
        .where(
            acknowledgements.c.sender == sender.lower(),
            acknowledgements.c.councillor.in_([c.lower() for c in councillors_]),
            acknowledgements.c.day == day,
        )
        .values(ack_queue_id=ack_queue_id)
    )


def display_names(conn: Connection, addresses: Sequence[str]) -> dict[str, str]:
    """Councillors' names from the register ("Given Surname"); unknown addresses are absent."""
    if not addresses:
        return {}
    rows = conn.execute(
        select(councillors.c.address, councillors.c.given_names, councillors.c.surname).where(
            councillors.c.address.in_([a.lower() for a in addresses])
        )
    ).all()
    return {row.address: f"{row.given_names} {row.surname}".strip() for row in rows}
