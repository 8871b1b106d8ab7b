"""DNS for the checks: the caller's resolver behind a per-message deadline and a circuit.

Every question pyspf and dkimpy ask goes through ``_Dns``: the caller's
``dns.resolver.Resolver`` with a per-query lifetime cut to what is left of the message's budget,
behind a circuit that stops asking a resolver that has just timed out several times in a row.
A cache-only ``_Dns`` answers from the resolver's cache alone, so that a lookup answered from
memory needs no thread.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, Final

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver

log = logging.getLogger(__package__)  # the package's logger, as before the split

# After this many DNS timeouts in a row on one resolver, lookups fail at once for the cool-down:
# with DNS down, every message would otherwise wait out the whole budget before its 250.
CIRCUIT_TIMEOUTS: Final = 3
CIRCUIT_COOLDOWN: Final = 30.0
# Answers (and absences) are remembered this long per resolver that has a cache: a sender's
# domain seen a moment ago is answered by one dict lookup instead of dnspython's cache walk
# (name parsing, hashing, an NXDOMAIN raised again), which cost a busy relay about a tenth of
# its CPU per message. Short, so that a changed record is seen within seconds.
MEMO_SECONDS: Final = 5.0
_MEMO_MAX: Final = 4096


class _DnsTemporaryFailure(Exception):
    """The answer could not be had now: timeout, no server answered, budget spent."""


class _Circuit:
    """Counts consecutive timeouts of one resolver; opens for a cool-down after too many."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timeouts = 0
        self._open_until = 0.0
        # (name, type) -> (until, records): see MEMO_SECONDS. Kept here, with the resolver's
        # other state, so that it goes with the resolver.
        self.memo: dict[tuple[str, str], tuple[float, list[Any]]] = {}

    def is_open(self) -> bool:
        with self._lock:
            return time.monotonic() < self._open_until

    def answered(self) -> None:
        with self._lock:
            self._timeouts = 0
            self._open_until = 0.0

    def timed_out(self) -> None:
        with self._lock:
            self._timeouts += 1
            if self._timeouts >= CIRCUIT_TIMEOUTS:
                self._open_until = time.monotonic() + CIRCUIT_COOLDOWN


_circuits: weakref.WeakKeyDictionary[dns.resolver.Resolver, _Circuit] = weakref.WeakKeyDictionary()
_circuits_lock = threading.Lock()


def _circuit_for(resolver: dns.resolver.Resolver) -> _Circuit:
    with _circuits_lock:
        circuit = _circuits.get(resolver)
        if circuit is None:
            circuit = _circuits[resolver] = _Circuit()
        return circuit


_default: dns.resolver.Resolver | None = None
_default_lock = threading.Lock()


def _default_resolver() -> dns.resolver.Resolver:
    global _default
    with _default_lock:
        if _default is None:
            try:
                resolver = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                log.warning("no DNS resolver configured: SPF, DKIM and DMARC will be temperror")
                resolver = dns.resolver.Resolver(configure=False)
            resolver.timeout = 1.0  # per server attempt, so a second server gets its turn
            resolver.lifetime = 5.0  # an upper bound; each query gets what is left of the budget
            resolver.cache = dns.resolver.LRUCache(10_000)
            _default = resolver
        return _default


class _CacheMiss(Exception):
    """A cache-only lookup would have to ask the network: do it in a thread instead."""


class _Dns:
    """DNS for one message: the resolver, the message's deadline and the resolver's circuit.

    ``cache_only``: answer only from the resolver's cache and raise _CacheMiss otherwise, so
    that a lookup answered from memory needs no thread (the usual case for a sender seen a
    moment ago)."""

    def __init__(
        self, resolver: dns.resolver.Resolver, deadline: float, *, cache_only: bool = False
    ) -> None:
        self.resolver = resolver
        self.deadline = deadline
        self.circuit = _circuit_for(resolver)
        self.cache_only = cache_only

    def _cached(self, name: str, rdtype: str) -> bool:
        cache = self.resolver.cache
        if cache is None:
            return False
        try:
            qname = dns.name.from_text(name)
            wanted = dns.rdatatype.from_text(rdtype)
        except Exception:
            return False
        # dnspython keeps a name's NXDOMAIN under the type ANY.
        return any(
            cache.get((qname, t, dns.rdataclass.IN)) is not None
            for t in (wanted, dns.rdatatype.ANY)
        )

    def query(self, name: str, rdtype: str) -> list[Any]:
        """The records of ``rdtype`` at ``name``; [] when there are none or the name is absent."""
        memo = self.circuit.memo if self.resolver.cache is not None else None
        key = (name.lower(), rdtype)
        if memo is not None:
            hit = memo.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return list(hit[1])
        records = self._ask(name, rdtype)
        if memo is not None:
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            memo[key] = (time.monotonic() + MEMO_SECONDS, records)
        return list(records)

    def _ask(self, name: str, rdtype: str) -> list[Any]:
        if self.cache_only and not self._cached(name, rdtype):
            raise _CacheMiss(name)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _DnsTemporaryFailure("time budget spent")
        if self.circuit.is_open():
            raise _DnsTemporaryFailure("resolver timed out repeatedly; not asking for now")
        try:
            answer = self.resolver.resolve(
                name,
                rdtype,
                search=False,
                raise_on_no_answer=False,
                lifetime=min(remaining, self.resolver.lifetime),
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN):
            self.circuit.answered()
            return []
        except dns.exception.Timeout as exc:
            self.circuit.timed_out()
            raise _DnsTemporaryFailure(f"DNS timeout for {name} {rdtype}") from exc
        except (dns.resolver.NoNameservers, dns.resolver.NoResolverConfiguration) as exc:
            raise _DnsTemporaryFailure(f"no DNS server answered for {name} {rdtype}") from exc
        except dns.exception.DNSException:
            return []  # a malformed name (empty or over-long label) cannot exist
        except ValueError:
            return []  # e.g. a name that does not encode as IDNA
        self.circuit.answered()
        return list(answer.rrset) if answer.rrset is not None else []

    def txt(self, name: str) -> list[bytes]:
        return [b"".join(rdata.strings) for rdata in self.query(name, "TXT")]
