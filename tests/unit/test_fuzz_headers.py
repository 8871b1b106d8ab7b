"""Fuzzing what turns a client's text into header fields and replies (issue #13): the Received
field's HELO, the forged Authentication-Results removal, the own-domain check of From, and the
acknowledgements and bounces that quote a resident's header. Whatever the client wrote, nothing
raises (but the documented ValueError for an address that cannot be written to), no value adds
a line or a field, and no control character gets into a header.
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import Message
from email.parser import BytesParser

import pytest
from aiosmtpd.smtp import Envelope, Session
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailsvc.compose import header_field
from mailsvc.config import DEFAULT_CONFIG, load_settings
from mailsvc.relay.delivery.ack import ack_refusal, build_acknowledgement
from mailsvc.relay.delivery.dsn import Failure, bounce_refusal, build_dsn
from mailsvc.relay.delivery.lmtp import Reply
from mailsvc.relay.smtp.authres import remove_forged_results
from mailsvc.relay.smtp.authres.verdict import parse_results
from mailsvc.relay.smtp.inbound import InboundHandler, _clean, valid_sender
from mailsvc.relay.smtp.owndomain import claimed_own_domains, from_domains

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SETTINGS = load_settings(DEFAULT_CONFIG, env={})
OWN = SETTINGS.relay.own_domain_list(SETTINGS.domain)  # ("rada.miasto.example",)
HOST = SETTINGS.smtp_hostname
# Any string, surrogates (what surrogateescape makes of 8-bit bytes) and line breaks included.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=60)
BREAKERS = st.sampled_from(
    ["\r\n", "\n", "\r", "\x00", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\t"]
)
TRICKY = st.lists(st.one_of(ANY_TEXT, BREAKERS), max_size=12).map("".join)


def no_control(text: str) -> bool:
    return not any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in text)


# --- The Received field and replies: _clean --------------------------------------------------


@FUZZ
@given(text=TRICKY, limit=st.integers(0, 300))
def test_clean_leaves_printable_text_only(text: str, limit: int) -> None:
    cleaned = _clean(text, limit)
    assert len(cleaned) <= limit and cleaned.isprintable()
    cleaned.encode("utf-8")  # the Received field is written as UTF-8


def _handler() -> InboundHandler:
    return InboundHandler(SETTINGS, None, None)  # type: ignore[arg-type]


@FUZZ
@given(helo=TRICKY, utf8=st.booleans())
def test_the_received_field_is_one_field_whatever_the_helo(helo: str, utf8: bool) -> None:
    session = Session(loop=asyncio.new_event_loop())
    session.loop.close()
    session.host_name, session.peer = helo, ("192.0.2.7", 40000)
    envelope = Envelope()
    envelope.rcpt_tos, envelope.smtp_utf8 = ["anna.nowak@rada.miasto.example"], utf8
    field = _handler()._received_header(session, envelope)
    lines = field.split(b"\r\n")
    assert lines[-1] == b"" and all(b"\r" not in line and b"\n" not in line for line in lines)
    assert lines[0].startswith(b"Received: ") and all(line[:1] == b"\t" for line in lines[1:-1])
    parsed = message_from_bytes(field + b"\r\nbody", policy=policy.compat32)
    assert parsed.keys() == ["Received"]


# --- Forged Authentication-Results ------------------------------------------------------------

OURS = [HOST, HOST.upper(), HOST + ".", f'"{HOST}"', f"(c) {HOST}", f"({HOST}) x", f"\r\n {HOST}"]
FIELD = st.one_of(
    st.builds(
        "{}{}{}; dkim=pass header.d=rada.miasto.example".format,
        st.sampled_from(
            ["Authentication-Results:", "authentication-results :", "AUTHENTICATION-RESULTS:\t"]
        ),
        st.sampled_from(["", " ", "\r\n\t", " (comment (nested)) "]),
        st.sampled_from([*OURS, "mx.example.org", "", '"mx.example.org"']),
    ),
    st.sampled_from(["Subject: zażółć", "From: jan@example.org", "Received: x\r\n\tby y", "X-A:"]),
    TRICKY,
)
ENDINGS = st.sampled_from(["\r\n", "\n", "\r", "\r\r\n"])


@st.composite
def header_messages(draw: st.DrawFn) -> bytes:
    fields = draw(st.lists(FIELD, max_size=8))
    ending = draw(ENDINGS)
    head = "".join(field + draw(st.one_of(st.just(ending), ENDINGS)) for field in fields)
    body = draw(st.sampled_from(["", "\r\nbody\r\n", "\r\nAuthentication-Results: " + HOST]))
    return (head + body).encode("utf-8", "surrogatepass")


def _results_fields(raw: bytes) -> list[str]:
    """The Authentication-Results values a reader of the stored message sees."""
    parsed = BytesParser(policy=policy.compat32).parsebytes(raw, headersonly=True)
    return [str(value) for value in parsed.get_all("Authentication-Results", [])]


def _ours(value: str) -> bool:
    results = parse_results(value.replace("\r", "").replace("\n", ""))
    return results is not None and results.authserv_id.strip().rstrip(".").lower() == HOST


@FUZZ
@given(raw=header_messages())
@example(raw=f"Authentication-Results: {HOST}; dkim=pass\r\n\r\n".encode())
def test_no_result_in_our_name_survives_and_nothing_else_changes(raw: bytes) -> None:
    kept = remove_forged_results(raw, HOST)
    assert not any(_ours(value) for value in _results_fields(kept)), kept
    # Only whole fields go: what is left is the message with some of its lines taken out.
    removed = iter(raw.splitlines(keepends=True))
    assert all(any(line == other for other in removed) for line in kept.splitlines(keepends=True))


# --- The own-domain check of From -------------------------------------------------------------

ADDRESS_PIECES = st.sampled_from(
    [
        "<boss@rada.miasto.example>",
        "boss@RADA.miasto.example.",
        "x@mail.rada.miasto.example",
        "jan@example.org",
        "(",
        ")",
        ":",
        ";",
        ",",
        '"',
        "<",
        ">",
        "@",
        "\\",
        "=?utf-8?q?a?=",
        " ",
    ]
)
FROM_VALUE = st.lists(st.one_of(ADDRESS_PIECES, TRICKY), max_size=20).map("".join)


@FUZZ
@given(values=st.lists(FROM_VALUE, min_size=1, max_size=3), body=st.binary(max_size=50))
@example(values=["(" * 700 + "<boss@rada.miasto.example>"], body=b"")
@example(values=["a:" * 700 + "boss@rada.miasto.example"], body=b"")
def test_the_from_check_never_raises_and_its_reply_is_one_line(
    values: list[str], body: bytes
) -> None:
    raw = "".join(f"From: {v}\r\n" for v in values).encode("utf-8", "surrogatepass")
    raw += b"\r\n" + body
    domains = from_domains(raw)
    assert domains is None or all(d and d == d.lower() for d in domains)
    session = Session(loop=None)  # type: ignore[arg-type]
    session.peer = ("192.0.2.7", 40000)
    reply = _handler()._own_domain_from(session, Envelope(), raw, None)
    assert (reply is not None) == bool(claimed_own_domains(raw, OWN))
    if reply is not None:
        assert reply.startswith("550 5.7.1 ") and reply.isprintable()


@pytest.mark.parametrize(
    "prefix",
    ["(" * 700, "a:" * 700, "x" * 9000, "<a@b>," * 200_000],
    ids=["comments", "groups", "long", "megabytes"],
)
def test_a_from_too_odd_to_read_still_claims_the_domain_it_names(prefix: str) -> None:
    # The email package's address parser recursed once per "(" and ":" (RecursionError: a 500
    # to the client, a traceback in the log) and took 4 s per megabyte on the event loop.
    raw = f"From: {prefix} <boss@rada.miasto.example>\r\n\r\nbody".encode()
    started = time.monotonic()
    assert claimed_own_domains(raw, OWN) == ["rada.miasto.example"]
    assert claimed_own_domains(raw.replace(b"rada.miasto", b"example"), OWN) == []
    assert time.monotonic() - started < 1.0


# --- Acknowledgements and bounces quote the original header ----------------------------------

HEADER_FIELDS = st.one_of(
    st.sampled_from(
        [
            "Message-ID: <abc@example.org>",
            "Message-ID: <a\x00b@example.org>",
            "Message-ID: <zażółć@example.org>",
            "References: " + " ".join(f"<{n}@r.example>" for n in range(40)),
            "References: <" + "x" * 199 + "@" + "y" * 199 + ">",
            "In-Reply-To: <\udcff@example.org>",
            "Subject: =?utf-8?q?Za=C5=BC=C3=B3=C5=82=C4=87?= =?bogus?q?x?=",
            "Subject: =?utf-8?b?" + "QUJD" * 100 + "?=",
            "Content-Type: multipart/report; report-type=delivery-status",
            "Auto-Submitted: no",
        ]
    ),
    st.builds("{}: {}".format, st.sampled_from(["Subject", "Message-ID", "References"]), TRICKY),
)


@st.composite
def originals(draw: st.DrawFn) -> bytes:
    fields = draw(st.lists(HEADER_FIELDS, max_size=6))
    ending = draw(ENDINGS)
    text = ending.join(fields) + ending + ending + "body"
    return text.encode("utf-8", "surrogatepass")


def _assert_clean_message(raw: bytes, names: list[str]) -> Message:
    """``raw`` is 7-bit, its header has exactly ``names`` and every line is short and plain."""
    assert raw.isascii()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 998 and b"\r" not in line for line in head.split(b"\r\n"))
    parsed = message_from_bytes(raw, policy=policy.default)
    assert sorted(k.lower() for k in parsed.keys()) == sorted(names)
    for name in parsed.keys():
        assert no_control(str(parsed[name])), name
    return parsed


COMMON = ["from", "to", "subject", "date", "message-id", "mime-version", "content-type"]
COUNCILLORS = [("Łukasz Żółć", "lukasz.zolc@rada.miasto.example")]


@FUZZ
@given(original=originals(), sender=st.sampled_from(["jan@example.org", "a+b@x.example"]))
def test_acknowledgements_quote_no_field_of_the_original(original: bytes, sender: str) -> None:
    ack_refusal(sender, original, OWN, origin="inbound")
    ack = build_acknowledgement(
        SETTINGS,
        mail_from=sender,
        original=original,
        delivered_at=datetime(2026, 11, 26, 13, 0, tzinfo=UTC),
        councillors=COUNCILLORS,
    )
    optional = [name for name in ("in-reply-to", "references") if ack[name] is not None]
    names = [*COMMON, "content-transfer-encoding", "auto-submitted", "content-language"]
    _assert_clean_message(ack.as_bytes(), names + optional)


@FUZZ
@given(
    original=originals(),
    sender=st.one_of(st.sampled_from(["jan@example.org"]), TRICKY.filter(valid_sender)),
    reply=TRICKY,
)
def test_bounces_quote_the_subject_cleaned_and_nothing_else(
    original: bytes, sender: str, reply: str
) -> None:
    bounce_refusal(sender, original, OWN)
    try:
        dsn = build_dsn(
            SETTINGS,
            queue_id="0123456789abcdef",
            mail_from=sender,
            arrival=datetime(2026, 11, 26, 13, 0, tzinfo=UTC),
            original=original,
            failures=[Failure("anna@gmina.example", Reply(550, reply))],
        )
    except ValueError:  # the sender's address cannot be written to: the worker sends none
        return
    # (make_mixed moves Content-Language down to the text part)
    parsed = _assert_clean_message(dsn.as_bytes(), [*COMMON, "auto-submitted"])
    assert [p.get_content_type() for p in parsed.iter_parts()] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]


@FUZZ
@given(text=TRICKY, display=TRICKY)
# A lone surrogate (a JSON "\\ud800") made the email package raise UnicodeEncodeError.
@example(text="\ud800", display="")
@example(text="", display="\udcff")
def test_header_field_writes_one_clean_field(text: str, display: str) -> None:
    for name, value in (
        ("Subject", text),
        ("X-Title", text),
        ("To", (display, "anna.nowak@rada.miasto.example")),
    ):
        field = header_field(name, value)
        parsed = message_from_bytes(field + b"\r\n", policy=policy.default)
        assert field.isascii() and parsed.keys() == [name]
        assert no_control(str(parsed[name]))
