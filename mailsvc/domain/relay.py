"""Relay decisions (pure): is a recipient address ours, and in what form?

The SMTP layer maps each :class:`Refusal` to a reply code from one table; nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass


class RefusalKind(enum.Enum):
    BAD_SYNTAX = "bad_syntax"
    RELAY_DENIED = "relay_denied"
    UNKNOWN_USER = "unknown_user"
    MANDATE_ENDED = "mandate_ended"
    TOO_MANY_RECIPIENTS = "too_many_recipients"


@dataclass(frozen=True)
class Refusal:
    kind: RefusalKind
    detail: str = ""


@dataclass(frozen=True)
class LocalRecipient:
    """A syntactically clean address in one of the council's domains, lowercased."""

    local_part: str
    domain: str

    @property
    def address(self) -> str:
        return f"{self.local_part}@{self.domain}"


# Characters that route mail onwards in some MTA or that we never assign in a local part.
_ROUTING_CHARS = set('%!:,@[]"\\/ ')
_ALLOWED_LOCAL = set("abcdefghijklmnopqrstuvwxyz0123456789.-_+")


def classify_recipient(address: str, domains: Collection[str]) -> LocalRecipient | Refusal:
    """Decide whether ``address`` (as given in RCPT TO, without <>) is a local recipient.

    Refuses every relay trick: source routes (@a:b@c), percent hack (a%b@us), bang paths (b!a@us),
    quoted local parts, IP literals, other domains, and the council's own hostname used as a relay.
    """
    addr = address.strip()
    if not addr or len(addr) > 254:
        return Refusal(RefusalKind.BAD_SYNTAX, "empty or overlong address")
    if addr.startswith("@") or addr.count("@") != 1:
        return Refusal(RefusalKind.RELAY_DENIED, "source routes and multiple @ are not relayed")
    local, _, domain = addr.rpartition("@")
    domain = domain.lower()
    if domain.startswith("[") or domain not in {d.lower() for d in domains}:
        return Refusal(RefusalKind.RELAY_DENIED, f"{domain} is not a domain of this council")
    if any(ch in _ROUTING_CHARS for ch in local):
        return Refusal(RefusalKind.RELAY_DENIED, "routing characters in the local part")
    local = local.lower()
    if (
        not local
        or len(local) > 64
        or not set(local) <= _ALLOWED_LOCAL
        or local.startswith(".")
        or local.endswith(".")
        or ".." in local
    ):
        return Refusal(RefusalKind.UNKNOWN_USER, "no such mailbox")
    return LocalRecipient(local, domain)


def header_nul_line(content: bytes) -> int | None:
    """The number (from 1) of the first header line of a raw message that holds a NUL byte, or
    None. RFC 5322 allows NUL nowhere in a message; the header's fields are read into text that
    the database stores (PostgreSQL's text type cannot hold NUL), so such a message is refused
    at DATA rather than taken with 250 and failing later."""
    end = len(content)
    for blank in (b"\r\n\r\n", b"\n\n"):
        found = content.find(blank)
        if found != -1:
            end = min(end, found)
    if content.startswith((b"\r\n", b"\n")):
        end = 0  # an empty header: everything after the blank line is body
    at = content.find(b"\0", 0, end)
    return None if at == -1 else content.count(b"\n", 0, at) + 1
