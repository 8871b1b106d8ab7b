"""The council's own domains, and the domains a message claims to come from.

A domain is the council's own when it is one of the configured own domains or a subdomain of
one (``mail.rada.example`` is as much the council as ``rada.example``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.utils import getaddresses

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


def from_domains(message: bytes) -> list[str]:
    """The domains of every address in every From field of the header, in order."""
    header = _header_block(message).decode("utf-8", "replace")
    values = []
    for field in re.split(r"\r?\n(?![ \t])", header):
        name, sep, value = field.partition(":")
        if sep and name.strip().lower() == "from":
            values.append(re.sub(r"\r?\n[ \t]", " ", value))
    domains = [domain_of(address) for _name, address in getaddresses(values)]
    return list(dict.fromkeys(d for d in domains if d))
