"""Reading our own Authentication-Results back: who the checks authenticated.

The verdict travels with the queued message as the Authentication-Results field we prepend at
DATA (the first field of the stored message; fields claiming our authserv-id were removed from
the incoming header before it, see ``header.remove_forged_results``). So the delivery worker,
possibly in another process and long after the SMTP session, reads the same facts the councillor
sees, from the message itself, and a message queued before an upgrade keeps its verdict.

* ``read_results(message, authserv_id)``: our results from the message's first header field,
  or None when that field is not ours (the checks were off, or it is not our header at all).
* ``parse_results(value)``: the same from a header value (``AuthResults.header_value``).
* ``sender_unauthenticated(results, mail_from)``: why an auto-reply to ``mail_from`` would not
  go to an authenticated sender (None: it would). SPF pass for the envelope's domain, or a DKIM
  pass whose signing domain is aligned with it (relaxed, by organisational domain, as DMARC).
* ``domain_authenticated(results, domain)``: SPF pass for exactly ``domain`` or a DKIM pass
  signed by exactly ``domain`` (strict alignment: how mail claiming our own domain must prove it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailsvc.relay.smtp.authres.dmarc import _organizational_domain
from mailsvc.relay.smtp.authres.header import _comparable
from mailsvc.relay.smtp.authres.results import PASS


@dataclass(frozen=True)
class Results:
    """What our header says: the SPF result and its domain, and the passing DKIM domains."""

    authserv_id: str
    spf: str = ""  # the result keyword; "" when the header has no spf
    spf_domain: str = ""  # smtp.mailfrom's domain; "" when SPF was for the HELO name
    dkim_pass: tuple[str, ...] = ()  # header.d of each signature that passed, lower-case

    def summary(self) -> str:
        dkim = ",".join(self.dkim_pass) if self.dkim_pass else "no pass"
        return f"spf={self.spf or 'none'}, dkim={dkim}"


_FIRST_FIELD = re.compile(rb"\A([^:\r\n]+):([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)")
_MAX_FIELD = 16 * 1024


def read_results(message: bytes, authserv_id: str) -> Results | None:
    """Our results from the first header field of ``message``, or None if it is not ours."""
    found = _FIRST_FIELD.match(message[:_MAX_FIELD])
    if found is None or found.group(1).strip().lower() != b"authentication-results":
        return None
    value = re.sub(r"\r?\n", "", found.group(2).decode("utf-8", "replace"))
    results = parse_results(value)
    if results is None or _comparable(results.authserv_id) != _comparable(authserv_id):
        return None
    return results


def parse_results(value: str) -> Results | None:
    """An RFC 8601 header value, as we write it; None when it has no authserv-id."""
    parts = _split(value, ";", keep_empty=True)
    first = _split(parts[0], " \t") if parts else []
    authserv = _unquote(first[0]) if first else ""
    if not authserv:
        return None
    spf = spf_domain = ""
    dkim_pass: list[str] = []
    for part in parts[1:]:
        words = _split(part, " \t")
        if not words:
            continue
        method, _, result = words[0].partition("=")
        properties = {}
        for word in words[1:]:
            key, sep, raw = word.partition("=")
            if sep:
                properties[key.lower()] = _unquote(raw)
        method, result = method.strip().lower(), result.strip().lower()
        if method == "spf" and not spf:
            spf = result
            spf_domain = properties.get("smtp.mailfrom", "").rpartition("@")[2].lower()
        elif method == "dkim" and result == PASS and properties.get("header.d"):
            dkim_pass.append(properties["header.d"].lower().rstrip("."))
    return Results(authserv, spf, spf_domain.rstrip("."), tuple(dkim_pass))


def sender_unauthenticated(results: Results | None, mail_from: str) -> str | None:
    """Why ``mail_from`` is not an authenticated sender (None: it is one)."""
    if results is None:
        return "sender not authenticated (no Authentication-Results of ours)"
    domain = mail_from.rpartition("@")[2].strip().rstrip(".").lower()
    if not domain:
        return "sender not authenticated (no sender domain)"
    if results.spf == PASS and results.spf_domain == domain:
        return None
    org = _organizational_domain(domain)
    if any(_organizational_domain(d) == org for d in results.dkim_pass):
        return None
    return f"sender not authenticated ({results.summary()}; none aligned with {domain})"


def domain_authenticated(results: Results | None, domain: str) -> bool:
    """SPF passed for exactly ``domain``, or a DKIM signature of exactly ``domain`` passed."""
    if results is None:
        return False
    domain = domain.strip().rstrip(".").lower()
    return (results.spf == PASS and results.spf_domain == domain) or domain in results.dkim_pass


def _split(text: str, separators: str, *, keep_empty: bool = False) -> list[str]:
    """``text`` split at any of ``separators`` outside quoted strings; comments dropped."""
    out: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    depth = 0
    for ch in text:
        if escaped:
            escaped = False
            if not depth:
                current.append(ch)
            continue
        if ch == "\\" and (quoted or depth):
            escaped = True
            if not depth:
                current.append(ch)
            continue
        if depth:
            depth += {"(": 1, ")": -1}.get(ch, 0)
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == "(" and not quoted:
            depth = 1
            continue
        elif ch in separators and not quoted:
            out.append("".join(current))
            current = []
            continue
        current.append(ch)
    out.append("".join(current))
    return [piece for piece in (p.strip() for p in out) if piece or keep_empty]


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value
