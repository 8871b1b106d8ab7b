"""DKIM's "relaxed" canonicalization (RFC 6376 3.4.2 and 3.4.4), the body as a stream.

What is signed must be what the receiver reads, and the smarthost client (aiosmtplib) turns
every line end into CRLF on the way out (bare LF and bare CR included) and ends the body with
CRLF. Both functions here read the message as it will be on the wire after that.

The body is hashed a window at a time, each window whole lines, so that a 27 MB distribution
copy never has to be in memory to be signed; empty lines at the end of the body are held back
until a line with text follows them (relaxed ignores them at the very end). Base64 lines, most
of such a copy, have no blanks and are already CRLF: they skip the substitutions.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator

_CRLF = b"\r\n"
_EOL = re.compile(rb"\r\n|\n|\r(?!\n)")  # as aiosmtplib's: every line end becomes CRLF
_WSP = re.compile(rb"[ \t]+")


def crlf(text: bytes) -> bytes:
    """``text`` with every line end as CRLF (a no-op for the usual message)."""
    lines = text.count(b"\n")
    if lines == text.count(_CRLF) == text.count(b"\r"):
        return text
    return _EOL.sub(_CRLF, text)


def split_header(message: bytes) -> tuple[bytes, int]:
    """The header block of ``message`` (CRLF line ends, without the empty line) and the offset
    where its body starts; a message without an empty line is all header."""
    match = re.search(rb"\r?\n\r?\n", message)
    if match is None:
        return crlf(message), len(message)
    return crlf(message[: match.start()]), match.end()


def header_fields(block: bytes) -> list[tuple[bytes, bytes]]:
    """The fields of a CRLF header block as (name, raw value with its folds), in order."""
    fields: list[tuple[bytes, bytes]] = []
    for line in block.split(_CRLF):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + _CRLF + line)
        elif b":" in line:
            name, _, value = line.partition(b":")
            fields.append((name, value))
    return fields


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """One field relaxed: lower-case name, unfolded value, blanks squeezed and trimmed."""
    unfolded = value.replace(_CRLF, b"").replace(b"\n", b"")
    return name.strip().lower() + b":" + _WSP.sub(b" ", unfolded).strip(b" \t")


def line_windows(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``chunks`` regrouped so that each piece ends just after a line feed (the last one also
    with CRLF, as the SMTP client ends the body); a piece is at most one chunk plus a line."""
    carry = b""
    for chunk in chunks:
        data = carry + chunk if carry else chunk
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut]
        carry = data[cut:]
    if carry:
        yield carry if carry.endswith(b"\r") else carry + _CRLF


def _squeeze_blanks(text: bytes) -> bytes:
    """Blank runs to one space, none before a line end; only the lines from the first blank to
    the last go through the substitutions (in a part file, its few header lines)."""
    found = [i for i in (text.find(b" "), text.find(b"\t")) if i >= 0]
    if not found:
        return text
    last = max(text.rfind(b" "), text.rfind(b"\t"))
    start = text.rfind(b"\n", 0, min(found)) + 1
    end = text.find(b"\n", last) + 1 or len(text)
    middle = _WSP.sub(b" ", text[start:end]).replace(b" \r\n", _CRLF)
    return text[:start] + middle + text[end:]


class RelaxedBodyHash:
    """SHA-256 of a body in relaxed canonical form, fed whole lines (``line_windows``)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._held = 0  # CRLFs after the last text: emitted only if more text follows
        self._text = False

    def update(self, window: bytes) -> None:
        text = _squeeze_blanks(crlf(window))
        # Line ends are all CRLF here, so this drops whole CRLFs: the last line's own and any
        # empty lines after it.
        kept = text.rstrip(b"\r\n")
        if not kept:
            self._held += len(text) // 2
            return
        if self._held:
            self._hash.update(_CRLF * self._held)
        self._hash.update(kept)
        self._held = (len(text) - len(kept)) // 2
        self._text = True

    def digest(self) -> bytes:
        """The hash of the canonical body: empty, or its text ending with exactly one CRLF."""
        final = self._hash.copy()
        if self._text:
            final.update(_CRLF)
        return final.digest()
