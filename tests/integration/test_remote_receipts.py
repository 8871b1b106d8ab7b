"""Delivery proved beyond our own mailboxes: a distribution copy leaving through the smarthost asks
for delivery reports (RFC 3461) when the smarthost offers them, and the success report that comes
back to its VERP address is credited as "delivered (remote)".

The smarthost is the capture server (aiosmtpd, in this test's loop) with DSN offered or not; the
report goes to the service's own SMTP server with the standard library's client.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import smtplib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pypdf
import pytest

from mailsvc.app import Service, start_service
from mailsvc.config import Settings
from mailsvc.domain.receipt_states import EventKind, EventSource
from mailsvc.domain.vocabulary import state_label
from mailsvc.receipts.report import render_csv, render_json, render_pdf
from mailsvc.relay.delivery import capture
from provisioning.directory import Directory

from .test_distribution_flow import session_with_pdf, wait_until

MAYOR = "burmistrz@urzad.example"


async def captured(directory: Path, count: int) -> list[capture.CapturedMessage]:
    async def enough() -> list[capture.CapturedMessage] | None:
        found = capture.list_captured(directory)
        return found if len(found) >= count else None

    found = await wait_until(enough, within=20, interval=0.1)
    assert found, f"fewer than {count} messages reached the smarthost"
    return list(found)


@pytest.fixture
async def smarthost(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """The capture as the smarthost: ``(address, directory)``; DSN offered per the param."""
    directory = tmp_path / "smarthost"
    sink = capture.CaptureSink(directory, "smarthost.test", dsn=request.param)
    address = await sink.start()
    yield address, directory
    await sink.stop()


async def distribute_to_mayor(
    settings: Settings,
    smarthost: Any,
    parts_settings: Any,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
) -> tuple[Service, Any, Any, Any]:
    """A councillor (LMTP) and the mayor's copy (smarthost): the service, the distribution,
    the session and the councillor."""
    (host, port), _ = smarthost
    councillor = await add_councillor("Łukasz", "Żółć")
    session, _ = await session_with_pdf(parts_settings, tmp_path)
    service = await start_service(
        settings.with_changes(
            smarthost={"host": host, "port": port}, distribution={"copies": MAYOR}
        )
    )
    dist = await service.parts.distributions().schedule(session.number, actor="pytest")
    return service, dist, session, councillor


async def queue_id_of(service: Service, address: str) -> str:
    rows = await service.queue.list_deliveries()
    (row,) = [r for r in rows if r.recipient == address]
    return str(row.queue_id)


def success_dsn(to: str, final: str, envid: str, message_id: str) -> bytes:
    """An RFC 3464 report as a remote MTA sends it for NOTIFY=SUCCESS."""
    boundary = "dsn-success-1"
    now = format_datetime(datetime.now().astimezone())
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.urzad.example>\r\n"
        f"To: {to}\r\n"
        f"Subject: Successful Mail Delivery Report\r\n"
        f"Date: {now}\r\n"
        f"Message-ID: {make_msgid(domain='mx.urzad.example')}\r\n"
        f"Auto-Submitted: auto-replied\r\n"
        f"MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        f"\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: text/plain\r\n\r\n"
        f"Your message was successfully delivered to the destination(s) listed below.\r\n\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.urzad.example\r\n"
        f"Original-Envelope-Id: {envid}\r\n"
        f"Arrival-Date: {now}\r\n\r\n"
        f"Final-Recipient: rfc822; {final}\r\n"
        f"Original-Recipient: rfc822;{final}\r\n"
        f"Action: delivered\r\n"
        f"Status: 2.0.0\r\n"
        f"Diagnostic-Code: smtp; 250 2.0.0 Ok: queued as 4XyZ\r\n\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {message_id}\r\n"
        f"Subject: Zawiadomienie\r\n\r\n"
        f"--{boundary}--\r\n"
    ).encode()


def send_report(port: int, rcpt: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mx.urzad.example")
        client.sendmail("", [rcpt], raw)


async def state_of(service: Service, session_number: str, address: str) -> Any:
    matrix = await service.parts.distributions().matrix(session_number, include_copies=True)
    (row,) = [r for r in matrix.rows if r.address == address]
    (cell,) = row.cells
    return matrix, cell


@pytest.mark.parametrize("smarthost", [True], indirect=True)
async def test_a_copy_asks_a_dsn_smarthost_for_reports_and_its_success_is_delivered_remote(
    settings: Settings,
    directory: Directory,
    parts: Any,
    smarthost: Any,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
) -> None:
    _, smarthost_dir = smarthost
    service, dist, session, councillor = await distribute_to_mayor(
        settings, smarthost, parts, add_councillor, tmp_path
    )
    try:
        svc = service.parts.distributions()
        store = svc.store
        (copy,) = await captured(smarthost_dir, 1)
        recipients = {r.address: r for r in await store.recipients(dist.id)}
        mayor, local = recipients[MAYOR], recipients[councillor.address]

        # What the smarthost was asked, from its side of the conversation.
        queue_id = await queue_id_of(service, MAYOR)
        assert copy.recipients == (MAYOR,)
        assert copy.mail_from == svc.return_path(mayor.id)
        assert copy.mail_params == ("RET=HDRS", f"ENVID={queue_id}")
        assert copy.rcpt_params == (("NOTIFY=SUCCESS,FAILURE", f"ORCPT=rfc822;{MAYOR}"),)

        # The smarthost's 250 only hands the copy over; the councillor's LMTP 250 delivers.
        async def handed_over() -> bool:
            events = (await store.events([mayor.id]))[mayor.id]
            return any(e.kind is EventKind.SENT and "250" in e.evidence for e in events)

        assert await wait_until(handed_over), "the smarthost's 250 was not recorded"
        assert await wait_until(lambda: store.recipients_with_kind(dist.id, EventKind.DELIVERED))
        assert await store.recipients_with_kind(dist.id, EventKind.DELIVERED) == {local.id}
        _, cell = await state_of(service, session.number, MAYOR)
        assert cell.state.state is EventKind.SENT

        # The remote end's success report, to the VERP address the copy left with.
        report = success_dsn(copy.mail_from, MAYOR, queue_id, mayor.message_id)
        await asyncio.to_thread(send_report, service.smtp_port, copy.mail_from, report)
        remote = await wait_until(
            lambda: store.recipients_with_kind(dist.id, EventKind.DELIVERED_REMOTE)
        )
        assert remote == {mayor.id}

        # The same report about one of our own mailboxes stays a plain delivery.
        verp = svc.return_path(local.id)
        own = success_dsn(verp, councillor.address, "x", local.message_id)
        await asyncio.to_thread(send_report, service.smtp_port, verp, own)

        async def dsn_credited() -> bool:
            events = (await store.events([local.id]))[local.id]
            return any(e.source is EventSource.DSN for e in events)

        assert await wait_until(dsn_credited), "the DSN for the councillor was not credited"
        local_events = (await store.events([local.id]))[local.id]
        assert [e.kind for e in local_events if e.source is EventSource.DSN] == [
            EventKind.DELIVERED
        ]

        # Shown as such in the store's matrix and in every report.
        matrix, cell = await state_of(service, session.number, MAYOR)
        assert cell.state.state is EventKind.DELIVERED_REMOTE
        (dsn_event,) = [e for e in cell.events if e.kind is EventKind.DELIVERED_REMOTE]
        assert dsn_event.source is EventSource.DSN and "delivered 2.0.0" in dsn_event.evidence
        _, local_cell = await state_of(service, session.number, councillor.address)
        assert local_cell.state.state is EventKind.DELIVERED
    finally:
        await service.stop()

    label = state_label(EventKind.DELIVERED_REMOTE, matrix.language)
    assert label == "doręczono (zdalnie)"
    rows = list(csv.DictReader(io.StringIO(render_csv(matrix).decode("utf-8-sig")), delimiter=";"))
    (csv_row,) = [r for r in rows if r["Adres"] == MAYOR]
    assert (csv_row["Stan"], csv_row["Kod stanu"]) == (label, "delivered-remote")
    assert csv_row["doręczono (zdalnie) (UTC)"]
    report_json = json.loads(json.dumps(render_json(matrix), ensure_ascii=False))
    json_cells = [c for r in report_json["rows"] for c in r["cells"]]
    (json_cell,) = [c for c in json_cells if c["address"] == MAYOR]
    assert (json_cell["state"], json_cell["state_label"]) == ("delivered-remote", label)
    pdf = pypdf.PdfReader(io.BytesIO(render_pdf(matrix)))
    text = " ".join(" ".join(page.extract_text() for page in pdf.pages).split())
    assert f"{MAYOR} #{dist.id} zawiadomienie {label} " in text


@pytest.mark.parametrize("smarthost", [False], indirect=True)
async def test_a_smarthost_without_dsn_is_asked_nothing_and_the_copy_stays_sent(
    settings: Settings,
    directory: Directory,
    parts: Any,
    smarthost: Any,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
) -> None:
    _, smarthost_dir = smarthost
    service, dist, session, _ = await distribute_to_mayor(
        settings, smarthost, parts, add_councillor, tmp_path
    )
    try:
        store = service.parts.distributions().store
        (copy,) = await captured(smarthost_dir, 1)
        assert copy.recipients == (MAYOR,)
        assert copy.mail_params == ()
        assert copy.rcpt_params == ((),)
        (mayor,) = [r for r in await store.recipients(dist.id) if r.address == MAYOR]

        async def handed_over() -> bool:
            events = (await store.events([mayor.id]))[mayor.id]
            return any(e.kind is EventKind.SENT and "250" in e.evidence for e in events)

        assert await wait_until(handed_over), "the smarthost's 250 was not recorded"
        _, cell = await state_of(service, session.number, MAYOR)
        assert cell.state.state is EventKind.SENT
        assert EventKind.DELIVERED not in {e.kind for e in cell.events}
    finally:
        await service.stop()


@pytest.mark.parametrize("smarthost", [True], indirect=True)
async def test_untracked_mail_asks_a_dsn_smarthost_for_nothing(
    settings: Settings, directory: Directory, smarthost: Any
) -> None:
    (host, port), smarthost_dir = smarthost
    service = await start_service(
        settings.with_changes(smarthost={"host": host, "port": port}), scheduler=False
    )
    try:
        body = (
            b"From: radny@" + settings.domain.encode() + b"\r\nTo: jan@example.org\r\n"
            b"Subject: odpowiedz\r\nMessage-ID: <r1@rada>\r\n\r\nTresc.\r\n"
        )
        sender = f"radny@{settings.domain}"
        await service.queue.enqueue(sender, ["jan@example.org"], body, origin="submission")
        service.workers.wake()
        (found,) = await captured(smarthost_dir, 1)
    finally:
        await service.stop()
    assert (found.mail_from, found.recipients) == (sender, ("jan@example.org",))
    assert found.mail_params == ()
    assert found.rcpt_params == ((),)
