"""The queue's units of work on a real SQLite file: one thread, one lock file, durability."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection

from mailsvc.storage.db import create_engine
from mailsvc.storage.units import EngineUnits, ThreadUnits, units_for


def synchronous(conn: Connection) -> int:
    value: int = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
    return value


async def test_units_take_turns_through_the_lock_file(tmp_path: Path) -> None:
    """What the acceptor and the delivery process share: the flock on <database>.lock."""
    path = tmp_path / "q.db"
    units = ThreadUnits(str(path))
    try:
        await units.run(lambda conn: conn.execute(text("CREATE TABLE t (n INTEGER)")))
        holder = os.open(f"{path}.lock", os.O_RDWR)
        fcntl.flock(holder, fcntl.LOCK_EX)  # as another process in the middle of a unit
        write = asyncio.create_task(
            units.run(lambda conn: conn.execute(text("INSERT INTO t VALUES (1)")))
        )
        await asyncio.sleep(0.3)
        assert not write.done()  # waits for the lock file first
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
        await asyncio.wait_for(write, 5)
        count = await units.run(lambda conn: conn.execute(text("SELECT count(*) FROM t")).scalar())
        assert count == 1
    finally:
        await units.close()


async def test_units_are_fsynced_unless_asked_not_to_be(tmp_path: Path) -> None:
    units = ThreadUnits(str(tmp_path / "q.db"))
    try:
        # SQLite's values: 2 = FULL (fsync at every commit), 1 = NORMAL (WAL: not flushed).
        assert await units.run(synchronous) == 2
        assert await units.run(synchronous, durable=False) == 1
        assert await units.run(synchronous) == 2
    finally:
        await units.close()


async def test_a_dropped_body_does_not_linger_in_the_database_file(tmp_path: Path) -> None:
    """A delivered message's body is released by setting it to NULL; with secure_delete on
    its freed pages are overwritten, so the text is gone from the file, not just unlinked."""
    path = tmp_path / "q.db"
    units = ThreadUnits(str(path))
    try:
        assert await units.run(lambda c: c.exec_driver_sql("PRAGMA secure_delete").scalar()) == 1
        await units.run(lambda conn: conn.execute(text("CREATE TABLE m (id INTEGER, body BLOB)")))
        body = os.urandom(400 * 1024)
        await units.run(
            lambda conn: conn.execute(text("INSERT INTO m VALUES (1, :b)"), {"b": body})
        )
        await units.run(lambda conn: conn.execute(text("UPDATE m SET body = NULL")))
        # Move everything into the database file (outside any transaction) and look for it.
        other = sqlite3.connect(path)
        try:
            assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        finally:
            other.close()
        assert body[200_000:204_096] not in path.read_bytes()
    finally:
        await units.close()


async def test_a_failed_unit_is_rolled_back_and_the_next_one_runs(tmp_path: Path) -> None:
    units = ThreadUnits(str(tmp_path / "q.db"))
    try:
        await units.run(lambda conn: conn.execute(text("CREATE TABLE t (n INTEGER UNIQUE)")))

        def twice(conn: Connection) -> None:
            conn.execute(text("INSERT INTO t VALUES (1)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))  # violates UNIQUE: all rolled back

        try:
            await units.run(twice)
        except Exception as exc:
            assert "UNIQUE" in str(exc)
        else:
            raise AssertionError("the unit should have failed")
        await units.run(lambda conn: conn.execute(text("INSERT INTO t VALUES (2)")))
        rows = await units.run(lambda conn: conn.execute(text("SELECT n FROM t")).scalars().all())
        assert rows == [2]
    finally:
        await units.close()


async def test_only_a_sqlite_file_gets_its_own_thread(tmp_path: Path) -> None:
    on_file = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
    in_memory = create_engine("sqlite+aiosqlite:///:memory:")
    try:
        file_units = units_for(on_file)
        assert isinstance(file_units, ThreadUnits)
        await file_units.close()
        # A second connection would not see an in-memory database: stay on the engine.
        assert isinstance(units_for(in_memory), EngineUnits)
    finally:
        await on_file.dispose()
        await in_memory.dispose()


async def test_an_inline_unit_runs_on_the_callers_thread_only_when_the_thread_is_idle(
    tmp_path: Path,
) -> None:
    import threading

    units = ThreadUnits(str(tmp_path / "q.db"))
    here = threading.get_ident()
    try:
        await units.run(lambda conn: conn.execute(text("CREATE TABLE t (n INTEGER)")))

        def where(conn: Connection) -> int:
            conn.execute(text("INSERT INTO t VALUES (1)"))
            return threading.get_ident()

        assert await units.run(where) != here  # by default: the database's own thread
        assert await units.run(where, inline=True) == here  # idle: no hand-off
        # The database thread busy with another unit: the inline one waits its turn there.
        started, release = threading.Event(), threading.Event()

        def slow(conn: Connection) -> None:
            started.set()
            release.wait(5)
            conn.execute(text("INSERT INTO t VALUES (2)"))

        busy = asyncio.create_task(units.run(slow))
        assert await asyncio.to_thread(started.wait, 5)
        second = asyncio.create_task(units.run(where, inline=True))
        await asyncio.sleep(0.2)
        assert not second.done()  # it did not touch the connection in the middle of "slow"
        release.set()
        await busy
        assert await asyncio.wait_for(second, 5) != here
        count = await units.run(lambda conn: conn.execute(text("SELECT count(*) FROM t")).scalar())
        assert count == 4
        # Another process in the middle of a unit: the event loop does not wait for its lock;
        # the unit waits on the database thread instead.
        holder = os.open(f"{tmp_path / 'q.db'}.lock", os.O_RDWR)
        fcntl.flock(holder, fcntl.LOCK_EX)
        third = asyncio.create_task(units.run(where, inline=True))
        await asyncio.sleep(0.2)  # reached at all: the loop was not blocked
        assert not third.done()
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
        assert await asyncio.wait_for(third, 5) != here
        assert await units.run(where, inline=True) == here
        # Inline units are durable like the others (synchronous=FULL for their commit).
        assert await units.run(synchronous, inline=True) == 2
    finally:
        await units.close()
