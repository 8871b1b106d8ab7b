"""The claim: the oldest due messages, their due deliveries on one route marked in flight, and
their bodies — one unit of work (``MailQueue.claim`` runs it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from mailsvc.errors import StorageUnavailable
from mailsvc.storage import sqlite_fast
from mailsvc.storage.db import utcnow
from mailsvc.storage.queue.model import QueuedMessage
from mailsvc.storage.queue.statements import (
    BODIES,
    BODY,
    DUE_OF_MESSAGE,
    DUE_OF_MESSAGES,
    NEXT_DUE,
    NEXT_DUE_ON_ROUTE,
    OLDEST_DUE,
    OLDEST_DUE_ON_ROUTE,
    SQLITE_BODIES,
    SQLITE_NEXT_DUE,
    SQLITE_OLDEST_DUE,
    SQLITE_TAKE,
    TAKE,
    TAKE_ONE,
)


@dataclass(frozen=True)
class Claim:
    """What one claim took, and what it saw of the rest of the queue."""

    messages: list[QueuedMessage]
    # True when more may be due now (the claim stopped at its limit).
    more: bool
    # Seconds until the next pending delivery on the route is due, when nothing more is due
    # now (None: nothing pends).
    next_due_in: float | None = None


def claim_rows(conn: Connection, route: str | None, limit: int) -> Claim:
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
    candidates = conn.execute(OLDEST_DUE if route is None else OLDEST_DUE_ON_ROUTE, params).all()
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
        DUE_OF_MESSAGE if one else DUE_OF_MESSAGES, {"message_ids": ids, "now": now}
    ).all()
    due = [r for r in rows if r.route == picked[r.message_id]]
    if len(due) == 1:
        claimed = conn.execute(TAKE_ONE, {"delivery_ids": due[0].id, "now": now})
    else:
        claimed = conn.execute(TAKE, {"delivery_ids": [d.id for d in due], "now": now})
    if claimed.rowcount != len(due):  # another process took some: let it have them all
        raise StorageUnavailable("claim raced with another worker")
    bodies = {m.id: m for m in conn.execute(BODY if one else BODIES, {"message_ids": ids}).all()}
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
# same choice as claim_rows: the oldest due messages on the route, all their due deliveries
# on it, taken in one UPDATE … RETURNING (SQLite 3.35 and later).
def _claim_rows_sqlite(raw: Any, route: str, limit: int) -> Claim:
    now = utcnow()
    stamp = sqlite_fast.datetime_to_db(now)
    rows_wanted = limit * 4  # a message with several recipients appears several times
    candidates = raw.execute(SQLITE_OLDEST_DUE, (stamp, route, rows_wanted)).fetchall()
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
    taken = raw.execute(SQLITE_TAKE.format(ids=marks), (stamp, *picked, route, stamp)).fetchall()
    mine: dict[int, list[tuple[int, str, int]]] = {}
    for delivery_id, message_id, recipient, attempts in sorted(taken):
        mine.setdefault(message_id, []).append((delivery_id, recipient, attempts))
    bodies = {
        row[0]: row for row in raw.execute(SQLITE_BODIES.format(ids=marks), picked).fetchall()
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
    (when,) = raw.execute(SQLITE_NEXT_DUE, (route,)).fetchone()
    if when is None:
        return None
    return max(0.0, (sqlite_fast.datetime_from_db(when) - now).total_seconds())


def _next_due_in(conn: Connection, route: str | None, now: datetime) -> float | None:
    if route is None:
        when: datetime | None = conn.execute(NEXT_DUE).scalar_one()
    else:
        when = conn.execute(NEXT_DUE_ON_ROUTE, {"route": route}).scalar_one()
    if when is None:
        return None
    return max(0.0, (when - now).total_seconds())
