"""SQLite's lock held by another connection is a wait, never an error: the queue's units of work
(inline and threaded), the async engine's writers, with the lock held in this process and by
another process, on real database files."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from mailsvc.domain.receipt_states import EventKind, EventSource
from mailsvc.errors import StorageUnavailable
from mailsvc.storage.db import create_engine, create_schema
from mailsvc.storage.queue import MailQueue, QueuedMessage
from mailsvc.storage.sessions import ReceiptStore
from mailsvc.storage.tables import deliveries
from mailsvc.storage.units import EngineUnits, ThreadUnits
from tests.sqlite_lock import Heartbeat, held_by_another_process, writer_process

T = TypeVar("T")

BODY = b"Subject: a pothole\r\n\r\nPlease fix it.\r\n"


async def open_queue(path: Path) -> tuple[AsyncEngine, MailQueue]:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await create_schema(engine)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE contention (n INTEGER)"))
    return engine, MailQueue(engine, local_domains=("rada.example",))


@contextlib.asynccontextmanager
async def held_in_this_process(engine: AsyncEngine) -> AsyncIterator[None]:
    """A write transaction of the async engine left open across awaits, as a distribution's
    chunk of recipients is (its coroutine needs the event loop to finish it)."""
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO contention (n) VALUES (0)"))
        yield


HOLD = 1.5  # seconds the lock is held while the operation waits for it


async def waits_for_the_lock(
    lock: contextlib.AbstractAsyncContextManager[None], operation: Awaitable[T]
) -> T:
    """Start ``operation`` while the lock is held: it must still be waiting (not failed) a
    moment later, with the event loop running; it must finish once the lock is released."""
    with Heartbeat() as beat:
        async with lock:
            task = asyncio.ensure_future(operation)
            await asyncio.sleep(HOLD)
            assert not task.done(), f"did not wait for the lock: {task}"
        result = await asyncio.wait_for(task, 20)
    # A unit that waited in SQLite's busy handler on the loop's thread would stall it for the
    # whole time the lock was held (HOLD), or for ever if the holder needs the loop. The margin
    # below HOLD is for a machine busy with other tests (the suite runs on every core).
    assert beat.longest < HOLD - 0.5, f"the event loop stalled for {beat.longest:.2f} s"
    return result


async def delivery_statuses(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(deliveries.c.status).order_by(deliveries.c.id))
        return [status for (status,) in rows]


def delivered(message: QueuedMessage) -> list[tuple[int, str, str, datetime | None]]:
    return [(d, "delivered", "250 2.0.0 ok", None) for d, _, _ in message.deliveries]


class ThreadOnly(ThreadUnits):
    """The queue's units with every unit on the database thread (what an inline unit does when
    the thread or the lock is taken)."""

    async def run(
        self, work: Callable[[Connection], T], *, durable: bool = True, inline: bool = False
    ) -> T:
        return await super().run(work, durable=durable, inline=False)


async def queue_in_mode(path: Path, inline: bool) -> tuple[AsyncEngine, MailQueue]:
    engine, queue = await open_queue(path)
    if not inline:
        await queue.units.close()
        queue.units = ThreadOnly(str(path))
    return engine, queue


LOCKS = ("this-process", "another-process")


def lock_for(where: str, engine: AsyncEngine, path: Path) -> Any:
    if where == "this-process":
        return held_in_this_process(engine)
    return held_by_another_process(path)


@pytest.mark.parametrize("where", LOCKS)
@pytest.mark.parametrize("inline", [True, False], ids=["inline", "threaded"])
async def test_enqueue_claim_and_record_wait_for_a_held_lock(
    tmp_path: Path, where: str, inline: bool
) -> None:
    path = tmp_path / "q.db"
    engine, queue = await queue_in_mode(path, inline)
    try:
        # Enqueue: a lone session's (inline) and a group commit's (the database thread).
        queue_id = await waits_for_the_lock(
            lock_for(where, engine, path),
            queue.enqueue("jan@example.org", ["a@rada.example"], BODY, alone=inline),
        )
        assert len(queue_id) == 16
        await queue.enqueue("jan@example.org", ["b@rada.example"], BODY)
        # Claim.
        claim = await waits_for_the_lock(lock_for(where, engine, path), queue.claim("lmtp", 2))
        assert len(claim.messages) == 2
        assert await delivery_statuses(engine) == ["inflight", "inflight"]
        # Record.
        first, second = claim.messages
        await waits_for_the_lock(
            lock_for(where, engine, path), queue.record(first.id, delivered(first))
        )
        await queue.record(second.id, delivered(second))
        assert await delivery_statuses(engine) == ["delivered", "delivered"]
    finally:
        await queue.close()
        await engine.dispose()


async def test_a_lock_held_past_the_busy_timeout_is_a_temporary_failure(tmp_path: Path) -> None:
    """What reaches the callers when the wait runs out: StorageUnavailable (4xx at SMTP, a
    retry in the delivery workers), never the driver's error; and the next unit runs."""
    path = tmp_path / "q.db"
    engine, queue = await open_queue(path)
    await queue.units.close()
    queue.units = ThreadUnits(str(path), busy_timeout=0.3)
    short = create_engine(f"sqlite+aiosqlite:///{path}", busy_timeout=0.3)

    def write(conn: Connection) -> None:
        conn.execute(text("INSERT INTO contention (n) VALUES (1)"))

    try:
        async with held_by_another_process(path):
            for inline in (True, False):
                with pytest.raises(StorageUnavailable, match="busy"):
                    await queue.units.run(write, inline=inline)
            with pytest.raises(StorageUnavailable, match="busy"):
                await EngineUnits(short).run(write)
            # A group commit: every waiting session is told, none is left hanging.
            sessions = [queue.enqueue("jan@example.org", ["a@rada.example"], BODY) for _ in "ab"]
            for outcome in await asyncio.gather(*sessions, return_exceptions=True):
                assert isinstance(outcome, StorageUnavailable), outcome
            with pytest.raises(StorageUnavailable):
                await queue.enqueue("jan@example.org", ["a@rada.example"], BODY, alone=True)
        # Released: the same connections go on.
        await queue.units.run(write, inline=True)
        await queue.units.run(write)
        await EngineUnits(short).run(write)
        assert await queue.enqueue("jan@example.org", ["a@rada.example"], BODY)
        assert await delivery_statuses(engine) == ["queued"]
    finally:
        await queue.close()
        await short.dispose()
        await engine.dispose()


async def test_every_connection_waits_for_a_lock(tmp_path: Path) -> None:
    """The busy timeout is set on the async engine's connections and on the queue's own, and
    an inline unit (which must not wait) leaves it in place for the next threaded one."""
    path = tmp_path / "q.db"
    engine, queue = await open_queue(path)

    def busy_timeout(conn: Connection) -> int:
        value: int = conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()
        return value

    try:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar_one() == 30000
        assert await queue.units.run(busy_timeout) == 30000
        assert await queue.units.run(busy_timeout, inline=True) == 0  # fails over, never waits
        assert await queue.units.run(busy_timeout) == 30000
    finally:
        await queue.close()
        await engine.dispose()


async def test_the_async_engines_writers_wait_for_another_process(tmp_path: Path) -> None:
    """Scheduling a distribution and queueing its recipients (the async engine: a read, then
    writes in one transaction) while another process holds the lock: they wait, then commit."""
    path = tmp_path / "q.db"
    engine, queue = await open_queue(path)
    store = ReceiptStore(engine)
    try:
        session = await waits_for_the_lock(
            held_by_another_process(path),
            store.create_session(
                number="XV/2026",
                kind="ordinary",
                starts_at=datetime(2026, 6, 1, 10, 0),
                place="Sala Obrad",
                title="",
                actor="pytest",
                agenda=["Otwarcie"],
            ),
        )
        dist = await waits_for_the_lock(held_by_another_process(path), schedule(store, session.id))
        rows = await waits_for_the_lock(
            held_by_another_process(path), queue_recipients(store, queue, dist, 5)
        )
        assert len(rows) == 5
        assert await delivery_statuses(engine) == ["queued"] * 5
        # A read, then a write in the same transaction (an acknowledgement recorded once).
        added = store.add_event(rows[0], EventKind.ACKNOWLEDGED, EventSource.LINK, "", once=True)
        assert await waits_for_the_lock(held_by_another_process(path), added)
        assert await store.recipients_with_kind(dist, EventKind.ACKNOWLEDGED) == {rows[0]}
    finally:
        await queue.close()
        await engine.dispose()


async def schedule(store: ReceiptStore, session_id: int) -> int:
    dist = await store.create_distribution(
        session_id=session_id,
        kind="notice",
        due_at=datetime(2026, 5, 20, 8, 0),
        committee=None,
        document_ids=(),
        note="",
        replies_to=None,
        override_reason=None,
        actor="pytest",
    )
    return dist.id


async def queue_recipients(
    store: ReceiptStore, queue: MailQueue, distribution_id: int, count: int, first: int = 0
) -> list[int]:
    """What a distribution's chunk of recipients does (mailsvc.distributions): in one
    transaction of the async engine, the recipients' rows, their queued messages, the links."""
    numbers = range(first, first + count)
    async with queue.engine.begin() as conn:
        recipients = await store.insert_recipients(
            conn,
            distribution_id=distribution_id,
            recipients=[
                (
                    f"radny{n}@rada.example",
                    f"Radny {n}",
                    "councillor",
                    f"<{n}.d{distribution_id}@rada.example>",
                )
                for n in numbers
            ],
            at=datetime(2026, 5, 20, 8, 0),
        )
        await asyncio.sleep(0)  # as rendering the heads between the statements lets others run
        queued = await queue.insert_many(
            conn,
            [("bounces@rada.example", [f"radny{n}@rada.example"], BODY, None) for n in numbers],
            "",
            "distribution",
        )
        await store.set_queue_messages(
            conn, [(r, row) for r, (row, _) in zip(recipients, queued, strict=True)]
        )
    return recipients


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "threaded"])
async def test_mail_flows_among_writers_in_this_and_another_process(
    tmp_path: Path, inline: bool
) -> None:
    """Residents' mail enqueued, claimed and recorded while a distribution queues its
    recipients through the async engine in this process and another process writes in a loop:
    every message delivered, nothing failed, and the event loop never stalls."""
    path = tmp_path / "q.db"
    engine, queue = await open_queue(path)
    store = ReceiptStore(engine)
    session = await store.create_session(
        number="XV/2026",
        kind="ordinary",
        starts_at=datetime(2026, 6, 1, 10, 0),
        place="Sala Obrad",
        title="",
        actor="pytest",
    )
    dist = await schedule(store, session.id)
    residents, chunks, per_chunk = 60, 6, 10
    expected = residents + chunks * per_chunk
    recorded = 0

    async def resident(n: int) -> str:
        await asyncio.sleep(0.005 * n)
        # Alternately a lone session (inline when it can) and a group commit.
        return await queue.enqueue(
            "jan@example.org", [f"radny{n % 7}@rada.example"], BODY, alone=n % 2 == 0
        )

    async def distribution() -> None:
        for chunk in range(chunks):
            await queue_recipients(store, queue, dist, per_chunk, first=chunk * per_chunk)

    async def deliver() -> None:
        nonlocal recorded
        while recorded < expected:
            claim = await queue.claim("lmtp", 4)
            for message in claim.messages:
                await queue.record(message.id, delivered(message))
                recorded += len(message.deliveries)
            if not claim.messages:
                await asyncio.sleep(0.01)

    try:
        async with writer_process(path):
            with Heartbeat() as beat:
                work = (*(resident(n) for n in range(residents)), distribution(), deliver())
                await asyncio.wait_for(asyncio.gather(*work), 90)
        assert beat.longest < 0.4, f"the event loop stalled for {beat.longest:.2f} s"
        assert await delivery_statuses(engine) == ["delivered"] * expected
        async with engine.connect() as conn:  # the other process did write meanwhile
            assert (await conn.execute(text("SELECT count(*) FROM contention"))).scalar_one() > 0
    finally:
        await queue.close()
        await engine.dispose()
