"""The queue's hot-path statements, built once (only their parameters change from call to call).

SQLAlchemy then skips building and re-keying them for its statement cache on every call. Status
sets are spelled as ORs of equalities (which SQLite's planner turns into an IN on the index): an
IN of literal values would be an "expanding" parameter, rebuilt at every call.

The ``SQLITE_*`` strings are the same statements for the queue's own SQLite connection, run
through the sqlite3 driver (``mailsvc.storage.sqlite_fast``) without SQLAlchemy's
compile-and-bind round; tests/unit/test_queue_sqlite_paths.py checks that both answer alike.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, bindparam, exists, func, or_, select, update

from mailsvc.storage.queue.model import FINAL, PENDING
from mailsvc.storage.tables import deliveries, messages


def _status_in(*values: str) -> ColumnElement[bool]:
    return or_(*(deliveries.c.status == v for v in values))


def _status_not_in(*values: str) -> ColumnElement[bool]:
    return and_(*(deliveries.c.status != v for v in values))


INSERT_MESSAGE = messages.insert()
INSERT_DELIVERY = deliveries.insert()
SQLITE_INSERT_MESSAGE = (
    "INSERT INTO messages (queue_id, mail_from, received_at, size, client, body, status, "
    "origin, parts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SQLITE_INSERT_DELIVERY = (
    "INSERT INTO deliveries (message_id, recipient, route, status, attempts, next_attempt_at, "
    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
RECORD_OUTCOME = (
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
SETTLE = (
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
OLDEST_DUE = (
    select(deliveries.c.message_id, deliveries.c.route)
    .where(_DUE)
    .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
    .limit(bindparam("rows"))
)
OLDEST_DUE_ON_ROUTE = (
    select(deliveries.c.message_id, deliveries.c.route)
    .where(_DUE, deliveries.c.route == bindparam("route"))
    .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
    .limit(bindparam("rows"))
)
DUE_OF_MESSAGES = select(
    deliveries.c.id,
    deliveries.c.message_id,
    deliveries.c.route,
    deliveries.c.recipient,
    deliveries.c.attempts,
).where(deliveries.c.message_id.in_(bindparam("message_ids", expanding=True)), _DUE)
TAKE = (
    update(deliveries)
    .where(
        deliveries.c.id.in_(bindparam("delivery_ids", expanding=True)),
        _status_in(*PENDING),
    )
    .values(status="inflight", updated_at=bindparam("now"))
)
BODIES = select(
    messages.c.id,
    messages.c.queue_id,
    messages.c.mail_from,
    messages.c.received_at,
    messages.c.body,
    messages.c.origin,
    messages.c.parts,
).where(messages.c.id.in_(bindparam("message_ids", expanding=True)))
DUE_OF_MESSAGE = select(*DUE_OF_MESSAGES.selected_columns).where(
    deliveries.c.message_id == bindparam("message_ids"), _DUE
)
TAKE_ONE = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("delivery_ids"), _status_in(*PENDING))
    .values(status="inflight", updated_at=bindparam("now"))
)
BODY = select(*BODIES.selected_columns).where(messages.c.id == bindparam("message_ids"))
NEXT_DUE = select(func.min(deliveries.c.next_attempt_at)).where(_status_in(*PENDING))
NEXT_DUE_ON_ROUTE = NEXT_DUE.where(deliveries.c.route == bindparam("route"))


# Through the sqlite3 driver.
SQLITE_RECORD_OUTCOME = (
    "UPDATE deliveries SET status = ?, last_reply = ?, attempts = attempts + 1, "
    "next_attempt_at = ?, updated_at = ? WHERE id = ?"
)
# Written out, not built: the statuses are FINAL (checked by a test).
SQLITE_SETTLE = (
    "UPDATE messages SET status = 'done', body = NULL, error = NULL WHERE id = ? AND NOT "
    "EXISTS (SELECT 1 FROM deliveries WHERE message_id = ? "
    "AND status != 'delivered' AND status != 'failed')"
)
SQLITE_QUEUE_ID = "SELECT queue_id FROM messages WHERE id = ?"
# Written out, not built: the statuses are PENDING (checked by a test).
SQLITE_OLDEST_DUE = (
    "SELECT message_id FROM deliveries WHERE (status = 'queued' OR status = 'deferred') "
    "AND next_attempt_at <= ? AND route = ? ORDER BY next_attempt_at, id LIMIT ?"
)
# "{ids}": as many "?" as message ids.
SQLITE_TAKE = (
    "UPDATE deliveries SET status = 'inflight', updated_at = ? WHERE message_id IN ({ids}) "
    "AND route = ? AND (status = 'queued' OR status = 'deferred') AND next_attempt_at <= ? "
    "RETURNING id, message_id, recipient, attempts"
)
SQLITE_BODIES = (
    "SELECT id, queue_id, mail_from, received_at, body, origin, parts FROM messages "
    "WHERE id IN ({ids})"
)
SQLITE_NEXT_DUE = (
    "SELECT min(next_attempt_at) FROM deliveries "
    "WHERE (status = 'queued' OR status = 'deferred') AND route = ?"
)
