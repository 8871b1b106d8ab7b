"""What the checks read of the message itself: its header block and its author's domain."""

from __future__ import annotations

import re

from mailsvc.domain.header_addresses import header_addresses


def _header_block(message: bytes) -> bytes:
    """The header section only: DMARC and the signature test never need the body."""
    crlf = message.find(b"\r\n\r\n")
    # A bare-LF blank line counts only before the CRLF one: never scan the body for it.
    lf = message.find(b"\n\n", 0, crlf if crlf >= 0 else len(message))
    ends = [i for i in (crlf, lf) if i >= 0]
    return message[: min(ends)] if ends else message


def _from_domain(message: bytes) -> tuple[str, bool]:
    """(domain of the author, whether From is unusable); ("", False) when there is no From."""
    header = _header_block(message).decode("utf-8", "replace")
    values: list[str] = []
    for field in re.split(r"\r?\n(?![ \t])", header):
        name, sep, value = field.partition(":")
        if sep and name.strip().lower() == "from":
            values.append(re.sub(r"\r?\n[ \t]", " ", value))
    if not values:
        return "", False
    return _from_domain_of(values)


def _from_domain_of(values: list[str]) -> tuple[str, bool]:
    pairs = header_addresses(values)
    if pairs is None:
        return "", True  # far too long or deeply nested to read: no usable author domain
    domains: set[str] = set()
    for _name, address in pairs:
        domain = _domain_of(address)
        if not domain:
            return "", True
        domains.add(domain.lower())
    if len(domains) != 1:
        return "", True  # RFC 7489 6.6.1: no single author domain to evaluate
    domain = domains.pop()
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "", True
    return domain, False


def _domain_of(address: str) -> str:
    _local, at, domain = address.rpartition("@")
    return domain.strip().rstrip(".") if at else ""


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
