"""What every delivery-report format shares: the findings it yields and small text helpers.

The standard parser (``parse.py``) and the non-standard detectors (one module per producer)
both use these, so an address or a status means the same thing whichever path found it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_DIAGNOSTIC = 500
MAX_EXCERPT = 4000

_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_REPLY_CODE = re.compile(r"(?<!\d)([245])\d\d(?=[ -]|$)")
_QUOTED = re.compile(r"[<>\"'`]")
_UNI_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


@dataclass(frozen=True)
class Finding:
    """One recipient a non-standard bounce speaks of."""

    address: str
    action: str  # failed | delayed
    status: str
    diagnostic: str = ""


@dataclass(frozen=True)
class Detection:
    """What a detector recognised: the recipients and the excerpt it read them from."""

    detector: str  # the stable id of the format
    findings: tuple[Finding, ...]
    excerpt: str
    original_message_id: str | None = None


@dataclass(frozen=True)
class PlainBounce:
    """A message that carries no standard report, as the detectors see it."""

    subject: str
    sender: str  # the From address, lowercased ("" when none)
    body: str  # the first text part, decoded, newlines normalised to "\n"
    failed_recipients: tuple[str, ...] = ()  # X-Failed-Recipients (Exim, Gmail)


def collapse(text: str, limit: int = MAX_DIAGNOSTIC) -> str:
    """Whitespace collapsed to single spaces and cut to ``limit`` characters."""
    return " ".join(text.split())[:limit]


def decode_utf8_addr(text: str) -> str:
    """RFC 6533 utf-8-addr-xtext/unitext: ``\\x{HEX}`` escapes become the characters."""

    def char(match: re.Match[str]) -> str:
        code = int(match.group(1), 16)
        return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else ""

    return _UNI_ESCAPE.sub(char, text)


def normalize_address(text: str) -> str:
    """``local@domain`` with the domain lowercased, or "" when ``text`` holds no address.

    Accepts what reports really carry: ``<a@b>``, ``"a@b"``, ``a@b (comment)``, a trailing dot or
    colon, a ``mailto:`` prefix.
    """
    for token in text.replace(",", " ").split():
        token = _QUOTED.sub("", token).strip(".:;()[]")
        if token.lower().startswith("mailto:"):
            token = token[7:]
        local, at, domain = token.rpartition("@")
        if at and local and domain and "@" not in local.strip('"'):
            return f"{local}@{domain.lower()}"[:320]
    return ""


def plausible_address(address: str) -> bool:
    """Whether a normalised address can name a mailbox: not one elided for display, as Google
    Groups and list archives print them ("david...@gmail.com")."""
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain) and not local.endswith("...")


def enhanced_status(text: str) -> str:
    """The first RFC 3463 status code (``5.1.1``) in ``text``, or ""."""
    match = _ENHANCED.search(text)
    return ".".join(match.groups()) if match else ""


def infer_status(text: str, default: str) -> str:
    """The best status to be had from free text: an enhanced code, else a reply code's class."""
    status = enhanced_status(text)
    if status:
        return status
    match = _REPLY_CODE.search(text)
    if match and match.group(1) in "45":
        return f"{match.group(1)}.0.0"
    return default


# --- Reading plain-text bounces ------------------------------------------------------------

TOP_LINES = 40  # a producer's own wording must appear this close to the top of the body

_MSG_ID_LINE = re.compile(
    r"^(?:message-id|x-original-message-id):[ \t]*(?:\n[ \t]+)?(<[^<>\s]{1,250}>)",
    re.IGNORECASE | re.MULTILINE,
)
_ANGLE_START = re.compile(r"^<([^<>\s]{1,320})>(?: \(expanded from <[^<>]{0,320}>\))?:[ \t]*(.*)$")


def top_index(lines: list[str], *starts: str) -> int:
    """The index of the first of the top lines that begins with one of ``starts``, else -1.

    Quoted lines (``> …``) never count: a message quoting a bounce is not one.
    """
    for index, line in enumerate(lines[:TOP_LINES]):
        stripped = line.strip()
        if stripped.startswith(starts):
            return index
    return -1


def line_index(lines: list[str], start: int, *starts: str) -> int:
    """The index of the first line at or after ``start`` beginning with one of ``starts``."""
    for index in range(max(start, 0), len(lines)):
        if lines[index].strip().startswith(starts):
            return index
    return -1


def line_containing(lines: list[str], start: int, *needles: str) -> int:
    """The index of the first line at or after ``start`` containing one of ``needles``."""
    for index in range(max(start, 0), len(lines)):
        if any(needle in lines[index] for needle in needles):
            return index
    return -1


def angle_blocks(lines: list[str], start: int, stop: tuple[str, ...]) -> list[tuple[str, str]]:
    """``<addr>: reason`` blocks (qmail, Yahoo, Postfix), the reason running to a blank line."""
    blocks: list[tuple[str, list[str]]] = []
    for line in lines[start:]:
        if line.strip().startswith(stop):
            break
        match = _ANGLE_START.match(line)
        if match:
            blocks.append((match.group(1), [match.group(2)]))
        elif not line.strip():
            if blocks and any(blocks[-1][1]):
                blocks[-1][1].append("\n")  # a blank line closes the reason
        elif blocks and "\n" not in blocks[-1][1]:
            blocks[-1][1].append(line)
    return [(addr, " ".join(p for p in parts if p != "\n")) for addr, parts in blocks]


def message_id_in(text: str, start: int = 0) -> str | None:
    """The first ``Message-ID:`` (or ``X-Original-Message-ID:``) header line's id in ``text``."""
    match = _MSG_ID_LINE.search(text, start)
    return match.group(1) if match else None


def message_id_after(text: str, marker: str) -> str | None:
    """The Message-ID of the copy a bounce returns after ``marker`` (None when none)."""
    at = text.find(marker)
    return message_id_in(text, at) if at >= 0 else None


def excerpt(lines: list[str], start: int, end: int) -> str:
    """Lines ``start`` to ``end`` (exclusive, -1 for all) joined and bounded."""
    chosen = lines[start:] if end < 0 else lines[start:end]
    return "\n".join(chosen).strip()[:MAX_EXCERPT]
