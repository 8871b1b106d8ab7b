"""Port 25 as an attacker tries it, on the real stack with real SMTP clients (issue #13).

The service checks SPF/DKIM against a DNS server on loopback (``dns_zone``): example.org, the
residents' domain, sends from 127.0.0.1 (spf=pass); gmail.example does not (spf=fail), so a
message "from" it is a forgery. Acknowledgements go to the local capture.
"""

from __future__ import annotations

import asyncio
import shutil
import smtplib
from collections.abc import AsyncIterator, Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import func, select

from mailsvc.app import Service, start_service
from mailsvc.config import Settings
from mailsvc.relay.delivery import capture
from mailsvc.storage.tables import messages, relay_log
from provisioning.directory import Directory

from .conftest import make_message, wait_for_inbox
from .dns_zone import ResidentDns, resident_dns
from .test_inbound_protocol import Wire, greet
from .test_submission import submit

__all__ = ["resident_dns"]  # a fixture, used by name

FORGED = "victim@gmail.example"
SPAM_SUBJECT = "BUY CHEAP PILLS http://pills.example/buy"


@pytest.fixture
def secured(settings: Settings, resident_dns: ResidentDns) -> Callable[..., Settings]:
    """Settings with the checks on against the zone, acknowledgements to the capture."""
    resident_dns.spf("gmail.example", "v=spf1 ip4:192.0.2.1 -all")
    resident_dns.spf("example.net")
    resident_dns.spf("example.com")

    def make(**smtp: Any) -> Settings:
        relay = smtp.pop("relay", {})
        s = settings.with_changes(
            relay={"acknowledge": True, **relay},
            smarthost={"port": 0},
            smtp={**resident_dns.smtp_settings(), **smtp},
        )
        shutil.rmtree(capture.capture_dir(s.var_dir), ignore_errors=True)
        return s

    return make


@pytest.fixture
async def run(directory: Directory) -> AsyncIterator[Callable[[Settings], Any]]:
    started: list[Service] = []

    async def start(settings: Settings) -> Service:
        svc = await start_service(settings, scheduler=False)
        started.append(svc)
        return svc

    yield start
    for svc in started:
        await svc.stop()


async def send(port: int, sender: str, recipients: list[str], msg: EmailMessage) -> Any:
    """A real client (smtplib) with the envelope sender given."""

    def go() -> Any:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo("mail.example.org")
            return client.send_message(msg, sender, recipients)

    return await asyncio.to_thread(go)


async def notes(svc: Service) -> dict[str, str | None]:
    """The relay log's auto_reply per sender, after the upkeep job's copy."""
    await svc.parts.relay_log.flush()
    await svc.parts.relay_log.refresh_status()
    async with svc.engine.connect() as conn:
        rows = (await conn.execute(select(relay_log.c.sender, relay_log.c.auto_reply))).all()
    return {sender: note for sender, note in rows}


async def settled_notes(svc: Service, senders: set[str], within: float = 10.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = await notes(svc)
        if all(found.get(s) for s in senders) or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.1)


async def count_origin(svc: Service, origin: str) -> int:
    async with svc.engine.connect() as conn:
        query = select(func.count()).select_from(messages).where(messages.c.origin == origin)
        return int((await conn.execute(query)).scalar_one())


def captured(settings: Settings) -> list[Any]:
    return capture.list_captured(capture.capture_dir(settings.var_dir))


async def captured_at_least(settings: Settings, count: int, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if len(captured(settings)) >= count or asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.1)


# -- acknowledgements -----------------------------------------------------------------------


async def test_a_forged_sender_gets_no_acknowledgement_and_the_relay_log_says_why(
    secured: Callable[..., Settings], run: Any, add_councillor: Callable[..., Any]
) -> None:
    settings = secured()
    svc = await run(settings)
    account = await add_councillor("Anna", "Celna")
    msg = make_message(account.address, SPAM_SUBJECT)
    assert await send(svc.smtp_port, FORGED, [account.address], msg) == {}
    # The councillor gets it (the checks never refuse a resident's mail) ...
    assert len(await wait_for_inbox(settings, account.address, account.password)) == 1
    found = await settled_notes(svc, {FORGED})
    # ... but the victim named in MAIL FROM gets nothing, and the log says why.
    assert captured(settings) == [] and await count_origin(svc, "ack") == 0
    note = found[FORGED]
    assert note is not None and note.startswith("no acknowledgement: sender not authenticated")
    assert "spf=fail" in note


async def test_an_spf_pass_sender_is_acknowledged_without_a_word_of_its_subject(
    secured: Callable[..., Settings], run: Any, add_councillor: Callable[..., Any]
) -> None:
    settings = secured()
    svc = await run(settings)
    account = await add_councillor("Adam", "Jawny")
    msg = make_message(account.address, SPAM_SUBJECT, "Kup teraz: http://pills.example/buy\n")
    assert await send(svc.smtp_port, "jan@example.org", [account.address], msg) == {}
    found = await settled_notes(svc, {"jan@example.org"})
    await captured_at_least(settings, 1)  # the acknowledgement is queued, then delivered
    acks = captured(settings)
    assert len(acks) == 1 and acks[0].recipients == ("jan@example.org",)
    ack = message_from_bytes(acks[0].message, policy=policy.default)
    assert str(ack["Subject"]) == "Potwierdzenie dostarczenia"
    assert b"PILLS" not in acks[0].message and b"pills.example" not in acks[0].message
    assert (found["jan@example.org"] or "").startswith("acknowledged as ")


async def test_acknowledgements_stop_at_the_hourly_caps(
    secured: Callable[..., Settings], run: Any, add_councillor: Callable[..., Any]
) -> None:
    settings = secured(
        relay={"acknowledge_max_per_hour": 3, "acknowledge_max_per_domain_per_hour": 2}
    )
    svc = await run(settings)
    account = await add_councillor("Ewa", "Limitowana")
    senders = ["a@example.org", "b@example.org", "c@example.org", "d@example.net", "e@example.com"]
    for n, sender in enumerate(senders):
        msg = make_message(account.address, f"Sprawa {n}")
        assert await send(svc.smtp_port, sender, [account.address], msg) == {}
        # One at a time: the order decides which cap refuses which.
        await settled_notes(svc, {sender})
    found = await notes(svc)
    assert sorted(a.recipients[0] for a in captured(settings)) == [
        "a@example.org",
        "b@example.org",
        "d@example.net",
    ]
    assert found["c@example.org"] == (
        "no acknowledgement: hourly cap for example.org reached (2 acknowledgements)"
    )
    assert found["e@example.com"] == (
        "no acknowledgement: hourly cap reached (3 acknowledgements in total)"
    )


# -- bounces after acceptance -----------------------------------------------------------------


async def test_no_bounce_to_a_forged_sender_after_acceptance(
    secured: Callable[..., Settings],
    run: Any,
    add_councillor: Callable[..., Any],
    directory: Directory,
    local_stack: Any,
) -> None:
    """Accepted while Dovecot is down, then the mailbox is gone: the delivery fails for good.
    The authenticated sender gets a DSN, the forged one nothing."""
    settings = secured(relay={"acknowledge": False})
    svc = await run(settings)
    account = await add_councillor("Olga", "Odeszla")
    local_stack.stop_service("dovecot")
    try:
        for sender in (FORGED, "jan@example.org"):
            msg = make_message(account.address, "Sprawa")
            assert await send(svc.smtp_port, sender, [account.address], msg) == {}
        await directory.delete(account.dn)
    finally:
        local_stack.start_service("dovecot")
    found = await settled_notes(svc, {FORGED}, within=20.0)
    assert found[FORGED] is not None
    assert found[FORGED].startswith("no bounce: sender not authenticated (spf=fail")
    await captured_at_least(settings, 1)
    await asyncio.sleep(0.3)
    bounces = captured(settings)
    assert [(b.mail_from, b.recipients) for b in bounces] == [("", ("jan@example.org",))]
    dsn = message_from_bytes(bounces[0].message, policy=policy.default)
    assert dsn.get_content_type() == "multipart/report"
    assert await count_origin(svc, "dsn") == 1


# -- our own domain -----------------------------------------------------------------------------


async def test_own_domain_spoof_is_refused_at_port_25_and_accepted_through_submission(
    secured: Callable[..., Settings], run: Any, add_councillor: Callable[..., Any]
) -> None:
    settings = secured()
    svc = await run(settings)
    chair = await add_councillor("Piotr", "Przewodniczący")
    member = await add_councillor("Maria", "Radna")
    msg = EmailMessage()
    msg["From"] = f"Przewodniczący <{chair.address}>"
    msg["To"] = member.address
    msg["Subject"] = "Pilne: przelew"
    msg.set_content("Proszę o pilny przelew.\n")

    # The envelope claims our domain: refused at MAIL FROM.
    with pytest.raises(smtplib.SMTPSenderRefused) as sender_refused:
        await send(svc.smtp_port, chair.address, [member.address], msg)
    assert sender_refused.value.smtp_code == 550
    text = sender_refused.value.smtp_error
    assert text.startswith(b"5.7.1") and b"submission port" in text

    # A foreign envelope with our domain in From: refused at the end of DATA.
    with pytest.raises(smtplib.SMTPDataError) as data_refused:
        await send(svc.smtp_port, "jan@example.org", [member.address], msg)
    assert data_refused.value.smtp_code == 550
    assert data_refused.value.smtp_error.startswith(b"5.7.1")
    assert settings.domain.encode() in data_refused.value.smtp_error
    assert b"submission port" in data_refused.value.smtp_error

    # The same message from the chair, authenticated on the submission port, is delivered.
    assert (
        await submit(
            svc.submission_port, chair.address, chair.password, chair.address, [member.address], msg
        )
        == {}
    )
    inbox = await wait_for_inbox(settings, member.address, member.password)
    assert len(inbox) == 1 and b"Pilne: przelew" in inbox[0]


async def test_own_domain_mail_that_passes_spf_for_it_is_accepted_on_port_25(
    secured: Callable[..., Settings],
    run: Any,
    add_councillor: Callable[..., Any],
    resident_dns: ResidentDns,
) -> None:
    """A system of the council's own, sending from an address its SPF names, still can."""
    settings = secured()
    resident_dns.spf(settings.domain)
    svc = await run(settings)
    member = await add_councillor("Jan", "Odbiorca")
    msg = make_message(member.address, "Formularz")
    del msg["From"]
    msg["From"] = f"formularz@{settings.domain}"
    assert await send(svc.smtp_port, f"formularz@{settings.domain}", [member.address], msg) == {}
    assert len(await wait_for_inbox(settings, member.address, member.password)) == 1


# -- enumeration and bounds ---------------------------------------------------------------------


async def test_after_the_allowed_misses_unknown_and_ended_mandates_answer_alike(
    secured: Callable[..., Settings],
    run: Any,
    add_councillor: Callable[..., Any],
    directory: Directory,
) -> None:
    settings = secured(enumeration_misses=2, max_bad_commands=50)
    svc = await run(settings)
    ended = await add_councillor("Stefan", "Były")
    await directory.set_active(ended.dn, False)
    unknown = f"nikt.taki@{settings.domain}"
    wire = await greet(svc.smtp_port)
    await wire.cmd("EHLO mail.example.org")
    assert (await wire.cmd("MAIL FROM:<jan@example.org>")).startswith("250")
    # Within the allowance: each says what it is.
    assert (await wire.cmd(f"RCPT TO:<{unknown}>")).startswith("550 5.1.1")
    assert (await wire.cmd(f"RCPT TO:<{ended.address}>")).startswith("550 5.1.6")
    # Past it: one reply for both (only the address echoed differs).
    late_unknown = await wire.cmd(f"RCPT TO:<{unknown}>")
    late_ended = await wire.cmd(f"RCPT TO:<{ended.address}>")
    await wire.close()
    assert late_unknown.replace(unknown, "X") == late_ended.replace(ended.address, "X")
    assert late_unknown.startswith("550 5.1.1") and settings.office_address in late_unknown
    # The count is the client's, not the connection's.
    wire = await greet(svc.smtp_port)
    await wire.cmd("EHLO mail.example.org")
    await wire.cmd("MAIL FROM:<jan@example.org>")
    again = await wire.cmd(f"RCPT TO:<{ended.address}>")
    await wire.close()
    assert again == late_ended


async def test_refused_recipients_count_as_bad_commands_and_close_the_connection(
    secured: Callable[..., Settings], run: Any
) -> None:
    settings = secured(max_bad_commands=3)
    svc = await run(settings)
    wire = await greet(svc.smtp_port)
    await wire.cmd("EHLO mail.example.org")
    await wire.cmd("MAIL FROM:<jan@example.org>")
    for name in ("adam", "anna"):
        assert (await wire.cmd(f"RCPT TO:<{name}@{settings.domain}>")).startswith("550")
    await wire.send(f"RCPT TO:<agata@{settings.domain}>\r\n".encode())
    assert (await wire.reply()).startswith("550")
    assert (await wire.reply()).startswith("421 4.7.0")
    assert await wire.closed()
    await wire.close()


async def test_a_session_ends_after_its_absolute_time_however_busy(
    secured: Callable[..., Settings], run: Any
) -> None:
    settings = secured(session_max_seconds=1.0, timeout=60.0)
    svc = await run(settings)
    wire: Wire = await greet(svc.smtp_port)
    await wire.cmd("EHLO mail.example.org")
    started = asyncio.get_running_loop().time()
    last = ""
    with pytest.raises(ConnectionError):
        for _ in range(100):  # a busy client: a command every 0.1 s, never idle
            last = await wire.cmd("NOOP")
            await asyncio.sleep(0.1)
    assert last.startswith("421 4.7.0 Session time limit")
    assert 0.9 < asyncio.get_running_loop().time() - started < 5
    await wire.close()
