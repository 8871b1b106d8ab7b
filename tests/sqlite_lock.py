"""SQLite's lock held by another process, for the tests of how the service waits for it."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

# Another process: takes SQLite's write lock (BEGIN IMMEDIATE), says so, holds it until told.
HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
conn.execute("CREATE TABLE IF NOT EXISTS contention (n INTEGER)")
conn.execute("INSERT INTO contention (n) VALUES (0)")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""

# Another process: a writer in a loop, each transaction holding the lock for a while.
WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
hold, until = float(sys.argv[2]), time.monotonic() + float(sys.argv[3])
conn.execute("CREATE TABLE IF NOT EXISTS contention (n INTEGER)")
print("writing", flush=True)
n = 0
while time.monotonic() < until:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO contention (n) VALUES (?)", (n,))
    time.sleep(hold)
    conn.execute("COMMIT")
    n += 1
    time.sleep(0.002)
"""


@contextlib.asynccontextmanager
async def held_by_another_process(path: Path) -> AsyncIterator[None]:
    """SQLite's write lock held by another process for the duration of the block."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        str(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert await asyncio.wait_for(holder.stdout.readline(), 30) == b"locked\n"
        yield
    finally:
        holder.stdin.write(b"release\n")
        await holder.stdin.drain()
        assert await asyncio.wait_for(holder.wait(), 30) == 0


@contextlib.asynccontextmanager
async def writer_process(path: Path, hold: float = 0.01) -> AsyncIterator[None]:
    """Another process writing in a loop for the duration of the block, each transaction
    holding SQLite's lock for ``hold`` seconds."""
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(path), str(hold), "300", stdout=asyncio.subprocess.PIPE
    )
    assert writer.stdout is not None
    try:
        assert await asyncio.wait_for(writer.stdout.readline(), 30) == b"writing\n"
        yield
        # Still writing: none of its transactions gave up on the lock.
        assert writer.returncode is None, "the writing process failed"
    finally:
        if writer.returncode is None:
            writer.terminate()
        await writer.wait()


class Heartbeat:
    """The event loop's longest stall while it runs: a loop blocked in SQLite's busy handler
    shows up as a gap between two short sleeps."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            last = now

    def __enter__(self) -> Heartbeat:
        self._task = asyncio.get_running_loop().create_task(self._beat())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
