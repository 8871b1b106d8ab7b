"""Councillors replying: submission with STARTTLS + AUTH against the directory; reply times."""

from __future__ import annotations

import asyncio
import base64
import email
import json
import smtplib
import ssl
import time
from collections.abc import Callable
from email import policy
from email.utils import make_msgid
from typing import Any

import pytest

from mailsvc.app import Service, start_service
from mailsvc.config import Settings

from .conftest import make_message, smtp_send, wait_for_inbox
from .test_cli import run_cli

# Run against Samba's AD DC too (make test-samba): what the directory server may change.
pytestmark = pytest.mark.directory


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


def own_message(author: str, to: str, subject: str) -> Any:
    msg = make_message(to, subject)
    msg.replace_header("From", f"Radny <{author}>")
    return msg


def auth_plain(login: str, password: str) -> str:
    return base64.b64encode(f"\0{login}\0{password}".encode()).decode()


def tls_client(port: int, source: str = "127.0.0.1") -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0))
    client.ehlo("laptop.radny")
    client.starttls(context=_context())
    client.ehlo("laptop.radny")
    return client


async def test_the_fourth_failed_auth_on_a_connection_ends_it(
    service: Service, add_councillor: Callable[..., Any]
) -> None:
    author = await add_councillor("Zenon", "Zgadywany")

    def guess() -> list[int]:
        codes = []
        client = tls_client(service.submission_port)
        try:
            for n in range(4):
                code, _ = client.docmd("AUTH", "PLAIN " + auth_plain(author.address, f"zgaduj{n}"))
                codes.append(code)
            try:
                client.noop()
            except smtplib.SMTPServerDisconnected:
                codes.append(-1)  # the server closed the connection
        finally:
            client.close()
        return codes

    assert await asyncio.to_thread(guess) == [535, 535, 535, 421, -1]


async def test_failures_are_counted_across_connections_and_answer_alike(
    service: Service, settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    author = await add_councillor("Wiesław", "Wytrwały")
    other = await add_councillor("Renata", "Rzetelna")

    def attempt(login: str, password: str, source: str = "127.0.0.1") -> tuple[int, float]:
        with tls_client(service.submission_port, source) as client:
            started = time.monotonic()
            code, _ = client.docmd("AUTH", "PLAIN " + auth_plain(login, password))
            return code, time.monotonic() - started

    # An unknown account and a wrong password: the same reply, neither answered at once.
    unknown = await asyncio.to_thread(attempt, "nikt@rada.miasto.example", "x")
    wrong = await asyncio.to_thread(attempt, author.address, "zle-haslo")
    assert unknown[0] == wrong[0] == 535
    assert unknown[1] >= 0.45 and wrong[1] >= 0.45
    limit = settings.web.login_attempts
    # Per account, whatever the network: guesses from many addresses, then even the right
    # password waits (and is not checked).
    for n in range(limit - 1):
        code, _ = await asyncio.to_thread(attempt, author.address, "zle", f"127.0.1.{n + 1}")
        assert code == 535
    assert (await asyncio.to_thread(attempt, author.address, author.password, "127.0.2.1"))[
        0
    ] == 454
    # Per network, whatever the account: one address guessing many accounts is stopped too.
    for n in range(limit):
        code, _ = await asyncio.to_thread(attempt, f"zgadywany{n}@example.org", "x", "127.0.3.1")
        assert code == 535
    assert (await asyncio.to_thread(attempt, other.address, other.password, "127.0.3.1"))[0] == 454
    # Another network and account are not affected.
    assert (await asyncio.to_thread(attempt, other.address, other.password, "127.0.4.1"))[0] == 235


async def test_header_from_must_be_the_login_or_its_group(
    service: Service, settings: Settings, add_councillor: Callable[..., Any], directory: Any
) -> None:
    author = await add_councillor("Jan", "Nagłówkowy")
    chair = await add_councillor("Przewodniczący", "Rady")
    await directory.sync_group("prezydium", [author.dn], "Prezydium")
    spoof = own_message(chair.address, "resident@example.org", "Komunikat")
    with pytest.raises(smtplib.SMTPDataError) as info:
        await submit(
            service.submission_port,
            author.address,
            author.password,
            author.address,
            ["resident@example.org"],
            spoof,
        )
    assert info.value.smtp_code == 553 and b"5.7.1" in info.value.smtp_error
    sender = own_message(author.address, "resident@example.org", "Komunikat")
    sender["Sender"] = chair.address
    with pytest.raises(smtplib.SMTPDataError) as info:
        await submit(
            service.submission_port,
            author.address,
            author.password,
            author.address,
            ["resident@example.org"],
            sender,
        )
    assert info.value.smtp_code == 553
    group = own_message(f"prezydium@{settings.domain}", "resident@example.org", "Komunikat")
    refused = await submit(
        service.submission_port,
        author.address,
        author.password,
        author.address,
        ["resident@example.org"],
        group,
    )
    assert refused == {}


async def test_missing_date_and_message_id_are_added(
    service: Service, settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    author = await add_councillor("Ola", "Bezdatna")
    colleague = await add_councillor("Ewa", "Odbiorczyni")
    raw = (
        f"From: <{author.address}>\r\nTo: <{colleague.address}>\r\nSubject: bez daty\r\n"
        "\r\nTresc.\r\n"
    ).encode()

    def send() -> None:
        with tls_client(service.submission_port) as client:
            client.login(author.address, author.password)
            client.sendmail(author.address, [colleague.address], raw)

    await asyncio.to_thread(send)
    (delivered,) = await wait_for_inbox(settings, colleague.address, colleague.password)
    msg = email.message_from_bytes(delivered, policy=policy.default)
    assert msg["Date"] is not None and msg["Message-ID"] is not None
    assert str(msg["Message-ID"]).endswith(f"@{settings.domain}>")


async def test_hourly_sending_limit_per_councillor(
    settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    limited = settings.with_changes(submission={"messages_per_hour": 2})
    service = await start_service(limited)
    try:
        author = await add_councillor("Sławomir", "Spamowany")
        results = []
        for n in range(3):
            try:
                await submit(
                    service.submission_port,
                    author.address,
                    author.password,
                    author.address,
                    ["resident@example.org"],
                    own_message(author.address, "resident@example.org", f"Wiadomość {n}"),
                )
                results.append(250)
            except smtplib.SMTPDataError as exc:
                results.append(exc.smtp_code)
        assert results == [250, 250, 451]
    finally:
        await service.stop()


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
    msg = own_message(author.address, colleague.address, "Odpowiedź w sprawie sesji")
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
    reply = own_message(councillor.address, "jan@example.org", "Re: Pytanie o drogę")
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
