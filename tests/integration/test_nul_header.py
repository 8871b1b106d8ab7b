"""A NUL byte in a message's header is refused at DATA with 550 5.6.0 naming the line, at every
door (port 25, a report address on port 25, submission), before the database sees it: on
PostgreSQL the text columns would refuse it, and a message taken with 250 must never fail later.
A real SMTP client (smtplib) talks to the running service."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from mailsvc.app import Service
from mailsvc.config import Settings
from mailsvc.distribution.links import signer_for
from mailsvc.receipts.sink import VERP_PREFIX
from mailsvc.storage.tables import messages

from .conftest import wait_for_inbox
from .test_submission import _context

RAW = (
    b"From: Jan Mieszkaniec <jan@example.org>\r\n"
    b"To: {to}\r\n"
    b"Subject: Dziura\x00w jezdni\r\n"
    b"\r\n"
    b"Prosz\xc4\x99 o pomoc.\r\n"
)


def _raw(to: str, author: str = "Jan Mieszkaniec <jan@example.org>") -> bytes:
    return RAW.replace(b"{to}", to.encode()).replace(
        b"Jan Mieszkaniec <jan@example.org>", author.encode()
    )


async def _send_raw(
    port: int,
    sender: str,
    recipients: list[str],
    raw: bytes,
    *,
    login: tuple[str, str] | None = None,
) -> tuple[int, bytes]:
    """MAIL, RCPT and DATA by hand with smtplib (send_message would rewrite the message):
    the reply to the end of DATA."""

    def run() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo("resident.example.org")
            if login is not None:
                client.starttls(context=_context())
                client.ehlo("laptop.radny")
                client.login(*login)
            assert client.mail(sender)[0] == 250
            for rcpt in recipients:
                assert client.rcpt(rcpt)[0] == 250
            code, text = client.data(raw)
            # The session goes on: the next transaction is served as usual.
            assert client.rset()[0] == 250
            return code, text

    return await asyncio.to_thread(run)


async def _stored(service: Service) -> int:
    async with service.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(messages))).scalar_one())


def _assert_refused(reply: tuple[int, bytes]) -> None:
    code, text = reply
    assert code == 550, reply
    assert text.startswith(b"5.6.0 Header line 3 of the message contains a NUL byte"), reply


async def test_port_25_refuses_a_nul_in_the_header_and_takes_the_clean_message(
    service: Service, settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Nula", "Nagłówkowa")
    before = await _stored(service)
    _assert_refused(
        await _send_raw(service.smtp_port, "jan@example.org", [account.address], _raw("x"))
    )
    assert await _stored(service) == before
    clean = _raw(account.address).replace(b"\x00", b" ")
    code, _ = await _send_raw(service.smtp_port, "jan@example.org", [account.address], clean)
    assert code == 250
    inbox = await wait_for_inbox(settings, account.address, account.password)
    assert len(inbox) == 1 and b"Subject: Dziura w jezdni" in inbox[0]


async def test_a_report_address_refuses_a_nul_in_the_header(
    service: Service, settings: Settings
) -> None:
    """A DSN to a report address (a token the service signed) with a NUL in its header."""
    token = signer_for(settings).verp_token(424242)
    address = f"{VERP_PREFIX}{token}@{settings.domain}"
    report = _raw(address, "Mail Delivery System <mailer-daemon@example.org>").replace(
        b"Subject: Dziura\x00w jezdni", b"Subject: Delivery Status\x00Notification"
    )
    before = await _stored(service)
    _assert_refused(await _send_raw(service.smtp_port, "", [address], report))
    assert await _stored(service) == before


async def test_submission_refuses_a_nul_in_the_header(
    service: Service, add_councillor: Callable[..., Any]
) -> None:
    author = await add_councillor("Zerowy", "Bajt")
    raw = _raw("resident@example.org", f"Radny <{author.address}>")
    before = await _stored(service)
    _assert_refused(
        await _send_raw(
            service.submission_port,
            author.address,
            ["resident@example.org"],
            raw,
            login=(author.address, author.password),
        )
    )
    assert await _stored(service) == before
