"""Group commit in the queue, on a real SQLite file: concurrent messages share a transaction."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from mailsvc.errors import StorageUnavailable
from mailsvc.storage.db import create_engine, create_schema
from mailsvc.storage.queue import MailQueue
from mailsvc.storage.tables import deliveries, messages
from mailsvc.storage.units import ThreadUnits


async def test_concurrent_enqueues_share_commits_and_all_are_stored(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
    await create_schema(engine)
    commits = 0
    queue = MailQueue(engine, ["rada.example"])
    assert isinstance(queue.units, ThreadUnits)  # a SQLite file: the queue's own thread

    @event.listens_for(queue.units.engine, "commit")
    def count(_conn: Any) -> None:
        nonlocal commits
        commits += 1

    ids = await asyncio.gather(
        *(queue.enqueue("a@example.org", [f"r{n}@rada.example"], b"x" * n) for n in range(50))
    )
    try:
        assert len(set(ids)) == 50
        assert commits < 50  # batched: the first commit runs while the other 49 wait
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(messages))).scalar() == 50
            rows = (await conn.execute(select(deliveries.c.recipient))).scalars().all()
        assert sorted(rows) == sorted(f"r{n}@rada.example" for n in range(50))
    finally:
        await queue.close()
        await engine.dispose()


async def test_a_failed_commit_fails_every_message_of_the_batch(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
    await create_schema(engine)
    async with engine.begin() as conn:
        await conn.exec_driver_sql("DROP TABLE deliveries")  # every insert now fails
    queue = MailQueue(engine, ["rada.example"])
    results = await asyncio.gather(
        *(queue.enqueue("a@example.org", ["r@rada.example"], b"x") for _ in range(5)),
        return_exceptions=True,
    )
    try:
        assert all(isinstance(r, StorageUnavailable) for r in results)
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(messages))).scalar() == 0
        with pytest.raises(StorageUnavailable):
            await queue.enqueue("a@example.org", ["r@rada.example"], b"x")
    finally:
        await queue.close()
        await engine.dispose()


async def test_claim_batch_takes_whole_messages_and_release_gives_them_back(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
    await create_schema(engine)
    queue = MailQueue(engine, ["rada.example"])
    try:
        first = await queue.enqueue("a@example.org", ["x@rada.example", "y@rada.example"], b"1")
        for n in range(4):
            await queue.enqueue("a@example.org", [f"r{n}@rada.example"], b"m")
        batch = await queue.claim_batch("lmtp", 3)
        assert len(batch) == 3
        assert batch[0].queue_id == first
        assert sorted(r for _, r, _ in batch[0].deliveries) == ["x@rada.example", "y@rada.example"]
        statuses = [r.status for r in await queue.list_deliveries()]
        assert statuses.count("inflight") == 4 and statuses.count("queued") == 2
        # The next claim takes the rest, never what is already claimed.
        rest = await queue.claim_batch("lmtp", 10)
        assert {m.queue_id for m in rest}.isdisjoint({m.queue_id for m in batch})
        assert len(rest) == 2
        await queue.release(batch)
        statuses = [r.status for r in await queue.list_deliveries()]
        assert statuses.count("queued") == 4 and statuses.count("inflight") == 2
    finally:
        await queue.close()
        await engine.dispose()


async def test_the_fast_insert_stores_rows_as_sqlalchemy_does(tmp_path: Path) -> None:
    """enqueue() writes through the sqlite3 driver; insert() inside a caller's transaction goes
    through SQLAlchemy. Both must store the same values in the same form (dates above all)."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
    await create_schema(engine)
    queue = MailQueue(engine, ["rada.example"])
    try:
        body = "Temat: zażółć\r\n\r\ngęślą jaźń\r\n".encode()
        rcpts = ["anna@rada.example", "jan@example.org"]
        fast_id = await queue.enqueue("ł@example.org", rcpts, body, client="192.0.2.1")
        async with engine.begin() as conn:
            _, slow_id = await queue.insert(
                conn, "ł@example.org", rcpts, body, "192.0.2.1", "inbound"
            )
        async with engine.connect() as conn:
            # As stored, without SQLAlchemy's conversions on the way back.
            raw = {
                row[0]: row[1:]
                for row in (
                    await conn.exec_driver_sql(
                        "SELECT queue_id, mail_from, typeof(received_at), length(received_at), "
                        "size, client, body, status, origin, parts FROM messages"
                    )
                ).all()
            }
            assert raw[fast_id] == raw[slow_id]
            assert raw[fast_id][1:3] == ("text", len("2026-01-01 00:00:00.000000"))
            by_message = {}
            for queue_id in (fast_id, slow_id):
                by_message[queue_id] = (
                    await conn.exec_driver_sql(
                        "SELECT d.recipient, d.route, d.status, d.attempts, "
                        "length(d.next_attempt_at), d.next_attempt_at = m.received_at, "
                        "d.updated_at = m.received_at FROM deliveries d "
                        "JOIN messages m ON m.id = d.message_id WHERE m.queue_id = ? "
                        "ORDER BY d.recipient",
                        (queue_id,),
                    )
                ).all()
            assert by_message[fast_id] == by_message[slow_id]
            assert [tuple(r[:4]) for r in by_message[fast_id]] == [
                ("anna@rada.example", "lmtp", "queued", 0),
                ("jan@example.org", "smtp", "queued", 0),
            ]
        # Read back through the queue's own code: claimable, with its body intact.
        claim = await queue.claim("lmtp", 10)
        assert sorted(m.queue_id for m in claim.messages) == sorted([fast_id, slow_id])
        assert all(m.body == body for m in claim.messages)
    finally:
        await queue.close()
        await engine.dispose()


async def test_a_lone_session_commits_at_once_on_its_own_thread(tmp_path: Path) -> None:
    import threading

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
    await create_schema(engine)
    queue = MailQueue(engine, ["rada.example"])
    threads: list[int] = []

    @event.listens_for(queue.units.engine, "commit")  # type: ignore[attr-defined]
    def where(_conn: Any) -> None:
        threads.append(threading.get_ident())

    try:
        lone = await queue.enqueue("a@example.org", ["r@rada.example"], b"one", alone=True)
        other = await queue.enqueue("a@example.org", ["r@rada.example"], b"two")
        assert threads == [threading.get_ident(), threads[1]]
        assert threads[1] != threading.get_ident()  # not alone: the queue's thread
        claim = await queue.claim("lmtp", 10)
        assert sorted(m.body for m in claim.messages) == [b"one", b"two"]
        assert {m.queue_id for m in claim.messages} == {lone, other}
        # A failure is reported the same way: 451 for the session, nothing stored.
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DROP TABLE deliveries")
        with pytest.raises(StorageUnavailable):
            await queue.enqueue("a@example.org", ["r@rada.example"], b"three", alone=True)
    finally:
        await queue.close()
        await engine.dispose()
