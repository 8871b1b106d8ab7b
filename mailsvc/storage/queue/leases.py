"""Claims with leases: the queue shared by several nodes on one PostgreSQL database.

A claim marks due deliveries in flight for one node (``node_id``) until ``lease_until``, a time
on the database's clock (never a node's: nodes' clocks may differ). Rows are picked ``FOR
UPDATE SKIP LOCKED``, so nodes claiming at the same moment pass over each other's rows instead
of waiting for them or taking them twice. A delivery in flight whose lease has passed is due
again for any node: its node died (or lost the database) mid-delivery, and the attempt it was
making may have reached the recipient already (a possible duplicate, logged as such).

The node renews the leases of what it holds while it delivers (``mailsvc.relay.delivery.
claims``); recording an outcome checks that the row is still this node's claim, so a late
outcome of a claim another node took over is not applied. At start-up a node takes back its
own claims at once (a restarted node keeps its id); another node's are left to their leases.

Plain functions of a synchronous ``Connection`` (units of work run by ``MailQueue``), and
PostgreSQL only: SQLite's single node keeps the fast path of ``mailsvc.storage.queue.claim``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from mailsvc.storage.db import utcnow
from mailsvc.storage.queue.claim import Claim
from mailsvc.storage.queue.model import QueuedMessage
from mailsvc.storage.queue.statements import BODIES, BODY

# The channel a node's enqueue notifies (in the enqueue's transaction) and every node listens on.
CHANNEL = "mailsvc_queue"
# Statements are built from the constant fragments below (never from values: those are bound
# parameters). The database's clock as naive UTC (the columns' convention).
_DB_NOW = "timezone('UTC', now())"
_LEASE_END = f"{_DB_NOW} + make_interval(secs => :lease)"
# Due: pending and its time has come (the enqueuing node's clock, as written), or in flight
# under a lease that has passed (the database's clock).
_DUE = (
    "(((status = 'queued' OR status = 'deferred') AND next_attempt_at <= :now) "
    f"OR (status = 'inflight' AND lease_until < {_DB_NOW}))"
)

CANDIDATES = text(
    "SELECT message_id, route FROM deliveries "  # noqa: S608 (constants only)
    f"WHERE {_DUE} ORDER BY next_attempt_at, id LIMIT :rows FOR UPDATE SKIP LOCKED"
)
CANDIDATES_ON_ROUTE = text(
    "SELECT message_id, route FROM deliveries "  # noqa: S608 (constants only)
    f"WHERE route = :route AND {_DUE} "
    "ORDER BY next_attempt_at, id LIMIT :rows FOR UPDATE SKIP LOCKED"
)
# Every due delivery of the picked messages on the route (those another node is claiming at
# this moment skipped), marked in flight for this node; the old status and node tell a
# takeover.
TAKE = text(
    "UPDATE deliveries AS d SET status = 'inflight', node_id = :node, "  # noqa: S608 (constants only)
    f"lease_until = {_LEASE_END}, updated_at = :now "
    "FROM (SELECT id, status AS old_status, node_id AS old_node FROM deliveries "
    f"WHERE message_id = ANY(CAST(:message_ids AS BIGINT[])) AND route = :route AND {_DUE} "
    "FOR UPDATE SKIP LOCKED) AS o "
    "WHERE d.id = o.id "
    "RETURNING d.id, d.message_id, d.recipient, d.attempts, o.old_status, o.old_node"
)
# When to look again: the next pending delivery's time, or the next lease to pass (seconds
# from now on the database's clock for the latter).
NEXT_DUE = text(
    "SELECT min(next_attempt_at) FROM deliveries "
    "WHERE (status = 'queued' OR status = 'deferred') AND route = :route"
)
NEXT_LEASE_END = text(
    f"SELECT EXTRACT(EPOCH FROM min(lease_until) - {_DB_NOW}) FROM deliveries "  # noqa: S608 (constants only)
    "WHERE status = 'inflight' AND route = :route"
)
RENEW = text(
    f"UPDATE deliveries SET lease_until = {_LEASE_END} "  # noqa: S608 (constants only)
    "WHERE id = ANY(CAST(:ids AS BIGINT[])) AND status = 'inflight' AND node_id = :node "
    "RETURNING id"
)
# Which of these deliveries are still this node's claim (locked until the outcome is stored:
# no other node can take them over in between).
STILL_MINE = text(
    "SELECT id FROM deliveries "
    "WHERE id = ANY(CAST(:ids AS BIGINT[])) AND status = 'inflight' AND node_id = :node "
    "FOR UPDATE"
)
RELEASE_OWN = text(
    "UPDATE deliveries SET status = 'queued', next_attempt_at = :now, updated_at = :now, "
    "lease_until = NULL WHERE status = 'inflight' AND node_id = :node"
)
RELEASE_SOME = text(
    "UPDATE deliveries SET status = 'queued', updated_at = :now, lease_until = NULL "
    "WHERE id = ANY(CAST(:ids AS BIGINT[])) AND status = 'inflight' AND node_id = :node"
)
MARK_DEAD = text(
    "UPDATE deliveries SET status = 'dead', last_reply = :reply, updated_at = :now, "
    "lease_until = NULL "
    "WHERE message_id = :message_id AND status = 'inflight' AND node_id = :node"
)
NOTIFY = text("SELECT pg_notify(:channel, :payload)")


@dataclass(frozen=True)
class Takeover:
    """A delivery claimed here whose previous claim (by ``old_node``) had expired."""

    delivery_id: int
    queue_id: str
    recipient: str
    old_node: str


@dataclass(frozen=True)
class LeasedClaim:
    claim: Claim
    takeovers: tuple[Takeover, ...] = ()


def claim_leased(
    conn: Connection, route: str | None, limit: int, node: str, lease_seconds: float
) -> LeasedClaim:
    """The claim of ``claim_rows``, for node ``node`` under a lease of ``lease_seconds``: the
    oldest due messages (with route None: on the route of the oldest due delivery), all their
    due deliveries on that route, and their bodies."""
    now = utcnow()
    rows_wanted = limit * 4  # a message with several recipients appears several times
    if route is None:
        candidates = conn.execute(CANDIDATES, {"now": now, "rows": rows_wanted}).all()
        if candidates:
            route = candidates[0].route
    else:
        candidates = conn.execute(
            CANDIDATES_ON_ROUTE, {"now": now, "rows": rows_wanted, "route": route}
        ).all()
    picked: list[int] = []
    for message_id, on_route in candidates:
        if len(picked) >= limit:
            break
        if on_route == route and message_id not in picked:
            picked.append(message_id)
    more = len(picked) >= limit or len(candidates) >= rows_wanted
    if not picked or route is None:
        return LeasedClaim(Claim([], False, _next_due_in(conn, route, now)))
    taken = conn.execute(
        TAKE,
        {"node": node, "lease": lease_seconds, "now": now, "message_ids": picked, "route": route},
    ).all()
    mine: dict[int, list[tuple[int, str, int]]] = {}
    previous: dict[int, tuple[str, str]] = {}
    for delivery_id, message_id, recipient, attempts, old_status, old_node in sorted(taken):
        mine.setdefault(message_id, []).append((delivery_id, recipient, attempts))
        if old_status == "inflight":
            previous[delivery_id] = (recipient, old_node or "?")
    ids: Any = picked[0] if len(picked) == 1 else picked
    bodies = {
        m.id: m
        for m in conn.execute(BODY if len(picked) == 1 else BODIES, {"message_ids": ids}).all()
    }
    out = []
    takeovers = []
    for message_id in picked:
        if message_id not in mine:  # its rows were claimed by another node meanwhile
            continue
        msg = bodies[message_id]
        out.append(
            QueuedMessage(
                id=message_id,
                queue_id=msg.queue_id,
                mail_from=msg.mail_from,
                received_at=msg.received_at,
                body=msg.body or b"",
                deliveries=tuple(mine[message_id]),
                route=route,
                origin=msg.origin,
                parts=msg.parts,
            )
        )
        for delivery_id, _, _ in mine[message_id]:
            if delivery_id in previous:
                recipient, old_node = previous[delivery_id]
                takeovers.append(Takeover(delivery_id, msg.queue_id, recipient, old_node))
    claim = Claim(out, more, None if more else _next_due_in(conn, route, now))
    return LeasedClaim(claim, tuple(takeovers))


def _next_due_in(conn: Connection, route: str | None, now: datetime) -> float | None:
    if route is None:
        return None
    waits: list[float] = []
    when: datetime | None = conn.execute(NEXT_DUE, {"route": route}).scalar_one()
    if when is not None:
        waits.append(max(0.0, (when - now).total_seconds()))
    lease_in = conn.execute(NEXT_LEASE_END, {"route": route}).scalar_one()
    if lease_in is not None:
        waits.append(max(0.0, float(lease_in)))
    return min(waits) if waits else None


def renew(conn: Connection, ids: Sequence[int], node: str, lease_seconds: float) -> set[int]:
    """Extend the leases of these claims of ``node``; returns the ids still held (the others
    were recorded meanwhile, or taken over after their lease passed)."""
    if not ids:
        return set()
    rows = conn.execute(RENEW, {"ids": list(ids), "node": node, "lease": lease_seconds})
    return {int(r[0]) for r in rows}


def still_mine(conn: Connection, ids: Sequence[int], node: str) -> set[int]:
    """The deliveries among ``ids`` still claimed by ``node``, locked until the commit."""
    if not ids:
        return set()
    rows = conn.execute(STILL_MINE, {"ids": list(ids), "node": node})
    return {int(r[0]) for r in rows}


def release_own(conn: Connection, node: str) -> int:
    """Every claim of ``node`` due again now (a restarted node: its attempts were cut off)."""
    now = utcnow()
    return int(conn.execute(RELEASE_OWN, {"node": node, "now": now}).rowcount or 0)


def release_some(conn: Connection, ids: Sequence[int], node: str) -> None:
    """Give back claims of ``node`` not attempted (a graceful stop)."""
    if ids:
        conn.execute(RELEASE_SOME, {"ids": list(ids), "node": node, "now": utcnow()})


def mark_dead(conn: Connection, message_id: int, node: str, reply: str) -> None:
    conn.execute(
        MARK_DEAD, {"message_id": message_id, "node": node, "reply": reply, "now": utcnow()}
    )


def notify(conn: Connection, routes: Sequence[str]) -> None:
    """Tell the listening nodes, at the commit, that deliveries on ``routes`` were queued.
    PostgreSQL folds equal notifications of one transaction into one."""
    conn.execute(NOTIFY, {"channel": CHANNEL, "payload": ",".join(sorted(set(routes)))})
