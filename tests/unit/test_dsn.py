"""Bounces (RFC 3464) and acknowledgements (RFC 3834): what is built, and when nothing is sent.

The bounces built here are parsed back with the standard library, the way a receiving mail
program or our own receipts parser reads them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailsvc.config import DEFAULT_CONFIG, Settings, load_settings
from mailsvc.domain.wording import format_duration
from mailsvc.relay.delivery import capture
from mailsvc.relay.delivery.ack import ack_refusal, acknowledgement_day, build_acknowledgement
from mailsvc.relay.delivery.dsn import Failure, bounce_refusal, build_dsn, status_of
from mailsvc.relay.delivery.headers import header_text, parse_header
from mailsvc.relay.delivery.lmtp import Reply
from mailsvc.storage.queue import route_for

WARSAW = ZoneInfo("Europe/Warsaw")

DOMAIN = "rada.miasto.example"
ORIGINAL = (
    b"Received: from resident.example.org ([192.0.2.7])\r\n"
    b"\tby mail.rada.miasto.example (mailsvc); Thu, 26 Nov 2026 14:00:00 +0000\r\n"
    b"From: Jan Mieszkaniec <jan@example.org>\r\n"
    b"To: lukasz.zolc@rada.miasto.example\r\n"
    b"Subject: =?utf-8?q?Dziura_w_jezdni_na_ul=2E_D=C5=82ugiej?=\r\n"
    b"Message-ID: <dziura@example.org>\r\n"
    b"References: <a@example.org> <b@example.org>\r\n"
    b"\r\n"
    b"Prosz\xc4\x99 o pomoc.\r\n"
)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(DEFAULT_CONFIG, env={})


def parse(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def dsn_bytes(settings: Settings, failures: list[Failure], original: bytes = ORIGINAL) -> bytes:
    return build_dsn(
        settings,
        queue_id="0123456789abcdef",
        mail_from="jan@example.org",
        arrival=datetime(2026, 11, 26, 14, 0, 5),
        original=original,
        failures=failures,
    ).as_bytes()


def status_blocks(msg: EmailMessage) -> list[Message]:
    part = next(p for p in msg.iter_parts() if p.get_content_type() == "message/delivery-status")
    blocks = part.get_payload()
    assert isinstance(blocks, list)
    return blocks


def test_dsn_is_a_multipart_report_with_three_parts_in_order(settings: Settings) -> None:
    msg = parse(dsn_bytes(settings, [Failure("x@gmina.example", Reply(550, "5.1.1 no such"))]))
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert msg["From"].addresses[0].addr_spec == f"MAILER-DAEMON@{DOMAIN}"
    assert msg["To"].addresses[0].addr_spec == "jan@example.org"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert str(msg["Subject"]) == "Niedostarczona wiadomość: Dziura w jezdni na ul. Długiej"
    # 7-bit on the wire: no server on the way needs 8BITMIME.
    assert dsn_bytes(settings, [Failure("x@gmina.example", Reply(550, "5.1.1 x"))]).isascii()


def test_dsn_fields_per_message_and_per_recipient(settings: Settings) -> None:
    failures = [
        Failure("x@gmina.example", Reply(550, "5.1.1 <x@gmina.example>: no such user")),
        Failure("y@powiat.example", Reply(554, "Transaction failed")),
        Failure("z@wies.example", Reply(451, "4.4.1 connection timed out"), expired=True),
    ]
    msg = parse(dsn_bytes(settings, failures))
    per_message, *per_recipient = status_blocks(msg)
    assert per_message["Reporting-MTA"] == f"dns; mail.{DOMAIN}"
    assert per_message["Arrival-Date"] == "Thu, 26 Nov 2026 14:00:05 +0000"
    assert per_message["X-Mailsvc-Queue-ID"] == "0123456789abcdef"
    got = [
        (b["Final-Recipient"], b["Action"], b["Status"], b["Diagnostic-Code"])
        for b in per_recipient
    ]
    assert got == [
        (
            "rfc822; x@gmina.example",
            "failed",
            "5.1.1",
            "smtp; 550 5.1.1 <x@gmina.example>: no such user",
        ),
        ("rfc822; y@powiat.example", "failed", "5.0.0", "smtp; 554 Transaction failed"),
        ("rfc822; z@wies.example", "failed", "4.4.7", "smtp; 451 4.4.1 connection timed out"),
    ]


def test_dsn_quotes_the_original_header_but_never_the_body(settings: Settings) -> None:
    msg = parse(dsn_bytes(settings, [Failure("x@gmina.example", Reply(550, "5.1.1 x"))]))
    part = list(msg.iter_parts())[2]
    quoted = part.get_payload(decode=True)
    assert isinstance(quoted, bytes)
    assert b"Message-ID: <dziura@example.org>" in quoted
    assert b"pomoc" not in quoted
    # The human-readable part names the subject, the recipient and the reason.
    text = next(iter(msg.iter_parts())).get_content()
    assert "Dziura w jezdni na ul. Długiej" in text
    assert "x@gmina.example" in text and "550 5.1.1 x" in text
    assert "26 listopada 2026 o godz. 15:00" in text  # Europe/Warsaw


def test_the_configured_time_zone_reaches_the_dsn_and_the_acknowledgement(
    settings: Settings,
) -> None:
    lisbon = settings.with_changes(distribution={"timezone": "Europe/Lisbon"})
    msg = parse(dsn_bytes(lisbon, [Failure("x@gmina.example", Reply(550, "5.1.1 x"))]))
    text = next(iter(msg.iter_parts())).get_content()
    assert "26 listopada 2026 o godz. 14:00" in text  # 14:00:05 UTC is 14:00 in Lisbon
    assert "o godz. 15:00" not in text
    ack = build_acknowledgement(
        lisbon,
        mail_from="jan@example.org",
        original=ORIGINAL,
        delivered_at=datetime(2026, 11, 26, 22, 30, tzinfo=UTC),
        councillors=[("Łukasz Żółć", "lukasz.zolc@rada.miasto.example")],
    )
    assert "26 listopada 2026 o godz. 22:30" in ack.get_content()


def test_dsn_in_english(settings: Settings) -> None:
    english = settings.with_changes(language="en")
    msg = parse(dsn_bytes(english, [Failure("x@gmina.example", Reply(550, "5.1.1 x"))]))
    assert str(msg["Subject"]) == "Undelivered mail: Dziura w jezdni na ul. Długiej"
    text = next(iter(msg.iter_parts())).get_content()
    assert "could not be delivered" in text and "26 November 2026 at 15:00" in text


def test_dsn_survives_a_hostile_original(settings: Settings) -> None:
    hostile = (
        b"Subject: =?utf-8?q?broken\r\n"
        b"Subject2: raw \xc5\xbc\xc3\xb3\xc5\x82w \xff\r\n"
        b"From: \r\n\r\nbody"
    )
    raw = dsn_bytes(
        settings, [Failure("x@gmina.example", Reply(550, "5.1.1\r\nBcc: evil"))], hostile
    )
    msg = parse(raw)
    per_recipient = status_blocks(msg)[1]
    # A reply cannot add a header: line breaks in it became spaces.
    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 Bcc: evil"
    assert msg["Bcc"] is None
    part = list(msg.iter_parts())[2]
    quoted = part.get_payload(decode=True)
    assert isinstance(quoted, bytes) and "żółw".encode() in quoted


@pytest.mark.parametrize(
    ("reply", "expired", "status"),
    [
        (Reply(550, "5.1.1 User unknown"), False, "5.1.1"),
        (Reply(552, "5.3.4 Message too big"), False, "5.3.4"),
        (Reply(550, "User unknown"), False, "5.0.0"),
        (Reply(550, "4.2.2 odd but seen"), False, "5.0.0"),
        (Reply(451, "4.3.0 later"), True, "4.4.7"),
    ],
)
def test_status_of(reply: Reply, expired: bool, status: str) -> None:
    assert status_of(reply, expired) == status


NO_AUTO = b"Subject: x\r\n\r\nx"


@pytest.mark.parametrize(
    ("mail_from", "body", "refused"),
    [
        ("jan@example.org", NO_AUTO, False),
        ("", NO_AUTO, True),
        ("MAILER-DAEMON@example.org", NO_AUTO, True),
        ("postmaster@example.org", NO_AUTO, True),
        (
            "jan@example.org",
            b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\n",
            True,
        ),
        # Our own automatic mail (welcome, notices) is never bounced ...
        (f"biuro@{DOMAIN}", b"Auto-Submitted: auto-generated\r\n\r\nx", True),
        # ... but a councillor's own message is.
        (f"lukasz.zolc@{DOMAIN}", b"Auto-Submitted: no\r\n\r\nx", False),
        (f"lukasz.zolc@{DOMAIN}", NO_AUTO, False),
        # Someone else's auto-reply with a real return path may be told it failed.
        ("jan@example.org", b"Auto-Submitted: auto-replied\r\n\r\nx", False),
    ],
)
def test_bounce_refusal(mail_from: str, body: bytes, refused: bool) -> None:
    assert (bounce_refusal(mail_from, body, (DOMAIN,)) is not None) is refused


PLAIN = b"From: jan@example.org\r\nSubject: Dziura\r\nMessage-ID: <m@example.org>\r\n\r\nx"


@pytest.mark.parametrize(
    ("mail_from", "extra", "origin", "refused"),
    [
        ("jan@example.org", b"", "inbound", None),
        ("", b"", "inbound", "null sender"),
        ("jan@example.org", b"", "welcome", "origin"),
        ("jan@example.org", b"", "dsn", "origin"),
        (f"biuro@{DOMAIN}", b"", "inbound", "our own domain"),
        (f"x@sub.{DOMAIN}", b"", "inbound", "our own domain"),
        ("MAILER-DAEMON@example.org", b"", "inbound", "program"),
        ("noreply@example.org", b"", "inbound", "program"),
        ("no-reply@example.org", b"", "inbound", "program"),
        ("do-not-reply@example.org", b"", "inbound", "program"),
        ("owner-mieszkancy@lists.example.org", b"", "inbound", "program"),
        ("mieszkancy-request@lists.example.org", b"", "inbound", "program"),
        ("bounces+123@lists.example.org", b"", "inbound", "program"),
        ("jan@example.org", b"Auto-Submitted: auto-generated\r\n", "inbound", "Auto-Submitted"),
        ("jan@example.org", b"Auto-Submitted: auto-replied\r\n", "inbound", "Auto-Submitted"),
        ("jan@example.org", b"Auto-Submitted: no\r\n", "inbound", None),
        ("jan@example.org", b"Precedence: bulk\r\n", "inbound", "precedence"),
        ("jan@example.org", b"Precedence: list\r\n", "inbound", "precedence"),
        ("jan@example.org", b"Precedence: junk\r\n", "inbound", "precedence"),
        ("jan@example.org", b"List-Id: <m.lists.example.org>\r\n", "inbound", "mailing list"),
        ("jan@example.org", b"List-Unsubscribe: <mailto:x@y.org>\r\n", "inbound", "mailing list"),
        ("jan@example.org", b"X-Auto-Response-Suppress: OOF, AutoReply\r\n", "inbound", "Suppress"),
    ],
)
def test_ack_refusal(mail_from: str, extra: bytes, origin: str, refused: str | None) -> None:
    reason = ack_refusal(mail_from, extra + PLAIN, (DOMAIN,), origin=origin)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason


def test_acknowledgement_follows_rfc_3834(settings: Settings) -> None:
    delivered = datetime(2026, 11, 26, 22, 30, tzinfo=UTC)  # 23:30 in Warsaw, same day
    msg = build_acknowledgement(
        settings,
        mail_from="jan@example.org",
        original=ORIGINAL,
        delivered_at=delivered,
        councillors=[("Łukasz Żółć", f"lukasz.zolc@{DOMAIN}")],
    )
    parsed = parse(msg.as_bytes())
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["In-Reply-To"] == "<dziura@example.org>"
    assert parsed["References"] == "<a@example.org> <b@example.org> <dziura@example.org>"
    # Nothing the sender wrote is repeated (see mailsvc.relay.delivery.ack).
    assert str(parsed["Subject"]) == "Potwierdzenie dostarczenia"
    assert parsed["To"].addresses[0].addr_spec == "jan@example.org"
    body = parsed.get_body()
    assert body is not None
    text = body.get_content()
    assert "Dziura" not in text
    assert "Łukasz Żółć <lukasz.zolc@rada.miasto.example>" in text
    assert "26 listopada 2026 o godz. 23:30" in text
    assert acknowledgement_day(delivered, WARSAW) == date(2026, 11, 26)
    assert acknowledgement_day(datetime(2026, 11, 26, 23, 30, tzinfo=UTC), WARSAW) == date(
        2026, 11, 27
    )


def test_acknowledgement_subject_cannot_inject_headers(settings: Settings) -> None:
    original = b"Subject: hi\r\n =?utf-8?q?=0D=0ABcc=3A_evil=40example=2Eorg?=\r\n\r\nx"
    msg = build_acknowledgement(
        settings,
        mail_from="jan@example.org",
        original=original,
        delivered_at=datetime(2026, 1, 1, tzinfo=UTC),
        councillors=[("", f"a@{DOMAIN}")],
    )
    parsed = parse(msg.as_bytes())
    assert parsed["Bcc"] is None
    assert "In-Reply-To" not in parsed  # the original had no Message-ID


def test_acknowledgement_repeats_no_word_of_a_spammers_subject(settings: Settings) -> None:
    original = (
        b"Subject: BUY CHEAP PILLS http://pills.example/buy\r\nMessage-ID: <x@example.org>\r\n"
        b"\r\nKup teraz: http://pills.example/buy\r\n"
    )
    for language in ("pl", "en"):
        msg = build_acknowledgement(
            settings.with_changes(language=language),
            mail_from="victim@example.org",
            original=original,
            delivered_at=datetime(2026, 1, 1, tzinfo=UTC),
            councillors=[("", f"a@{DOMAIN}")],
        )
        raw = msg.as_bytes()
        assert b"PILLS" not in raw and b"pills.example" not in raw and b"Kup" not in raw
        assert parse(raw)["In-Reply-To"] == "<x@example.org>"


@pytest.mark.parametrize(
    ("seconds", "polish", "english"),
    [
        (432000, "5 dni", "5 days"),
        (86400, "1 dzień", "1 day"),
        (7200, "2 godziny", "2 hours"),
        (5 * 3600, "5 godzin", "5 hours"),
        (22 * 3600, "22 godziny", "22 hours"),
        (60, "1 minutę", "1 minute"),
        (1, "1 sekundę", "1 second"),
    ],
)
def test_retry_period_in_words(seconds: float, polish: str, english: str) -> None:
    assert format_duration(seconds, "pl") == polish
    assert format_duration(seconds, "en") == english


def test_header_text_decodes_raw_utf8_and_encoded_words() -> None:
    header = parse_header(
        "Subject: Zażółć\r\nX-A: =?utf-8?q?g=C4=99=C5=9Bl=C4=85?=\r\n\r\n".encode()
    )
    assert header_text(header, "Subject") == "Zażółć"
    assert header_text(header, "X-A") == "gęślą"
    assert header_text(header, "Missing") == ""


def test_routes_follow_the_recipient_domain() -> None:
    assert route_for(f"a@{DOMAIN}", (DOMAIN,)) == "lmtp"
    assert route_for(f"a@{DOMAIN.upper()}", (DOMAIN,)) == "lmtp"
    assert route_for("a@gmina.example", (DOMAIN,)) == "smtp"
    assert route_for(f"a@sub.{DOMAIN}", (DOMAIN,)) == "smtp"


def test_capture_file_round_trip(tmp_path: Path) -> None:
    content = b"Subject: s\r\n\r\nbody\r\n"
    path = capture.store(tmp_path, "", ["a@x.example", "b@x.example"], content)
    assert path.suffix == ".eml" and not list(tmp_path.glob(".*.tmp"))
    item = capture.read(path)
    assert item.mail_from == "" and item.recipients == ("a@x.example", "b@x.example")
    assert item.message == content
    assert parse(path.read_bytes())["X-Capture-Envelope-To"] == "<a@x.example>"
    assert [i.path for i in capture.list_captured(tmp_path)] == [path]


@pytest.mark.parametrize(
    ("configured", "expected"),
    [("", f"noreply@{DOMAIN}"), (f"biuro@{DOMAIN}", f"biuro@{DOMAIN}")],
)
def test_acknowledgement_sender_follows_the_setting(
    settings: Settings, configured: str, expected: str
) -> None:
    variant = settings.with_changes(relay={"acknowledge_from": configured})
    msg = build_acknowledgement(
        variant,
        mail_from="jan@example.org",
        original=ORIGINAL,
        delivered_at=datetime(2026, 1, 1, tzinfo=UTC),
        councillors=[("", f"a@{DOMAIN}")],
    )
    assert parse(msg.as_bytes())["From"].addresses[0].addr_spec == expected
