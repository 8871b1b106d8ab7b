"""The council's own domains, and the domains a message claims to come from.

A domain is the council's own when it is one of the configured own domains or a subdomain of
one (``mail.rada.example`` is as much the council as ``rada.example``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mailsvc.domain.header_addresses import header_addresses
from mailsvc.relay.smtp.authres.message import _header_block


def domain_of(address: str) -> str:
    """The domain of an address, lower-case, without a trailing dot ("" for none)."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    return domain.strip().rstrip(".").lower() if at and local else ""


def own_domain(domain: str, own: Sequence[str]) -> str | None:
    """The own domain that ``domain`` is or belongs to; None when it is not the council's."""
    if not domain:
        return None
    try:
        domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        pass
    for candidate in own:
        if domain == candidate or domain.endswith("." + candidate):
            return candidate
    return None


def _from_values(message: bytes) -> list[str]:
    """The values of every From field of the header, unfolded."""
    header = _header_block(message).decode("utf-8", "replace")
    values = []
    for field in re.split(r"\r?\n(?![ \t])", header):
        name, sep, value = field.partition(":")
        if sep and name.strip().lower() == "from":
            values.append(re.sub(r"\r?\n[ \t]", " ", value))
    return values


def from_domains(message: bytes) -> list[str] | None:
    """The domains of every address in every From field of the header, in order; None when the
    fields cannot be read safely (``header_addresses``: far too long or deeply nested)."""
    pairs = header_addresses(_from_values(message))
    if pairs is None:
        return None
    domains = [domain_of(address) for _name, address in pairs]
    return list(dict.fromkeys(d for d in domains if d))


def claimed_own_domains(message: bytes, own: Sequence[str]) -> list[str]:
    """The domains of the From addresses that are the council's own (see ``own_domain``).

    When the From fields cannot be read safely, every own domain written anywhere in them (in
    its ASCII or Unicode form): the check that follows must fail closed, not miss a claim.
    """
    domains = from_domains(message)
    if domains is not None:
        return [domain for domain in domains if own_domain(domain, own)]
    text = " ".join(_from_values(message)).lower()
    return [domain for domain in own if domain in text or _unicode(domain) in text]


def _unicode(domain: str) -> str:
    try:
        return domain.encode("ascii").decode("idna")
    except UnicodeError:
        return domain
