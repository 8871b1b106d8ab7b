"""Recipient classification: local addresses accepted, every relay trick refused."""

from __future__ import annotations

import pytest

from mailsvc.domain.relay import (
    LocalRecipient,
    Refusal,
    RefusalKind,
    classify_recipient,
    header_nul_line,
)
from mailsvc.relay.smtp.replies import refusal_reply

DOMAINS = ("rada.miasto.example",)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("lukasz.zolc@rada.miasto.example", "lukasz.zolc@rada.miasto.example"),
        ("Lukasz.Zolc@RADA.Miasto.Example", "lukasz.zolc@rada.miasto.example"),
        ("anna.nowak-kowalska@rada.miasto.example", "anna.nowak-kowalska@rada.miasto.example"),
    ],
)
def test_local_addresses_are_accepted_lowercased(address: str, expected: str) -> None:
    result = classify_recipient(address, DOMAINS)
    assert isinstance(result, LocalRecipient)
    assert result.address == expected


@pytest.mark.parametrize(
    "address",
    [
        "victim@elsewhere.example",
        "victim%elsewhere.example@rada.miasto.example",  # percent hack
        "elsewhere.example!victim@rada.miasto.example",  # bang path
        "@rada.miasto.example:victim@elsewhere.example",  # source route
        '"victim@elsewhere.example"@rada.miasto.example',  # quoted local part
        "victim@[127.0.0.1]",  # IP literal
        "victim@elsewhere.example@rada.miasto.example",
        "victim@mail.rada.miasto.example",  # our own hostname is not a mail domain
        "victim@rada.miasto.example.",
    ],
)
def test_relay_tricks_are_refused(address: str) -> None:
    result = classify_recipient(address, DOMAINS)
    assert isinstance(result, Refusal)
    assert result.kind is RefusalKind.RELAY_DENIED


@pytest.mark.parametrize("address", ["", "a" * 300 + "@rada.miasto.example"])
def test_bad_syntax(address: str) -> None:
    result = classify_recipient(address, DOMAINS)
    assert isinstance(result, Refusal) and result.kind is RefusalKind.BAD_SYNTAX


@pytest.mark.parametrize("address", [".x@rada.miasto.example", "a..b@rada.miasto.example"])
def test_impossible_local_parts_are_unknown(address: str) -> None:
    result = classify_recipient(address, DOMAINS)
    assert isinstance(result, Refusal) and result.kind is RefusalKind.UNKNOWN_USER


def test_reply_texts_cannot_be_split_by_crlf_in_addresses() -> None:
    reply = refusal_reply(RefusalKind.UNKNOWN_USER, "x\r\n250 fake@rada", "biuro@rada")
    assert reply.startswith("550 5.1.1")
    assert "\r" not in reply and "\n" not in reply


def test_ended_mandate_reply_names_the_office() -> None:
    reply = refusal_reply(RefusalKind.MANDATE_ENDED, "a@rada", "biuro@rada.miasto.example")
    assert reply.startswith("550 5.1.6") and "biuro@rada.miasto.example" in reply


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n", None),
        (b"From: a@example.org\r\nSubject: x\0y\r\n\r\nbody\r\n", 2),
        (b"Subject: \0\r\n\r\n", 1),
        (b"From: a@example.org\r\nX: folded\r\n \0continued\r\n\r\n", 3),
        (b"From: a@example.org\nSubject: x\0\n\nbody\n", 2),  # bare LF line ends
        (b"From: a@example.org\r\n\r\nbody with \0 is not the header's\r\n", None),
        (b"\r\nSubject: \0 in the body of a message without header\r\n", None),
        (b"From: a@example.org\r\nSubject: no body at all \0", 2),
    ],
)
def test_a_nul_byte_in_the_header_is_found_with_its_line(content: bytes, line: int | None) -> None:
    assert header_nul_line(content) == line
