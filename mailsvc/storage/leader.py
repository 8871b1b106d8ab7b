"""Which node runs the scheduler's cluster-wide jobs (distributions, reminders, lifecycle...).

On PostgreSQL one node at a time leads: the one holding a session-level advisory lock
(``pg_try_advisory_lock`` on a fixed key, scoped to the database) on a connection of its own,
named after the node (``application_name``) so that ``mailsvc check`` can say who leads. The
lock lives as long as that connection: a leader killed with SIGKILL has its socket closed by
the kernel and the lock goes at once; a leader whose machine or network dies is found out by
the server's TCP keepalives and ``tcp_user_timeout`` within seconds. Followers try again every
``cluster.leader_retry_seconds``. The leader checks its connection at the same pace: a
connection that fails (or does not answer within that time) is leadership lost, at once —
the listeners are told, the cluster-wide jobs cancelled, and the node tries again as a
follower.

On SQLite there is one node: it always leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from mailsvc.config import Settings
from mailsvc.node import node_id

log = logging.getLogger(__name__)

Role = Literal["leader", "follower"]
LEADER: Role = "leader"
FOLLOWER: Role = "follower"

# The advisory lock's key, two int4 ("mail", 1): pg_locks shows it as classid, objid with
# objsubid 2. Advisory locks are per database: services on other databases do not meet it.
LOCK_CLASS = 0x6D61696C
LOCK_OBJECT = 1

# Server-side settings of the leader's connection: a holder that vanishes from the network is
# dropped (and its lock released) within seconds, not after the kernel's two hours.
KEEPALIVE_SETTINGS = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "10000",
}

Listener = Callable[[Role], None]


class Leadership:
    """The node's role and who wants to know when it changes. This base is a fixed role: the
    sole node of a SQLite database leads; a service without a scheduler follows."""

    backend = "sqlite"

    def __init__(self, role: Role = LEADER) -> None:
        self._role: Role = role
        self._listeners: list[Listener] = []
        self.changed = asyncio.Event()  # set at every change (cleared by whoever waits on it)

    @property
    def role(self) -> Role:
        return self._role

    @property
    def is_leader(self) -> bool:
        return self._role == LEADER

    def add_listener(self, listener: Listener) -> None:
        """``listener(role)`` is called at every change of role (not for the current one)."""
        self._listeners.append(listener)

    def _set(self, role: Role) -> None:
        if role == self._role:
            return
        self._role = role
        log.info("scheduler: this node is now the %s", role)
        self.changed.set()
        for listener in list(self._listeners):
            try:
                listener(role)
            except Exception:  # one listener's bug must not keep the others uninformed
                log.exception("scheduler: a leadership listener failed")

    async def wait_for(self, role: Role, within: float) -> bool:
        """Wait up to ``within`` seconds for ``role``; whether it came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._role != role:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return True

    async def start(self) -> None:
        """Take part (PostgreSQL: the first try is made before this returns)."""

    async def stop(self) -> None:
        """Leave (PostgreSQL: the lock is released with the connection)."""


def asyncpg_dsn(database_url: str) -> str:
    """The SQLAlchemy URL (``postgresql+asyncpg://…``) as a DSN asyncpg itself takes."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class PgLeadership(Leadership):
    """The advisory-lock leadership of several nodes on one PostgreSQL database."""

    backend = "postgresql"

    def __init__(self, database_url: str, node: str, retry_seconds: float) -> None:
        super().__init__(FOLLOWER)
        self.dsn = asyncpg_dsn(database_url)
        self.node = node
        self.retry = retry_seconds
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        await self._attempt()
        self._task = asyncio.create_task(self._run(), name="scheduler-leadership")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop()
        self._set(FOLLOWER)

    async def lose_connection(self) -> None:
        """Drop the leader's connection as a network failure would (for tests and for
        operators who want a node to hand over the lead): the lock goes with it."""
        if self._conn is not None:
            self._conn.terminate()

    async def _connect(self) -> Any:
        import asyncpg  # type: ignore[import-untyped]

        return await asyncpg.connect(
            self.dsn,
            timeout=max(self.retry, 5.0),
            server_settings={"application_name": self.node[:63], **KEEPALIVE_SETTINGS},
        )

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await asyncio.wait_for(conn.close(), timeout=self.retry)
        except Exception:  # a dead connection: cut it, the server notices on its own
            conn.terminate()

    async def _attempt(self) -> None:
        """One try: connect if need be, take the lock if free, or check the one held."""
        try:
            if self._conn is None or self._conn.is_closed():
                if self.is_leader:
                    raise ConnectionError("the leader's connection is closed")
                self._conn = await self._connect()
            if self.is_leader:
                await asyncio.wait_for(self._conn.fetchval("SELECT 1"), timeout=self.retry)
                return
            got = await asyncio.wait_for(
                self._conn.fetchval(
                    "SELECT pg_try_advisory_lock($1::int4, $2::int4)", LOCK_CLASS, LOCK_OBJECT
                ),
                timeout=self.retry,
            )
            if got:
                self._set(LEADER)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # OSError, asyncpg errors, timeouts: the same loss
            if self.is_leader:
                log.warning("scheduler: leadership lost (%s: %s)", type(exc).__name__, exc)
            else:
                log.info("scheduler: cannot try for the lead (%s: %s)", type(exc).__name__, exc)
            self._set(FOLLOWER)
            await self._drop()

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.retry)
            await self._attempt()


def leadership_for(settings: Settings, *, scheduler: bool = True) -> Leadership:
    """The leadership of this service: PostgreSQL contends for the lock; SQLite always leads;
    a service started without a scheduler never leads."""
    if not scheduler:
        return Leadership(FOLLOWER)
    if settings.database_url.startswith("postgresql"):
        return PgLeadership(
            settings.database_url, node_id(settings), settings.cluster.leader_retry_seconds
        )
    return Leadership(LEADER)


async def scheduler_leader(engine: AsyncEngine) -> str | None:
    """On PostgreSQL, the node holding the scheduler's lock (its connection's
    application_name), or None when nobody leads. Not for SQLite."""
    query = text(
        "SELECT a.application_name FROM pg_locks l"
        " JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.classid = CAST(:cls AS oid) AND l.objid = CAST(:obj AS oid)"
        " AND l.objsubid = 2"
    )
    async with engine.connect() as conn:
        row = (await conn.execute(query, {"cls": LOCK_CLASS, "obj": LOCK_OBJECT})).first()
    return None if row is None else str(row[0])
