"""SPF (RFC 7208) with pyspf, asking DNS through the message's ``_Dns``.

pyspf's ``query.dns`` calls the module-level function ``spf.DNSLookup`` and has no parameter for
it. At import we replace ``spf.DNSLookup`` once with ``_spf_dns_lookup``, which uses the ``_Dns``
that the current thread set for the check it is running, and falls back to pyspf's own lookup in
threads that set none, so any other user of pyspf in the process is unaffected.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable
from typing import Any, Final

import spf

from mailsvc.relay.smtp.authres.dns import _CacheMiss, _Dns, _DnsTemporaryFailure
from mailsvc.relay.smtp.authres.message import _domain_of
from mailsvc.relay.smtp.authres.results import (
    FAIL,
    NEUTRAL,
    NONE,
    PASS,
    PERMERROR,
    SOFTFAIL,
    TEMPERROR,
)

log = logging.getLogger(__package__)  # the package's logger, as before the split

_SPF_RESULTS: Final = frozenset({PASS, FAIL, SOFTFAIL, NEUTRAL, NONE, TEMPERROR, PERMERROR})


def _spf_inputs(client_ip: str, helo: str, mail_from: str) -> tuple[str | None, str, str]:
    """(normalised client IP, sender address, the domain SPF is checked for)."""
    sender = mail_from.strip().strip("<>").strip()
    return (
        _normalise_ip(client_ip),
        sender,
        _domain_of(sender) if sender else helo.strip().rstrip("."),
    )


_spf_thread = threading.local()
_pyspf_lookup: Callable[..., Any] = spf.DNSLookup


def _spf_dns_lookup(name: str, qtype: str, strict: object = True, timeout: float = 20) -> Any:
    """Stands in for ``spf.DNSLookup``: answers in pyspf's shape from this thread's ``_Dns``."""
    lookups: _Dns | None = getattr(_spf_thread, "dns", None)
    if lookups is None:
        return _pyspf_lookup(name, qtype, strict, timeout)
    try:
        records = lookups.query(name, "TXT" if qtype == "SPF" else qtype)
    except _DnsTemporaryFailure as exc:
        raise spf.TempError(f"DNS {exc}") from exc
    found: list[tuple[tuple[str, str], Any]] = []
    for rdata in records:
        if qtype in ("A", "AAAA"):
            found.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            exchange = rdata.exchange.to_text(omit_final_dot=True)
            found.append(((name, qtype), (rdata.preference, exchange)))
        elif qtype == "PTR":
            found.append(((name, qtype), rdata.target.to_text(omit_final_dot=True)))
        elif qtype in ("TXT", "SPF"):
            found.append(((name, qtype), rdata.strings))
    return found


spf.DNSLookup = _spf_dns_lookup


def _check_spf(lookups: _Dns, ip: str, sender: str, helo: str, receiver: str) -> str:
    _spf_thread.dns = lookups
    try:
        # An empty sender makes pyspf check postmaster@<helo>: RFC 7208 section 2.4.
        result, _code, _explanation = spf.query(i=ip, s=sender, h=helo, receiver=receiver).check()
    except _CacheMiss:
        raise  # evaluated from the cache only: the caller asks again in the pool
    except Exception:
        log.exception("SPF check for <%s> from %s failed unexpectedly", sender, ip)
        return TEMPERROR
    finally:
        _spf_thread.dns = None
    result = str(result).lower()
    return result if result in _SPF_RESULTS else TEMPERROR


def _normalise_ip(client_ip: str) -> str | None:
    try:
        address = ipaddress.ip_address(client_ip.strip().strip("[]"))
    except ValueError:
        return None  # e.g. a Unix socket peer: there is no address to authorise, so SPF is none
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
