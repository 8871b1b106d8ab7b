"""Outbound mail on the real stack: the smarthost route, bounces, retries, acknowledgements.

The smarthost is a real aiosmtpd server started in the test's loop on port 0 (``smtp_sink``),
the mailbox store the session's Dovecot, the directory its slapd.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from mailsvc.app import Service, start_service
from mailsvc.config import Settings
from mailsvc.relay.delivery import capture
from mailsvc.relay.delivery.smarthost import SmarthostClient, SmarthostUnavailable
from mailsvc.relay.smtp.tls import ensure_self_signed
from mailsvc.storage import acks
from mailsvc.storage.tables import acknowledgements, deliveries, messages
from provisioning.directory import Directory

from .conftest import make_message, smtp_send, wait_for_inbox
from .dns_zone import ResidentDns, resident_dns
from .smtp_sink import Sink, running_sink

__all__ = ["resident_dns"]  # a fixture, used by name

EXTERNAL = "anna@gmina.example"
RESIDENT = "jan@example.org"


def parse(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def report_parts(dsn: EmailMessage) -> tuple[str, list[Message], str]:
    """(human-readable text, delivery-status blocks, quoted original header) of a DSN."""
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = list(dsn.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    blocks = parts[1].get_payload()
    assert isinstance(blocks, list)
    headers = parts[2].get_payload(decode=True)
    assert isinstance(headers, bytes)
    text = parts[0].get_content()
    return text, blocks, headers.decode()


def submitted(sender: str, to: str, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="test.example")
    msg.set_content("Treść.\n")
    return msg.as_bytes()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    async with running_sink() as s:
        yield s


@pytest.fixture
def outbound_settings(settings: Settings, sink: Sink) -> Settings:
    return settings.with_changes(smarthost={"host": "127.0.0.1", "port": sink.port})


@pytest.fixture
async def outbound(outbound_settings: Settings, directory: Directory) -> AsyncIterator[Service]:
    """The service with its smarthost pointed at the sink."""
    svc = await start_service(outbound_settings, scheduler=False)
    yield svc
    await svc.stop()


def as_authenticated(settings: Settings, sender: str, body: bytes) -> bytes:
    """``body`` as the inbound server stores it from a sender that passed SPF: with our
    Authentication-Results field first (the worker answers only such senders)."""
    results = (
        f"Authentication-Results: {settings.smtp_hostname}; spf=pass smtp.mailfrom={sender};"
        " dkim=none; dmarc=none\r\n"
    )
    return results.encode() + body


async def queue_and_wake(svc: Service, sender: str, rcpts: list[str], body: bytes) -> str:
    queue_id = await svc.queue.enqueue(sender, rcpts, body, origin="submission")
    svc.workers.wake()
    return queue_id


async def wait_status(svc: Service, queue_id: str, done: Callable[[list[str]], bool]) -> Any:
    """Poll `queue show` until the statuses of ``queue_id`` satisfy ``done``."""
    for _ in range(300):
        detail = await svc.queue.show(queue_id)
        assert detail is not None
        if done([d.status for d in detail.deliveries]):
            return detail
        await asyncio.sleep(0.05)
    raise AssertionError(f"queue {queue_id}: still {[d.status for d in detail.deliveries]}")


async def count_messages(svc: Service, origin: str | None = None) -> int:
    query = select(func.count()).select_from(messages)
    if origin is not None:
        query = query.where(messages.c.origin == origin)
    async with svc.engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


# -- routes ----------------------------------------------------------------------------------


async def test_external_recipients_go_to_the_smarthost_in_one_transaction_local_ones_to_lmtp(
    outbound: Service, sink: Sink, settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    author = await add_councillor("Maria", "Wiśniewska")
    colleague = await add_councillor("Piotr", "Wójcik")
    rcpts = [EXTERNAL, "biuro@powiat.example", colleague.address]
    queue_id = await queue_and_wake(
        outbound, author.address, rcpts, submitted(author.address, EXTERNAL, "Odpowiedź")
    )
    got = await sink.handler.wait_for(1)
    assert len(got) == 1 and sink.handler.transactions == 1
    assert got[0].mail_from == author.address
    assert got[0].rcpt_tos == [EXTERNAL, "biuro@powiat.example"]
    assert parse(got[0].data)["Subject"] == "Odpowiedź"
    inbox = await wait_for_inbox(settings, colleague.address, colleague.password)
    assert [parse(m)["Subject"] for m in inbox] == ["Odpowiedź"]
    detail = await wait_status(outbound, queue_id, lambda s: s == ["delivered"] * 3)
    assert {(d.recipient, d.route) for d in detail.deliveries} == {
        (EXTERNAL, "smtp"),
        ("biuro@powiat.example", "smtp"),
        (colleague.address, "lmtp"),
    }
    assert detail.status == "done" and not detail.body_kept


async def test_smarthost_with_starttls_and_auth(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path, "sink.test")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False  # the sink listens on 127.0.0.1, the cert names sink.test
    async with running_sink(starttls=server_ctx, credentials=("rada", "tajne")) as s:
        client = SmarthostClient(
            "127.0.0.1",
            s.port,
            security="starttls",
            username="rada",
            password="tajne",
            tls_context=client_ctx,
        )
        try:
            replies = await client.deliver("a@rada.example", [EXTERNAL], b"Subject: x\r\n\r\nx\r\n")
            # The kept connection serves a second message too.
            again = await client.deliver("a@rada.example", [EXTERNAL], b"Subject: y\r\n\r\ny\r\n")
        finally:
            await client.close()
        assert replies[EXTERNAL].code == 250 and again[EXTERNAL].code == 250
        assert [m.rcpt_tos for m in s.handler.messages] == [[EXTERNAL], [EXTERNAL]]

        wrong = SmarthostClient(
            "127.0.0.1",
            s.port,
            security="starttls",
            username="rada",
            password="zle",
            tls_context=client_ctx,
        )
        with pytest.raises(SmarthostUnavailable, match="AUTH"):
            await wrong.deliver("a@rada.example", [EXTERNAL], b"Subject: x\r\n\r\nx\r\n")


async def test_smarthost_with_implicit_tls(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path, "sink.test")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False
    async with running_sink(implicit_tls=server_ctx) as s:
        client = SmarthostClient("127.0.0.1", s.port, security="tls", tls_context=client_ctx)
        try:
            replies = await client.deliver("", [EXTERNAL], b"Subject: x\r\n\r\nx\r\n")
        finally:
            await client.close()
    assert replies[EXTERNAL].code == 250
    assert s.handler.messages[0].mail_from == ""


async def test_unreachable_smarthost_defers(
    settings: Settings, directory: Directory, add_councillor: Callable[..., Any]
) -> None:
    async with running_sink() as gone:
        port = gone.port  # a port that surely refuses connections once the sink is closed
    svc = await start_service(settings.with_changes(smarthost={"port": port}), scheduler=False)
    try:
        author = await add_councillor("Ewa", "Lewandowska")
        queue_id = await queue_and_wake(
            svc, author.address, [EXTERNAL], submitted(author.address, EXTERNAL, "Czeka")
        )
        detail = await wait_status(svc, queue_id, lambda s: s == ["deferred"])
        assert detail.deliveries[0].last_reply.startswith("451 4.4.1")
    finally:
        await svc.stop()


# -- bounces ---------------------------------------------------------------------------------


async def test_5xx_from_the_smarthost_bounces_to_a_local_sender_through_lmtp(
    outbound: Service, sink: Sink, settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    author = await add_councillor("Zofia", "Kamińska")
    sink.handler.rcpt_replies[EXTERNAL] = "550 5.1.1 <anna@gmina.example>: no such user"
    queue_id = await queue_and_wake(
        outbound, author.address, [EXTERNAL], submitted(author.address, EXTERNAL, "Wniosek")
    )
    inbox = await wait_for_inbox(settings, author.address, author.password)
    assert len(inbox) == 1
    dsn = parse(inbox[0])
    assert dsn["Return-Path"] == "<>"  # Dovecot records MAIL FROM:<>
    assert dsn["From"].addresses[0].addr_spec == f"MAILER-DAEMON@{settings.domain}"
    assert dsn["To"].addresses[0].addr_spec == author.address
    assert dsn["Auto-Submitted"] == "auto-replied"
    assert str(dsn["Subject"]) == "Niedostarczona wiadomość: Wniosek"
    text, blocks, headers = report_parts(dsn)
    assert "Nie udało się dostarczyć" in text and EXTERNAL in text
    assert blocks[0]["Reporting-MTA"] == f"dns; {settings.smtp_hostname}"
    assert blocks[0]["Arrival-Date"]
    assert blocks[1]["Final-Recipient"] == f"rfc822; {EXTERNAL}"
    assert blocks[1]["Action"] == "failed"
    assert blocks[1]["Status"] == "5.1.1"
    assert blocks[1]["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    assert "Subject: Wniosek" in headers and "Treść" not in headers
    detail = await outbound.queue.show(queue_id)
    assert detail is not None and [d.status for d in detail.deliveries] == ["failed"]
    assert await count_messages(outbound, "dsn") == 1
    assert sink.handler.messages == []


async def test_lmtp_5xx_bounces_to_an_external_sender_through_the_smarthost_with_null_path(
    outbound: Service, sink: Sink, settings: Settings
) -> None:
    nobody = f"nikt.taki@{settings.domain}"  # Dovecot refuses it at RCPT
    original = make_message(nobody, "Pytanie o budżet")
    original["Message-ID"] = "<pytanie@example.org>"
    body = as_authenticated(settings, RESIDENT, original.as_bytes())
    await outbound.queue.enqueue(RESIDENT, [nobody], body, client="192.0.2.7")
    outbound.workers.wake()
    got = await sink.handler.wait_for(1)
    assert len(got) == 1
    assert got[0].mail_from == "" and got[0].rcpt_tos == [RESIDENT]
    dsn = parse(got[0].data)
    _, blocks, headers = report_parts(dsn)
    assert blocks[1]["Final-Recipient"] == f"rfc822; {nobody}"
    assert blocks[1]["Status"].startswith("5.")
    assert blocks[1]["Diagnostic-Code"].startswith("smtp; 550")
    assert "Message-ID: <pytanie@example.org>" in headers


async def test_a_null_sender_message_that_fails_gets_no_bounce(
    outbound: Service, sink: Sink, settings: Settings
) -> None:
    nobody = f"nikt.taki@{settings.domain}"
    queue_id = await outbound.queue.enqueue("", [nobody], make_message(nobody, "x").as_bytes())
    outbound.workers.wake()
    await wait_status(outbound, queue_id, lambda s: s == ["failed"])
    await asyncio.sleep(0.3)
    assert await count_messages(outbound) == 1
    assert sink.handler.messages == []


async def test_a_bounce_that_cannot_be_delivered_is_not_bounced_again(
    outbound: Service, sink: Sink, settings: Settings
) -> None:
    # The resident's server refuses our bounce: it has a null sender, so that is the end.
    sink.handler.rcpt_replies[RESIDENT] = "550 5.1.1 no such user"
    nobody = f"nikt.taki@{settings.domain}"
    body = as_authenticated(settings, RESIDENT, make_message(nobody, "x").as_bytes())
    await outbound.queue.enqueue(RESIDENT, [nobody], body, client="192.0.2.7")
    outbound.workers.wake()
    for _ in range(100):
        rows = await outbound.queue.list_deliveries()
        if [r.status for r in rows] == ["failed", "failed"]:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    rows = await outbound.queue.list_deliveries()
    assert [(r.recipient, r.status) for r in rows] == [(nobody, "failed"), (RESIDENT, "failed")]
    assert await count_messages(outbound) == 2


async def test_4xx_then_success_is_delivered_after_a_retry(
    outbound: Service, sink: Sink, add_councillor: Callable[..., Any]
) -> None:
    author = await add_councillor("Adam", "Nowak")
    sink.handler.data_replies.append("451 4.3.0 try again later")
    queue_id = await queue_and_wake(
        outbound, author.address, [EXTERNAL], submitted(author.address, EXTERNAL, "Ponownie")
    )
    detail = await wait_status(outbound, queue_id, lambda s: s == ["delivered"])
    assert detail.deliveries[0].attempts == 2
    assert len(sink.handler.messages) == 1 and sink.handler.transactions == 2
    assert await count_messages(outbound, "dsn") == 0


async def test_retry_period_expiry_fails_and_bounces(
    settings: Settings, directory: Directory, sink: Sink, add_councillor: Callable[..., Any]
) -> None:
    sink.handler.data_reply_always = "451 4.3.0 try again later"
    svc = await start_service(
        settings.with_changes(
            smarthost={"port": sink.port}, delivery={"retry_period": 1.0, "retry_initial": 0.2}
        ),
        scheduler=False,
    )
    try:
        author = await add_councillor("Ewa", "Zielińska")
        queue_id = await queue_and_wake(
            svc, author.address, [EXTERNAL], submitted(author.address, EXTERNAL, "Termin")
        )
        detail = await wait_status(svc, queue_id, lambda s: s == ["failed"])
        assert detail.deliveries[0].attempts >= 2
        assert detail.deliveries[0].last_reply.startswith("451")
        inbox = await wait_for_inbox(settings, author.address, author.password)
        assert len(inbox) == 1
        text, blocks, _ = report_parts(parse(inbox[0]))
        assert blocks[1]["Action"] == "failed"
        assert blocks[1]["Status"] == "4.4.7"
        assert blocks[1]["Diagnostic-Code"] == "smtp; 451 4.3.0 try again later"
        assert "Zakończyliśmy próby" in text
    finally:
        await svc.stop()


# -- acknowledgements ------------------------------------------------------------------------


@pytest.fixture
def ack_settings(settings: Settings, resident_dns: ResidentDns) -> Settings:
    """The embedded default: acknowledgements on, smarthost = the local capture; the checks
    on, against a zone in which the residents' domain passes SPF (acknowledgements go only to
    authenticated senders)."""
    s = settings.with_changes(
        relay={"acknowledge": True}, smarthost={"port": 0}, smtp=resident_dns.smtp_settings()
    )
    shutil.rmtree(capture.capture_dir(s.var_dir), ignore_errors=True)
    return s


@pytest.fixture
async def ack_service(ack_settings: Settings, directory: Directory) -> AsyncIterator[Service]:
    svc = await start_service(ack_settings, scheduler=False)
    yield svc
    await svc.stop()


async def captured(settings: Settings, count: int, within: float = 10.0) -> list[Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        found = capture.list_captured(capture.capture_dir(settings.var_dir))
        if len(found) >= count or loop.time() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_a_resident_gets_one_acknowledgement_per_councillor_per_day_in_the_capture(
    ack_service: Service, ack_settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Łukasz", "Żółć")
    first = make_message(account.address, "Dziura w jezdni")
    first["Message-ID"] = "<dziura-1@example.org>"
    first["References"] = "<wczesniej@example.org>"
    assert await smtp_send(ack_service.smtp_port, [account.address], first) == {}
    await wait_for_inbox(ack_settings, account.address, account.password)
    found = await captured(ack_settings, 1)
    assert len(found) == 1
    ack = found[0]
    assert ack.path.name.endswith(".eml") and ack.path.parent.name == "capture"
    assert ack.mail_from == "" and ack.recipients == (RESIDENT,)
    msg = parse(ack.message)
    assert str(msg["Subject"]) == "Potwierdzenie dostarczenia"  # nothing of the sender's
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == "<dziura-1@example.org>"
    assert msg["References"] == "<wczesniej@example.org> <dziura-1@example.org>"
    assert msg["To"].addresses[0].addr_spec == RESIDENT
    body = msg.get_body()
    assert body is not None
    text = body.get_content()
    assert "Łukasz Żółć" in text and account.address in text and "o godz." in text

    second = make_message(account.address, "Jeszcze jedno")
    assert await smtp_send(ack_service.smtp_port, [account.address], second) == {}
    await wait_for_inbox(ack_settings, account.address, account.password, count=2)
    await asyncio.sleep(0.5)
    assert len(capture.list_captured(capture.capture_dir(ack_settings.var_dir))) == 1
    async with ack_service.engine.connect() as conn:
        keys = (await conn.execute(select(acknowledgements.c.sender))).all()
    assert keys == [(RESIDENT,)]


async def test_one_message_to_two_councillors_is_acknowledged_once_naming_both(
    ack_service: Service, ack_settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    a = await add_councillor("Maria", "Wiśniewska")
    b = await add_councillor("Piotr", "Wójcik")
    await smtp_send(ack_service.smtp_port, [a.address, b.address], make_message(a.address, "Oboje"))
    found = await captured(ack_settings, 1)
    assert len(found) == 1
    body = parse(found[0].message).get_body()
    assert body is not None
    text = body.get_content()
    assert a.address in text and b.address in text and "skrzynek" in text


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("List-Id", "Mieszkancy <mieszkancy.lists.example.org>"),
        ("List-Unsubscribe", "<mailto:leave@lists.example.org>"),
        ("Auto-Submitted", "auto-generated"),
        ("Auto-Submitted", "auto-replied"),
        ("Precedence", "bulk"),
    ],
)
async def test_list_bulk_and_automatic_mail_gets_no_acknowledgement(
    ack_service: Service,
    ack_settings: Settings,
    add_councillor: Callable[..., Any],
    header: str,
    value: str,
) -> None:
    account = await add_councillor("Anna", "Lis")
    msg = make_message(account.address, "Biuletyn")
    msg[header] = value
    assert await smtp_send(ack_service.smtp_port, [account.address], msg) == {}
    await wait_for_inbox(ack_settings, account.address, account.password)
    await asyncio.sleep(0.5)
    assert capture.list_captured(capture.capture_dir(ack_settings.var_dir)) == []
    assert await count_messages(ack_service, "ack") == 0


async def test_acknowledgement_in_english(
    settings: Settings,
    directory: Directory,
    sink: Sink,
    add_councillor: Callable[..., Any],
    resident_dns: ResidentDns,
) -> None:
    svc = await start_service(
        settings.with_changes(
            language="en",
            relay={"acknowledge": True},
            smarthost={"port": sink.port},
            smtp=resident_dns.smtp_settings(),
        ),
        scheduler=False,
    )
    try:
        account = await add_councillor("Jan", "Kowalski")
        await smtp_send(svc.smtp_port, [account.address], make_message(account.address, "Pothole"))
        got = await sink.handler.wait_for(1)
        assert len(got) == 1 and got[0].mail_from == ""
        msg = parse(got[0].data)
        assert str(msg["Subject"]) == "Delivery confirmation"
        assert msg["Content-Language"] == "en"
    finally:
        await svc.stop()


async def test_delivery_rows_record_the_route_and_the_origin(
    outbound: Service, settings: Settings
) -> None:
    await outbound.queue.enqueue(RESIDENT, [f"x@{settings.domain}", EXTERNAL], b"x", "192.0.2.1")
    async with outbound.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(deliveries.c.recipient, deliveries.c.route, messages.c.origin)
                .select_from(deliveries.join(messages))
                .order_by(deliveries.c.id)
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (f"x@{settings.domain}", "lmtp", "inbound"),
        (EXTERNAL, "smtp", "inbound"),
    ]


async def test_acknowledgement_keys_older_than_the_log_retention_are_forgotten(
    ack_service: Service, ack_settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Olga", "Stara")
    old_day = date.today() - timedelta(days=ack_settings.relay.log_retention_days + 1)
    async with ack_service.engine.begin() as conn:
        for day in (old_day, date.today() - timedelta(days=1)):
            await conn.run_sync(
                lambda sync, day=day: acks.claim(
                    sync,
                    sender="ktos@example.org",
                    councillor=account.address,
                    day=day,
                    original_queue_id="old",
                    now=datetime.now(UTC).replace(tzinfo=None),
                )
            )
    await smtp_send(ack_service.smtp_port, [account.address], make_message(account.address, "x"))
    assert len(await captured(ack_settings, 1)) == 1
    async with ack_service.engine.connect() as conn:
        days = (await conn.execute(select(acknowledgements.c.day))).scalars().all()
    assert old_day not in days and len(days) == 2


async def test_the_once_a_day_key_is_taken_by_exactly_one_of_concurrent_workers(
    outbound: Service,
) -> None:
    async def claim() -> bool:
        def take(conn: Connection) -> bool:
            return acks.claim(
                conn,
                sender="Jan@Example.org",
                councillor="rada@x.example",
                day=date(2026, 5, 7),
                original_queue_id="q",
                now=datetime.now(UTC).replace(tzinfo=None),
            )

        # As the delivery workers take it: a unit of work on the queue's database thread.
        return await outbound.queue.units.run(take)

    results = await asyncio.gather(*(claim() for _ in range(6)))
    assert sorted(results) == [False] * 5 + [True]


async def test_smarthost_certificate_is_verified_against_the_configured_ca_file(
    tmp_path: Path, settings: Settings
) -> None:
    from mailsvc.relay.delivery.worker import DeliveryWorkers
    from mailsvc.storage.queue import ROUTE_SMTP

    cert, key = ensure_self_signed(tmp_path / "good", "localhost")
    other, _ = ensure_self_signed(tmp_path / "other", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    async with running_sink(starttls=server_ctx) as s:
        for ca_file, trusted in ((cert, True), (other, False)):
            variant = settings.with_changes(
                smarthost={
                    "host": "localhost",
                    "port": s.port,
                    "security": "starttls",
                    "ca_file": str(ca_file),
                }
            )
            client = DeliveryWorkers(None, variant).client(ROUTE_SMTP)  # type: ignore[arg-type]
            try:
                if trusted:
                    replies = await client.deliver("a@x.example", [EXTERNAL], b"Subject: x\r\n\r\n")
                    assert replies[EXTERNAL].code == 250
                else:
                    with pytest.raises(SmarthostUnavailable):
                        await client.deliver("a@x.example", [EXTERNAL], b"Subject: x\r\n\r\n")
            finally:
                await client.close()
    assert len(s.handler.messages) == 1
