"""The receipt events' hash chain end to end on the real stack: a notice scheduled, delivered to
Dovecot, opened over IMAP and acknowledged through the link by the running service; then
``mailsvc evidence verify`` finds the chain whole, and, after one row is edited with plain SQL,
names that link and exits 1."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from mailsvc.app import Parts, start_service
from mailsvc.config import Settings
from mailsvc.domain.receipt_states import EventKind
from mailsvc.mailbox import read_inbox

from .test_distribution_cli import Cli, cli  # noqa: F401  (the fixture)
from .test_distribution_flow import (
    _all_have,
    ack_url,
    councillors,
    distribution_message,
    read_as_councillor,
    session_with_pdf,
    wait_until,
)
from .test_evidence_pack import embedded_json, pdfsig

pytestmark = pytest.mark.asyncio


def read_verify_heads(out: str) -> str:
    """The head hashes `evidence verify` prints (one per distribution line)."""
    return " ".join(line.rsplit(" ", 1)[-1] for line in out.splitlines() if "#" in line)


async def rewrite_evidence(settings: Settings, recipient_id: int, evidence: str) -> int:
    """Change the evidence of a recipient's delivered event with the database's own client
    library (sqlite3, or asyncpg on PostgreSQL); returns the event's id."""
    url = make_url(settings.database_url)
    find = "SELECT id FROM receipt_events WHERE recipient_id = {} AND kind = 'delivered'"
    change = "UPDATE receipt_events SET evidence = {} WHERE id = {}"
    if url.get_backend_name() == "postgresql":
        conn = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(False))
        try:
            event_id = int(await conn.fetchval(find.format("$1"), recipient_id))
            await conn.execute(change.format("$1", "$2"), evidence, event_id)
        finally:
            await conn.close()
        return event_id
    assert url.database is not None
    with sqlite3.connect(url.database) as db:
        (event_id,) = db.execute(find.format("?"), (recipient_id,)).fetchone()
        db.execute(change.format("?", "?"), (evidence, event_id))
    return int(event_id)


async def test_schedule_deliver_open_acknowledge_verify_tamper_verify(
    settings: Settings,
    parts: Parts,
    add_councillor: Callable[[str, str], Any],
    cli: Cli,  # noqa: F811
    tmp_path: Path,
) -> None:
    people = await councillors(add_councillor)
    session, _ = await session_with_pdf(parts, tmp_path)
    service = await start_service(settings)
    try:
        svc = service.parts.distributions()
        dist = await svc.schedule(session.number, actor="pytest")
        assert await wait_until(lambda: _all_have(svc.store, dist.id, EventKind.DELIVERED, 3))
        # Opened: the councillor reads it; the IMAP check records it.
        reader, acker, _ = people
        await read_as_councillor(settings, reader.address, reader.password)
        assert await svc.check_opened() == 1
        # Acknowledged through the link, served by the running service.
        inbox = await read_inbox(
            settings.stack.host, settings.stack.imap_port, acker.address, acker.password
        )
        async with httpx.AsyncClient() as client:
            assert (await client.post(ack_url(distribution_message(inbox)))).status_code == 200
        recipients = await svc.store.recipients(dist.id)
        events = await svc.store.events([r.id for r in recipients])
        total = sum(len(e) for e in events.values())
        kinds = {e.kind for evs in events.values() for e in evs}
        assert {EventKind.QUEUED, EventKind.SENT, EventKind.DELIVERED} <= kinds
        assert {EventKind.OPENED, EventKind.ACKNOWLEDGED} <= kinds

        run = await cli("evidence", "verify", session.number)
        assert run.status == 0, run.out + run.err
        assert f"sprawdzono {total} zdarzeń" in run.out
        assert f"rozsyłka #{dist.id} (notice)" in run.out
        # The signed pack carries the verified chain: every link and the head.
        first_pack = tmp_path / "dowody.pdf"
        run = await cli("evidence", "export", session.number, "--output", str(first_pack))
        assert run.status == 0, run.out + run.err
        chain = embedded_json(first_pack.read_bytes())["chain"]
        assert chain["whole"] is True and len(chain["links"]) == total
        (head,) = [h for h in chain["heads"] if h["distribution_id"] == dist.id]
        verified = await cli("evidence", "verify", session.number)
        assert head["events"] == total and head["head"] in read_verify_heads(verified.out)
        assert "Signature is Valid" in pdfsig(first_pack)
        again = await cli("evidence", "export", session.number, "--output", str(first_pack))
        assert again.status != 0 and "--force" in again.err  # never overwritten silently
    finally:
        await service.stop()

    # Someone with access to the database (its file, or a PostgreSQL login) rewrites the
    # evidence of a delivery, outside mailsvc.
    target = next(r for r in recipients if r.address == people[2].address)
    event_id = await rewrite_evidence(settings, target.id, "LMTP: 550 5.1.1 user unknown")
    run = await cli("evidence", "verify", session.number)
    assert run.status == 1, run.out + run.err
    assert "PRZERWANY" in run.out
    assert f"rozsyłka #{dist.id} (notice), zdarzenie #{event_id}" in run.out
    assert f"delivered), adresat {target.address}" in run.out
    assert "treść zmieniona po zapisie" in run.out

    run = await cli("evidence", "verify", session.number, env={"MAILSVC_LANGUAGE": "en"})
    assert run.status == 1
    assert f"First broken link: distribution #{dist.id} (notice), event #{event_id}" in run.out
    # A pack made now says so on its chain page and in its data; the pack signed before the
    # change still holds the original evidence and head, so the edit shows against it too.
    second_pack = tmp_path / "dowody-po-zmianie.pdf"
    run = await cli("evidence", "export", session.number, "--output", str(second_pack))
    assert run.status == 0, run.out + run.err
    after = embedded_json(second_pack.read_bytes())
    assert after["chain"]["whole"] is False and f"event {event_id}" in after["chain"]["broken"]
    before = embedded_json(first_pack.read_bytes())
    said = {
        e["evidence"]
        for r in before["recipients"]
        if r["address"] == target.address
        for e in r["events"]
        if e["kind"] == "delivered"
    }
    assert said and "550 5.1.1" not in " ".join(said)
