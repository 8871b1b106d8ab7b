"""Bounds and notes on the automatic answers to residents (acknowledgements, bounces).

* ``take_hourly``: one acknowledgement off the hourly allowances, in total and for the resident's
  domain. Counted in the database, in the transaction that queues the acknowledgement, so the
  caps hold however many processes deliver. Each step is one atomic statement (a conditional
  UPDATE, or an INSERT of the hour's first row), so two transactions can never both take the
  last unit of an allowance, on SQLite and PostgreSQL alike.
* ``add_note``: what became of the automatic answers to a message, kept on the message and
  copied into the relay log (``RelayLog.refresh_status``).

Functions of a synchronous connection: they run inside the queue's units of work.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, literal, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import Executable

from mailsvc.storage import sqlite_fast
from mailsvc.storage.tables import auto_reply_counts, messages

# The row of the total count (no domain is spelled like this).
ALL_DOMAINS = "*"
# Counts are kept this long (they only matter for the current hour; a day helps an operator).
_KEEP = timedelta(days=1)
_SQLITE_NOTE = "UPDATE messages SET auto_reply = coalesce(auto_reply || '; ', '') || ? WHERE id = ?"


def hour_key(moment: datetime) -> str:
    """The UTC hour of ``moment`` (naive UTC, as the queue stores times) as "YYYY-MM-DDTHH"."""
    return moment.strftime("%Y-%m-%dT%H")


def take_hourly(
    conn: Connection,
    *,
    now: datetime,
    domain: str,
    max_total: int,
    max_per_domain: int,
) -> str | None:
    """Count one acknowledgement to ``domain`` this hour; the reason when a cap forbids it."""
    hour = hour_key(now)
    conn.execute(delete(auto_reply_counts).where(auto_reply_counts.c.hour < hour_key(now - _KEEP)))
    if not _take(conn, hour, domain, max_per_domain):
        return f"hourly cap for {domain} reached ({max_per_domain} acknowledgements)"
    if not _take(conn, hour, ALL_DOMAINS, max_total):
        # Give the domain's unit back: nothing is sent.
        conn.execute(
            update(auto_reply_counts)
            .where(auto_reply_counts.c.hour == hour, auto_reply_counts.c.domain == domain)
            .values(count=auto_reply_counts.c.count - 1)
        )
        return f"hourly cap reached ({max_total} acknowledgements in total)"
    return None


def _take(conn: Connection, hour: str, domain: str, limit: int) -> bool:
    """One unit of the (hour, domain) allowance of ``limit``; False when none is left."""
    bump = (
        update(auto_reply_counts)
        .where(
            and_(
                auto_reply_counts.c.hour == hour,
                auto_reply_counts.c.domain == domain,
                auto_reply_counts.c.count < limit,
            )
        )
        .values(count=auto_reply_counts.c.count + 1)
    )
    if conn.execute(bump).rowcount == 1:
        return True
    if limit < 1:
        return False
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    first: Executable = (
        dialect.insert(auto_reply_counts)
        .values(hour=hour, domain=domain, count=1)
        .on_conflict_do_nothing()
    )
    if conn.execute(first).rowcount == 1:
        return True
    # Another transaction inserted the hour's row between our two statements: try it once more.
    return bool(conn.execute(bump).rowcount == 1)


def add_note(conn: Connection, message_id: int, note: str) -> None:
    """Append ``note`` to the message's ``auto_reply`` (notes of later attempts follow)."""
    note = note[:500]
    raw = sqlite_fast.driver(conn)
    if raw is not None:
        with sqlite_fast.as_dbapi_error("auto-reply note"):
            raw.execute(_SQLITE_NOTE, (note, message_id))
        return
    conn.execute(
        update(messages)
        .where(messages.c.id == message_id)
        .values(auto_reply=func.coalesce(messages.c.auto_reply + literal("; "), literal("")) + note)
    )
