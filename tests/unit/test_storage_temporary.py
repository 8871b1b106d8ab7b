"""Which database errors are temporary (``db.is_temporary``: 4xx, retry later) and which are
not: the SQLSTATE table, then the errors a real PostgreSQL server and asyncpg raise, wrapped by
SQLAlchemy as the service meets them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from mailsvc.errors import StorageUnavailable
from mailsvc.storage.db import create_engine, is_busy, is_temporary
from mailsvc.storage.units import EngineUnits


def _asyncpg_error(sqlstate: str) -> asyncpg.PostgresError:
    """asyncpg's exception for ``sqlstate``, as the server's error message makes it."""
    return asyncpg.PostgresError.new({"C": sqlstate, "M": f"error {sqlstate}", "S": "ERROR"})


def _wrapped(sqlstate: str) -> DBAPIError:
    """As SQLAlchemy hands it over: its DBAPIError around the dialect's adapter error, which
    has asyncpg's exception as its cause."""
    error = _asyncpg_error(sqlstate)
    adapted = AsyncAdapt_asyncpg_dbapi.Error(str(error), error)
    adapted.__cause__ = error
    return DBAPIError.instance("SELECT 1", None, adapted, AsyncAdapt_asyncpg_dbapi.Error)


TEMPORARY = [
    "08000",  # connection_exception
    "08001",  # sqlclient_unable_to_establish_sqlconnection
    "08003",  # connection_does_not_exist
    "08006",  # connection_failure
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "53100",  # disk_full
    "53200",  # out_of_memory
    "53300",  # too_many_connections
    "55P03",  # lock_not_available
    "57014",  # query_canceled
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now
    "58030",  # io_error
]
PERMANENT = [
    "22021",  # character_not_in_repertoire (a NUL byte in text)
    "22001",  # string_data_right_truncation
    "23505",  # unique_violation
    "23502",  # not_null_violation
    "42601",  # syntax_error
    "42P01",  # undefined_table
    "42501",  # insufficient_privilege
    "28P01",  # invalid_password: a wrong setting, not a passing condition
    "3D000",  # invalid_catalog_name (no such database)
    "40002",  # transaction_integrity_constraint_violation
    "XX000",  # internal_error
]


@pytest.mark.parametrize("sqlstate", TEMPORARY)
def test_temporary_sqlstates(sqlstate: str) -> None:
    assert is_temporary(_asyncpg_error(sqlstate))
    assert is_temporary(_wrapped(sqlstate))
    assert not is_busy(_wrapped(sqlstate))  # busy is SQLite's lock only


@pytest.mark.parametrize("sqlstate", PERMANENT)
def test_permanent_sqlstates(sqlstate: str) -> None:
    assert not is_temporary(_asyncpg_error(sqlstate))
    assert not is_temporary(_wrapped(sqlstate))


def test_socket_errors_are_temporary() -> None:
    assert is_temporary(ConnectionRefusedError(111, "Connect call failed"))
    assert is_temporary(ConnectionResetError(104, "Connection reset by peer"))
    assert is_temporary(TimeoutError())
    assert is_temporary(OSError("Multiple exceptions: [Errno 111] Connect call failed"))
    assert is_temporary(asyncpg.InterfaceError("connection is closed"))
    assert not is_temporary(asyncpg.InterfaceError("the server expects 2 arguments, 1 passed"))
    assert is_temporary(socket.gaierror(-3, "Temporary failure in name resolution"))
    assert not is_temporary(ValueError("A string literal cannot contain NUL (0x00) characters."))
    # A unit's own file errors say nothing about the server.
    assert not is_temporary(FileNotFoundError(2, "No such file or directory"))
    assert not is_temporary(PermissionError(13, "Permission denied"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    made = create_engine(pg_url)
    yield made
    await made.dispose()


async def test_refused_connection_is_storage_unavailable() -> None:
    """Nothing listens on the port: the unit raises StorageUnavailable, not OSError."""
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{_free_port()}/none")
    try:
        with pytest.raises(StorageUnavailable, match="temporarily unavailable"):
            await EngineUnits(engine).run(lambda conn: conn.execute(text("SELECT 1")))
    finally:
        await engine.dispose()


async def test_terminated_backend_is_storage_unavailable(engine: AsyncEngine) -> None:
    """The server ends the session in the middle of a unit (pg_terminate_backend, as a fast
    shutdown does to every session): StorageUnavailable; the next unit gets a new connection."""
    units = EngineUnits(engine)

    def terminate_own_session(conn: Connection) -> None:
        conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        conn.execute(text("SELECT 1"))

    with pytest.raises(StorageUnavailable, match="temporarily unavailable"):
        await units.run(terminate_own_session)
    assert await units.run(lambda conn: conn.execute(text("SELECT 1")).scalar_one()) == 1


async def test_closed_driver_connection_is_temporary(pg_url: str) -> None:
    """asyncpg's own error for a connection the server has closed."""
    dsn = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    raw = await asyncpg.connect(dsn)
    other = await asyncpg.connect(dsn)
    try:
        await other.execute("SELECT pg_terminate_backend($1)", raw.get_server_pid())
        await asyncio.sleep(0.1)
        with pytest.raises(Exception) as caught:
            await raw.fetchval("SELECT 1")
        assert is_temporary(caught.value), repr(caught.value)
    finally:
        raw.terminate()
        await other.close()


async def test_serialization_failure_is_storage_unavailable(engine: AsyncEngine) -> None:
    """Two SERIALIZABLE transactions that read and write each other's rows: one of them is
    cancelled by the server (40001), and the unit says StorageUnavailable."""
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (k int primary key, v int)"))
        await conn.execute(text("INSERT INTO t VALUES (1, 0), (2, 0)"))
    first = await engine.connect()
    second = await engine.connect()
    try:
        for conn in (first, second):
            await conn.execute(text("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"))
        await first.execute(text("SELECT sum(v) FROM t"))
        await second.execute(text("SELECT sum(v) FROM t"))
        await first.execute(text("UPDATE t SET v = v + 1 WHERE k = 1"))
        await second.execute(text("UPDATE t SET v = v + 1 WHERE k = 2"))
        await first.commit()
        with pytest.raises(DBAPIError) as caught:
            await second.commit()
        assert is_temporary(caught.value), repr(caught.value)
    finally:
        await first.close()
        await second.close()


async def test_bad_data_is_not_temporary(engine: AsyncEngine) -> None:
    """A NUL byte in a text value: the server refuses it every time, so it is not temporary
    (the SMTP doors refuse such a message before the database, with 550 5.6.0)."""
    units = EngineUnits(engine)
    with pytest.raises(DBAPIError) as caught:
        await units.run(lambda conn: conn.execute(text("SELECT CAST(:v AS text)"), {"v": "a\0b"}))
    assert not is_temporary(caught.value)
