"""The nodes table: each `mailsvc serve` sharing the database, its heartbeat and its role.

On start a node upserts its row (host, pid, version, started_at; stopped_at cleared), then
updates ``heartbeat_at`` every ``cluster.heartbeat_seconds`` and its ``role`` from a callable
the service gives (the scheduler's leadership: "leader" or "follower"); a clean stop sets
``stopped_at``. Times are the database's clock on PostgreSQL (nodes' clocks may differ), the
node's own on SQLite (one node). `mailsvc cluster status` reads them back (``cluster_status``):
a node is up while its heartbeat is younger than three heartbeats, down after that, stopped
once it said so.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from mailsvc import __version__
from mailsvc.eventloop import cancel_and_wait
from mailsvc.storage.db import utcnow
from mailsvc.storage.tables import deliveries, nodes
from mailsvc.storage.units import EngineUnits, Units

log = logging.getLogger(__name__)

# A node is "down" once its heartbeat is older than this many heartbeat intervals.
DOWN_AFTER_HEARTBEATS = 3


def db_now(conn: Connection) -> ColumnElement[datetime]:
    """Now as naive UTC: the database's clock on PostgreSQL, this node's elsewhere."""
    if conn.dialect.name == "postgresql":
        return func.timezone("UTC", func.now())
    return literal(utcnow(), nodes.c.heartbeat_at.type)


def _read_now(conn: Connection) -> datetime:
    if conn.dialect.name == "postgresql":
        when: datetime = conn.execute(select(func.timezone("UTC", func.now()))).scalar_one()
        return when.replace(tzinfo=None)
    return utcnow()


def upsert_node(conn: Connection, node: str, role: str, *, host: str, pid: int) -> None:
    now = db_now(conn)
    values: dict[str, Any] = {
        "node_id": node,
        "host": host[:200],
        "pid": pid,
        "role": role[:16],
        "version": __version__[:32],
        "started_at": now,
        "heartbeat_at": now,
        "stopped_at": None,
    }
    # The dialect's own INSERT … ON CONFLICT (both have the same on_conflict_do_update).
    stmt: Any
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(nodes).values(**values)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(nodes).values(**values)
    changed = {k: v for k, v in values.items() if k != "node_id"}
    conn.execute(stmt.on_conflict_do_update(index_elements=[nodes.c.node_id], set_=changed))


def beat(conn: Connection, node: str, role: str) -> int:
    """The heartbeat; 0 when the row is missing (removed by hand: made again by the caller)."""
    result = conn.execute(
        update(nodes)
        .where(nodes.c.node_id == node)
        .values(heartbeat_at=db_now(conn), role=role[:16], stopped_at=None)
    )
    return int(result.rowcount or 0)


def mark_stopped(conn: Connection, node: str, role: str) -> None:
    now = db_now(conn)
    conn.execute(
        update(nodes)
        .where(nodes.c.node_id == node)
        .values(heartbeat_at=now, stopped_at=now, role=role[:16])
    )


class Heartbeat:
    """This node's row in ``nodes``, kept fresh every ``interval`` seconds while it runs."""

    def __init__(
        self,
        engine: AsyncEngine,
        node: str,
        interval: float,
        role: Callable[[], str],
        *,
        units: Units | None = None,
    ) -> None:
        self.engine = engine
        # The queue's units of work when given: on SQLite the beats then take turns with the
        # queue's writes on its own thread instead of holding the engine's one connection.
        self.units: Units = units or EngineUnits(engine)
        self.node = node
        self.interval = interval
        self.role = role
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Register the node and start beating. A database that cannot be written now (busy,
        unreachable) does not stop the service: the next beat registers it."""
        try:
            await self._run_sync(
                functools.partial(
                    upsert_node, node=self.node, role=self._role(), host=self.host, pid=self.pid
                )
            )
        except Exception as exc:
            log.warning("node %s: not registered yet (next heartbeat): %s", self.node, exc)
        self._task = asyncio.create_task(self._beat(), name="node-heartbeat")

    async def stop(self) -> None:
        """A clean stop: the row says so (other nodes then show it stopped, not down)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
            try:
                await self._run_sync(lambda conn: mark_stopped(conn, self.node, self._role()))
            except Exception as exc:
                log.warning("node %s: could not record the stop: %s", self.node, exc)

    def _role(self) -> str:
        try:
            return str(self.role())
        except Exception:  # a role that cannot be told is no reason to stop beating
            log.exception("node %s: role unknown", self.node)
            return "unknown"

    async def _run_sync(self, work: Callable[[Connection], Any]) -> Any:
        # Not flushed: a beat lost to a power failure is only an older heartbeat.
        return await self.units.run(work, durable=False)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                role = self._role()
                found = await self._run_sync(functools.partial(beat, node=self.node, role=role))
                if not found:
                    await self._run_sync(
                        functools.partial(
                            upsert_node, node=self.node, role=role, host=self.host, pid=self.pid
                        )
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database down: the next beat tries again
                log.warning("node %s: heartbeat not recorded: %s", self.node, exc)


@dataclass(frozen=True)
class NodeStatus:
    node_id: str
    host: str
    pid: int
    role: str
    version: str
    state: str  # up | down | stopped
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age_seconds: float
    stopped_at: datetime | None
    inflight: int
    expired_leases: int


def cluster_status(conn: Connection, heartbeat_seconds: float) -> list[NodeStatus]:
    """Every node with its state and the deliveries it holds in flight (one read)."""
    now = _read_now(conn)
    down_after = DOWN_AFTER_HEARTBEATS * heartbeat_seconds
    rows = conn.execute(select(nodes).order_by(nodes.c.node_id)).all()
    lapsed = func.sum(case((deliveries.c.lease_until < now, 1), else_=0))
    held: dict[str | None, list[int]] = {
        node: [int(count), int(gone or 0)]
        for node, count, gone in conn.execute(
            select(deliveries.c.node_id, func.count(), lapsed)
            .where(deliveries.c.status == "inflight")
            .group_by(deliveries.c.node_id)
        ).all()
    }
    # Claims without a node (SQLite's single node) belong to the only node there is.
    unowned = held.pop(None, [0, 0]) if len(rows) == 1 else [0, 0]
    out = []
    for row in rows:
        age = max(0.0, (now - row.heartbeat_at).total_seconds())
        if row.stopped_at is not None:
            state = "stopped"
        elif age <= down_after:
            state = "up"
        else:
            state = "down"
        inflight, expired = held.get(row.node_id, [0, 0])
        out.append(
            NodeStatus(
                node_id=row.node_id,
                host=row.host,
                pid=row.pid,
                role=row.role,
                version=row.version,
                state=state,
                started_at=row.started_at,
                heartbeat_at=row.heartbeat_at,
                heartbeat_age_seconds=round(age, 3),
                stopped_at=row.stopped_at,
                inflight=inflight + unowned[0],
                expired_leases=expired + unowned[1],
            )
        )
    return out


async def read_status(engine: AsyncEngine, heartbeat_seconds: float) -> list[NodeStatus]:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: cluster_status(c, heartbeat_seconds))
