"""The inbound server on the wire: extensions, limits, smuggling, STARTTLS, hostile input.

A raw socket client is used where a library client would hide what is on the wire.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from email import message_from_bytes, policy
from typing import Any

import pytest

from mailsvc.app import Service, start_service
from mailsvc.config import Settings
from mailsvc.mailbox import read_inbox

from .conftest import make_message, smtp_send, wait_for_inbox


class Wire:
    """A minimal SMTP client that sends exactly the bytes it is given."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Wire:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def reply(self, wait: float = 10.0) -> str:
        lines = []
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), wait)
            if not raw:
                raise ConnectionError("closed: " + "\n".join(lines))
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if line[3:4] != "-":
                return "\n".join(lines)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def cmd(self, line: str | bytes) -> str:
        await self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.reply()

    async def closed(self, wait: float = 10.0) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(), wait) == b""
        except (ConnectionError, TimeoutError):
            return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


@pytest.fixture
async def custom_service(settings: Settings, directory: Any) -> AsyncIterator[Callable[..., Any]]:
    """Start the service with changed SMTP settings; stopped after the test."""
    started: list[Service] = []

    async def start(**smtp: Any) -> Service:
        changes = {"authentication_checks": False, **smtp, "port": 0, "directory_cache_seconds": 0}
        svc = await start_service(settings.with_changes(smtp=changes))
        started.append(svc)
        return svc

    yield start
    for svc in started:
        await svc.stop()


async def greet(port: int) -> Wire:
    wire = await Wire.open(port)
    assert (await wire.reply()).startswith("220 ")
    return wire


async def test_ehlo_advertises_the_extensions(service: Service) -> None:
    wire = await greet(service.smtp_port)
    ehlo = await wire.cmd("EHLO client.example.org")
    for keyword in ("SIZE 26214400", "8BITMIME", "SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES"):
        assert keyword in ehlo
    assert "STARTTLS" not in ehlo  # no certificate configured
    assert "AUTH" not in ehlo  # the inbound port never offers AUTH
    await wire.close()


async def test_oversize_messages_get_552_5_3_4(
    custom_service: Callable[..., Any], add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Anna", "Duża")
    svc = await custom_service(max_message_size=2000)
    wire = await greet(svc.smtp_port)
    await wire.cmd("EHLO client.example.org")
    # Declared too big: refused at MAIL.
    assert (await wire.cmd("MAIL FROM:<a@example.org> SIZE=5000")).startswith("552 5.3.4")
    # Too big without a declaration: read to the end, then refused; nothing is queued.
    assert (await wire.cmd("MAIL FROM:<a@example.org>")).startswith("250")
    assert (await wire.cmd(f"RCPT TO:<{account.address}>")).startswith("250")
    assert (await wire.cmd("DATA")).startswith("354")
    await wire.send(b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 0)
    await wire.send((b"y" * 78 + b"\r\n") * 100 + b".\r\n")
    assert (await wire.reply()).startswith("552 5.3.4")
    # The connection stays usable.
    assert (await wire.cmd("NOOP")).startswith("250")
    await wire.close()
    assert await svc.queue.list_deliveries() == []


async def test_too_many_recipients_get_452_4_5_3(
    custom_service: Callable[..., Any], add_councillor: Callable[..., Any]
) -> None:
    accounts = [await add_councillor("Jan", f"Radny{n}") for n in "abc"]
    svc = await custom_service(max_recipients=2)
    wire = await greet(svc.smtp_port)
    await wire.cmd("EHLO client.example.org")
    await wire.cmd("MAIL FROM:<a@example.org>")
    assert (await wire.cmd(f"RCPT TO:<{accounts[0].address}>")).startswith("250")
    assert (await wire.cmd(f"RCPT TO:<{accounts[1].address}>")).startswith("250")
    assert (await wire.cmd(f"RCPT TO:<{accounts[2].address}>")).startswith("452 4.5.3")
    await wire.close()


async def test_connections_per_ip_are_limited_and_freed(
    custom_service: Callable[..., Any],
) -> None:
    svc = await custom_service(max_connections_per_ip=2)
    first, second = await greet(svc.smtp_port), await greet(svc.smtp_port)
    third = await Wire.open(svc.smtp_port)
    assert (await third.reply()).startswith("421 4.7.0")
    assert await third.closed()
    await third.close()
    await first.cmd("QUIT")
    await first.close()
    await asyncio.sleep(0.1)
    fourth = await greet(svc.smtp_port)  # a slot is free again
    for wire in (second, fourth):
        await wire.close()


async def test_message_rate_per_ip_gets_451_4_7_1(
    custom_service: Callable[..., Any], add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Ewa", "Szybka")
    svc = await custom_service(max_messages_per_ip_per_minute=2)
    for n in range(2):
        assert await smtp_send(svc.smtp_port, [account.address], make_message("x", f"m{n}")) == {}
    wire = await greet(svc.smtp_port)
    await wire.cmd("EHLO client.example.org")
    assert (await wire.cmd("MAIL FROM:<a@example.org>")).startswith("451 4.7.1")
    await wire.close()


async def test_repeated_bad_commands_close_the_connection(
    custom_service: Callable[..., Any],
) -> None:
    svc = await custom_service(max_bad_commands=3)
    wire = await greet(svc.smtp_port)
    await wire.cmd("EHLO client.example.org")
    assert (await wire.cmd("FOO")).startswith("500 5.5.1")
    assert (await wire.cmd("RCPT TO:<x@y>")).startswith("503 5.5.1")
    await wire.send(b"BAR\r\n")
    assert (await wire.reply()).startswith("500")
    assert (await wire.reply()).startswith("421 4.7.0")
    assert await wire.closed()
    await wire.close()


async def test_idle_clients_are_disconnected_and_others_still_served(
    custom_service: Callable[..., Any], add_councillor: Callable[..., Any], settings: Settings
) -> None:
    account = await add_councillor("Piotr", "Cierpliwy")
    svc = await custom_service(timeout=1.0)
    idle = await greet(svc.smtp_port)
    assert await idle.closed(wait=5.0)
    await idle.close()
    assert await smtp_send(svc.smtp_port, [account.address], make_message("x", "po")) == {}
    assert len(await wait_for_inbox(settings, account.address, account.password)) == 1


async def test_nul_bytes_and_invalid_utf8_in_commands_get_5xx(
    service: Service, add_councillor: Callable[..., Any], settings: Settings
) -> None:
    account = await add_councillor("Zofia", "Odporna")
    wire = await greet(service.smtp_port)
    await wire.cmd("EHLO client.example.org")
    assert (await wire.cmd(b"MAIL FROM:<a\x00b@example.org>"))[:1] == "5"
    assert (await wire.cmd(b"\xff\xfe\xfd")).startswith("500")
    assert (await wire.cmd(b"RCPT TO:<\xc3\x28@rada.miasto.example>"))[:1] == "5"
    assert (await wire.cmd("NOOP")).startswith("250")
    await wire.close()
    # Another client is served normally meanwhile.
    assert await smtp_send(service.smtp_port, [account.address], make_message("x", "ok")) == {}


SMUGGLING = [
    b"\n.\n",
    b"\r.\r",
    b"\r.\n",
    b"\n.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
]


@pytest.mark.parametrize("ending", SMUGGLING, ids=[repr(e) for e in SMUGGLING])
async def test_smuggled_second_message_is_not_accepted(
    service: Service, settings: Settings, add_councillor: Callable[..., Any], ending: bytes
) -> None:
    victim = await add_councillor("Maria", "Ofiara")
    wire = await greet(service.smtp_port)
    await wire.cmd("EHLO client.example.org")
    await wire.cmd("MAIL FROM:<honest@example.org>")
    await wire.cmd(f"RCPT TO:<{victim.address}>")
    assert (await wire.cmd("DATA")).startswith("354")
    smuggled = (
        b"Subject: first\r\n\r\nhello"
        + ending
        + b"MAIL FROM:<smuggler@evil.example>\r\n"
        + f"RCPT TO:<{victim.address}>\r\n".encode()
        + b"DATA\r\nSubject: smuggled\r\n\r\nspoof\r\n.\r\n"
    )
    await wire.send(smuggled)
    first = await wire.reply()
    assert first.startswith("250 2.0.0")
    # Whatever follows must not be taken as a second transaction.
    assert (await wire.cmd("QUIT")).startswith("221")
    await wire.close()
    inbox = await wait_for_inbox(settings, victim.address, victim.password)
    await asyncio.sleep(0.5)
    inbox = await read_inbox(
        settings.stack.host, settings.stack.imap_port, victim.address, victim.password
    )
    assert len(inbox) == 1
    msg = message_from_bytes(inbox[0], policy=policy.default)
    assert msg["Return-Path"] == "<honest@example.org>"
    assert msg["Subject"] == "first"
    rows = await service.queue.list_deliveries()
    assert len(rows) == 1


async def test_bare_lf_in_data_is_normalised_to_crlf(
    service: Service, settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Jan", "Linuks")
    wire = await greet(service.smtp_port)
    await wire.cmd("EHLO client.example.org")
    await wire.cmd("MAIL FROM:<a@example.org>")
    await wire.cmd(f"RCPT TO:<{account.address}>")
    await wire.cmd("DATA")
    await wire.send(b"Subject: lf\n\nline one\nline two\r\n.\r\n")
    assert (await wire.reply()).startswith("250")
    await wire.close()
    inbox = await wait_for_inbox(settings, account.address, account.password)
    body = inbox[0].split(b"\r\n\r\n", 1)[1]
    assert b"line one\r\nline two\r\n" in inbox[0] and b"\n" not in body.replace(b"\r\n", b"")


async def test_starttls_discards_commands_pipelined_before_it(
    custom_service: Callable[..., Any], settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Tomasz", "Szyfrant")
    svc = await custom_service(tls_cert="auto")
    wire = await greet(svc.smtp_port)
    ehlo = await wire.cmd("EHLO client.example.org")
    assert "STARTTLS" in ehlo
    # The injected MAIL rides in the same packet as STARTTLS.
    await wire.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
    assert (await wire.reply()).startswith("220")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    await wire.writer.start_tls(context)
    ehlo = await wire.cmd("EHLO client.example.org")
    assert "STARTTLS" not in ehlo
    # Had the MAIL been kept, RCPT would be accepted; it must need MAIL first.
    assert (await wire.cmd(f"RCPT TO:<{account.address}>")).startswith("503")
    await wire.cmd("MAIL FROM:<honest@example.org>")
    await wire.cmd(f"RCPT TO:<{account.address}>")
    await wire.cmd("DATA")
    await wire.send(b"Subject: tls\r\n\r\nsecret\r\n.\r\n")
    assert (await wire.reply()).startswith("250")
    await wire.close()
    inbox = await wait_for_inbox(settings, account.address, account.password)
    msg = message_from_bytes(inbox[0], policy=policy.default)
    ours = [h for h in msg.get_all("Received", []) if "(mailsvc)" in h]
    assert "using TLSv1." in ours[0] and "with ESMTPS" in ours[0]


async def test_authentication_results_are_prepended_from_the_dns(
    custom_service: Callable[..., Any], settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    from tests.unit.test_authres import Zone

    account = await add_councillor("Jan", "Sprawdzony")
    loop = asyncio.get_running_loop()
    transport, zone = await loop.create_datagram_endpoint(Zone, local_addr=("127.0.0.1", 0))
    try:
        zone.txt("example.org", "v=spf1 ip4:127.0.0.1 -all")
        zone.txt("_dmarc.example.org", "v=DMARC1; p=reject")
        port = transport.get_extra_info("sockname")[1]
        svc = await custom_service(authentication_checks=True, dns_resolver=f"127.0.0.1:{port}")
        assert await smtp_send(svc.smtp_port, [account.address], make_message("x", "spf")) == {}
        inbox = await wait_for_inbox(settings, account.address, account.password)
    finally:
        transport.close()
    msg = message_from_bytes(inbox[0], policy=policy.default)
    results = str(msg["Authentication-Results"])
    assert results.startswith(settings.smtp_hostname)
    assert "spf=pass smtp.mailfrom=jan@example.org" in results
    assert "dkim=none" in results
    assert "dmarc=pass" in results and "header.from=example.org" in results
    assert ("example.org", "TXT") in zone.queries


async def test_forged_authentication_results_for_our_host_never_reach_the_mailbox(
    custom_service: Callable[..., Any], settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    from tests.unit.test_authres import Zone

    account = await add_councillor("Jan", "Podrobiony")
    ours = settings.smtp_hostname.encode()
    forged = (
        b"Authentication-Results: " + ours.upper() + b";\r\n"
        b"\tdkim=pass header.d=" + settings.domain.encode() + b";\r\n"
        b"\tdmarc=pass header.from=" + settings.domain.encode() + b"\r\n"
    )
    theirs = b"Authentication-Results: mx.gmina.example; spf=pass smtp.mailfrom=jan@example.org\r\n"
    header = (
        b"From: Jan Mieszkaniec <jan@example.org>\r\n"
        + forged
        + f"To: {account.address}\r\n".encode()
        + theirs
        + b"Subject: wynik\r\n"
    )
    body = b"\r\nZa\xc5\x82\xc4\x85czam wynik:\r\n" + forged + b"Pozdrawiam\r\n"
    loop = asyncio.get_running_loop()
    # An empty zone: the checks answer at once, and ours finds no valid DKIM signature.
    transport, _zone = await loop.create_datagram_endpoint(Zone, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        svc = await custom_service(authentication_checks=True, dns_resolver=f"127.0.0.1:{port}")
        wire = await greet(svc.smtp_port)
        await wire.cmd("EHLO resident.example.org")
        assert (await wire.cmd("MAIL FROM:<jan@example.org>")).startswith("250")
        assert (await wire.cmd(f"RCPT TO:<{account.address}>")).startswith("250")
        assert (await wire.cmd("DATA")).startswith("354")
        await wire.send(header + body + b".\r\n")
        assert (await wire.reply()).startswith("250")
        await wire.close()
        inbox = await wait_for_inbox(settings, account.address, account.password)
    finally:
        transport.close()
    # The sender's header without the forged field, then the body: byte for byte.
    assert inbox[0].endswith(header.replace(forged, b"") + body)
    msg = message_from_bytes(inbox[0], policy=policy.compat32)
    results = [" ".join(str(v).split()) for v in msg.get_all("Authentication-Results", [])]
    claiming_ours = [r for r in results if r.lower().startswith(settings.smtp_hostname.lower())]
    assert len(claiming_ours) == 1  # ours, prepended after the checks
    assert "dkim=none" in claiming_ours[0] and "dkim=pass" not in claiming_ours[0]
    assert "mx.gmina.example; spf=pass smtp.mailfrom=jan@example.org" in results


async def test_bounces_with_the_null_sender_reach_the_councillor(
    service: Service, settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Jan", "Odbiorca")
    wire = await greet(service.smtp_port)
    await wire.cmd("EHLO mx.example.org")
    assert (await wire.cmd("MAIL FROM:<>")).startswith("250")
    assert (await wire.cmd(f"RCPT TO:<{account.address}>")).startswith("250")
    await wire.cmd("DATA")
    await wire.send(b"Subject: Undelivered Mail Returned to Sender\r\n\r\nbounce\r\n.\r\n")
    assert (await wire.reply()).startswith("250")
    await wire.close()
    inbox = await wait_for_inbox(settings, account.address, account.password)
    assert message_from_bytes(inbox[0], policy=policy.default)["Return-Path"] == "<>"
