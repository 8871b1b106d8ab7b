"""Database engine and schema. SQLite (WAL, synchronous=FULL) by default, PostgreSQL for scale.

Only portable SQL is used: the same tables and queries run on both engines.
"""

from __future__ import annotations

import contextlib
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mailsvc.storage import schema


def utcnow() -> datetime:
    """Naive UTC: stored the same way on SQLite and PostgreSQL."""
    return datetime.now(UTC).replace(tzinfo=None)


# How long a SQLite connection waits for another connection's write lock before it gives up
# (SQLite's busy handler). A lock held this long means something is wrong; shorter waits are
# the ordinary turn-taking of the service's processes, the CLI and the web pages.
BUSY_TIMEOUT = 30.0
# SQLITE_BUSY and SQLITE_LOCKED (the primary codes, under their extended ones).
_BUSY_CODES = (5, 6)


def is_busy(exc: BaseException) -> bool:
    """True when ``exc`` (a driver error, or SQLAlchemy's wrapper of one) says SQLite's lock is
    held by another connection: a temporary condition, never a reason to give up on mail."""
    orig = getattr(exc, "orig", None) if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _BUSY_CODES


# PostgreSQL SQLSTATEs (and classes: two characters) after which the same work may succeed
# later: the server is going away or is not there yet, it ran out of connections or resources,
# or it chose this transaction as the loser of a conflict (serialization, deadlock, a lock
# that could not be had). Anything else (bad data, a broken query, a violated constraint)
# fails again when retried.
_TEMPORARY_SQLSTATE_CLASSES = frozenset(
    {
        "08",  # connection exception: refused, lost, rejected
        "53",  # insufficient resources: too many connections, disk full, out of memory
        "58",  # system error: I/O error on the server
    }
)
_TEMPORARY_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "57014",  # query_canceled (statement or lock timeout, pg_cancel_backend)
        "57P01",  # admin_shutdown (fast or smart shutdown, pg_terminate_backend)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up, shutting down, in recovery)
        "57P05",  # idle_session_timeout
    }
)
# The driver's words for a connection that is gone, when it has no SQLSTATE to give.
_CLOSED_CONNECTION = ("connection is closed", "connection was closed")


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error, of SQLAlchemy's adapter of one, or of the error it
    adapts (asyncpg's own exception is its ``__cause__``)."""
    seen: BaseException | None = exc
    for _ in range(3):
        if seen is None:
            return None
        code = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(code, str) and len(code) == 5:
            return code
        seen = seen.__cause__
    return None


def is_temporary(exc: BaseException) -> bool:
    """True when ``exc`` says the database cannot do the work right now but may later: SQLite's
    lock held by another connection (``is_busy``); PostgreSQL refusing or losing the connection,
    shutting down or starting up, out of connections, or cancelling this transaction in a
    serialization failure or a deadlock. The caller answers 4xx or retries, never gives up on
    the mail (``StorageUnavailable``)."""
    if is_busy(exc):
        return True
    if isinstance(exc, PoolTimeout):  # every pooled connection in use for pool_timeout
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:  # SQLAlchemy saw the connection drop
            return True
        orig: BaseException | None = exc.orig
    else:
        orig = exc
    if orig is None:
        return False
    # Refused, reset or timed out at the socket, the host unreachable or not found (asyncpg's
    # connect raises these unwrapped). Not a file's errors (FileNotFoundError, PermissionError):
    # those say nothing about the server and would only fail again.
    if isinstance(orig, (ConnectionError, TimeoutError, socket.gaierror)) or type(orig) is OSError:
        return True
    code = _sqlstate(orig)
    if code is not None:
        return code in _TEMPORARY_SQLSTATES or code[:2] in _TEMPORARY_SQLSTATE_CLASSES
    text = str(orig).lower()
    return type(orig).__name__.endswith("InterfaceError") and any(
        words in text for words in _CLOSED_CONNECTION
    )


def secure_delete_pragma() -> str:
    """Overwrite deleted rows (message heads, bodies) with zeros, so they do not linger in free
    pages. ``SQLITE_SECURE_DELETE=off`` in the environment turns it off: for measuring its cost
    (bench/relay.py), never for production."""
    off = os.environ.get("SQLITE_SECURE_DELETE", "").lower() in ("off", "0", "false")
    return "PRAGMA secure_delete=OFF" if off else "PRAGMA secure_delete=ON"


def private_database_file(database: str) -> None:
    """Create the SQLite file 0600 before SQLite does (its -wal and -shm files take the main
    file's mode), and tighten an existing one: the queue holds mail."""
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Never open (and close) an existing file: closing any descriptor of it drops this
    # process's POSIX locks, SQLite's among them. chmod works on the name.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except FileNotFoundError:
            pass


def create_engine(url: str, *, busy_timeout: float = BUSY_TIMEOUT) -> AsyncEngine:
    """An async engine; SQLite gets WAL and fsync on every commit (250 means stored), and every
    connection waits up to ``busy_timeout`` seconds for another connection's lock.

    Its writers need no ``BEGIN IMMEDIATE``: the driver (sqlite3's legacy transaction mode)
    runs reads before a transaction's first write outside it and begins the transaction just
    before that write, so the write lock is taken by a connection without a read snapshot,
    which SQLite's busy handler waits for (an upgrade from a read would fail at once)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            private_database_file(database)
        # One connection: SQLite has one writer anyway, and several pooled connections only
        # fight over its lock (long tails under load). Callers queue for it instead.
        pool: dict[str, Any] = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 60}
        if not database or database == ":memory:":
            pool = {}  # one connection kept for the database's life (SQLAlchemy's StaticPool)
        engine = create_async_engine(url, connect_args={"timeout": busy_timeout}, **pool)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={round(busy_timeout * 1000)}")
            cur.execute(secure_delete_pragma())
            cur.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True)


async def create_schema(engine: AsyncEngine) -> None:
    """What every start does (``mailsvc.storage.schema.ready``): a fresh database is made at
    the code's schema revision by its migrations; one at another revision is refused."""
    await schema.ready(engine)
