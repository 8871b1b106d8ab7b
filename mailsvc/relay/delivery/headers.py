"""Reading the header of a queued message, robustly: bounces and acknowledgements quote it.

Queued messages are kept byte for byte, so their headers may be anything a client sent: raw
UTF-8, broken RFC 2047 words, folded lines, no headers at all. Nothing here raises on them.
"""

from __future__ import annotations

import re
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser

# Bounces quote at most this much of the original header.
MAX_HEADER_BYTES = 64 * 1024
_MSG_ID = re.compile(r"<[^<>\s@]{1,200}@[^<>\s@]{1,200}>")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def header_block(body: bytes) -> bytes:
    """The header section of ``body`` (without the blank line), CRLF line ends, size-capped."""
    match = _HEADER_END.search(body, 0, MAX_HEADER_BYTES + 4)
    block = body[: match.start()] if match else body[:MAX_HEADER_BYTES]
    block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return block.rstrip(b"\r\n")


def parse_header(body: bytes) -> Message:
    """The header of ``body`` as a Message whose values are plain strings."""
    return BytesHeaderParser(policy=policy.compat32).parsebytes(header_block(body) + b"\r\n\r\n")


def _unescape(raw: str) -> str:
    # The bytes parser keeps non-ASCII bytes as surrogates; most are raw UTF-8 (RFC 6532).
    return raw.encode("ascii", "surrogateescape").decode("utf-8", "replace")


def _raw(header: Message, name: str) -> str | None:
    # raw_items keeps the parser's surrogates; get() would turn raw UTF-8 into U+FFFD.
    wanted = name.lower()
    for key, value in header.raw_items():
        if key.lower() == wanted:
            return str(value)
    return None


def header_text(header: Message, name: str) -> str:
    """The decoded, unfolded text of header ``name`` ("" when absent or unreadable)."""
    raw = _raw(header, name)
    if raw is None:
        return ""
    text = _unescape(raw)
    try:
        text = str(make_header(decode_header(text)))
    except (ValueError, LookupError, UnicodeError):
        pass  # keep it undecoded: still better than nothing in a quoted subject
    return " ".join(text.split())


def message_ids(header: Message, name: str) -> list[str]:
    """The ``<id@host>`` message ids found in header ``name``."""
    return _MSG_ID.findall(_unescape(_raw(header, name) or ""))


def is_delivery_report(header: Message) -> bool:
    """A DSN or MDN (multipart/report): never answered with another report."""
    content_type = header_text(header, "Content-Type").lower()
    return content_type.startswith("multipart/report")
