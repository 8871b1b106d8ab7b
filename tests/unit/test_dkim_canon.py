"""Relaxed canonicalization a window at a time agrees with dkimpy's on the whole message, for any
text and any cut into chunks; and it reads the message as the SMTP client will send it."""

from __future__ import annotations

import hashlib
import re

import aiosmtplib.protocol
from dkim.canonicalization import Relaxed
from hypothesis import example, given
from hypothesis import strategies as st

from mailsvc.relay.dkim.canon import (
    RelaxedBodyHash,
    crlf,
    header_fields,
    line_windows,
    relaxed_header,
    split_header,
)

# Lines made of what matters to relaxed canonicalization: blanks, tabs, dots, CR and LF.
_text = st.lists(
    st.sampled_from([b"a", b"b", b" ", b"\t", b".", b"\r\n", b"\n", b"\r", b"  \r\n", b"\r\n\r\n"]),
    max_size=60,
).map(b"".join)


def wire(body: bytes) -> bytes:
    """What aiosmtplib puts on the wire for ``body`` (before dot-stuffing): its own code."""
    text = aiosmtplib.protocol.LINE_ENDINGS_REGEX.sub(b"\r\n", body)
    return text if text.endswith(b"\r\n") or not text else text + b"\r\n"


def expected_hash(body: bytes) -> bytes:
    return hashlib.sha256(Relaxed.canonicalize_body(wire(body))).digest()


def streamed_hash(body: bytes, cuts: list[int]) -> bytes:
    chunks, start = [], 0
    for cut in sorted({c % (len(body) + 1) for c in cuts}):
        chunks.append(body[start:cut])
        start = cut
    chunks.append(body[start:])
    digest = RelaxedBodyHash()
    for window in line_windows(chunks):
        digest.update(window)
    return digest.digest()


@given(_text, st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
@example(b"", [])
@example(b"\r\n\r\n", [1])
@example(b"a \r\n\r\n \t\r\nb\t\r\n\r\n", [3, 4, 9])
@example(b"a\r", [1])  # a CR at the very end of the body
@example(b"a\r\r\nb", [2])  # a lone CR just before a cut
def test_the_streamed_body_hash_equals_dkimpys_over_the_whole_wire_body(
    body: bytes, cuts: list[int]
) -> None:
    assert streamed_hash(body, cuts) == expected_hash(body)


def test_the_empty_body_and_a_body_of_blank_lines_hash_as_empty() -> None:
    empty = hashlib.sha256(b"").digest()
    assert streamed_hash(b"", []) == empty
    assert streamed_hash(b"\r\n \r\n\t\r\n", [2]) == empty


def test_text_after_held_back_empty_lines_brings_them_back() -> None:
    body = b"a\r\n" + b"\r\n" * 3 + b"b\r\n"
    cuts = [3, 5, 7, 9]  # every empty line in a window of its own
    assert streamed_hash(body, cuts) == hashlib.sha256(body).digest()


def test_windows_end_after_a_line_feed_and_the_body_ends_with_crlf() -> None:
    assert list(line_windows([b"ab", b"c\r", b"\nde\r\nf"])) == [b"abc\r\nde\r\n", b"f\r\n"]
    assert list(line_windows([b"x\r"])) == [b"x\r"]  # crlf() turns the lone CR into CRLF


_header_value = st.lists(
    st.sampled_from([b"x", b"Y", b" ", b"\t", b"\r\n ", b"\r\n\t", b":", b";"]), max_size=20
).map(b"".join)


@given(st.sampled_from([b"Subject", b"FROM", b"x-Mixed-Case", b"To "]), _header_value)
def test_a_relaxed_header_field_equals_dkimpys(name: bytes, value: bytes) -> None:
    ((theirs_name, theirs_value),) = Relaxed.canonicalize_headers([(name, value + b"\r\n")])
    assert relaxed_header(name, value) == theirs_name + b":" + theirs_value.rstrip(b"\r\n")


def test_header_fields_keep_folds_and_order() -> None:
    block = b"From: a@x\r\nSubject: one\r\n two\r\nto: b@y\r\nnot a field\r\nX: 1"
    assert header_fields(block) == [
        (b"From", b" a@x"),
        (b"Subject", b" one\r\n two"),
        (b"to", b" b@y"),
        (b"X", b" 1"),
    ]


def test_split_header_finds_the_body_after_crlf_or_lf() -> None:
    assert split_header(b"A: 1\r\nB: 2\r\n\r\nbody") == (b"A: 1\r\nB: 2", 14)
    assert split_header(b"A: 1\nB: 2\n\nbody") == (b"A: 1\r\nB: 2", 11)
    assert split_header(b"A: 1\r\n") == (b"A: 1\r\n", 6)  # all header, no body


def test_crlf_leaves_a_crlf_text_as_it_is() -> None:
    text = b"a\r\nb\r\n"
    assert crlf(text) is text
    assert crlf(b"a\nb\rc\r\n") == b"a\r\nb\r\nc\r\n"
    assert re.fullmatch(rb"(?:[^\r\n]*\r\n)*", crlf(b"\r\r\n\n\r"))
