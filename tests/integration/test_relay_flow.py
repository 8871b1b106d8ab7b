"""A resident's message end to end on the real stack: SMTP in, queue, LMTP, IMAP out."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Callable
from email import message_from_bytes as _parse
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import select

from mailsvc.app import Service, start_service
from mailsvc.config import Settings
from mailsvc.storage.tables import deliveries, messages
from provisioning.directory import Directory

from .conftest import make_message, smtp_send, wait_for_deliveries, wait_for_inbox

# Run against Samba's AD DC too (make test-samba): what the directory server may change.
pytestmark = pytest.mark.directory


def message_from_bytes(raw: bytes) -> EmailMessage:
    msg = _parse(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


async def test_resident_message_reaches_the_councillors_imap_inbox(
    service: Service, settings: Settings, add_councillor: Callable[[str, str], Any]
) -> None:
    account = await add_councillor("Łukasz", "Żółć")
    assert account.address == f"lukasz.zolc@{settings.domain}"
    msg = make_message(account.address, "Dziura w jezdni na ul. Długiej", "Proszę o pomoc.\n")
    refused = await smtp_send(service.smtp_port, [account.address], msg)
    assert refused == {}

    inbox = await wait_for_inbox(settings, account.address, account.password)
    assert len(inbox) == 1
    got = message_from_bytes(inbox[0])
    assert str(got["Subject"]) == "Dziura w jezdni na ul. Długiej"
    body = got.get_body()
    assert body is not None and "Proszę o pomoc." in body.get_content()
    ours = [h for h in got.get_all("Received", []) if "(mailsvc)" in h]
    assert len(ours) == 1
    assert ours[0].startswith("from resident.example.org ([127.0.0.1])")
    assert f"by {settings.smtp_hostname} (mailsvc)" in ours[0]


async def test_unknown_recipient_is_refused_with_550_at_rcpt(
    service: Service, settings: Settings
) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        await smtp_send(service.smtp_port, [f"nikt.taki@{settings.domain}"], make_message("x", "x"))
    code, text = next(iter(info.value.recipients.values()))
    assert code == 550 and text.startswith(b"5.1.1")


async def test_other_domains_are_not_relayed(service: Service, settings: Settings) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        await smtp_send(service.smtp_port, ["victim@elsewhere.example"], make_message("x", "x"))
    code, text = next(iter(info.value.recipients.values()))
    assert code == 550 and text.startswith(b"5.7.1")


async def test_stopped_slapd_gives_451_never_5xx(
    service: Service, settings: Settings, local_stack: Any, add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Anna", "Nowak-Kowalska")
    local_stack.stop_service(local_stack.services[0])  # slapd, or Samba's AD DC
    try:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            await smtp_send(service.smtp_port, [account.address], make_message("x", "x"))
        code, text = next(iter(info.value.recipients.values()))
        assert code == 451 and text.startswith(b"4.4.3")
    finally:
        local_stack.start_service(local_stack.services[0])
    # The directory is back: the same message is now accepted (the pool reconnects).
    assert await smtp_send(service.smtp_port, [account.address], make_message("x", "y")) == {}


async def test_disabled_councillor_gets_550_naming_the_office(
    service: Service, settings: Settings, directory: Directory, add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Jan", "Kowalski")
    await directory.set_active(account.dn, False)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        await smtp_send(service.smtp_port, [account.address], make_message("x", "x"))
    code, text = next(iter(info.value.recipients.values()))
    assert code == 550 and text.startswith(b"5.1.6")
    assert settings.office_address.encode() in text


async def test_one_message_to_two_councillors_is_one_lmtp_transaction_with_two_results(
    service: Service, settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    a = await add_councillor("Maria", "Wiśniewska")
    b = await add_councillor("Piotr", "Wójcik")
    await smtp_send(service.smtp_port, [a.address, b.address], make_message(a.address, "Oboje"))
    assert len(await wait_for_inbox(settings, a.address, a.password)) == 1
    assert len(await wait_for_inbox(settings, b.address, b.password)) == 1
    # IMAP can show the message a moment before the worker has read Dovecot's replies.
    for _ in range(100):
        async with service.engine.connect() as conn:
            rows = (await conn.execute(select(deliveries.c.status, deliveries.c.last_reply))).all()
        if all(r.status != "inflight" for r in rows):
            break
        await asyncio.sleep(0.05)
    assert sorted(r.status for r in rows) == ["delivered", "delivered"]
    assert all(r.last_reply.startswith("250") for r in rows)


async def test_message_is_stored_before_250_and_delivered_after_a_restart(
    settings: Settings, directory: Directory, add_councillor: Callable[..., Any], local_stack: Any
) -> None:
    account = await add_councillor("Zofia", "Kamińska")
    # Dovecot is down: the message can only be in the queue when 250 comes back.
    local_stack.stop_service("dovecot")
    try:
        svc = await start_service(settings)
        try:
            await smtp_send(svc.smtp_port, [account.address], make_message("z", "Trwałość"))
        finally:
            await svc.stop()
    finally:
        local_stack.start_service("dovecot")
    svc = await start_service(settings)  # a new process would do the same: queue is the truth
    try:
        async with svc.engine.connect() as conn:
            stored = (await conn.execute(select(messages.c.size, messages.c.status))).all()
        assert len(stored) == 1 and stored[0].size > 0
        inbox = await wait_for_inbox(settings, account.address, account.password)
        assert [message_from_bytes(m)["Subject"] for m in inbox] == ["Trwałość"]
    finally:
        await svc.stop()


async def test_dovecot_down_defers_and_delivers_when_it_returns(
    service: Service, settings: Settings, local_stack: Any, add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Ewa", "Lewandowska")
    local_stack.stop_service("dovecot")
    try:
        assert (
            await smtp_send(service.smtp_port, [account.address], make_message("e", "Czeka")) == {}
        )
        await asyncio.sleep(0.5)
        rows = await service.queue.list_deliveries()
        assert [r.status for r in rows] in (["deferred"], ["inflight"], ["queued"])
        assert rows[0].status != "delivered"
    finally:
        local_stack.start_service("dovecot")
    inbox = await wait_for_inbox(settings, account.address, account.password)
    assert len(inbox) == 1
    rows = await wait_for_deliveries(service.queue, {"delivered"})
    assert rows[0].status == "delivered" and rows[0].attempts >= 2
