"""The service's own IMAP logins over TLS (clients.imap_security, clients.imap_ca_file): the
opened check as Dovecot's master user and `mailsvc mailbox`, against the session stack's real
Dovecot with its IMAPS listener (stack.imaps_port) and STARTTLS on its imap port. Small scripted
servers stand in for what Dovecot will not do: drop STARTTLS, or inject clear text after it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailsvc.app import Parts, start_service
from mailsvc.config import Settings
from mailsvc.distribution.opened import check_opened
from mailsvc.domain.receipt_states import EventKind
from mailsvc.errors import ConfigError
from mailsvc.mailbox import ImapServer, MailboxFailure, MailboxInsecure, read_inbox
from mailsvc.stack.layout import Paths

from .test_distribution_cli import Cli, cli  # noqa: F401  (the fixture)
from .test_distribution_flow import (
    _all_have,
    councillors,
    read_as_councillor,
    session_with_pdf,
    wait_until,
)
from .test_imapcheck import deliver, scripted_server

pytestmark = pytest.mark.asyncio


def stack_ca(settings: Settings) -> str:
    """The embedded Dovecot's self-signed certificate: the CA file that trusts it."""
    return str(Paths.of(settings.var_dir).dovecot_tls_cert)


def over(settings: Settings, **clients: Any) -> Settings:
    return settings.with_changes(clients={"imap_host": settings.stack.host, **clients})


async def opened_events(parts: Parts, dist_id: int) -> set[int]:
    return await parts.distributions().store.recipients_with_kind(dist_id, EventKind.OPENED)


async def test_the_opened_check_goes_over_imaps_or_starttls_and_never_past_a_bad_certificate(
    settings: Settings,
    parts: Parts,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert settings.stack.imaps_port, "the session stack listens for IMAPS (tests/conftest.py)"
    people = (await councillors(add_councillor))[:2]
    session, _ = await session_with_pdf(parts, tmp_path)
    service = await start_service(settings)
    try:
        svc = service.parts.distributions()
        dist = await svc.schedule(session.number, actor="pytest")
        assert await wait_until(lambda: _all_have(svc.store, dist.id, EventKind.DELIVERED, 2))
    finally:
        await service.stop()
    store = parts.distributions().store
    first, second = people
    await read_as_councillor(settings, first.address, first.password)  # \Seen on its copy

    ca = stack_ca(settings)
    imaps = {"imap_port": settings.stack.imaps_port, "imap_security": "tls"}
    wrong = {
        # Trusted, but for 127.0.0.1 only: "localhost" is another name.
        "Hostname mismatch, certificate is not valid for 'localhost'": over(
            settings, **imaps, imap_ca_file=ca, imap_host="localhost"
        ),
        # For the right name, but nobody vouches for it: the system's CAs do not know it.
        "self-signed certificate": over(settings, **imaps),
    }
    for reason, bad in wrong.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mailsvc.distribution.opened"):
            assert await check_opened(bad, store, now=svc.clock.now()) == 0
        errors = [r.getMessage() for r in caplog.records]
        # One error for the run, not one warning per mailbox: it is the same for all of them.
        assert len(errors) == 1 and caplog.records[0].levelno == logging.ERROR, errors
        assert "nothing recorded" in errors[0] and "certificate did not verify" in errors[0]
        assert reason in errors[0], errors[0]
        assert await opened_events(parts, dist.id) == set()

    good = over(settings, **imaps, imap_ca_file=ca)
    assert await check_opened(good, store, now=svc.clock.now()) == 1
    (opened,) = await opened_events(parts, dist.id)
    (recipient,) = [r for r in await store.recipients(dist.id) if r.id == opened]
    assert recipient.address == first.address
    events = (await store.events([opened]))[opened]
    assert [e.evidence for e in events if e.kind is EventKind.OPENED] == [
        f"IMAP: {recipient.message_id} has \\Seen in folder 'INBOX' of {first.address}"
    ]

    # STARTTLS on the plain port, the same certificate checks.
    await read_as_councillor(settings, second.address, second.password)
    starttls = over(settings, imap_port=settings.stack.imap_port, imap_security="starttls")
    caplog.clear()
    assert await check_opened(starttls, store, now=svc.clock.now()) == 0  # untrusted
    assert "self-signed certificate" in caplog.text
    assert len(await opened_events(parts, dist.id)) == 1
    trusted = over(
        settings, imap_port=settings.stack.imap_port, imap_security="starttls", imap_ca_file=ca
    )
    assert await check_opened(trusted, store, now=svc.clock.now()) == 1
    assert len(await opened_events(parts, dist.id)) == 2


async def test_mailbox_command_reads_over_imaps_and_refuses_an_untrusted_certificate(
    settings: Settings,
    add_councillor: Callable[[str, str], Any],
    cli: Cli,  # noqa: F811
) -> None:
    account = await add_councillor("Anna", "Nowak")
    await deliver(settings, account, "<tls-1@rada.miasto.example>")
    env = {
        "MAILSVC_CLIENTS__IMAP_PORT": str(settings.stack.imaps_port),
        "MAILSVC_CLIENTS__IMAP_SECURITY": "tls",
    }
    login = ("mailbox", "--user", account.address, "--password", account.password)
    run = await cli(*login, env=env)
    assert run.status == 1 and "Traceback" not in run.err
    assert f"IMAP 127.0.0.1:{settings.stack.imaps_port} TLS: the certificate did not verify" in (
        run.err
    )
    run = await cli(*login, env={**env, "MAILSVC_CLIENTS__IMAP_CA_FILE": stack_ca(settings)})
    assert run.status == 0, run.err
    assert "Zawiadomienie o sesji nr 1" in run.out


async def test_clear_text_goes_only_to_loopback() -> None:
    # A documentation address (RFC 5737): refused before any connection is tried.
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(MailboxInsecure) as info:
        await read_inbox("192.0.2.1", 143, "biuro@rada.miasto.example", "secret")
    assert info.value.failure is MailboxFailure.PLAINTEXT_REFUSED
    assert "never in clear over a network" in str(info.value)
    assert loop.time() - started < 1
    with pytest.raises(ConfigError, match=r"clients\.imap_ca_file"):
        ImapServer("imap.example", 993, "tls", "/nonexistent/ca.pem").ssl_context()


# -- what Dovecot will not do: scripted servers --------------------------------------------


async def test_starttls_not_offered_or_followed_by_clear_text_stops_before_the_login(
    settings: Settings,
) -> None:
    context = ImapServer("127.0.0.1", 0, "starttls", stack_ca(settings)).ssl_context()
    assert context is not None
    seen: list[bytes] = []

    def server(capabilities: bytes, after_ok: bytes) -> Any:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"* OK ready\r\n")
            while line := await reader.readline():
                seen.append(line)
                tag, verb = line.split()[:2]
                if verb.upper() == b"CAPABILITY":
                    writer.write(b"* CAPABILITY " + capabilities + b"\r\n" + tag + b" OK\r\n")
                elif verb.upper() == b"STARTTLS":
                    # An attacker's answer to the LOGIN that follows, in the same packet.
                    writer.write(tag + b" OK Begin TLS negotiation now.\r\n" + after_ok)
                else:
                    writer.write(tag + b" BAD unexpected\r\n")

        return handle

    cases = {
        b"IMAP4rev1 AUTH=PLAIN": "does not offer STARTTLS",
        b"IMAP4rev1 STARTTLS": "sent data in clear after its STARTTLS answer",
    }
    for capabilities, message in cases.items():
        seen.clear()
        handler = server(capabilities, b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n")
        async with scripted_server(handler) as port:
            with pytest.raises(MailboxInsecure) as info:
                await read_inbox("127.0.0.1", port, "u", "p", ssl_context=context, starttls=True)
        assert info.value.failure is MailboxFailure.TLS_FAILED
        assert message in str(info.value)
        assert not any(b"LOGIN" in line.upper() for line in seen), seen
