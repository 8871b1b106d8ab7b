"""Delivery reports (DSN, MDN, plain bounces) read from a corpus of real-looking messages.

``samples/expected.json`` says, for each ``.eml`` in ``samples/``, who produced it and what the
parser must find: the kind, each recipient's (address, action, status, permanent, reason) and the
Message-ID of the original. The unit tests below build small messages for the edge cases.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mailsvc.config import DEFAULT_CONFIG, load_settings
from mailsvc.receipts.formats import DETECTORS, PlainBounce
from mailsvc.receipts.parse import (
    MAX_EVIDENCE,
    DeliveryReport,
    ReportRecipient,
    scan,
    to_json,
)
from mailsvc.relay.delivery.dsn import Failure, build_dsn
from mailsvc.relay.delivery.lmtp import Reply

SAMPLES = Path(__file__).parent / "samples"
EXPECTED: dict[str, dict[str, Any]] = json.loads((SAMPLES / "expected.json").read_text("utf-8"))
VERP = "bounces+k7q2m9x4a1b3c5d6@rada.miasto.example"


def sample(name: str) -> DeliveryReport:
    return scan((SAMPLES / name).read_bytes())


def triples(report: DeliveryReport) -> list[list[object]]:
    return [[r.address, r.action, r.status, r.permanent] for r in report.recipients]


def with_reasons(report: DeliveryReport) -> list[list[object]]:
    return [[*entry, r.reason] for entry, r in zip(triples(report), report.recipients, strict=True)]


# --- The corpus -----------------------------------------------------------------------------


def test_corpus_and_expectations_cover_each_other() -> None:
    files = {p.name for p in SAMPLES.glob("*.eml")}
    assert files == set(EXPECTED)
    assert len(files) >= 20
    kinds = [e["kind"] for e in EXPECTED.values()]
    assert kinds.count("none") >= 5 and kinds.count("mdn") >= 4


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_reads_as_expected(name: str) -> None:
    expected = EXPECTED[name]
    report = sample(name)
    assert report.kind == expected["kind"], expected["producer"]
    assert with_reasons(report) == expected["recipients"], expected["producer"]
    assert report.original_message_id == expected["original_message_id"], expected["producer"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_json_is_serialisable_and_bounded(name: str) -> None:
    report = sample(name)
    data = to_json(report)
    json.dumps(data, ensure_ascii=False)
    assert len(report.evidence) <= MAX_EVIDENCE
    assert all(len(r.diagnostic) <= 500 for r in report.recipients)
    if report.kind == "none":
        assert report == DeliveryReport("none", (), None)


def test_standard_report_keeps_the_machine_readable_part_as_evidence() -> None:
    report = sample("postfix-failed-5.1.1.eml")
    assert report.reporter == "smtp.rada.miasto.example"
    assert "Final-Recipient: rfc822; jan.kowalski@poczta.example.pl" in report.evidence
    assert "X-Postfix-Queue-ID: 4Fh2Lk0x3Bz9" in report.evidence
    assert "I'm sorry to have to inform you" not in report.evidence  # the human part is not


def test_plain_bounce_names_its_detector_and_keeps_the_excerpt() -> None:
    report = sample("qmail-failed.eml")
    assert report.reporter == "flufl.bounce+qmail"  # flufl.bounce found who, qmail's wording why
    assert report.evidence.startswith("Hi. This is the qmail-send program at")
    assert "Below this line" not in report.evidence  # the returned copy is not evidence


def test_folded_diagnostic_is_collapsed_to_one_line() -> None:
    (recipient,) = sample("gmail-failed.eml").recipients
    assert recipient.diagnostic.startswith("550-5.1.1 The email account that you tried to reach")
    assert "\n" not in recipient.diagnostic and "  " not in recipient.diagnostic
    assert "double-checking the recipient's email address" in recipient.diagnostic


def test_polish_diagnostic_survives_in_utf8() -> None:
    (recipient,) = sample("dsn-polish-diagnostic-utf8.eml").recipients
    assert recipient.diagnostic == (
        "552 5.2.2 Skrzynka odbiorcy jest przepełniona — proszę spróbować później"
    )


def test_exim_generic_status_takes_the_detail_from_the_diagnostic() -> None:
    (recipient,) = sample("exim4-failed.eml").recipients
    assert "Status: 5.0.0" in sample("exim4-failed.eml").evidence
    assert recipient.status == "5.2.2"


def test_dovecot_rejection_carries_its_reason() -> None:
    report = sample("dovecot-lmtp-rejected.eml")
    (recipient,) = report.recipients
    assert report.reporter == "imap.rada.miasto.example; Dovecot Mail Delivery Agent"
    assert "automatic-action/MDN-sent-automatically; deleted" in recipient.diagnostic
    assert "Quota exceeded (mailbox for user is full)" in recipient.diagnostic


def test_mdn_without_rejection_does_not_quote_the_human_part() -> None:
    (recipient,) = sample("thunderbird-mdn-displayed.eml").recipients
    assert recipient.diagnostic == "manual-action/MDN-sent-manually; displayed"


# --- Building blocks: small messages ---------------------------------------------------------


def report_message(
    status_part: str,
    *,
    report_type: str = "delivery-status",
    part_type: str = "message/delivery-status",
    part_headers: str = "",
    text: str = "Delivery report.",
    sender: str = "MAILER-DAEMON@mx.gmina.example.pl",
    newline: str = "\n",
) -> bytes:
    lines = [
        f"From: {sender}",
        f"To: {VERP}",
        "Subject: Undelivered Mail Returned to Sender",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type={report_type}; boundary="BND"',
        "",
        "--BND",
        "Content-Type: text/plain; charset=utf-8",
        "",
        text,
        "",
        "--BND",
        f"Content-Type: {part_type}",
        *([part_headers] if part_headers else []),
        "",
        status_part,
        "--BND",
        "Content-Type: text/rfc822-headers",
        "",
        "From: Biuro Rady Miasta <biuro@rada.miasto.example>",
        "Message-ID: <orig-1@rada.miasto.example>",
        "",
        "--BND--",
        "",
    ]
    return newline.join(lines).encode("utf-8")


def test_folded_fields_in_recipient_blocks_are_unfolded() -> None:
    raw = report_message(
        "Reporting-MTA: dns;\n mx.gmina.example.pl\n\n"
        "Final-Recipient: rfc822;\n\tJan.Nowak@GMINA.example.pl\n"
        "Action:\n failed\n"
        "Status: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 no such\n   user here\n"
    )
    report = scan(raw)
    assert report.reporter == "mx.gmina.example.pl"
    assert triples(report) == [["Jan.Nowak@gmina.example.pl", "failed", "5.1.1", True]]
    assert report.recipients[0].diagnostic == "550 5.1.1 no such user here"
    assert report.original_message_id == "<orig-1@rada.miasto.example>"


def test_multiple_recipients_with_crlf_and_no_status_fall_back_on_the_action() -> None:
    status = (
        "Reporting-MTA: dns; mx.gmina.example.pl\r\n\r\n"
        "Final-Recipient: rfc822; a@gmina.example.pl\r\nAction: failed\r\n\r\n"
        "Original-Recipient: rfc822; b@gmina.example.pl\r\nAction: delayed\r\n\r\n"
        "Final-Recipient: rfc822; c@gmina.example.pl\r\nAction: delivered\r\nStatus: 2.0.0\r\n"
    )
    report = scan(report_message(status, newline="\r\n"))
    assert triples(report) == [
        ["a@gmina.example.pl", "failed", "5.0.0", True],
        ["b@gmina.example.pl", "delayed", "4.0.0", False],
        ["c@gmina.example.pl", "delivered", "2.0.0", False],
    ]


def test_failed_with_a_temporary_status_is_not_permanent() -> None:
    status = (
        "Reporting-MTA: dns; mx\n\n"
        "Final-Recipient: rfc822; a@gmina.example.pl\nAction: failed\nStatus: 4.4.7\n"
    )
    assert triples(scan(report_message(status))) == [
        ["a@gmina.example.pl", "failed", "4.4.7", False]
    ]


def test_base64_encoded_delivery_status_is_decoded() -> None:
    import base64

    fields = "Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822; a@b.example\nAction: failed\n"
    encoded = base64.encodebytes(fields.encode()).decode()
    raw = report_message(encoded, part_headers="Content-Transfer-Encoding: base64")
    assert triples(scan(raw)) == [["a@b.example", "failed", "5.0.0", True]]


def test_report_declared_as_text_in_the_second_part_is_still_read() -> None:
    fields = "Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822; a@b.example\nStatus: 5.2.1\n"
    raw = report_message(fields, part_type="text/plain")
    assert triples(scan(raw)) == [["a@b.example", "failed", "5.2.1", True]]


def test_eai_utf8_address_escapes_are_decoded() -> None:
    fields = (
        "Reporting-MTA: dns; mx\n\n"
        "Original-Recipient: utf-8; \\x{0141}ukasz.\\x{017B}\\x{00F3}\\x{0142}\\x{0107}"
        "@Rada.Miasto.Example\n"
        "Action: failed\nStatus: 5.1.1\n"
    )
    raw = report_message(fields, part_type="message/global-delivery-status")
    assert triples(scan(raw)) == [["Łukasz.Żółć@rada.miasto.example", "failed", "5.1.1", True]]


def test_eai_global_disposition_notification() -> None:
    fields = (
        "Reporting-UA: rada.miasto.example; Mozilla Thunderbird\n"
        "Final-Recipient: utf-8; łukasz.żółć@rada.miasto.example\n"
        "Original-Message-ID: <orig-2@rada.miasto.example>\n"
        "Disposition: automatic-action/MDN-sent-automatically; displayed\n"
    )
    raw = report_message(
        fields,
        report_type="disposition-notification",
        part_type="message/global-disposition-notification",
    )
    report = scan(raw)
    assert report.kind == "mdn"
    assert triples(report) == [["łukasz.żółć@rada.miasto.example", "displayed", "", False]]
    assert report.original_message_id == "<orig-2@rada.miasto.example>"


def test_mdn_without_final_recipient_falls_back_on_the_sender() -> None:
    fields = "Reporting-UA: x; y\nDisposition: manual-action/MDN-sent-manually; deleted\n"
    raw = report_message(
        fields,
        report_type="disposition-notification",
        part_type="message/disposition-notification",
        sender="Jan Nowak <Jan.Nowak@Rada.Miasto.Example>",
    )
    assert triples(scan(raw)) == [["Jan.Nowak@rada.miasto.example", "deleted", "", False]]


def test_standard_report_beats_plain_text_wording() -> None:
    text = (
        "Hi. This is the qmail-send program at mx.gmina.example.pl.\n\n"
        "<someone.else@gmina.example.pl>:\nSorry, no mailbox here by that name. (#5.1.1)\n"
    )
    fields = "Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822; a@b.example\nAction: delayed\n"
    report = scan(report_message(fields, text=text))
    assert report.reporter == "mx"
    assert triples(report) == [["a@b.example", "delayed", "4.0.0", False]]


def plain(
    body: str, *, sender: str = "MAILER-DAEMON@mx.gmina.example.pl", subject: str = "x"
) -> bytes:
    return (f"From: {sender}\nTo: {VERP}\nSubject: {subject}\nReturn-Path: <>\n\n{body}").encode()


QMAIL_BODY = (
    "Hi. This is the qmail-send program at mx.gmina.example.pl.\n"
    "I'm afraid I wasn't able to deliver your message to the following addresses.\n\n"
    "<a@gmina.example.pl>:\nSorry, no mailbox here by that name. (#5.1.1)\n"
)


def test_plain_bounce_from_mail_software_is_read() -> None:
    assert triples(scan(plain(QMAIL_BODY))) == [["a@gmina.example.pl", "failed", "5.1.1", True]]


@pytest.mark.parametrize(
    ("sender", "subject"),
    [
        ("Jan Nowak <jan.nowak@rada.miasto.example>", "failure notice"),  # a person
        ("MAILER-DAEMON@mx.gmina.example.pl", "Fwd: failure notice"),  # forwarded
        ("MAILER-DAEMON@mx.gmina.example.pl", "PD: failure notice"),  # Polish forward
        ("MAILER-DAEMON@mx.gmina.example.pl", "Odp: failure notice"),  # Polish reply
    ],
)
def test_plain_bounce_wording_from_people_is_not_a_bounce(sender: str, subject: str) -> None:
    assert scan(plain(QMAIL_BODY, sender=sender, subject=subject)).kind == "none"


def test_quoted_bounce_wording_is_not_a_bounce() -> None:
    quoted = "".join(f"> {line}\n" for line in QMAIL_BODY.splitlines())
    assert scan(plain(quoted)).kind == "none"


def test_our_detectors_want_the_wording_near_the_top() -> None:
    # flufl.bounce reads a whole message that mail software sent; our own detectors, for what it
    # misses, recognise a producer only by its wording at the top.
    body = "Dzień dobry.\n" * 60 + QMAIL_BODY
    bounce = PlainBounce(subject="failure notice", sender="mailer-daemon@mx.example", body=body)
    assert [d.ID for d in DETECTORS if d.detect(bounce) is not None] == []
    assert DETECTORS[0].detect(replace(bounce, body=QMAIL_BODY)) is not None


def test_postfix_success_notice_without_report_is_not_a_failure() -> None:
    body = (
        "This is the mail system at host mx.gmina.example.pl.\n\n"
        "Your message was successfully delivered to the destination(s)\nlisted below.\n\n"
        "                   The mail system\n\n"
        "<a@gmina.example.pl>: delivery via mx[192.0.2.1]:25: 250 2.0.0 Ok\n"
    )
    assert scan(plain(body)).kind == "none"


def test_detectors_have_unique_stable_ids_in_order_of_authority() -> None:
    assert [d.ID for d in DETECTORS] == [
        *("qmail", "yahoo", "postfix", "exim", "exchange", "gmail", "dragonfly", "opensmtpd")
    ]


def test_our_own_bounce_is_read_back() -> None:
    settings = load_settings(DEFAULT_CONFIG, env={})
    original = (
        b"From: Biuro Rady Miasta <biuro@rada.miasto.example>\r\n"
        b"To: x@gmina.example\r\nMessage-ID: <own-1@rada.miasto.example>\r\n"
        b"\r\nTre\xc5\x9b\xc4\x87\r\n"
    )
    raw = build_dsn(
        settings,
        queue_id="0123456789abcdef",
        mail_from="jan@example.org",
        arrival=datetime(2026, 11, 26, 14, 0, 5),
        original=original,
        failures=[
            Failure("x@gmina.example", Reply(550, "5.1.1 <x@gmina.example>: no such user")),
            Failure("z@wies.example", Reply(451, "4.4.1 timed out"), expired=True),
        ],
    ).as_bytes()
    report = scan(raw)
    assert report.kind == "dsn"
    assert [(r.address, r.action, r.status[:1]) for r in report.recipients] == [
        ("x@gmina.example", "failed", "5"),
        ("z@wies.example", "failed", "4"),
    ]
    assert report.original_message_id == "<own-1@rada.miasto.example>"


# --- Hostile input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00" * 1000,
        b"\xff\xfe\xfd" * 5000,
        b"From: \xff\xfe\r\nContent-Type: multipart/report; boundary=\r\n\r\n--\r\n",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=X\n\n--X\n"
        b"Content-Type: message/delivery-status; charset=x-no-such-charset\n\n"
        b"Final-Recipient: rfc822; \xc5\x82@\xff\xfe.example\nAction: failed\n--X--\n",
        b"Content-Type: multipart/report; report-type=disposition-notification; boundary=X\n\n"
        b"--X\nContent-Type: message/disposition-notification\n\nDisposition: ;;;/\n--X--\n",
        b'Content-Type: text/plain; charset="\xff"\nContent-Transfer-Encoding: base64\n\n!!!',
    ],
)
def test_junk_gives_a_report_and_never_raises(raw: bytes) -> None:
    report = scan(raw)
    assert report.kind in ("dsn", "mdn", "none")
    json.dumps(to_json(report))


def test_random_bytes_never_raise() -> None:
    rng = random.Random(20261126)
    for _ in range(200):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
        assert scan(raw).kind in ("dsn", "mdn", "none")


def test_deep_mime_nesting_is_bounded() -> None:
    depth = 3000
    head = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(depth)
    )
    raw = (head + "Content-Type: text/plain\n\nx\n").encode()
    started = time.monotonic()
    assert scan(raw).kind == "none"
    assert time.monotonic() - started < 10


def test_huge_header_and_many_blocks_are_bounded() -> None:
    blocks = "".join(
        f"Final-Recipient: rfc822; r{i}@gmina.example.pl\nAction: failed\n\n" for i in range(60000)
    )
    raw = b"X-Junk: " + b"a" * (2 * 1024 * 1024) + b"\n" + report_message(blocks)
    started = time.monotonic()
    assert scan(raw).kind == "none"  # past the first MiB: nothing of the report is read
    report = scan(report_message(blocks))
    assert time.monotonic() - started < 10
    assert report.kind == "dsn" and 0 < len(report.recipients) <= 500
    assert len(report.evidence) <= MAX_EVIDENCE


def test_bytearray_input_is_accepted() -> None:
    raw = bytearray((SAMPLES / "postfix-failed-5.1.1.eml").read_bytes())
    assert scan(raw).recipients[0].address == "jan.kowalski@poczta.example.pl"  # type: ignore[arg-type]


# --- to_json -------------------------------------------------------------------------------


def test_to_json_shape() -> None:
    report = DeliveryReport(
        kind="dsn",
        recipients=(ReportRecipient("a@b.example", "failed", "5.1.1", True, "550 no"),),
        original_message_id="<m@x>",
        reporter="mx",
        evidence="Final-Recipient: rfc822; a@b.example",
    )
    data = to_json(report)
    assert set(data) == {"kind", "recipients", "original_message_id"}
    assert data["kind"] == "dsn"
    assert data["original_message_id"] == "<m@x>"
    assert data["recipients"] == [
        {
            "address": "a@b.example",
            "action": "failed",
            "status": "5.1.1",
            "permanent": True,
            "diagnostic": "550 no",
            "reason": None,
            "final_recipient": "a@b.example",
        }
    ]
    assert json.loads(json.dumps(data)) == data


def test_to_json_of_nothing() -> None:
    assert to_json(scan(b"")) == {"kind": "none", "recipients": [], "original_message_id": None}
