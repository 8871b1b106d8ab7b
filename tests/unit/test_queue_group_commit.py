"""Group commit in the queue, on a real SQLite file: concurrent messages share a transaction."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from mailsvc.errors import StorageUnavailable
from mailsvc.storage.db import create_engine, create_schema, deliveries, messages
from mailsvc.storage.queue import MailQueue


async def test_concurrent_enqueues_share_commits_and_all_are_stored(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
    await create_schema(engine)
    commits = 0

    @event.listens_for(engine.sync_engine, "commit")
    def count(_conn: Any) -> None:
        nonlocal commits
        commits += 1

    queue = MailQueue(engine, ["rada.example"])
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
        await engine.dispose()
