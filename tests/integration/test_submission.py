"""Councillors replying: submission with STARTTLS + AUTH against the directory; reply times."""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
from collections.abc import Callable
from email.utils import make_msgid
from typing import Any

import pytest

from mailsvc.app import Service
from mailsvc.config import Settings

from .conftest import make_message, smtp_send, wait_for_inbox
from .test_cli import run_cli


def _context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the embedded default's certificate is self-signed
    return context


async def submit(
    port: int,
    login: str,
    password: str,
    sender: str,
    recipients: list[str],
    msg: Any,
    *,
    starttls: bool = True,
) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo("laptop.radny")
            if starttls:
                client.starttls(context=_context())
                client.ehlo("laptop.radny")
            client.login(login, password)
            return client.send_message(msg, sender, recipients)

    return await asyncio.to_thread(run)


async def test_auth_is_offered_only_after_starttls(service: Service) -> None:
    def probe() -> tuple[bool, bool]:
        with smtplib.SMTP("127.0.0.1", service.submission_port, timeout=30) as client:
            client.ehlo("laptop")
            before = client.has_extn("auth")
            client.starttls(context=_context())
            client.ehlo("laptop")
            return before, client.has_extn("auth")

    assert await asyncio.to_thread(probe) == (False, True)


async def test_councillor_sends_as_self_and_the_message_is_relayed(
    service: Service, settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    author = await add_councillor("Łukasz", "Żółć")
    colleague = await add_councillor("Anna", "Nowak")
    msg = make_message(colleague.address, "Odpowiedź w sprawie sesji")
    refused = await submit(
        service.submission_port,
        author.address,
        author.password,
        author.address,
        [colleague.address],
        msg,
    )
    assert refused == {}
    inbox = await wait_for_inbox(settings, colleague.address, colleague.password)
    assert b"(authenticated sender: lukasz.zolc@" in inbox[0]
    assert b"with ESMTPSA" in inbox[0]


async def test_wrong_password_and_unknown_users_are_refused(
    service: Service, add_councillor: Callable[..., Any]
) -> None:
    author = await add_councillor("Ewa", "Kowal")
    msg = make_message("x@example.org", "x")
    for login, password in ((author.address, "wrong-password-123"), ("nikt@example.org", "x")):
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            await submit(service.submission_port, login, password, login, ["x@example.org"], msg)
        assert info.value.smtp_code == 535


async def test_sending_as_someone_else_is_refused(
    service: Service, add_councillor: Callable[..., Any]
) -> None:
    author = await add_councillor("Jan", "Uczciwy")
    other = await add_councillor("Piotr", "Inny")
    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        await submit(
            service.submission_port,
            author.address,
            author.password,
            other.address,
            ["resident@example.org"],
            make_message("resident@example.org", "spoof"),
        )
    assert info.value.smtp_code == 553


async def test_mail_without_auth_is_refused(service: Service) -> None:
    def run() -> int:
        with smtplib.SMTP("127.0.0.1", service.submission_port, timeout=30) as client:
            client.ehlo("laptop")
            client.starttls(context=_context())
            client.ehlo("laptop")
            code, _ = client.mail("someone@example.org")
            return code

    assert await asyncio.to_thread(run) == 530


async def test_reply_time_is_recorded_and_stats_show_aggregates(
    service: Service, settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    councillor = await add_councillor("Maria", "Odpisująca")
    question = make_message(councillor.address, "Pytanie o drogę")
    question["Message-ID"] = make_msgid(domain="mieszkaniec.example.org")
    await smtp_send(service.smtp_port, [councillor.address], question)
    other = make_message(councillor.address, "Bez odpowiedzi")
    other["Message-ID"] = make_msgid(domain="mieszkaniec.example.org")
    await smtp_send(service.smtp_port, [councillor.address], other)
    await wait_for_inbox(settings, councillor.address, councillor.password, 2)
    reply = make_message("jan@example.org", "Re: Pytanie o drogę")
    reply["In-Reply-To"] = question["Message-ID"]
    reply["References"] = question["Message-ID"]
    await submit(
        service.submission_port,
        councillor.address,
        councillor.password,
        councillor.address,
        ["jan@example.org"],
        reply,
    )
    stats = await service.parts.relay_log.stats()
    assert [(s.recipient, s.received, s.replied) for s in stats] == [(councillor.address, 2, 1)]
    assert stats[0].median_reply_seconds is not None and stats[0].median_reply_seconds >= 0
    await service.parts.relay_log.flush()
    proc = await asyncio.to_thread(run_cli, settings, "relay", "stats", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out[0]["councillor"] == councillor.address
    assert out[0]["received"] == 2 and out[0]["replied"] == 1
    # Aggregates only: no sender, subject or message id in the output.
    assert "jan@example.org" not in proc.stdout and "Pytanie" not in proc.stdout


async def test_relay_log_follows_delivery_and_is_purged_after_retention(
    service: Service, settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    from datetime import timedelta

    from sqlalchemy import select

    from mailsvc.storage.db import utcnow
    from mailsvc.storage.tables import messages, relay_log

    councillor = await add_councillor("Halina", "Archiwalna")
    await smtp_send(service.smtp_port, [councillor.address], make_message("x", "stare"))
    await wait_for_inbox(settings, councillor.address, councillor.password)
    log = service.parts.relay_log
    await log.flush()
    await asyncio.sleep(0.2)
    assert await log.refresh_status() == 1
    async with service.engine.connect() as conn:
        row = (
            await conn.execute(select(relay_log.c.status, relay_log.c.size, relay_log.c.queue_id))
        ).one()
        body = (
            await conn.execute(select(messages.c.body).where(messages.c.queue_id == row.queue_id))
        ).scalar_one()
    assert row.status == "delivered" and row.size > 0
    assert body is None  # bodies are kept only until delivered
    assert await log.purge(utcnow() - timedelta(days=1)) == 0
    assert await log.purge(utcnow() + timedelta(seconds=1)) == 1
    async with service.engine.connect() as conn:
        assert (await conn.execute(select(relay_log.c.id))).all() == []
        left = select(messages.c.id).where(messages.c.queue_id == row.queue_id)
        assert (await conn.execute(left)).all() == []
