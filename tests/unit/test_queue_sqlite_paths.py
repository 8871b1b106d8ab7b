"""The queue's statements through the sqlite3 driver do exactly what the SQLAlchemy ones do.

Both run on copies of one real SQLite queue holding a mix of messages: several recipients,
both routes, due and not yet due, in flight, delivered. Each copy is then claimed from until
empty (and outcomes recorded, with acknowledgements); every claim and the rows left behind
must be the same.
"""

from __future__ import annotations

import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from mailsvc.storage import sqlite_fast
from mailsvc.storage.db import create_engine, create_schema, utcnow
from mailsvc.storage.queue import (
    FINAL,
    PENDING,
    AckRequest,
    Claim,
    MailQueue,
    Outgoing,
    ReceiptUpdate,
)
from mailsvc.storage.queue.statements import SQLITE_OLDEST_DUE, SQLITE_SETTLE, SQLITE_TAKE
from mailsvc.storage.tables import (
    council_sessions,
    deliveries,
    distribution_recipients,
    distributions,
)


async def fill(path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await create_schema(engine)
    queue = MailQueue(engine, ["rada.example"])
    try:
        for n in range(23):
            rcpts = [f"r{n}@rada.example"]
            if n % 3 == 0:
                rcpts.append(f"x{n}@example.org")  # the other route
            if n % 4 == 0:
                rcpts.append(f"s{n}@rada.example")  # two on the same route
            await queue.enqueue(f"a{n}@example.org", rcpts, f"body {n}".encode())
        later = utcnow() + timedelta(minutes=5)
        async with engine.begin() as conn:
            # Some deferred to later, one deferred but due, some in flight, some delivered.
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.message_id.in_([2, 5, 9]))
                .values(status="deferred", next_attempt_at=later)
            )
            await conn.execute(
                update(deliveries).where(deliveries.c.message_id == 7).values(status="deferred")
            )
            await conn.execute(
                update(deliveries).where(deliveries.c.message_id == 11).values(status="inflight")
            )
            await conn.execute(
                update(deliveries).where(deliveries.c.message_id == 13).values(status="delivered")
            )
            # A distribution whose copies are some of these messages (delivery events).
            now = utcnow()
            await conn.execute(
                insert(council_sessions).values(
                    number="I/2026", kind="ordinary", starts_at=now, created_at=now, created_by="t"
                )
            )
            await conn.execute(
                insert(distributions).values(
                    session_id=1, kind="notice", due_at=now, created_at=now, created_by="t"
                )
            )
            await conn.execute(
                insert(distribution_recipients),
                [
                    {
                        "distribution_id": 1,
                        "address": f"R{n}@rada.example",  # events match it case-insensitively
                        "name": f"Radny {n}",
                        "message_id": f"<{n}.d1@rada.example>",
                        "queue_message_id": n + 1,
                        "created_at": now,
                    }
                    for n in range(0, 23, 2)
                ],
            )
    finally:
        await queue.close()
        await engine.dispose()


async def two_copies(tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of one filled queue: one for the driver's statements, one for SQLAlchemy's."""
    original = tmp_path / "q.db"
    await fill(original)
    fast, slow = tmp_path / "fast.db", tmp_path / "slow.db"
    shutil.copy(original, fast)
    shutil.copy(original, slow)
    return fast, slow


def summary(claim: Claim) -> tuple[Any, ...]:
    return (
        [
            (m.id, m.queue_id, m.mail_from, m.received_at, m.body, m.deliveries, m.route, m.origin)
            for m in claim.messages
        ],
        claim.more,
        None if claim.next_due_in is None else round(claim.next_due_in / 60),
    )


async def drain(path: Path, route: str, limit: int) -> tuple[list[Any], list[Any]]:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    queue = MailQueue(engine, ["rada.example"])
    claims = []
    try:
        while True:
            claim = await queue.claim(route, limit)
            claims.append(summary(claim))
            if not claim.messages:
                break
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(deliveries.c.id, deliveries.c.status).order_by(deliveries.c.id)
                )
            ).all()
        return claims, [tuple(r) for r in rows]
    finally:
        await queue.close()
        await engine.dispose()


@pytest.mark.parametrize("route", ["lmtp", "smtp"])
@pytest.mark.parametrize("limit", [1, 3, 50])
async def test_the_driver_claim_answers_as_the_sqlalchemy_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, route: str, limit: int
) -> None:
    fast, slow = await two_copies(tmp_path)
    assert sqlite_fast.RETURNING  # the SQLite of this machine has RETURNING
    fast_claims, fast_rows = await drain(fast, route, limit)
    monkeypatch.setattr(sqlite_fast, "RETURNING", False)
    slow_claims, slow_rows = await drain(slow, route, limit)
    assert fast_claims == slow_claims
    assert fast_rows == slow_rows
    assert sum(len(c[0]) for c in fast_claims) >= 5  # the scenario did claim something
    if route == "lmtp":
        assert fast_claims[-1][2] == 5  # the deferred ones are due in five minutes


def test_the_written_out_statuses_are_the_pending_and_final_ones() -> None:
    for statement in (SQLITE_OLDEST_DUE, SQLITE_TAKE):
        where = statement.split("WHERE", 1)[1]
        assert tuple(re.findall(r"status = '(\w+)'", where)) == PENDING
    settle = SQLITE_SETTLE.split("NOT EXISTS", 1)[1]
    assert tuple(re.findall(r"status != '(\w+)'", settle)) == FINAL


async def deliver_all(path: Path) -> list[Any]:
    """Claim everything due on the council's route and record mixed outcomes, each with an
    acknowledgement request; then the tables as stored (without random ids and clock values)."""
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    queue = MailQueue(engine, ["rada.example"])
    today = utcnow().date()
    try:
        n = 0
        while (claim := await queue.claim("lmtp", 3)).messages:
            for message in claim.messages:
                outcomes = []
                for delivery_id, _rcpt, _attempts in message.deliveries:
                    n += 1
                    status = ("delivered", "deferred", "failed")[n % 3]
                    next_at = utcnow() + timedelta(minutes=10) if status == "deferred" else None
                    outcomes.append((delivery_id, status, f"{n} reply", next_at))

                def compose(named: Any, sender: str = message.mail_from) -> Outgoing:
                    text = ",".join(f"{name}<{address}>" for name, address in named)
                    return Outgoing("", (sender,), text.encode(), "ack")

                ack = AckRequest(
                    message.mail_from,
                    tuple(r for _, r, _ in message.deliveries),
                    today,
                    compose,
                    forget_before=today,
                    # Small caps: some acknowledgements are refused (and noted).
                    hourly_caps=(3, 2),
                    cap_domain="example.org" if message.id % 2 else "example.net",
                )
                # A fixed time per event: both runs must link the same content to the same
                # hashes.
                events = tuple(
                    (
                        rcpt,
                        "delivered",
                        datetime(2026, 5, 20, 8, 0) + timedelta(seconds=n, microseconds=i),
                        "lmtp",
                        f"250 2.0.0 <{rcpt}> {'x' * 30000}",
                    )
                    for i, (_, rcpt, _) in enumerate(message.deliveries)
                )
                note = "no bounce: test" if n % 3 == 2 else None
                await queue.record(
                    message.id, outcomes, ack=ack, receipts=ReceiptUpdate(events), note=note
                )
        async with engine.connect() as conn:
            tables = []
            for statement in (
                "SELECT id, message_id, recipient, route, status, attempts, last_reply, "
                "typeof(next_attempt_at), length(next_attempt_at), length(updated_at) "
                "FROM deliveries ORDER BY id",
                "SELECT id, mail_from, status, body IS NULL, body, error, origin, size, "
                "length(received_at), auto_reply FROM messages ORDER BY id",
                "SELECT sender, councillor, day, original_queue_id, ack_queue_id IS NULL, "
                "length(created_at) FROM acknowledgements ORDER BY id",
                "SELECT id, recipient_id, kind, typeof(at), at, source, evidence, seq, prev_hash, "
                "content_hash FROM receipt_events ORDER BY id",
                "SELECT id, last_event_hash, last_event_seq FROM distributions ORDER BY id",
                "SELECT domain, count FROM auto_reply_counts ORDER BY domain",
            ):
                rows = (await conn.exec_driver_sql(statement)).all()
                # Queue ids are random: the same notes name different ones.
                tables.append([tuple(_no_ids(v) for v in r) for r in rows])
        return tables
    finally:
        await queue.close()
        await engine.dispose()


def _no_ids(value: Any) -> Any:
    return re.sub(r"\b[0-9a-f]{16}\b", "<id>", value) if isinstance(value, str) else value


async def test_recording_through_the_driver_stores_what_sqlalchemy_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, slow = await two_copies(tmp_path)
    fast_tables = await deliver_all(fast)
    monkeypatch.setattr(sqlite_fast, "driver", lambda conn: None)  # SQLAlchemy everywhere
    slow_tables = await deliver_all(slow)
    assert fast_tables == slow_tables
    deliveries_, messages_, keys, events, heads, counts = fast_tables
    assert {r[4] for r in deliveries_} >= {"delivered", "deferred", "failed"}
    assert any(r[2] == "done" and r[3] for r in messages_)  # settled: body dropped
    assert any(r[6] == "ack" for r in messages_)  # acknowledgements queued
    assert keys and all(not r[4] for r in keys)  # each key names its acknowledgement
    assert len(events) >= 5 and all(len(r[6]) == 20000 for r in events)  # evidence capped
    # Each event linked into the distribution's chain, the head written with them.
    assert [r[7] for r in events] == list(range(1, len(events) + 1))
    assert all(len(r[8]) == 64 and len(r[9]) == 64 for r in events)
    assert heads[0][2] == len(events) and len(heads[0][1]) == 64
    notes = [r[9] for r in messages_ if r[9]]
    assert sum("acknowledged as <id>" in n for n in notes) == 3  # the cap in total
    assert any("no acknowledgement: hourly cap reached (3 " in n for n in notes)
    assert any("no bounce: test" in n for n in notes)
    # Counted: only what was sent; the refused ones gave their keys back.
    assert counts[0] == ("*", 3) and sum(c for _, c in counts[1:]) == 3
    assert all(c <= 2 for _, c in counts[1:])
    # (and "each key names its acknowledgement" above: refused ones kept no key)
