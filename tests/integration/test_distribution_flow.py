"""Session documents to councillors, end to end on the real stack: scheduling across a restart,
exactly-once delivery, receipts from LMTP, IMAP, the acknowledgement link and DSNs, notice
rules, reminders and the reports."""

from __future__ import annotations

import asyncio
import csv
import email
import io
import logging
import re
import smtplib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aioimaplib
import httpx
import pypdf
import pytest
from fpdf import FPDF
from sqlalchemy import update

from mailsvc.app import Parts, open_parts, start_service
from mailsvc.config import Settings
from mailsvc.distribution.service import DistributionError, NoticeRefused
from mailsvc.domain.receipt_states import EventKind
from mailsvc.mailbox import read_inbox
from mailsvc.receipts.report import render_csv, render_pdf
from mailsvc.storage.db import utcnow
from mailsvc.storage.tables import distributions as distributions_table
from provisioning.directory import Directory

# Run against Samba's AD DC too (make test-samba): what the directory server may change.
pytestmark = [pytest.mark.asyncio, pytest.mark.directory]


def local_now() -> datetime:
    """Now in the council's time zone (what clerks type), naive."""
    return datetime.now(ZoneInfo("Europe/Warsaw")).replace(tzinfo=None)


def make_pdf(path: Path, pages: int, text: str) -> Path:
    pdf = FPDF()
    for i in range(pages):
        pdf.add_page()
        pdf.set_font("helvetica", size=14)
        pdf.cell(text=f"{text} - page {i + 1}")
    pdf.output(str(path))
    return path


async def wait_until(check: Callable[[], Any], within: float = 20.0, interval: float = 0.2) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await check()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(interval)


async def councillors(add_councillor: Callable[[str, str], Any]) -> list[Any]:
    return [
        await add_councillor("Łukasz", "Żółć"),
        await add_councillor("Anna", "Nowak"),
        await add_councillor("Zażółć", "Gęślą"),
    ]


async def session_with_pdf(parts: Parts, tmp_path: Path, *, days_ahead: int = 14) -> Any:
    service = parts.distributions()
    starts = (local_now() + timedelta(days=days_ahead)).replace(
        hour=10, minute=0, second=0, microsecond=0
    )
    session = await service.create_session(
        number="XV/2026",
        kind="ordinary",
        starts_at=starts,
        place="Sala Obrad, ul. Rynek 1",
        agenda=["Otwarcie sesji", "Projekt uchwały w sprawie żłobków"],
        actor="pytest",
    )
    pdf = make_pdf(tmp_path / "projekt-uchwały-żłobki.pdf", 3, "Projekt uchwaly")
    doc = await service.attach(
        session.number, pdf, doc_kind="draft-resolution", agenda_item=2, actor="pytest"
    )
    assert doc.pages == 3
    return session, doc


def subject_count(messages: list[bytes], needle: str) -> int:
    count = 0
    for raw in messages:
        msg = email.message_from_bytes(raw, policy=policy.default)
        if needle in str(msg["Subject"]):
            count += 1
    return count


def distribution_message(messages: list[bytes]) -> EmailMessage:
    for raw in messages:
        msg = email.message_from_bytes(raw, policy=policy.default)
        if "XV/2026" in str(msg["Subject"]):
            assert isinstance(msg, EmailMessage)
            return msg
    raise AssertionError("no distribution message in the mailbox")


def ack_url(msg: EmailMessage) -> str:
    text = msg.get_body(("plain",))
    assert text is not None
    found = re.search(r"http://\S+/a/\S+", text.get_content())
    assert found, "no acknowledgement link in the text part"
    return found.group(0)


async def read_as_councillor(settings: Settings, user: str, password: str) -> None:
    """What a mail program does when the councillor opens the message: FETCH BODY[]."""
    client = aioimaplib.IMAP4(host=settings.stack.host, port=settings.stack.imap_port, timeout=10)
    await client.wait_hello_from_server()
    assert (await client.login(user, password)).result == "OK"
    assert (await client.select("INBOX")).result == "OK"
    res = await client.fetch("1:*", "(BODY[])")
    assert res.result == "OK"
    await client.logout()


async def test_scheduled_notice_survives_restart_and_collects_every_receipt(
    settings: Settings,
    directory: Directory,
    parts: Parts,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    people = await councillors(add_councillor)
    session, doc = await session_with_pdf(parts, tmp_path)

    # Scheduled a few seconds ahead; the service is restarted before it falls due.
    service = await start_service(settings)
    try:
        dist = await parts.distributions().schedule(
            session.number, at=local_now() + timedelta(seconds=3), actor="pytest"
        )
        await asyncio.sleep(0.5)
    finally:
        await service.stop()
    store = parts.distributions().store
    assert (await store.distribution(dist.id)).status == "scheduled"  # type: ignore[union-attr]

    service = await start_service(settings)
    try:
        sent = await wait_until(lambda: _status_is(store, dist.id, "sent"), within=20)
        assert sent, "the distribution was not sent after the restart"
        await wait_until(
            lambda: _all_have(store, dist.id, EventKind.DELIVERED, len(people)), within=20
        )
        # Exactly once in every mailbox, with the document attached.
        for person in people:
            inbox = await read_inbox(
                settings.stack.host, settings.stack.imap_port, person.address, person.password
            )
            assert subject_count(inbox, "XV/2026") == 1, person.address
            msg = distribution_message(inbox)
            attachments = list(msg.iter_attachments())
            assert [a.get_filename() for a in attachments] == ["projekt-uchwały-żłobki.pdf"]
            payload = attachments[0].get_content()
            assert isinstance(payload, bytes) and payload.startswith(b"%PDF-")
            assert str(msg["Return-Path"]).startswith("<bounces+")
            assert "bounces+" in str(msg["Disposition-Notification-To"])

        # Receipts: delivered, with the LMTP reply as evidence.
        matrix = await parts.distributions().matrix(session.number)
        assert len(matrix.rows) == len(people)
        for row in matrix.rows:
            (cell,) = row.cells
            assert cell.state.state is EventKind.DELIVERED
            delivered = [e for e in cell.events if e.kind is EventKind.DELIVERED]
            assert delivered and delivered[0].evidence.startswith("LMTP ")
            assert " 250 " in delivered[0].evidence or "250 2.0.0" in delivered[0].evidence

        # Opened: nothing before anyone reads; one councillor reads it over IMAP.
        assert await parts.distributions().check_opened() == 0
        reader = people[0]
        await read_as_councillor(settings, reader.address, reader.password)
        assert await parts.distributions().check_opened() == 1
        assert await parts.distributions().check_opened() == 0  # recorded once

        # Acknowledgement: GET records nothing, POST does.
        ackers = people[1]
        inbox = await read_inbox(
            settings.stack.host, settings.stack.imap_port, ackers.address, ackers.password
        )
        url = ack_url(distribution_message(inbox))
        assert f":{service.web_port}/" in url
        async with httpx.AsyncClient() as client:
            page = await client.get(url)
            assert page.status_code == 200 and "XV/2026" in page.text
            matrix = await parts.distributions().matrix(session.number)
            assert all(
                c.state.state is not EventKind.ACKNOWLEDGED for r in matrix.rows for c in r.cells
            )
            posted = await client.post(url)
            assert posted.status_code == 200

        # A DSN for the third councillor's message, sent to its VERP address, marks it failed;
        # a forged token is refused and credits nothing.
        third = people[2]
        recipients = await store.recipients(dist.id)
        rcpt3 = next(r for r in recipients if r.address == third.address)
        verp = parts.distributions().return_path(rcpt3.id)
        # The token is the key, the address a cross-check: a report at the third councillor's
        # VERP address that names someone else is logged as a mismatch and credits nothing.
        elsewhere = build_dsn(verp, reader.address, rcpt3.message_id)
        with caplog.at_level(logging.WARNING, logger="mailsvc.receipts.sink"):
            await asyncio.to_thread(_send_raw, service.smtp_port, verp, elsewhere)
        assert f"(token of <{third.address}>) names <{reader.address}> failed" in caplog.text
        assert "address mismatch, not credited" in caplog.text
        matrix = await parts.distributions().matrix(session.number)
        states = {r.address: r.cells[0].state.state for r in matrix.rows}
        assert states[third.address] is EventKind.DELIVERED
        assert states[reader.address] is EventKind.OPENED
        dsn = build_dsn(verp, third.address, rcpt3.message_id)
        await asyncio.to_thread(_send_raw, service.smtp_port, verp, dsn)
        forged = re.sub(r"\+(\d+)", lambda m: f"+{int(m.group(1)) + 1}", verp)
        refused = await asyncio.to_thread(_send_raw_refused, service.smtp_port, forged, dsn)
        assert refused.startswith("550")

        matrix = await parts.distributions().matrix(session.number)
        states = {r.address: r.cells[0].state.state for r in matrix.rows}
        assert states == {
            reader.address: EventKind.OPENED,
            ackers.address: EventKind.ACKNOWLEDGED,
            third.address: EventKind.FAILED,
        }
        failed = [
            e
            for e in next(r for r in matrix.rows if r.address == third.address).cells[0].events
            if e.kind is EventKind.FAILED
        ]
        assert len(failed) == 1 and "5.1.1" in failed[0].evidence
        assert "user unknown" in failed[0].evidence
        assert f"the report names <{third.address}>, the token's delivery" in failed[0].evidence

        # Reports: CSV and PDF list all of it, with the document's SHA-256.
        rows = list(csv.reader(io.StringIO(render_csv(matrix).decode("utf-8-sig")), delimiter=";"))
        flat = "\n".join(";".join(r) for r in rows)
        for person in people:
            assert person.address in flat
        assert "Żółć" in flat and doc.sha256 in flat
        pdf_text = "\n".join(
            p.extract_text() for p in pypdf.PdfReader(io.BytesIO(render_pdf(matrix))).pages
        )
        assert "Żółć" in pdf_text and doc.sha256[:16] in pdf_text.replace("\n", "")
    finally:
        await service.stop()


async def test_reminder_goes_only_to_those_who_have_not_acknowledged(
    settings: Settings,
    directory: Directory,
    parts: Parts,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
) -> None:
    people = await councillors(add_councillor)
    session, _ = await session_with_pdf(parts, tmp_path)
    service = await start_service(settings.with_changes(distribution={"reminders": "0h-after"}))
    try:
        svc = service.parts.distributions()
        dist = await svc.schedule(session.number, actor="pytest")
        await wait_until(lambda: _all_have(svc.store, dist.id, EventKind.DELIVERED, 3))
        recipients = {r.address: r for r in await svc.store.recipients(dist.id)}
        assert await svc.acknowledge(recipients[people[0].address].id, dist.id, "pytest")

        assert await svc.remind() == 2
        assert await svc.remind() == 0  # a round is done once
        matrix = await svc.matrix(session.number)
        reminded = {
            r.address
            for r in matrix.rows
            if any(e.kind is EventKind.REMINDED for e in r.cells[0].events)
        }
        assert reminded == {people[1].address, people[2].address}
        for person, expected in ((people[0], 0), (people[1], 1), (people[2], 1)):
            inbox = await wait_for_count(settings, person, 1 + expected)
            assert subject_count(inbox, "Przypomnienie") == expected, person.address
    finally:
        await service.stop()


async def test_notice_rule_breach_is_refused_unless_overridden(
    settings: Settings, directory: Directory, parts: Parts, tmp_path: Path
) -> None:
    service = parts.distributions()
    session, _ = await session_with_pdf(parts, tmp_path, days_ahead=3)
    with pytest.raises(NoticeRefused) as refused:
        await service.schedule(session.number, actor="pytest")
    message = str(refused.value)
    assert "7 dni" in message and session.starts_at.date().isoformat() in message
    assert await service.store.distributions(session_id=session.id) == []

    dist = await service.schedule(
        session.number, override_notice="pilna zmiana porządku obrad", actor="pytest"
    )
    assert dist.override_reason == "pilna zmiana porządku obrad"


async def test_distribution_due_while_down_is_sent_late_at_start_up(
    settings: Settings,
    directory: Directory,
    parts: Parts,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
) -> None:
    person = await add_councillor("Łukasz", "Żółć")
    session, _ = await session_with_pdf(parts, tmp_path)
    svc = parts.distributions()
    dist = await svc.schedule(session.number, at=local_now() + timedelta(hours=1), actor="t")
    # The service was down when it fell due (ten minutes ago).
    async with parts.engine.begin() as conn:
        await conn.execute(
            update(distributions_table)
            .where(distributions_table.c.id == dist.id)
            .values(due_at=utcnow() - timedelta(minutes=10))
        )
    service = await start_service(settings)
    try:
        assert await wait_until(lambda: _status_is(svc.store, dist.id, "sent"))
        row = await svc.store.distribution(dist.id)
        assert row is not None and row.late
        inbox = await wait_for_count(settings, person, 1)
        assert subject_count(inbox, "XV/2026") == 1
    finally:
        await service.stop()


async def test_concurrent_triggers_send_each_recipient_once(
    settings: Settings,
    directory: Directory,
    parts: Parts,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
) -> None:
    people = await councillors(add_councillor)
    session, _ = await session_with_pdf(parts, tmp_path)
    svc = parts.distributions()
    dist = await svc.schedule(session.number, actor="t")
    # Two processes' worth of triggers: separate service objects over the same database.
    other = Parts(settings, parts.engine, parts.directory, parts.register, parts.queue)
    results = await asyncio.gather(
        svc.send(dist.id), other.distributions().send(dist.id), svc.send(dist.id)
    )
    assert sum(r.queued for r in results) == len(people)
    recipients = await svc.store.recipients(dist.id)
    assert sorted(r.address for r in recipients) == sorted(p.address for p in people)


# -- helpers --------------------------------------------------------------------------------


async def _status_is(store: Any, dist_id: int, status: str) -> bool:
    row = await store.distribution(dist_id)
    return row is not None and row.status == status


async def _all_have(store: Any, dist_id: int, kind: EventKind, count: int) -> bool:
    return len(await store.recipients_with_kind(dist_id, kind)) >= count


async def wait_for_count(settings: Settings, person: Any, count: int) -> list[bytes]:
    async def enough() -> list[bytes] | None:
        inbox = await read_inbox(
            settings.stack.host, settings.stack.imap_port, person.address, person.password
        )
        return inbox if len(inbox) >= count else None

    found = await wait_until(enough, within=20)
    assert found is not None, f"{person.address}: fewer than {count} messages"
    await asyncio.sleep(0.5)  # nothing more arrives
    final: list[bytes] = await read_inbox(
        settings.stack.host, settings.stack.imap_port, person.address, person.password
    )
    return final


def build_dsn(to: str, failed: str, original_id: str) -> bytes:
    boundary = "dsn-boundary-1"
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        f"To: {to}\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\n"
        f"Auto-Submitted: auto-replied\r\n"
        f"MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        f"\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: text/plain\r\n\r\n"
        f"The mail system could not deliver your message.\r\n\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {failed}\r\n"
        f"Action: failed\r\n"
        f"Status: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {original_id}\r\n"
        f"Subject: Zawiadomienie\r\n\r\n"
        f"--{boundary}--\r\n"
    ).encode()


def _send_raw(port: int, rcpt: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mx.example.net")
        client.sendmail("", [rcpt], raw)


def _send_raw_refused(port: int, rcpt: str, raw: bytes) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mx.example.net")
        try:
            client.sendmail("", [rcpt], raw)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients[rcpt]
            return f"{code} {text.decode()}"
    return "accepted"


async def test_supplement_threads_and_mdn_from_the_mail_program_marks_opened(
    settings: Settings,
    directory: Directory,
    parts: Parts,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
) -> None:
    from .test_submission import submit

    person = await add_councillor("Łukasz", "Żółć")
    session, _ = await session_with_pdf(parts, tmp_path)
    service = await start_service(settings)
    try:
        svc = service.parts.distributions()
        notice = await svc.schedule(session.number, actor="pytest")
        await wait_until(lambda: _all_have(svc.store, notice.id, EventKind.DELIVERED, 1))
        amended = make_pdf(tmp_path / "autopoprawka.pdf", 1, "Autopoprawka")
        await svc.attach(session.number, amended, doc_kind="draft-resolution", actor="pytest")
        supplement = await svc.schedule(
            session.number,
            kind="supplement",
            note="Autopoprawka do projektu uchwały w sprawie żłobków.",
            actor="pytest",
        )
        assert len(supplement.document_ids) == 1  # only what the notice did not carry
        await wait_until(lambda: _all_have(svc.store, supplement.id, EventKind.DELIVERED, 1))
        inbox = await wait_for_count(settings, person, 2)
        messages = [email.message_from_bytes(m, policy=policy.default) for m in inbox]
        first = next(m for m in messages if "Zawiadomienie" in str(m["Subject"]))
        second = next(m for m in messages if "Uzupełnienie" in str(m["Subject"]))
        assert second["In-Reply-To"] == first["Message-ID"]
        assert first["Message-ID"] in str(second["References"])
        body = second.get_body(("plain",))
        assert body is not None and "Autopoprawka do projektu" in body.get_content()
        assert [a.get_filename() for a in second.iter_attachments()] == ["autopoprawka.pdf"]

        # The councillor's mail program sends a read receipt (RFC 8098) through submission
        # to the Disposition-Notification-To address.
        dnt = str(first["Disposition-Notification-To"])
        raw = build_mdn(person.address, dnt, person.address, str(first["Message-ID"]))
        refused = await submit(
            service.submission_port,
            person.address,
            person.password,
            person.address,
            [dnt],
            email.message_from_bytes(raw, policy=policy.SMTP),
        )
        assert refused == {}
        matrix = await svc.matrix(session.number)
        notice_cell = next(c for c in matrix.rows[0].cells if c.distribution_id == notice.id)
        opened = [e for e in notice_cell.events if e.kind is EventKind.OPENED]
        assert len(opened) == 1 and opened[0].source.value == "mdn"
        supplement_cell = next(
            c for c in matrix.rows[0].cells if c.distribution_id == supplement.id
        )
        assert supplement_cell.state.state is EventKind.DELIVERED  # the MDN was about the notice
    finally:
        await service.stop()


def build_mdn(sender: str, to: str, final: str, original_id: str) -> bytes:
    boundary = "mdn-boundary-1"
    return (
        f"From: {sender}\r\n"
        f"To: {to}\r\n"
        f"Subject: Przeczytano: Zawiadomienie\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: multipart/report; report-type=disposition-notification;\r\n"
        f' boundary="{boundary}"\r\n'
        f"\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Wiadomosc zostala wyswietlona.\r\n\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: message/disposition-notification\r\n\r\n"
        f"Reporting-UA: laptop.radny; Thunderbird 128.3.0\r\n"
        f"Final-Recipient: rfc822;{final}\r\n"
        f"Original-Message-ID: {original_id}\r\n"
        f"Disposition: manual-action/MDN-sent-manually; displayed\r\n\r\n"
        f"--{boundary}--\r\n"
    ).encode()


async def test_committee_distribution_reaches_only_its_members_plus_copies(
    settings: Settings,
    directory: Directory,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
) -> None:
    from mailsvc.app import open_parts

    # The mayor's copy goes to an address outside the council's domain (the smarthost).
    copy_settings = settings.with_changes(distribution={"copies": "burmistrz@urzad.example"})
    async with open_parts(copy_settings) as parts:
        people = await councillors(add_councillor)
        member = await directory.find_by_address(people[1].address)
        assert member is not None
        await directory.sync_group("komisja-budzetowa", [member.dn], "Komisja Budżetowa")
        session, _ = await session_with_pdf(parts, tmp_path)
        svc = parts.distributions()
        dist = await svc.schedule(session.number, committee="budzetowa", actor="pytest")
        result = await svc.send(dist.id)
        assert result.queued == 2
        recipients = {r.address: r.role for r in await svc.store.recipients(dist.id)}
        assert recipients == {people[1].address: "councillor", "burmistrz@urzad.example": "copy"}
        with pytest.raises(DistributionError, match="komisja 'nieznana': nie ma takiej"):
            await svc.schedule(session.number, committee="nieznana", actor="pytest")


async def test_the_configured_time_zone_reaches_the_acknowledgement_page(
    settings: Settings,
    directory: Directory,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
) -> None:
    """distribution.timezone is what people read: the acknowledgement page served by the running
    service shows the recorded time in that zone, not in Warsaw's."""
    zone = "America/New_York"  # never the same wall time as Warsaw
    local = settings.with_changes(distribution={"timezone": zone})
    person = await add_councillor("Łukasz", "Żółć")
    async with open_parts(local) as parts:
        session, _ = await session_with_pdf(parts, tmp_path, days_ahead=30)
        service = await start_service(local)
        try:
            await parts.distributions().schedule(session.number, actor="pytest")
            store = parts.distributions().store
            dists = await store.distributions(statuses=("scheduled", "sent"))
            await wait_until(lambda: _status_is(store, dists[0].id, "sent"), within=20)
            inbox: list[bytes] = []
            for _ in range(100):
                inbox = await read_inbox(
                    local.stack.host, local.stack.imap_port, person.address, person.password
                )
                if subject_count(inbox, "XV/2026"):
                    break
                await asyncio.sleep(0.2)
            url = ack_url(distribution_message(inbox))
            async with httpx.AsyncClient() as client:
                posted = await client.post(url)
            assert posted.status_code == 200
            matrix = await parts.distributions().matrix(session.number)
            (cell,) = matrix.rows[0].cells
            (acked,) = [e.at for e in cell.events if e.kind is EventKind.ACKNOWLEDGED]
        finally:
            await service.stop()
    shown = acked.replace(tzinfo=UTC).astimezone(ZoneInfo(zone))
    warsaw = acked.replace(tzinfo=UTC).astimezone(ZoneInfo("Europe/Warsaw"))
    assert f"o godz. {shown.hour}:{shown:%M}." in posted.text  # hours without a leading zero
    assert f"o godz. {warsaw.hour}:{warsaw:%M}." not in posted.text


async def test_attach_errors_speak_the_configured_language(parts: Parts, tmp_path: Path) -> None:
    session, _ = await session_with_pdf(parts, tmp_path)
    pdf = make_pdf(tmp_path / "autopoprawka.pdf", 1, "Autopoprawka")
    with pytest.raises(DistributionError, match="dokument 9999 nie należy do tej sesji"):
        await parts.distributions().attach(session.number, pdf, replaces=9999, actor="pytest")
    with pytest.raises(DistributionError, match="nie można odczytać pliku"):
        await parts.distributions().attach(session.number, tmp_path / "brak.pdf", actor="pytest")
