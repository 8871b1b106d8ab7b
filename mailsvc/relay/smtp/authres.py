"""Authentication-Results for inbound mail: SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC 7489).

Three public functions:

* ``authenticate(...)`` runs the three checks for one message and returns ``AuthResults``. It never
  raises and never takes longer than ``budget`` seconds: a check still waiting on DNS at the
  deadline reports ``temperror``, so a dead or hanging resolver degrades the header, never the
  relay.
* ``authentication_results_header(results)`` gives the header field (RFC 8601) to prepend, folded,
  with every client-supplied value made safe.
* ``remove_forged_results(message, authserv_id)`` removes from the incoming header every
  Authentication-Results field (folded lines included, name in any case) whose authserv-id is our
  own, compared case-insensitively: RFC 8601 section 5, so a resident cannot hand the councillor a
  "dkim=pass" in our host's name. Fields of other authserv-ids, the body and every other byte stay
  as sent. It works on bytes, looks only at the header block, and returns the message itself when
  that block does not mention Authentication-Results (the common case, for every message).

pyspf and dkimpy are blocking libraries. They run in a small thread pool of this module's own
(not the loop's default executor, which the directory adapter needs even while DNS hangs), and
every DNS question they ask goes through ``_Dns``: the caller's ``dns.resolver.Resolver`` with a
per-query lifetime cut to what is left of the budget, behind a circuit that stops asking a
resolver that has just timed out several times in a row.

How each library is pointed at our resolver:

* dkimpy: ``DKIM.verify(dnsfunc=...)`` takes the TXT lookup function; ours is a closure over the
  message's ``_Dns``.
* pyspf: its ``query.dns`` calls the module-level function ``spf.DNSLookup`` and has no parameter
  for it. At import we replace ``spf.DNSLookup`` once with ``_spf_dns_lookup``, which uses the
  ``_Dns`` that the current thread set for the check it is running, and falls back to pyspf's own
  lookup in threads that set none, so any other user of pyspf in the process is unaffected.
"""

from __future__ import annotations

import asyncio
import binascii
import concurrent.futures
import dataclasses
import functools
import ipaddress
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any, Final, TypeVar

import dkim
import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import spf
from publicsuffixlist import PublicSuffixList

__all__ = [
    "AuthResults",
    "authenticate",
    "authentication_results_header",
    "remove_forged_results",
]

log = logging.getLogger(__name__)

PASS: Final = "pass"  # noqa: S105 (a result keyword, not a password)
FAIL: Final = "fail"
SOFTFAIL: Final = "softfail"
NEUTRAL: Final = "neutral"
NONE: Final = "none"
TEMPERROR: Final = "temperror"
PERMERROR: Final = "permerror"

_SPF_RESULTS: Final = frozenset({PASS, FAIL, SOFTFAIL, NEUTRAL, NONE, TEMPERROR, PERMERROR})

# Signatures beyond this many are not verified: each costs a DNS query and an RSA operation, and
# a sender gains nothing legitimate from more.
MAX_DKIM_SIGNATURES: Final = 5
# After this many DNS timeouts in a row on one resolver, lookups fail at once for the cool-down:
# with DNS down, every message would otherwise wait out the whole budget before its 250.
CIRCUIT_TIMEOUTS: Final = 3
CIRCUIT_COOLDOWN: Final = 30.0
# Longest property value we copy into the header; keeps every line far below 998 octets.
_MAX_VALUE: Final = 255
_FOLD_AT: Final = 78


@dataclass(frozen=True)
class AuthResults:
    """One message's results, each an RFC 8601 result keyword; ``header_value`` is unfolded."""

    spf: str
    dkim: str
    dmarc: str
    header_value: str


async def authenticate(
    *,
    authserv_id: str,
    client_ip: str,
    helo: str,
    mail_from: str,
    message: bytes,
    budget: float = 2.0,
    resolver: dns.resolver.Resolver | None = None,
    early_spf: EarlySpf | None = None,
) -> AuthResults:
    """SPF for MAIL FROM (HELO when MAIL FROM is null), every DKIM signature, DMARC for From.

    ``resolver`` defaults to one built from /etc/resolv.conf with an answer cache. Returns within
    ``budget`` seconds (plus scheduling slack) and never raises; checks that could not finish in
    time are ``temperror``. ``early_spf``, from :func:`start_spf` at MAIL FROM, is used when it
    was started for this same envelope (its result is then usually there already).
    """
    deadline = time.monotonic() + max(budget, 0.0)
    if early_spf is not None and early_spf.inputs != (client_ip, helo, mail_from):
        early_spf = None
    try:
        return await _authenticate(
            authserv_id=authserv_id,
            client_ip=client_ip,
            helo=helo,
            mail_from=mail_from,
            message=message,
            deadline=deadline,
            resolver=resolver if resolver is not None else _default_resolver(),
            early_spf=early_spf,
        )
    except Exception:
        # A bug here must cost the header its detail, never the resident their message.
        log.exception("Authentication-Results: checks failed unexpectedly")
        return AuthResults(
            spf=TEMPERROR,
            dkim=TEMPERROR,
            dmarc=TEMPERROR,
            header_value=f"{_authserv(authserv_id)}; spf=temperror; dkim=temperror; "
            "dmarc=temperror",
        )


@dataclass(frozen=True)
class EarlySpf:
    """An SPF check begun at MAIL FROM, for the envelope it was begun with."""

    inputs: tuple[str, str, str]  # client IP, HELO, MAIL FROM
    task: asyncio.Future[str] | None  # None: nothing to check (no IP or no domain)


def start_spf(
    *,
    authserv_id: str,
    client_ip: str,
    helo: str,
    mail_from: str,
    budget: float = 2.0,
    resolver: dns.resolver.Resolver | None = None,
) -> EarlySpf:
    """Begin the SPF check as soon as the envelope's sender is known: it needs nothing of the
    message, so it runs while the client sends recipients and data, and the answer to the final
    dot waits only for the checks that need the message (DKIM, DMARC)."""
    ip, sender, spf_domain = _spf_inputs(client_ip, helo, mail_from)
    task = None
    if ip is not None and spf_domain:
        task = _spf_check(
            resolver if resolver is not None else _default_resolver(),
            time.monotonic() + max(budget, 0.0),
            ip,
            sender,
            helo.strip(),
            authserv_id,
        )
    return EarlySpf((client_ip, helo, mail_from), task)


def _spf_check(
    resolver: dns.resolver.Resolver,
    deadline: float,
    ip: str,
    sender: str,
    helo: str,
    receiver: str,
) -> asyncio.Future[str]:
    """The SPF result as a future: evaluated at once when every record it needs is in the
    resolver's cache (a sender seen a moment ago: no thread hop, no wait), else in the pool."""
    loop = asyncio.get_running_loop()
    try:
        found = _check_spf(_Dns(resolver, deadline, cache_only=True), ip, sender, helo, receiver)
    except _CacheMiss:
        return loop.run_in_executor(
            _executor(),
            functools.partial(_check_spf, _Dns(resolver, deadline), ip, sender, helo, receiver),
        )
    done: asyncio.Future[str] = loop.create_future()
    done.set_result(found)
    return done


def _spf_inputs(client_ip: str, helo: str, mail_from: str) -> tuple[str | None, str, str]:
    """(normalised client IP, sender address, the domain SPF is checked for)."""
    sender = mail_from.strip().strip("<>").strip()
    return (
        _normalise_ip(client_ip),
        sender,
        _domain_of(sender) if sender else helo.strip().rstrip("."),
    )


def authentication_results_header(results: AuthResults) -> bytes:
    """The whole header field, CRLF-terminated, folded before each result and at 78 columns."""
    name = "Authentication-Results:"
    lines: list[str] = []
    line = name
    for word in _words(_printable(results.header_value)):
        word = word[:900]  # only a hand-made AuthResults could carry a longer one
        if line == name or (not line.endswith(";") and len(line) + 1 + len(word) <= _FOLD_AT):
            line = f"{line} {word}"
        else:
            lines.append(line)
            line = f"\t{word}"
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def remove_forged_results(message: bytes, authserv_id: str) -> bytes:
    """``message`` without the Authentication-Results fields that claim ``authserv_id``.

    RFC 8601 section 5: only we may speak for our authserv-id, so such a field in an incoming
    message is a forgery (or a copy of an old result of ours) and must not reach the reader.
    Fields of other authserv-ids, the body and every other byte are returned unchanged.
    """
    size = _header_size(message)
    head = message[:size]
    if b"authentication-results" not in head.lower():
        return message
    own = _comparable(_own_authserv(authserv_id))
    kept: list[bytes] = []
    removed = False
    for field in _fields(head):
        name = _RESULTS_NAME.match(field)
        if name is not None and _comparable(_authserv_id_of(field[name.end() :])) == own:
            removed = True
        else:
            kept.append(field)
    if not removed:
        return message
    return b"".join(kept) + message[size:]


# --- the checks, put together --------------------------------------------------------------


@dataclass(frozen=True)
class _Signature:
    result: str
    domain: str = ""
    selector: str = ""
    b_prefix: str = ""


@dataclass(frozen=True)
class _DmarcRecord:
    tags: dict[str, str]
    at_org_domain: bool


@dataclass(frozen=True)
class _DmarcLookup:
    """What policy discovery found: a record, nothing (``record is None``), or an error."""

    record: _DmarcRecord | None = None
    error: str | None = None


_T = TypeVar("_T")


async def _authenticate(
    *,
    authserv_id: str,
    client_ip: str,
    helo: str,
    mail_from: str,
    message: bytes,
    deadline: float,
    resolver: dns.resolver.Resolver,
    early_spf: EarlySpf | None = None,
) -> AuthResults:
    lookups = _Dns(resolver, deadline)
    loop = asyncio.get_running_loop()

    def in_thread(fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        return loop.run_in_executor(_executor(), functools.partial(fn, *args))

    ip, sender, spf_domain = _spf_inputs(client_ip, helo, mail_from)
    from_domain, from_problem = _from_domain(message)

    if early_spf is not None:
        spf_task = early_spf.task
    else:
        spf_task = (
            _spf_check(resolver, deadline, ip, sender, helo.strip(), authserv_id)
            if ip is not None and spf_domain
            else None
        )
    dkim_task = in_thread(_check_dkim, lookups, message) if _has_dkim_signature(message) else None
    dmarc_task: asyncio.Future[_DmarcLookup] | None = None
    if from_domain:
        try:  # from the resolver's cache, without a thread, when it can be
            found_now = _fetch_dmarc(_Dns(resolver, deadline, cache_only=True), from_domain)
        except _CacheMiss:
            dmarc_task = in_thread(_fetch_dmarc, lookups, from_domain)
        else:
            dmarc_task = loop.create_future()
            dmarc_task.set_result(found_now)

    pending = [task for task in (spf_task, dkim_task, dmarc_task) if task is not None]
    try:
        if pending:
            await asyncio.wait(pending, timeout=max(deadline - time.monotonic(), 0.0))
    finally:
        # Also when our caller is cancelled: work not yet started in the pool is dropped.
        for task in pending:
            if not task.done():
                task.cancel()

    spf_result = _outcome(spf_task, TEMPERROR) if spf_task is not None else NONE
    signatures: list[_Signature] = (
        _outcome(dkim_task, [_Signature(TEMPERROR)]) if dkim_task is not None else []
    )
    dkim_result = _dkim_summary(signatures)

    policy = ""
    if from_problem:
        dmarc_result = PERMERROR
    elif dmarc_task is None:
        dmarc_result = NONE
    else:
        found = _outcome(dmarc_task, _DmarcLookup(error=TEMPERROR))
        dmarc_result, policy = _evaluate_dmarc(
            from_domain,
            found,
            spf_result=spf_result,
            spf_domain=spf_domain,
            dkim_domains=[s.domain for s in signatures if s.result == PASS],
            dkim_result=dkim_result,
        )

    value = _header_value(
        authserv_id=authserv_id,
        spf_result=spf_result,
        sender=sender,
        helo=helo,
        signatures=signatures,
        dmarc_result=dmarc_result,
        policy=policy,
        from_domain=from_domain,
    )
    return AuthResults(spf=spf_result, dkim=dkim_result, dmarc=dmarc_result, header_value=value)


def _outcome(task: asyncio.Future[_T], unfinished: _T) -> _T:
    if not task.done() or task.cancelled():
        return unfinished
    return task.result()  # the thread functions catch everything themselves


_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=8, thread_name_prefix="authres"
            )
        return _pool


# --- DNS -------------------------------------------------------------------------------------


class _DnsTemporaryFailure(Exception):
    """The answer could not be had now: timeout, no server answered, budget spent."""


class _Circuit:
    """Counts consecutive timeouts of one resolver; opens for a cool-down after too many."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timeouts = 0
        self._open_until = 0.0

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


# --- SPF -------------------------------------------------------------------------------------

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


# --- DKIM ------------------------------------------------------------------------------------


class _SenderProblems(logging.LoggerAdapter[logging.Logger]):
    """dkimpy logs a sender's bad key or signature as an error; for us it is a result, so debug."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(min(level, logging.DEBUG), msg, *args, **kwargs)


_dkim_log = _SenderProblems(logging.getLogger(__name__ + ".dkim"))
_DKIM_HEADER = re.compile(rb"^dkim-signature[ \t]*:", re.IGNORECASE | re.MULTILINE)


def _has_dkim_signature(message: bytes) -> bool:
    return _DKIM_HEADER.search(_header_block(message)) is not None


def _check_dkim(lookups: _Dns, message: bytes) -> list[_Signature]:
    try:
        verifier = dkim.DKIM(message, logger=_dkim_log)
    except Exception:
        return [_Signature(NEUTRAL)]  # signed, but the message cannot even be parsed
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    return [
        _verify_signature(verifier, idx, lookups) for idx in range(min(count, MAX_DKIM_SIGNATURES))
    ]


def _verify_signature(verifier: dkim.DKIM, idx: int, lookups: _Dns) -> _Signature:
    try:
        sig, _include, _headers = verifier.verify_headerprep(idx)
    except Exception:
        # Syntax errors, missing tags, expired: RFC 8601 calls that neutral.
        return _Signature(NEUTRAL)
    known = _Signature(
        NEUTRAL,
        domain=_text(sig.get(b"d", b"")).lower(),
        selector=_text(sig.get(b"s", b"")),
        b_prefix=re.sub(r"\s+", "", _text(sig.get(b"b", b"")))[:8],
    )
    keys: dict[str, bytes | None] = {}

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace").rstrip(".")
        records = lookups.txt(text)  # _DnsTemporaryFailure goes through dkimpy untouched
        keys[text] = records[0] if records else None
        return keys[text]

    try:
        verified = verifier.verify(idx=idx, dnsfunc=dnsfunc)
    except _DnsTemporaryFailure:
        return dataclasses.replace(known, result=TEMPERROR)
    except dkim.ValidationError:
        return dataclasses.replace(known, result=FAIL)  # the body hash did not match
    except dkim.KeyFormatError:
        return dataclasses.replace(known, result=PERMERROR)  # e.g. key too short
    except dkim.DKIMException:
        return known
    except Exception:
        log.exception("DKIM verification of d=%s failed unexpectedly", known.domain)
        return dataclasses.replace(known, result=TEMPERROR)
    if verified:
        return dataclasses.replace(known, result=PASS)
    # dkimpy answers False both for a bad signature and for a key it could not get or parse;
    # RFC 6376 makes the latter a permanent error, not a failed verification.
    if not keys or all(key is None for key in keys.values()):
        return dataclasses.replace(known, result=PERMERROR)
    for name, key in keys.items():
        try:
            dkim.evaluate_pk(name.encode("ascii", "replace"), key)
        except (dkim.DKIMException, binascii.Error, ValueError, TypeError):
            return dataclasses.replace(known, result=PERMERROR)
    return dataclasses.replace(known, result=FAIL)


_DKIM_PRECEDENCE: Final = (PASS, TEMPERROR, FAIL, PERMERROR, NEUTRAL)


def _dkim_summary(signatures: list[_Signature]) -> str:
    """pass if any signature passes; otherwise the most telling of the others."""
    if not signatures:
        return NONE
    seen = {s.result for s in signatures}
    return next((result for result in _DKIM_PRECEDENCE if result in seen), NEUTRAL)


# --- DMARC -----------------------------------------------------------------------------------

_DMARC_VERSION = re.compile(r"^\s*v\s*=\s*DMARC1\s*(;|$)")
_POLICIES: Final = frozenset({"none", "quarantine", "reject"})


@functools.cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()


def _organizational_domain(domain: str) -> str:
    """RFC 7489 section 3.2, with the Public Suffix List that publicsuffixlist ships."""
    domain = domain.lower().rstrip(".")
    try:
        org = _suffixes().privatesuffix(domain)
    except Exception:
        org = None
    if org:
        return str(org)
    # The domain is itself a public suffix (or the list cannot tell): it is its own
    # organisational domain.
    return domain


def _fetch_dmarc(lookups: _Dns, from_domain: str) -> _DmarcLookup:
    """Policy discovery, RFC 7489 section 6.6.3: the From domain, then its organisation's."""
    org = _organizational_domain(from_domain)
    try:
        for domain in (from_domain, org) if org != from_domain else (from_domain,):
            records = [
                text
                for raw in lookups.txt(f"_dmarc.{domain}")
                if _DMARC_VERSION.match(text := raw.decode("utf-8", "replace"))
            ]
            if len(records) > 1:
                return _DmarcLookup()  # several records: DMARC is not applied
            if records:
                tags = _dmarc_tags(records[0])
                if tags is None:
                    return _DmarcLookup(error=PERMERROR)
                return _DmarcLookup(_DmarcRecord(tags, at_org_domain=domain != from_domain))
    except _DnsTemporaryFailure:
        return _DmarcLookup(error=TEMPERROR)
    except _CacheMiss:
        raise
    except Exception:
        log.exception("DMARC policy lookup for %s failed unexpectedly", from_domain)
        return _DmarcLookup(error=TEMPERROR)
    return _DmarcLookup()


def _dmarc_tags(record: str) -> dict[str, str] | None:
    """The record's tags, lower-cased; None when it carries no usable policy."""
    tags: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), value.strip())
    policy = tags.get("p", "").lower()
    if policy not in _POLICIES:
        # RFC 7489 6.6.3: without a valid p=, a record with a reporting address counts as
        # p=none; one without is unusable.
        if not tags.get("rua", "").strip():
            return None
        policy = "none"
    tags["p"] = policy
    if tags.get("sp", "").lower() not in _POLICIES:
        tags.pop("sp", None)
    else:
        tags["sp"] = tags["sp"].lower()
    return tags


def _aligned(domain: str, from_domain: str, mode: str) -> bool:
    domain = domain.lower().rstrip(".")
    if not domain:
        return False
    if mode.strip().lower() == "s":
        return domain == from_domain
    return _organizational_domain(domain) == _organizational_domain(from_domain)


def _evaluate_dmarc(
    from_domain: str,
    found: _DmarcLookup,
    *,
    spf_result: str,
    spf_domain: str,
    dkim_domains: Iterable[str],
    dkim_result: str,
) -> tuple[str, str]:
    """(result, policy to report) for one message."""
    if found.error is not None:
        return found.error, ""
    if found.record is None:
        return NONE, ""
    tags = found.record.tags
    policy = tags.get("sp", tags["p"]) if found.record.at_org_domain else tags["p"]
    spf_ok = spf_result == PASS and _aligned(spf_domain, from_domain, tags.get("aspf", "r"))
    dkim_ok = any(_aligned(d, from_domain, tags.get("adkim", "r")) for d in dkim_domains)
    if spf_ok or dkim_ok:
        return PASS, policy
    if TEMPERROR in (spf_result, dkim_result):
        return TEMPERROR, policy  # an answer we could not get might have aligned
    return FAIL, policy


# --- the message -----------------------------------------------------------------------------


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
    domains: set[str] = set()
    for _name, address in getaddresses(values):
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


# --- the header ------------------------------------------------------------------------------

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~-]+"
_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_DOMAIN.pattern}")
_TOKEN = re.compile(r"[!#$%&'*+.0-9A-Z^_`a-z{|}~-]+")


def _printable(text: str) -> str:
    """Printable ASCII only: CR, LF, other controls and non-ASCII become '?'."""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)


def _pvalue(text: str) -> str:
    """An RFC 8601 property value: as is when a plain address, domain or token, else quoted."""
    text = text.strip()
    if len(text) <= _MAX_VALUE and (
        _ADDRESS.fullmatch(text) or _DOMAIN.fullmatch(text) or _TOKEN.fullmatch(text)
    ):
        return text
    safe = _printable(text)[:_MAX_VALUE].replace("\\", "\\\\").replace('"', '\\"')
    return f'"{safe}"'


def _domain_pvalue(domain: str) -> str:
    domain = domain.strip().rstrip(".")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    return _pvalue(domain)


def _authserv(authserv_id: str) -> str:
    return _pvalue(authserv_id) if authserv_id.strip() else "localhost"


def _header_value(
    *,
    authserv_id: str,
    spf_result: str,
    sender: str,
    helo: str,
    signatures: list[_Signature],
    dmarc_result: str,
    policy: str,
    from_domain: str,
) -> str:
    parts = [_authserv(authserv_id)]

    spf_part = f"spf={spf_result}"
    if sender:
        local, _at, domain = sender.rpartition("@")
        if local and domain and _ADDRESS.fullmatch(sender) and len(sender) <= _MAX_VALUE:
            spf_part += f" smtp.mailfrom={sender}"
        elif domain:
            spf_part += f" smtp.mailfrom={_domain_pvalue(domain)}"
        else:
            spf_part += f" smtp.mailfrom={_pvalue(sender)}"
    elif helo.strip():
        spf_part += f" smtp.helo={_domain_pvalue(helo)}"
    parts.append(spf_part)

    if not signatures:
        parts.append("dkim=none")
    for signature in signatures:
        dkim_part = f"dkim={signature.result}"
        if signature.domain:
            dkim_part += f" header.d={_domain_pvalue(signature.domain)}"
        if signature.selector:
            dkim_part += f" header.s={_pvalue(signature.selector)}"
        if signature.b_prefix:
            dkim_part += f" header.b={_pvalue(signature.b_prefix)}"
        parts.append(dkim_part)

    dmarc_part = f"dmarc={dmarc_result}"
    if policy:
        dmarc_part += f" (p={policy})"
    if from_domain:
        dmarc_part += f" header.from={_domain_pvalue(from_domain)}"
    parts.append(dmarc_part)
    return "; ".join(parts)


def _words(value: str) -> list[str]:
    """Split at spaces that are outside quoted strings and comments: the places we may fold."""
    words: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    depth = 0
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and (quoted or depth):
            escaped = True
        elif ch == '"' and not depth:
            quoted = not quoted
        elif ch == "(" and not quoted:
            depth += 1
        elif ch == ")" and not quoted and depth:
            depth -= 1
        elif ch == " " and not quoted and not depth:
            if current:
                words.append("".join(current))
                current = []
            continue
        current.append(ch)
    if current:
        words.append("".join(current))
    return words


# --- forged results --------------------------------------------------------------------------

_BLANK_LINE = re.compile(rb"\n\r?\n")
_RESULTS_NAME = re.compile(rb"authentication-results[ \t]*:", re.IGNORECASE)
# An RFC 2045 token ends at white space, controls and tspecials.
_VALUE_TOKEN = re.compile(r'[^\x00-\x20\x7f()<>@,;:\\"/\[\]?=]*')


def _header_size(message: bytes) -> int:
    """Length of the header fields, up to and including the line end before the blank line.

    0 when the message starts with a blank line (no header at all); the whole message when
    there is no blank line (a message may be all header).
    """
    if message.startswith((b"\r\n", b"\n")):
        return 0
    blank = _BLANK_LINE.search(message)
    return blank.start() + 1 if blank else len(message)


def _fields(head: bytes) -> list[bytes]:
    """The header fields, each with its continuation lines and line ends, exactly as sent."""
    fields: list[bytes] = []
    start = pos = 0
    while pos < len(head):
        newline = head.find(b"\n", pos)
        pos = len(head) if newline < 0 else newline + 1
        if pos < len(head) and head[pos] in (0x20, 0x09):
            continue  # folded: the next line belongs to this field
        fields.append(head[start:pos])
        start = pos
    return fields


def _own_authserv(authserv_id: str) -> str:
    """The authserv-id our own header carries (see ``_authserv``), unquoted."""
    return authserv_id.strip() or "localhost"


def _comparable(authserv_id: str) -> str:
    # A trailing dot names the same host; a forger must not get through with "host.".
    return authserv_id.strip().rstrip(".").lower()


def _authserv_id_of(value: bytes) -> str:
    """The authserv-id of an Authentication-Results value: after any CFWS, a token or a quoted
    string (RFC 8601 section 2.2); "" when there is none."""
    text = re.sub(r"\r?\n", "", value.decode("utf-8", "replace"))  # unfold
    i, end, depth = 0, len(text), 0
    while i < end:  # skip white space and (nested, escaped) comments
        ch = text[i]
        if ch == "\\" and depth:
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth and ch not in " \t":
            break
        i += 1
    if i >= end:
        return ""
    if text[i] == '"':
        chars: list[str] = []
        i += 1
        while i < end and text[i] != '"':
            if text[i] == "\\" and i + 1 < end:
                i += 1
            chars.append(text[i])
            i += 1
        return "".join(chars)
    token = _VALUE_TOKEN.match(text, i)
    return token.group() if token else ""
