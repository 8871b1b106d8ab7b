"""Units of work: one synchronous function, one transaction, one thread hop.

The mail queue's hot path (enqueue, claim, record) used to run statement by statement through
the async engine: every statement was a round trip to a driver thread, and a transaction of six
statements cost six hand-offs plus the event loop's wake-ups around each. Here a whole unit of
work is one plain function of a synchronous SQLAlchemy ``Connection``, run in one transaction:

- On a SQLite file, on a dedicated thread with its own connection (WAL, ``synchronous=FULL``,
  ``BEGIN IMMEDIATE`` so that a writer takes the lock at the start instead of failing on an
  upgrade). One hop to the thread and one back per unit; the commit's fsync happens there, off
  the event loop.
- On any other database (PostgreSQL through asyncpg), through the async engine with
  ``run_sync``: the same function, the same single transaction.

Callers get the function's result, or its exception.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

T = TypeVar("T")


class Units(Protocol):
    async def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one transaction; committed when it returns, rolled back if it
        raises."""
        ...

    async def close(self) -> None: ...


class EngineUnits:
    """Units of work through the async engine (``run_sync`` inside one transaction)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def run(self, work: Callable[[Connection], T]) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(work)

    async def close(self) -> None:
        return None


def sqlite_engine(path: str) -> Engine:
    """A synchronous engine on a SQLite file: WAL, fsync at every commit, ``BEGIN IMMEDIATE``."""
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun explicitly below
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=30000",
        ):
            dbapi_conn.execute(pragma)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class ThreadUnits:
    """Units of work on one thread that owns one SQLite connection."""

    def __init__(self, path: str) -> None:
        self.engine = sqlite_engine(path)
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="queue-db")
        self._conn: Connection | None = None
        self._closed = False

    def _execute(self, work: Callable[[Connection], T]) -> T:
        if self._conn is None:
            self._conn = self.engine.connect()
        conn = self._conn
        try:
            with conn.begin():
                return work(conn)
        except DBAPIError:
            # The connection may be unusable (disk full, file replaced): start afresh next time.
            self._drop()
            raise

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    async def run(self, work: Callable[[Connection], T]) -> T:
        if self._closed:
            raise RuntimeError("the queue database is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._execute, work)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._drop)
        self._thread.shutdown(wait=True)
        self.engine.dispose()


def units_for(engine: AsyncEngine) -> ThreadUnits | EngineUnits:
    """A dedicated thread for a SQLite file; the async engine for anything else (PostgreSQL,
    or an in-memory SQLite database, which a second connection would not see)."""
    url = make_url(str(engine.url))
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return ThreadUnits(url.database)
    return EngineUnits(engine)
