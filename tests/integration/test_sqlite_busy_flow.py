"""A busy SQLite database on the real stack: mail waits for the lock and is delivered, never
kept as a dead letter — a delivery's outcome recorded while another process holds the lock past
the busy timeout, and a distribution sent inside a service that delivers in its own process
(``delivery.separate_process = false``) while residents' mail arrives and another process
writes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fpdf import FPDF

from mailsvc.app import Parts, start_service
from mailsvc.config import Settings
from mailsvc.domain.receipt_states import EventKind
from mailsvc.mailbox import read_inbox
from mailsvc.relay.delivery.worker import DeliveryWorkers
from mailsvc.storage.units import ThreadUnits
from tests.conftest import selected_database
from tests.sqlite_lock import held_by_another_process, writer_process

from .conftest import make_message, smtp_send

# SQLite's own behaviour (one writer at a time, its busy timeout, its lock held by another
# process): PostgreSQL has row locks and no busy timeout. Its temporary failures are covered by
# tests/integration/test_database_outage.py and tests/unit/test_storage_temporary.py.
pytestmark = pytest.mark.skipif(
    selected_database() != "sqlite", reason="SQLite's database lock and busy timeout"
)


def database_path(settings: Settings) -> Path:
    prefix = "sqlite+aiosqlite:///"
    assert settings.database_url.startswith(prefix)
    return Path(settings.database_url[len(prefix) :])


async def test_an_outcome_meeting_a_lock_past_the_busy_timeout_is_recorded_later(
    settings: Settings, parts: Parts, add_councillor: Callable[[str, str], Any]
) -> None:
    """The message is in the mailbox, and its outcome cannot be written for longer than the
    busy timeout: the worker waits and records it, once; the message is not a dead letter."""
    account = await add_councillor("Anna", "Nowak")
    path = database_path(settings)
    queue = parts.queue
    await queue.units.close()
    queue.units = ThreadUnits(str(path), busy_timeout=0.2)  # seconds, not the service's 30
    await queue.enqueue(
        "jan@example.org", [account.address], make_message(account.address, "Dziura").as_bytes()
    )
    workers = DeliveryWorkers(queue, settings)
    (message,) = (await queue.claim("lmtp", 1)).messages
    client = workers.client("lmtp")
    try:
        async with held_by_another_process(path):
            attempt = asyncio.create_task(workers.deliver(client, message))
            # Delivered over LMTP meanwhile; its record has met the busy timeout a few times.
            await asyncio.sleep(1.5)
            assert not attempt.done(), "the outcome was given up instead of waited for"
        assert await asyncio.wait_for(attempt, 20) == []
    finally:
        await client.close()
    (row,) = await queue.list_deliveries()
    assert (row.status, row.attempts) == ("delivered", 1)
    detail = await queue.show(row.queue_id)
    assert detail is not None and detail.status == "done" and detail.error is None
    inbox = await read_inbox(
        settings.stack.host, settings.stack.imap_port, account.address, account.password
    )
    assert len(inbox) == 1


async def _status_is(store: Any, distribution_id: int, status: str) -> bool:
    row = await store.distribution(distribution_id)
    return row is not None and row.status == status


def make_pdf(path: Path) -> Path:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=14)
    pdf.cell(text="Projekt uchwaly")
    pdf.output(str(path))
    return path


@pytest.mark.parametrize("separate", [False, True], ids=["one-process", "delivery-process"])
async def test_a_distribution_sent_while_mail_arrives_leaves_no_dead_letter(
    settings: Settings,
    parts: Parts,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
    separate: bool,
) -> None:
    """The issue's scenario (delivery in the service's own process), and the default (its
    delivery child): a notice sent by the scheduler while residents write to every councillor
    and another process (a clerk's command) writes to the database in a loop."""
    settings = settings.with_changes(delivery={"separate_process": separate, "workers": 4})
    people = [await add_councillor("Radny", f"Numer{chr(ord('a') + n)}") for n in range(12)]
    service = parts.distributions()
    local = datetime.now(ZoneInfo(settings.distribution.timezone)).replace(tzinfo=None)
    session = await service.create_session(
        number="XV/2026",
        kind="ordinary",
        starts_at=(local + timedelta(days=14)).replace(hour=10, minute=0, second=0),
        place="Sala Obrad, ul. Rynek 1",
        agenda=["Otwarcie sesji", "Projekt uchwały"],
        actor="pytest",
    )
    await service.attach(
        session.number, make_pdf(tmp_path / "projekt.pdf"), agenda_item=2, actor="pytest"
    )
    running = await start_service(settings)
    store = service.store
    sent: dict[str, int] = {}
    notice: list[int] = []  # the distribution, once scheduled
    try:
        async with writer_process(database_path(settings), hold=0.005):

            async def resident() -> None:
                """One session after another (each alone: committed on the event loop's
                thread when it can), to every councillor, round after round, until the notice
                is out (so that it is sent while mail arrives)."""
                rounds = 0
                while rounds < 2 or not (notice and await _status_is(store, notice[0], "sent")):
                    for person in people:
                        msg = make_message(person.address, f"Sprawa {rounds}")
                        assert await smtp_send(running.smtp_port, [person.address], msg) == {}
                        sent[person.address] = sent.get(person.address, 0) + 1
                    rounds += 1

            residents = [asyncio.create_task(resident())]
            await asyncio.sleep(0.5)
            dist = await service.schedule(session.number, actor="pytest")  # due now
            notice.append(dist.id)
            await asyncio.wait_for(asyncio.gather(*residents), 120)
            expected = len(people) + sum(sent.values())
            deadline = asyncio.get_running_loop().time() + 60
            while asyncio.get_running_loop().time() < deadline:
                rows = await running.queue.list_deliveries()
                if sum(r.status == "delivered" for r in rows) >= expected:
                    break
                assert not [r for r in rows if r.status in ("dead", "failed")], rows
                await asyncio.sleep(0.2)
        rows = await running.queue.list_deliveries()
        assert [r for r in rows if r.status != "delivered"] == []
        assert len(rows) == expected
        delivered = await store.recipients_with_kind(dist.id, EventKind.DELIVERED)
        assert len(delivered) == len(people)
        for person in people:
            inbox = await read_inbox(
                settings.stack.host, settings.stack.imap_port, person.address, person.password
            )
            assert len(inbox) == sent[person.address] + 1, person.address
    finally:
        await running.stop()
