"""Units of work: one synchronous function, one transaction, one thread hop.

The mail queue's hot path (enqueue, claim, record) used to run statement by statement through
the async engine: every statement was a round trip to a driver thread, and a transaction of six
statements cost six hand-offs plus the event loop's wake-ups around each. Here a whole unit of
work is one plain function of a synchronous SQLAlchemy ``Connection``, run in one transaction:

- On a SQLite file, on a dedicated thread with its own connection (WAL, ``synchronous=FULL``,
  ``BEGIN IMMEDIATE`` so that a writer takes the lock at the start instead of failing on an
  upgrade, ``secure_delete=ON``: a delivered body's freed pages are overwritten with zeros,
  so mail does not linger in the file's free pages; it costs the body's size again through the
  WAL and the checkpoint, measured in docs/benchmarks.md). One hop to the
  thread and one back per unit; the commit's fsync happens there, off the event loop. The
  processes of one service (the acceptor and the delivery process) take turns through an ``flock``
  on ``<database>.lock`` held for each unit: the kernel hands the lock to the next waiter the
  moment it is released, where SQLite's own busy handler would poll with sleeps of up to 100 ms
  (long tails under load). Other writers (the async engine of the same process: distributions,
  the web pages; the CLI) still meet SQLite's lock, and the database thread waits for it in the
  busy handler (``BUSY_TIMEOUT``). The event loop's thread never does: an inline unit that finds
  the lock taken goes to the database thread instead (the holder may be a coroutine of this
  very loop, which could never finish while the loop waits for it).
- On any other database (PostgreSQL through asyncpg), through the async engine with
  ``run_sync``: the same function, the same single transaction.

Callers get the function's result, or its exception; SQLite's lock still held by another
connection after the busy timeout, and a temporary failure of a PostgreSQL server (down,
restarting, out of connections, a serialization failure or deadlock: ``db.is_temporary``), are
raised as ``StorageUnavailable`` (a temporary failure: the caller retries, or answers 4xx),
never as a driver error that could be taken for a broken unit.

A unit is durable (its commit fsync'd before ``run`` returns) unless the caller passes
``durable=False``: then the commit is ordered but not flushed (SQLite WAL ``synchronous=NORMAL``,
PostgreSQL ``synchronous_commit = off``). A power failure may lose such a commit, never corrupt
the database, and the next durable commit flushes it with its own. The queue uses it only for
what a loss merely repeats: claims (deliveries in flight are retried after a crash anyway) and
delivery outcomes (a lost outcome is a delivery in flight at the crash: attempted again, as
at-least-once delivery allows). Accepting a message is always durable: 250 means fsync'd.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from mailsvc.errors import StorageUnavailable
from mailsvc.storage.db import (
    BUSY_TIMEOUT,
    is_busy,
    is_temporary,
    private_database_file,
    secure_delete_pragma,
)

T = TypeVar("T")


def busy_error(exc: BaseException) -> StorageUnavailable:
    return StorageUnavailable(f"the database is busy (locked by another connection): {exc}")


def unavailable_error(exc: BaseException) -> StorageUnavailable:
    """A temporary failure of the database server (``is_temporary``): down, starting, out of
    connections, or a transaction that lost a conflict. The unit was not committed, or (the
    connection lost during COMMIT) its commit was not confirmed: the caller answers 4xx, and a
    sender's retry may then store a message twice, never lose one."""
    return StorageUnavailable(f"the database is temporarily unavailable: {exc!r}")


class Units(Protocol):
    async def run(
        self, work: Callable[[Connection], T], *, durable: bool = True, inline: bool = False
    ) -> T:
        """Run ``work`` in one transaction; committed when it returns, rolled back if it
        raises. ``inline``: the caller has nothing else to do meanwhile (one lone SMTP session);
        the unit may then run on the calling thread, sparing the hand-off to the database's
        thread and back, which costs more than the work itself on a busy machine."""
        ...

    async def close(self) -> None: ...


class EngineUnits:
    """Units of work through the async engine (``run_sync`` inside one transaction)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def run(
        self, work: Callable[[Connection], T], *, durable: bool = True, inline: bool = False
    ) -> T:
        try:
            async with self.engine.begin() as conn:
                if not durable and conn.dialect.name == "postgresql":
                    await conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                return await conn.run_sync(work)
        except (DBAPIError, OSError, PoolTimeout) as exc:
            if is_busy(exc):
                raise busy_error(exc) from exc
            if is_temporary(exc):
                raise unavailable_error(exc) from exc
            raise

    async def close(self) -> None:
        return None


class _LockBusy(Exception):
    """Another process is in the middle of a unit, or another connection holds SQLite's lock."""


def begin_immediate(raw: sqlite3.Connection, *, wait: bool) -> None:
    """``BEGIN IMMEDIATE``: the write lock at the start, waited for in SQLite's busy handler
    (an upgrade from a read later in the transaction would fail at once instead). Without
    ``wait`` (the connection's busy timeout set to 0) a lock held elsewhere raises _LockBusy;
    with it, a lock still held after the busy timeout raises StorageUnavailable."""
    try:
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if is_busy(exc):
            if not wait:
                raise _LockBusy from None
            raise busy_error(exc) from exc
        raise DBAPIError.instance("BEGIN IMMEDIATE", None, exc, sqlite3.Error) from exc


def sqlite_engine(path: str, busy_timeout: float = BUSY_TIMEOUT) -> Engine:
    """A synchronous engine on a SQLite file: WAL, fsync at every commit, ``BEGIN IMMEDIATE``,
    ``busy_timeout`` seconds of waiting for another connection's lock."""
    # check_same_thread off: ThreadUnits may run a unit inline on the event loop's thread; its
    # own lock keeps the connection to one thread at a time.
    private_database_file(path)
    engine = create_engine(
        f"sqlite:///{path}",
        poolclass=NullPool,
        connect_args={"timeout": busy_timeout, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun explicitly below
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            "PRAGMA foreign_keys=ON",
            f"PRAGMA busy_timeout={round(busy_timeout * 1000)}",
            secure_delete_pragma(),
        ):
            dbapi_conn.execute(pragma)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # ThreadUnits begins its transactions itself (it must tell a busy lock from other
        # errors); this serves any other user of the engine. Straight to the driver: the
        # statement needs none of SQLAlchemy's execution path.
        raw: Any = conn.connection.driver_connection
        if not raw.in_transaction:
            begin_immediate(raw, wait=True)

    return engine


class ThreadUnits:
    """Units of work on one thread that owns one SQLite connection.

    A unit asked for ``inline`` runs on the caller's thread instead when the database thread is
    idle, no other process holds the lock file and no other connection holds SQLite's lock: a
    lone SMTP session waits for its commit either way, and the two hand-offs (a futex wake of
    the thread, then the event loop's wake-up) cost 0.1-0.5 ms on a loaded machine, a tenth of
    the whole session. ``_using`` keeps the connection to one thread at a time.
    """

    def __init__(self, path: str, *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.engine = sqlite_engine(path, busy_timeout)
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="queue-db")
        self._conn: Connection | None = None
        self._lock_fd: int | None = None
        self._durable = True
        # Whether the connection's busy handler waits (the database thread) or not (inline).
        self._waits = True
        self._closed = False
        self._using = threading.Lock()

    def _execute(self, work: Callable[[Connection], T], durable: bool) -> T:
        with self._using:
            return self._execute_held(work, durable)

    def _execute_held(
        self, work: Callable[[Connection], T], durable: bool, *, wait: bool = True
    ) -> T:
        """Run the unit; with ``wait`` False raise _LockBusy at once, instead of waiting, when
        another process holds the lock file or another connection SQLite's lock."""
        if self._conn is None:
            self._conn = self.engine.connect()
            self._durable = True  # the connection's pragmas: synchronous=FULL,
            self._waits = True  # the whole busy timeout
        if self._lock_fd is None:
            self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        conn = self._conn
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _LockBusy from None
        try:
            # On the driver's connection, between transactions (SQLAlchemy would begin one).
            raw: Any = conn.connection.driver_connection
            if durable != self._durable:
                raw.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._durable = durable
            if wait != self._waits:
                timeout = round(self.busy_timeout * 1000) if wait else 0
                raw.execute(f"PRAGMA busy_timeout={timeout}")
                self._waits = wait
            begin_immediate(raw, wait=wait)
            try:
                with conn.begin():  # takes over the transaction begun above
                    return work(conn)
            finally:
                if raw.in_transaction:  # conn.begin() failed before taking it over
                    raw.rollback()
        except DBAPIError as exc:
            if is_busy(exc):
                raise busy_error(exc) from exc
            # The connection may be unusable (disk full, file replaced): start afresh next time.
            self._drop()
            raise
        finally:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _drop_when_idle(self) -> None:
        with self._using:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def run(
        self, work: Callable[[Connection], T], *, durable: bool = True, inline: bool = False
    ) -> T:
        if self._closed:
            raise RuntimeError("the queue database is closed")
        if inline and self._using.acquire(blocking=False):
            # Only if nobody holds a lock either (another process the lock file, any other
            # connection SQLite's lock): the event loop must not wait for another transaction,
            # which may be a coroutine of this loop. The database thread waits instead.
            try:
                return self._execute_held(work, durable, wait=False)
            except _LockBusy:
                pass
            finally:
                self._using.release()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._execute, work, durable)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._drop_when_idle)
        self._thread.shutdown(wait=True)
        self.engine.dispose()


def units_for(engine: AsyncEngine) -> ThreadUnits | EngineUnits:
    """A dedicated thread for a SQLite file; the async engine for anything else (PostgreSQL,
    or an in-memory SQLite database, which a second connection would not see)."""
    url = make_url(str(engine.url))
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return ThreadUnits(url.database)
    return EngineUnits(engine)
