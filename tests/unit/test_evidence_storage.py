"""The receipt events' hash chain on a real SQLite file: every writer links its events (the
distribution's chunk, the queue's delivery outcomes through the sqlite3 driver, single events
from the sink, the IMAP check and the link), concurrent writers in several processes never fork
the chain, older databases gain the columns (``mailsvc db upgrade``) with their events kept as
legacy, and a row edited with plain SQL afterwards is named by ``verify_session`` and
``mailsvc evidence verify``."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Connection

from mailsvc.cli.main import main
from mailsvc.domain.evidence_chain import BreakKind
from mailsvc.domain.receipt_states import EventKind, EventSource
from mailsvc.receipts.evidence.verify import SessionCheck, verify_session
from mailsvc.storage import schema
from mailsvc.storage.db import create_engine, create_schema, utcnow
from mailsvc.storage.sessions import ReceiptStore, add_delivery_events
from mailsvc.storage.units import ThreadUnits

SESSION = "XV/2026"
T0 = datetime(2026, 12, 9, 8, 0)


@dataclass(frozen=True)
class Council:
    path: Path
    distribution_id: int
    recipients: dict[str, int]  # address → recipient id; queue message id = recipient id + 1000


async def build(path: Path, *, recipients: int = 3) -> Council:
    """A session, one distribution, its recipients with their queued events (one transaction,
    as sending a chunk does)."""
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await create_schema(engine)
    store = ReceiptStore(engine)
    try:
        session = await store.create_session(
            number=SESSION,
            kind="ordinary",
            starts_at=datetime(2026, 12, 17, 10, 0),
            place="Sala Obrad",
            title="",
            actor="pytest",
        )
        dist = await store.create_distribution(
            session_id=session.id,
            kind="notice",
            due_at=T0,
            committee=None,
            document_ids=(),
            note="",
            replies_to=None,
            override_reason=None,
            actor="pytest",
        )
        addresses = [f"radny{n}@rada.example" for n in range(recipients)]
        async with engine.begin() as conn:
            ids = await store.insert_recipients(
                conn,
                distribution_id=dist.id,
                recipients=[(a, a, "councillor", f"<{a}>") for a in addresses],
                at=T0,
            )
            await store.set_queue_messages(conn, [(i, i + 1000) for i in ids])
            await store.insert_events(
                conn,
                [
                    (i, EventKind.QUEUED, EventSource.SCHEDULER, f"queued for <{a}>", T0)
                    for a, i in zip(addresses, ids, strict=True)
                ],
            )
    finally:
        await engine.dispose()
    return Council(path, dist.id, dict(zip(addresses, ids, strict=True)))


async def deliver(council: Council, address: str, at: datetime, evidence: str) -> int:
    """Delivery outcomes as the queue records them: its own connection, the sqlite3 driver."""
    units = ThreadUnits(str(council.path))
    qid = council.recipients[address] + 1000
    events = [
        (address.upper(), "sent", at, "lmtp", "LMTP: attempt 1"),  # matched case-insensitively
        (address, "delivered", at, "lmtp", evidence),
        ("nieznany@rada.example", "delivered", at, "lmtp", "skipped"),
    ]

    def work(conn: Connection) -> int:
        return add_delivery_events(conn, qid, events)

    try:
        return await units.run(work)
    finally:
        await units.close()


async def filled(tmp_path: Path) -> Council:
    """Queued, sent and delivered for all; opened (IMAP), acknowledged twice (the first counts)
    and a DSN for some: 3 + 6 + 3 events."""
    council = await build(tmp_path / "mailsvc.db")
    for n, address in enumerate(council.recipients):
        assert await deliver(council, address, T0 + timedelta(minutes=n), f"250 2.0.0 <{address}>")
    engine = create_engine(f"sqlite+aiosqlite:///{council.path}")
    store = ReceiptStore(engine)
    first, second, third = council.recipients.values()
    try:
        assert await store.add_event(first, EventKind.OPENED, EventSource.IMAP, "\\Seen", once=True)
        assert await store.add_event(
            second, EventKind.ACKNOWLEDGED, EventSource.LINK, "POST", once=True
        )
        assert not await store.add_event(
            second, EventKind.ACKNOWLEDGED, EventSource.LINK, "again", once=True
        )
        assert await store.add_event(third, EventKind.FAILED, EventSource.DSN, "DSN: 5.1.1 — żółć")
    finally:
        await engine.dispose()
    return council


async def check(path: Path) -> SessionCheck | None:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        return await verify_session(engine, SESSION)
    finally:
        await engine.dispose()


def plain_sql(path: Path, *statements: str) -> None:
    """What someone with the database file does: the sqlite3 shell's plain SQL."""
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)


def event_id(path: Path, where: str) -> int:
    with sqlite3.connect(path) as conn:
        (found,) = conn.execute(f"SELECT id FROM receipt_events WHERE {where}").fetchone()  # noqa: S608
    return int(found)


async def test_every_writer_links_its_events_and_the_chain_is_whole(tmp_path: Path) -> None:
    council = await filled(tmp_path)
    result = await check(council.path)
    assert result is not None and result.broken is None
    assert result.checked == 12 and result.legacy == 0
    with sqlite3.connect(council.path) as conn:
        rows = conn.execute("SELECT seq, prev_hash, content_hash FROM receipt_events ORDER BY id")
        seqs = [r[0] for r in rows]
        head = conn.execute("SELECT last_event_hash, last_event_seq FROM distributions").fetchone()
    assert seqs == list(range(1, 13))
    (only,) = result.distributions
    assert (only.check.head.hash, only.check.head.seq) == head and head[1] == 12
    assert await check(tmp_path / "mailsvc.db") is not None
    engine = create_engine(f"sqlite+aiosqlite:///{council.path}")
    try:
        assert await verify_session(engine, "I/1999") is None  # no such session
    finally:
        await engine.dispose()


Tamper = Callable[[Path], tuple[BreakKind, int | None]]


def _edit_evidence(path: Path) -> tuple[BreakKind, int | None]:
    target = event_id(path, "kind = 'acknowledged'")
    plain_sql(path, f"UPDATE receipt_events SET evidence = 'POST (edited)' WHERE id = {target}")  # noqa: S608
    return BreakKind.CONTENT, target


def _edit_time(path: Path) -> tuple[BreakKind, int | None]:
    target = event_id(path, "kind = 'failed'")
    plain_sql(
        path,
        f"UPDATE receipt_events SET at = '2026-12-08 08:00:00.000000' WHERE id = {target}",  # noqa: S608
    )
    return BreakKind.CONTENT, target


def _garble_time(path: Path) -> tuple[BreakKind, int | None]:
    target = event_id(path, "kind = 'opened'")
    plain_sql(path, f"UPDATE receipt_events SET at = 'wczoraj' WHERE id = {target}")  # noqa: S608
    return BreakKind.CONTENT, target


def _edit_kind(path: Path) -> tuple[BreakKind, int | None]:
    target = event_id(path, "kind = 'failed'")
    plain_sql(path, f"UPDATE receipt_events SET kind = 'delivered' WHERE id = {target}")  # noqa: S608
    return BreakKind.CONTENT, target


def _delete_middle(path: Path) -> tuple[BreakKind, int | None]:
    target = event_id(path, "seq = 5")
    plain_sql(path, f"DELETE FROM receipt_events WHERE id = {target}")  # noqa: S608
    return BreakKind.MISSING, event_id(path, "seq = 6")


def _delete_last(path: Path) -> tuple[BreakKind, int | None]:
    plain_sql(path, "DELETE FROM receipt_events WHERE seq = 12")
    return BreakKind.MISSING, None


def _insert_by_hand(path: Path) -> tuple[BreakKind, int | None]:
    plain_sql(
        path,
        "INSERT INTO receipt_events (recipient_id, kind, at, source, evidence) "
        "VALUES (1, 'acknowledged', '2026-12-09 09:00:00.000000', 'link', 'POST')",
    )
    return BreakKind.UNHASHED, event_id(path, "seq IS NULL")


def _move_to_another_recipient(path: Path) -> tuple[BreakKind, int | None]:
    target = event_id(path, "kind = 'opened'")
    plain_sql(path, f"UPDATE receipt_events SET recipient_id = 3 WHERE id = {target}")  # noqa: S608
    return BreakKind.CONTENT, target


def _reset_head(path: Path) -> tuple[BreakKind, int | None]:
    plain_sql(path, "UPDATE distributions SET last_event_hash = NULL, last_event_seq = NULL")
    return BreakKind.HEAD, event_id(path, "seq = 1")


@pytest.mark.parametrize(
    "tamper",
    [
        _edit_evidence,
        _edit_time,
        _garble_time,
        _edit_kind,
        _delete_middle,
        _delete_last,
        _insert_by_hand,
        _move_to_another_recipient,
        _reset_head,
    ],
)
async def test_a_row_edited_with_plain_sql_is_named(tmp_path: Path, tamper: Tamper) -> None:
    council = await filled(tmp_path)
    kind, target = tamper(council.path)
    result = await check(council.path)
    assert result is not None and result.broken is not None
    assert (result.broken.kind, result.broken.event_id) == (kind, target)
    assert result.broken.distribution_id == council.distribution_id


async def test_an_older_database_keeps_its_events_as_legacy_and_chains_the_new_ones(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    council = await build(path)
    # The events and tables as an older version left them: no chain columns, no hashes, and
    # no schema revision (older than the migrations' baseline).
    plain_sql(
        path,
        "ALTER TABLE receipt_events DROP COLUMN seq",
        "ALTER TABLE receipt_events DROP COLUMN prev_hash",
        "ALTER TABLE receipt_events DROP COLUMN content_hash",
        "ALTER TABLE distributions DROP COLUMN last_event_hash",
        "ALTER TABLE distributions DROP COLUMN last_event_seq",
        "DROP TABLE alembic_version",
        "DROP TABLE job_runs",  # made by revision 0002, after the baseline
        "DROP TABLE nodes",  # revision 0003
        "DROP TABLE shared_files",  # revision 0004
        "DROP INDEX ix_deliveries_lease",
        "ALTER TABLE deliveries DROP COLUMN node_id",
        "ALTER TABLE deliveries DROP COLUMN lease_until",
        "ALTER TABLE messages DROP COLUMN node_id",
    )
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await schema.upgrade(engine)  # `mailsvc db upgrade`: the columns come back, empty
    finally:
        await engine.dispose()
    first = next(iter(council.recipients))
    assert await deliver(council, first, T0, "250 2.0.0 ok") == 2
    result = await check(path)
    assert result is not None and result.broken is None
    assert (result.checked, result.legacy) == (2, 3)
    # A legacy event edited is not noticed (nothing was hashed); a chained one is.
    plain_sql(path, "UPDATE receipt_events SET evidence = 'x' WHERE seq IS NULL")
    result = await check(path)
    assert result is not None and result.broken is None
    plain_sql(path, "UPDATE receipt_events SET evidence = 'x' WHERE seq = 2")
    result = await check(path)
    assert result is not None and result.broken is not None
    assert result.broken.kind is BreakKind.CONTENT and result.broken.seq == 2


# -- concurrent writers -----------------------------------------------------------------------

ROUNDS = 12


def _writer(path: str, address: str, recipient_id: int, writer: int, clicked: int) -> None:
    """Another process of the service: single events through the async engine and delivery
    outcomes through the queue's connection, in turns, as fast as it can; and the same
    acknowledgement link (``clicked``) posted each round, which counts once."""

    async def run() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        store = ReceiptStore(engine)
        units = ThreadUnits(path)
        qid = recipient_id + 1000
        try:
            for i in range(ROUNDS):
                await store.add_event(
                    recipient_id, EventKind.DELAYED, EventSource.DSN, f"{writer}.{i}"
                )
                now = utcnow()
                events = [(address, "delivered", now, "lmtp", f"{writer}.{i}")]

                def work(
                    conn: Connection, events: list[tuple[str, str, datetime, str, str]] = events
                ) -> int:
                    return add_delivery_events(conn, qid, events)

                await units.run(work)
                await store.add_event(
                    clicked, EventKind.ACKNOWLEDGED, EventSource.LINK, f"{writer}", once=True
                )
        finally:
            await units.close()
            await engine.dispose()

    asyncio.run(run())


async def test_concurrent_writers_in_several_processes_never_fork_the_chain(
    tmp_path: Path,
) -> None:
    council = await build(tmp_path / "mailsvc.db", recipients=4)
    spawn = multiprocessing.get_context("spawn")
    clicked = next(iter(council.recipients.values()))
    processes = [
        spawn.Process(target=_writer, args=(str(council.path), address, rid, n, clicked))
        for n, (address, rid) in enumerate(council.recipients.items())
    ]
    for p in processes:
        p.start()
    for p in processes:
        await asyncio.to_thread(p.join, 120)
        assert p.exitcode == 0
    result = await check(council.path)
    assert result is not None
    assert result.broken is None, result.broken
    assert result.checked == 4 + 4 * ROUNDS * 2 + 1
    with sqlite3.connect(council.path) as conn:
        acknowledged = conn.execute(
            "SELECT recipient_id FROM receipt_events WHERE kind = 'acknowledged'"
        ).fetchall()
    assert acknowledged == [(clicked,)]


# -- the command --------------------------------------------------------------------------------


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., tuple[int, str, str]]]:
    for name in list(os.environ):
        if name.startswith("MAILSVC_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MAILSVC_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("MAILSVC_DATABASE__URL", f"sqlite+aiosqlite:///{tmp_path / 'mailsvc.db'}")

    def run(*args: str, language: str = "pl") -> tuple[int, str, str]:
        monkeypatch.setenv("MAILSVC_LANGUAGE", language)
        capsys.readouterr()
        status = main(list(args))
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    yield run


async def test_the_command_says_whole_or_names_the_first_broken_link(
    tmp_path: Path, cli: Callable[..., tuple[int, str, str]]
) -> None:
    council = await filled(tmp_path)
    status, out, _ = await asyncio.to_thread(cli, "evidence", "verify", SESSION)
    assert status == 0, out
    assert "łańcuch dowodów jest nienaruszony (1 rozsyłka, sprawdzono 12 zdarzeń)" in out
    with sqlite3.connect(council.path) as conn:
        (head,) = conn.execute("SELECT last_event_hash FROM distributions").fetchone()
    assert head in out  # to write down, or anchor elsewhere

    target = event_id(council.path, "kind = 'acknowledged'")
    plain_sql(council.path, f"UPDATE receipt_events SET evidence = 'x' WHERE id = {target}")  # noqa: S608
    status, out, _ = await asyncio.to_thread(cli, "evidence", "verify", SESSION)
    assert status == 1, out
    assert "PRZERWANY" in out
    assert f"rozsyłka #{council.distribution_id} (notice), zdarzenie #{target}" in out
    assert "adresat radny1@rada.example" in out and "treść zmieniona po zapisie" in out
    status, out, _ = await asyncio.to_thread(cli, "evidence", "verify", SESSION, language="en")
    assert status == 1
    assert (
        f"First broken link: distribution #{council.distribution_id} (notice), event #{target}"
        in out
    )
    assert "content changed after it was written" in out
    status, out, _ = await asyncio.to_thread(cli, "evidence", "verify", SESSION, "--json")
    assert status == 1
    report = json.loads(out)
    assert report["whole"] is False and report["broken"]["event"] == target
    assert report["broken"]["kind"] == "content"

    status, _, err = await asyncio.to_thread(cli, "evidence", "verify", "I/1999")
    assert status == 2 and "Nie ma sesji I/1999" in err
