"""Fuzzing the delivery-report parser (issue #13): whatever arrives at ``bounces+TOKEN@`` or is
given to ``mailsvc receipts parse`` is read within bounded time and memory, as a report or as
"not a report", and no exception decides that.

``scan`` catches everything, so these tests call ``parse._scan`` (what ``scan`` runs): an
exception there would lose a report without a trace. Inputs are arbitrary bytes, the corpus of
real reports in ``receipts/samples`` mutated the ways hostile or broken senders do, and reports
built with the email package and ``build_dsn``.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailsvc.config import DEFAULT_CONFIG, load_settings
from mailsvc.receipts import parse
from mailsvc.receipts.parse import MAX_EVIDENCE, MAX_RECIPIENTS, DeliveryReport, scan, to_json
from mailsvc.relay.delivery.dsn import Failure, build_dsn
from mailsvc.relay.delivery.lmtp import Reply

SAMPLES = Path(__file__).parent / "receipts" / "samples"
SEEDS = {path.name: path.read_bytes() for path in sorted(SAMPLES.glob("*.eml"))}
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Far above what any of these inputs needs (a few ms each), far below the minutes the
# quadratic cases below took before they were bounded.
SECONDS = 5.0


def read(raw: bytes) -> DeliveryReport:
    """``_scan`` as ``scan`` runs it, held to the promises ``scan`` makes of its result."""
    started = time.monotonic()
    report = parse._scan(raw[: parse.MAX_INPUT])
    assert time.monotonic() - started < SECONDS
    assert report.kind in ("dsn", "mdn", "none")
    json.dumps(to_json(report))
    assert len(report.evidence) <= MAX_EVIDENCE
    assert len(report.recipients) <= MAX_RECIPIENTS
    assert all(len(r.diagnostic) <= 500 and r.address for r in report.recipients)
    if report.kind == "none":
        assert report.recipients == ()
    return report


@FUZZ
@given(raw=st.binary(max_size=4000))
@example(raw=b"Content-Type: multipart/report; boundary=\r\n\r\n--\r\n")
@example(raw=b"Content-Type: message/delivery-status\n\n" + b"\n" * 3000)
def test_arbitrary_bytes(raw: bytes) -> None:
    read(raw)
    assert scan(raw) == read(raw)


# --- Real reports, mutated ------------------------------------------------------------------

# Long runs of one character: what makes a backtracking pattern or a parser's loop quadratic.
RUNS = st.builds(
    lambda piece, n: piece * n,
    st.sampled_from(["@", " ", ":", "<", ">", ".", "5.", "\t", "=", "(", '"', ";", "a@", "\n"]),
    st.one_of(st.integers(1, 300), st.sampled_from([5_000, 40_000])),
)
CHARSETS = st.sampled_from(
    ["utf-7", "x-bogus", "utf-16", "idna", "punycode", "base64", "zlib", "hex", "rot13", "\x00"]
)
HEADERS = st.sampled_from(
    [
        "Content-Transfer-Encoding: base64",
        "Content-Transfer-Encoding: quoted-printable",
        "Content-Transfer-Encoding: x-uuencode",
        "Content-Type: message/rfc822",
        "Content-Type: multipart/digest; boundary=D",
        "Content-Type: message/delivery-status",
        "Content-Type: message/disposition-notification",
        "Final-Recipient: rfc822; " + "<" * 50,
        "Action: failed",
        "From: MAILER-DAEMON@mx.example (" + "(" * 700,
        "From: a:b:c:" + ":" * 700,
        "Subject: =?utf-8?b?" + "A" * 300,
    ]
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(SEEDS)))
    lines = SEEDS[name].split(b"\n")
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(lines)))
        op = draw(st.integers(0, 7))
        if op == 0:  # truncated anywhere
            joined = b"\n".join(lines)
            lines = joined[: draw(st.integers(0, len(joined)))].split(b"\n")
        elif op == 1:
            lines.insert(at, draw(RUNS).encode())
        elif op == 2 and at < len(lines):
            lines[at] += draw(RUNS).encode()
        elif op == 3 and at < len(lines):
            del lines[at]
        elif op == 4:
            lines.insert(at, b"Content-Type: text/plain; charset=" + draw(CHARSETS).encode())
        elif op == 5 and at < len(lines):  # one line many times: huge header or block counts
            lines[at:at] = [lines[at]] * draw(st.integers(2, 3000))
        elif op == 6:
            lines.insert(at, draw(HEADERS).encode())
        elif op == 7:
            lines.insert(at, draw(st.binary(min_size=1, max_size=40)))
    ending = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    return ending.join(lines)


@FUZZ
@given(raw=mutated())
def test_mutated_real_reports(raw: bytes) -> None:
    read(raw)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_each_real_report_reads_the_same_with_crlf(name: str) -> None:
    """The seeds themselves, with the line ends SMTP gives them: the baseline of the fuzzing."""
    raw = SEEDS[name]
    assert read(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")) == read(raw)


# --- Reports built with build_dsn and the email package -------------------------------------

LOCAL = st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=20).filter(
    lambda s: s[0] not in "._-" and s[-1] not in "._-" and ".." not in s
)
ADDRESS = st.builds("{}@{}.example".format, LOCAL, LOCAL.filter(lambda s: "." not in s))
REPLY_TEXT = st.text(max_size=300)
ORIGINAL = st.binary(max_size=2000)
SETTINGS = load_settings(DEFAULT_CONFIG, env={})


@FUZZ
@given(
    failures=st.lists(
        st.tuples(ADDRESS, st.integers(400, 599), REPLY_TEXT, st.booleans()),
        min_size=1,
        max_size=5,
        unique_by=lambda f: f[0],
    ),
    original=ORIGINAL,
    subject=st.text(max_size=200),
)
def test_bounces_we_build_read_back(
    failures: list[tuple[str, int, str, bool]], original: bytes, subject: str
) -> None:
    """Whatever the original message and the remote replies held, our own bounce is read back
    with every recipient (the sink credits our DSNs to distributions through this parser)."""
    head = b"Subject: " + subject.encode("utf-8", "surrogatepass") + b"\r\n"
    dsn = build_dsn(
        SETTINGS,
        queue_id="0123456789abcdef",
        mail_from="jan@example.org",
        arrival=datetime(2026, 11, 26, 14, 0, 5),
        original=head + original,
        failures=[Failure(a, Reply(code, text), expired=exp) for a, code, text, exp in failures],
    ).as_bytes()
    report = read(dsn)
    assert report.kind == "dsn"
    assert [(r.address, r.action) for r in report.recipients] == [
        (address, "failed") for address, *_ in failures
    ]


@FUZZ
@given(
    recipient=ADDRESS,
    disposition=st.sampled_from(["displayed", "deleted", "dispatched", "processed"]),
    ua=st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=100),
    charset=st.sampled_from(["utf-8", "iso-8859-2", "x-unknown", "idna"]),
    # Hypothesis raises the recursion limit by 2000 while a test runs: deeper than that.
    nesting=st.one_of(st.integers(0, 20), st.integers(2_500, 6_000)),
)
def test_mdns_built_with_the_email_package(
    recipient: str, disposition: str, ua: str, charset: str, nesting: int
) -> None:
    """An MDN read back, also when it arrives wrapped in many levels of multipart/mixed (read
    up to ``MAX_DEPTH`` deep, "none" beyond, never an exception)."""
    mdn = EmailMessage()
    mdn["From"] = recipient
    mdn["Subject"] = "Read: Sesja"
    mdn.set_content("Przeczytano.", charset="utf-8")
    fields = EmailMessage()
    fields["Reporting-UA"] = ua or "x"
    fields["Final-Recipient"] = f"rfc822; {recipient}"
    fields["Original-Message-ID"] = "<m1@rada.miasto.example>"
    fields["Disposition"] = f"manual-action/MDN-sent-manually; {disposition}"
    mdn.add_attachment(
        fields.as_bytes(), maintype="message", subtype="disposition-notification", cte="8bit"
    )
    mdn.replace_header("Content-Type", "multipart/report")
    mdn.set_param("report-type", "disposition-notification")
    mdn.get_payload()[0].set_param("charset", charset)
    raw = b"".join(
        [
            *(
                b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n' % (n, n)
                for n in range(nesting)
            ),
            mdn.as_bytes(),
            *(b"\r\n--n%d--\r\n" % n for n in reversed(range(nesting))),
        ]
    )
    report = read(raw)
    if nesting < parse.MAX_DEPTH:
        assert report.kind == "mdn"
        assert [(r.address, r.action) for r in report.recipients] == [(recipient, disposition)]
        assert report.original_message_id == "<m1@rada.miasto.example>"


# --- Regressions: each of these lost the report or took minutes before ----------------------


def _with_sibling(report: bytes, sibling: bytes) -> bytes:
    """``report`` (a multipart/report with boundary "BND") with one more part at its end."""
    end = report.rindex(b"--BND--")
    return report[:end] + b"--BND\n" + sibling + b"\n" + report[end:]


def postfix_dsn() -> bytes:
    raw = SEEDS["postfix-failed-5.1.1.eml"]
    boundary = raw.split(b'boundary="', 1)[1].split(b'"', 1)[0]
    return raw.replace(boundary, b"BND")


def test_a_deeply_nested_part_beside_the_report_does_not_lose_it() -> None:
    # The stdlib parser recursed once per level: RecursionError at about 980 levels.
    deep = b"".join(
        b'Content-Type: multipart/mixed; boundary="d%d"\n\n--d%d\n' % (i, i) for i in range(1500)
    )
    report = read(_with_sibling(postfix_dsn(), deep + b"x\n"))
    assert [r.address for r in report.recipients] == ["jan.kowalski@poczta.example.pl"]


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"])
def test_a_megabyte_of_blank_lines_in_a_report_part_is_cheap(newline: bytes) -> None:
    # Each blank line made a block object: 20 s and 300 MB for a megabyte before.
    raw = _with_sibling(postfix_dsn(), b"Content-Type: message/delivery-status\n\n")
    raw = raw.replace(b"--BND--", newline * 500_000 + b"--BND--")
    tracemalloc.start()
    try:
        report = read(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 60 * 1024 * 1024
    assert [r.address for r in report.recipients] == ["jan.kowalski@poczta.example.pl"]


@pytest.mark.parametrize(
    "body",
    [b"x\n" * 500_000, b"--B\n\n" * 200_000, b"@" * 60_000 + b"\n"],
    ids=["short-lines", "empty-parts", "ats"],
)
def test_a_megabyte_from_mailer_daemon_is_read_quickly(body: bytes) -> None:
    # flufl.bounce read each of half a million lines with dozens of patterns (24 s), and the
    # OpenSMTPD detector's address pattern backtracked over a line of "@" (a minute).
    raw = (
        b"From: MAILER-DAEMON@mx.example\nSubject: Undelivered Mail\n"
        b"Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: text/plain\n\n"
        b"This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.\n"
        b"An error has occurred while attempting to deliver a message\n\n" + body
    )
    read(raw)


@pytest.mark.parametrize(
    "field",
    [
        b"Content-Type: text/plain; charset=idna",  # UnicodeError from the codec
        b"Content-Type: text/plain; charset=punycode",
        b'Content-Type: text/plain; charset="utf\x00-8"',  # ValueError: embedded null character
        b"From: (" + b"(" * 600 + b"Mailer-Daemon@mx.example",  # RecursionError in getaddresses
    ],
    ids=["idna", "punycode", "nul", "comments"],
)
def test_odd_charsets_and_from_fields_do_not_lose_a_plain_bounce(field: bytes) -> None:
    raw = SEEDS["exim-plain-failed.eml"] + "Treść\n".encode()  # 8-bit: decoded with the charset
    if field.startswith(b"From:"):
        raw = raw.replace(b"From: Mail Delivery System", field + b"\nX-Was: ")
    else:
        raw = raw.replace(b"Subject:", field + b"\nSubject:")
    report = read(raw)
    assert report.kind == "dsn" and len(report.recipients) == 2
