"""The pure pieces of mailsvc.mailbox: reading LIST responses and the feed before aioimaplib."""

from __future__ import annotations

import random

import pytest

from mailsvc.mailbox import _Feed, parse_list_response


@pytest.mark.parametrize(
    ("response", "flags", "name"),
    [
        (b'* LIST (\\HasNoChildren) "." INBOX\r\n', {"\\HASNOCHILDREN"}, b"INBOX"),
        (b'* LIST () "." "Pilne * sesje"\r\n', set(), b"Pilne * sesje"),
        (b'* list (\\Noselect) "/" "a \\"b\\" \\\\c"\r\n', {"\\NOSELECT"}, b'a "b" \\c'),
        (b"* LIST () NIL Archiwum\r\n", set(), b"Archiwum"),
        (b'* LIST () "." {9}\r\nWrzesie\xc5\x84\r\n', set(), "Wrzesień".encode()),
        (b'* LIST () "\\\\" "Sesje Rady\\\\Wrzesie&AUQ-"\r\n', set(), b"Sesje Rady\\Wrzesie&AUQ-"),
    ],
)
def test_list_responses_give_flags_and_the_raw_name(
    response: bytes, flags: set[str], name: bytes
) -> None:
    assert parse_list_response(response) == (frozenset(flags), name)


@pytest.mark.parametrize(
    "response",
    [
        b'* LSUB () "." INBOX\r\n',
        b'* LIST "." INBOX\r\n',  # no flags
        b'* LIST () "." {20}\r\nshort\r\n',  # the literal runs past the response
        b'* LIST () "." \r\n',  # no name
    ],
)
def test_malformed_list_responses_are_refused(response: bytes) -> None:
    assert parse_list_response(response) is None


STREAM = (
    b"* OK ready\r\n"
    b'* LIST () "." {9}\r\nWrzesie\xc5\x84\r\n'
    b'* LIST (\\HasNoChildren) "." "Pilne * sesje"\r\n'
    # A literal that looks like a LIST response inside is a message, not a response.
    b"* 1 FETCH (UID 7 BODY[] {27}\r\nSubject: x\r\n* LIST () . y\r\n)\r\n"
    b"* LIST () NIL {3}\r\na b\r\n"
    b"A1 OK done\r\n"
)
LITERAL = b"Subject: x\r\n* LIST () . y\r\n"
LISTED = [
    b'* LIST () "." {9}\r\nWrzesie\xc5\x84\r\n',
    b'* LIST (\\HasNoChildren) "." "Pilne * sesje"\r\n',
    b"* LIST () NIL {3}\r\na b\r\n",
]


@pytest.mark.parametrize("seed", range(20))
def test_the_feed_hands_on_lines_and_literals_whatever_the_reads(seed: int) -> None:
    pieces: list[bytes] = []
    feed = _Feed(pieces.append)
    cuts = sorted(random.Random(seed).sample(range(1, len(STREAM)), seed % 12))
    for start, end in zip([0, *cuts], [*cuts, len(STREAM)], strict=True):
        feed(STREAM[start:end])

    assert b"".join(pieces) == STREAM  # nothing lost, nothing added, in order
    # At most one line at a time (aioimaplib's parser recurses once per line of a call).
    assert all(p.count(b"\r\n") <= 1 or p in LITERAL for p in pieces)
    assert feed.listed == LISTED
