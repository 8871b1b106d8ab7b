"""The field and body writers a distribution uses for its per-recipient heads, held against
``build_message`` (the email package's own builder): whatever the text, a message written
with them parses to the same header values and the same body contents, and no value can add
a header or a part."""

from __future__ import annotations

import email
import quopri
from email import policy
from email.message import EmailMessage

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from mailsvc.compose import (
    alternative_body,
    build_message,
    header_field,
    message_id_field,
    quoted_printable,
)

BOUNDARY = "=_alt_0123456789abcdef"
# Any text, weighted towards what breaks mail: diacritics, line breaks of every kind, dots,
# "=" and trailing spaces (quoted-printable), long words (folding), quotes and commas.
TRICKY = st.sampled_from(
    [
        *"ąćęłńóśźżĄĆĘŁŃÓŚŹŻ",
        *("\r\n", "\n", "\r", "\x0b", "\x85", "\xa0", "\u2028", ". ", "=", " ", "\t"),
        *('"', ",", "<", ">", "@", "=?utf-8?q?x?=", "x" * 90),
    ]
)
TEXT = st.lists(st.one_of(st.text(max_size=8), TRICKY), max_size=40).map("".join)


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def reference(*, to: tuple[str, str], subject: str, text: str, html: str) -> EmailMessage:
    built = build_message(
        from_addr=("Rada Miasta Przykładowo", "biuro.rady@urzad.miasto.example"),
        to=to,
        subject=subject,
        text=text,
        html=html,
        message_id_domain="rada.miasto.example",
    )
    return parse(built.as_bytes())


def fast(*, to: tuple[str, str], subject: str, text: str, html: str) -> EmailMessage:
    content, body = alternative_body(text, html, BOUNDARY)
    raw = b"".join(
        [
            header_field("From", ("Rada Miasta Przykładowo", "biuro.rady@urzad.miasto.example")),
            header_field("To", to),
            header_field("Subject", subject),
            b"MIME-Version: 1.0\r\n",
            message_id_field("Message-ID", ["<abc.d1@rada.miasto.example>"]),
            content,
            b"\r\n",
            body,
        ]
    )
    return parse(raw)


@settings(max_examples=150, deadline=None)
@given(name=TEXT, subject=TEXT, text=TEXT, html=TEXT)
def test_parses_as_the_email_package_builds_it(
    name: str, subject: str, text: str, html: str
) -> None:
    to = (name, "lukasz.zolc@rada.miasto.example")
    ours = fast(to=to, subject=subject, text=text, html=html)
    theirs = reference(to=to, subject=subject, text=text, html=html)
    # Some long names the email package folds in a way its own parser then fails on (a known
    # limit of the stdlib, and the same folding is used for such names on both sides).
    try:
        str(theirs["To"])
    except (TypeError, AttributeError, IndexError):
        assume(False)
    for field in ("From", "To", "Subject"):
        assert str(ours[field]) == str(theirs[field]), field
    assert ours["To"].addresses == theirs["To"].addresses
    # Nothing but the fields written: no value started a header of its own.
    assert sorted(k.lower() for k in ours) == [
        "content-type",
        "from",
        "message-id",
        "mime-version",
        "subject",
        "to",
    ]
    assert [p.get_content_type() for p in ours.walk()] == [
        "multipart/alternative",
        "text/plain",
        "text/html",
    ]
    for kind in ("plain", "html"):
        a, b = ours.get_body((kind,)), theirs.get_body((kind,))
        assert a is not None and b is not None
        assert a.get_content() == b.get_content(), kind
        assert a["Content-Transfer-Encoding"] == "quoted-printable"


@settings(max_examples=150, deadline=None)
@given(text=TEXT)
# binascii put an encoded trailing space past the 76th character here.
@example(
    text="\x800\x80𐀀\x80\x80\x80ࠀ𐀀𐀀0\x1f\x1f\x1f\x80𐀀𐀀\x1f\x80\x80\x80\x80𐀀𐀀𐀀00\x1f\x1f\x1f\x80𐀀𐀀 "
)
def test_quoted_printable_lines_are_short_ascii_crlf(text: str) -> None:
    encoded = quoted_printable(text)
    normal = b"\r\n".join(text.encode("utf-8").splitlines()) + b"\r\n"
    assert quopri.decodestring(encoded) == normal
    assert encoded.isascii() and encoded.endswith(b"\r\n")
    lines = encoded.split(b"\r\n")[:-1]
    assert b"\n" not in b"".join(lines) and b"\r" not in b"".join(lines)
    assert all(len(line) <= 76 for line in lines)
    assert all(not line.endswith((b" ", b"\t")) for line in lines)
    assert b"=_" not in encoded  # so a "=_" boundary can never occur inside a part


def test_several_message_ids_fold_onto_their_own_lines() -> None:
    ids = [f"<{n:040d}.d{n}@rada.miasto.example>" for n in range(30)]
    field = message_id_field("References", ids)
    assert all(len(line) <= 78 for line in field.split(b"\r\n"))
    assert parse(field + b"\r\n")["References"].split() == ids


@pytest.mark.parametrize(
    "bad",
    [
        "<a@b>\r\nBcc: x@example.org",
        "a@b",
        "<a b@c>",
        "<ż@c>",
        "<a@b><c@d>",
    ],
)
def test_message_ids_that_are_not_plain_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a message id"):
        message_id_field("In-Reply-To", [bad])


@pytest.mark.parametrize("boundary", ["mailsvc", "=_a b", "=_" + "x" * 80, '=_"'])
def test_boundaries_outside_the_safe_shape_are_refused(boundary: str) -> None:
    with pytest.raises(ValueError, match="not a boundary"):
        alternative_body("a", "b", boundary)


def test_header_names_and_addresses_are_checked() -> None:
    with pytest.raises(ValueError, match="not a valid header name"):
        header_field("To: x\r\nBcc", "y")
    with pytest.raises(ValueError, match=r"To: .* is not a usable email address"):
        header_field("To", ("Jan", "jan@example.org>\r\nBcc: x@example.org"))
