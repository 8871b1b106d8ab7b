"""The published DNS records against the ones `mailsvc dns` says to publish (``mailsvc check``).

Each expected record is looked up (all at once, within one lifetime) and comes back as:

- ``ok``: published as expected (TXT compared without whitespace, which the tag lists of SPF,
  DKIM, DMARC, MTA-STS and TLS-RPT ignore; other types as record data, names case-insensitive);
- ``missing``: no such name, or no record of that type (for TXT: none of the same kind, e.g. no
  "v=spf1" among the domain's other TXT records);
- ``different``: records of that kind exist but none is the expected one (``found`` shows them);
- ``unknown``: no answer (timeout, resolver unreachable, SERVFAIL): nothing is known.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from mailsvc.relay.dnsrecords import Record

OK, MISSING, DIFFERENT, UNKNOWN = "ok", "missing", "different", "unknown"
# Domains under these top-level names are never in public DNS (RFC 2606, RFC 6761).
RESERVED_TLDS = ("example", "test", "invalid", "localhost")
_FOUND_MAX = 200


@dataclass(frozen=True)
class RecordCheck:
    record: Record
    status: str
    found: str = ""  # what was published instead (different), or why nothing is known


def _host_port(spec: str) -> tuple[str, int]:
    """ "host", "host:port", an IPv6 address, or "[address]:port"."""
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        return host, int(rest.lstrip(":") or 53)
    if spec.count(":") == 1:
        host, _, port = spec.partition(":")
        return host, int(port or 53)
    return spec, 53


def resolver_for(spec: str, *, lifetime: float = 5.0) -> dns.asyncresolver.Resolver:
    """The resolver at ``spec`` (``smtp.dns_resolver``), or the system's when it is empty;
    ValueError when there is none to use."""
    if spec:
        host, port = _host_port(spec)
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    else:
        try:
            resolver = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration as exc:  # an empty /etc/resolv.conf
            raise ValueError(str(exc)) from None
    resolver.timeout = min(2.0, lifetime)
    resolver.lifetime = lifetime
    return resolver


def reserved(domain: str) -> bool:
    return domain.rstrip(".").rpartition(".")[2].lower() in RESERVED_TLDS


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _kind(txt: str) -> str:
    """The first tag of a TXT record ("v=spf1", "v=DMARC1", …), which says what it is."""
    return _squash(txt.split(";", 1)[0]).lower()


async def check_record(resolver: dns.asyncresolver.Resolver, record: Record) -> RecordCheck:
    try:
        answer = await resolver.resolve(record.name, record.type, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return RecordCheck(record, MISSING)
    except (dns.exception.DNSException, OSError) as exc:
        # The first clause: dnspython goes on to list every server it tried.
        why = str(exc).split(":", 1)[0]
        return RecordCheck(record, UNKNOWN, f"{type(exc).__name__}: {why}"[:_FOUND_MAX])
    published = list(answer.rrset or [])
    if record.type == "TXT":
        texts = [b"".join(r.strings).decode("utf-8", "replace") for r in published]
        same_kind = [t for t in texts if _kind(t) == _kind(record.value)]
        if any(_squash(t) == _squash(record.value) for t in same_kind):
            return RecordCheck(record, OK)
        if not same_kind:
            return RecordCheck(record, MISSING)
        return RecordCheck(record, DIFFERENT, " | ".join(same_kind)[:_FOUND_MAX])
    expected = dns.rdata.from_text(dns.rdataclass.IN, record.type, record.value)
    if expected in published:
        return RecordCheck(record, OK)
    if not published:
        return RecordCheck(record, MISSING)
    return RecordCheck(record, DIFFERENT, " | ".join(r.to_text() for r in published)[:_FOUND_MAX])


async def check_records(
    records: list[Record], resolver: dns.asyncresolver.Resolver
) -> list[RecordCheck]:
    """Every record looked up at once (the whole check takes one resolver lifetime at most)."""
    return list(await asyncio.gather(*(check_record(resolver, r) for r in records)))
