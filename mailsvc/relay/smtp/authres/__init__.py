"""Authentication-Results for inbound mail: SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC 7489).

Three public functions:

* ``authenticate(...)`` runs the three checks for one message and returns ``AuthResults``. It never
  raises and never takes longer than ``budget`` seconds: a check still waiting on DNS at the
  deadline reports ``temperror``, so a dead or hanging resolver degrades the header, never the
  relay.
* ``authentication_results_header(results)`` gives the header field (RFC 8601) to prepend, folded,
  with every client-supplied value made safe.
* ``remove_forged_results(message, authserv_id)`` removes from the incoming header every
  Authentication-Results field whose authserv-id is our own (RFC 8601 section 5).

And, to read our field back (``verdict``): ``read_results``, ``parse_results``,
``sender_unauthenticated`` and ``domain_authenticated``.

pyspf and dkimpy are blocking libraries. They run in a small thread pool of this package's own
(not the loop's default executor, which the directory adapter needs even while DNS hangs), and
every DNS question they ask goes through ``dns._Dns`` (the caller's resolver, cut to the budget,
behind a circuit).

This module puts the checks together. Each seam has its own module: ``dns`` (resolver, cache-only
lookups, circuit), ``spf``, ``dkim``, ``dmarc``, ``message`` (header block, author domain),
``header`` (writing ours, removing forged ones), ``results`` (keywords, ``AuthResults``) and
``verdict`` (reading ours back: which sender or domain the checks authenticated).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

# By name: in this package, ``dns`` is the submodule ``authres.dns``, not dnspython.
from dns.resolver import Resolver

from mailsvc.relay.smtp.authres.dkim import MAX_DKIM_SIGNATURES as MAX_DKIM_SIGNATURES
from mailsvc.relay.smtp.authres.dkim import (
    _check_dkim,
    _dkim_summary,
    _has_dkim_signature,
    _Signature,
)
from mailsvc.relay.smtp.authres.dmarc import _DmarcLookup, _evaluate_dmarc, _fetch_dmarc
from mailsvc.relay.smtp.authres.dmarc import _DmarcRecord as _DmarcRecord
from mailsvc.relay.smtp.authres.dns import _CacheMiss, _default_resolver, _Dns
from mailsvc.relay.smtp.authres.header import (
    _authserv,
    _header_value,
    authentication_results_header,
    remove_forged_results,
)
from mailsvc.relay.smtp.authres.message import _from_domain
from mailsvc.relay.smtp.authres.results import NONE, PASS, PERMERROR, TEMPERROR, AuthResults
from mailsvc.relay.smtp.authres.spf import _check_spf, _spf_inputs
from mailsvc.relay.smtp.authres.verdict import (
    Results,
    domain_authenticated,
    parse_results,
    read_results,
    sender_unauthenticated,
)

__all__ = [
    "AuthResults",
    "Results",
    "authenticate",
    "authentication_results_header",
    "domain_authenticated",
    "parse_results",
    "read_results",
    "remove_forged_results",
    "sender_unauthenticated",
]

log = logging.getLogger(__name__)


async def authenticate(
    *,
    authserv_id: str,
    client_ip: str,
    helo: str,
    mail_from: str,
    message: bytes,
    budget: float = 2.0,
    resolver: Resolver | None = None,
    early_spf: EarlySpf | None = None,
    rest: Callable[[], bytes] | None = None,
) -> AuthResults:
    """SPF for MAIL FROM (HELO when MAIL FROM is null), every DKIM signature, DMARC for From.

    ``rest``: for a body kept in a spool file, ``message`` is its header and ``rest`` reads
    the remainder (blocking; called in the pool only when a DKIM signature needs it).

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
            rest=rest,
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
    resolver: Resolver | None = None,
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
    resolver: Resolver,
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


_T = TypeVar("_T")


async def _authenticate(
    *,
    authserv_id: str,
    client_ip: str,
    helo: str,
    mail_from: str,
    message: bytes,
    deadline: float,
    resolver: Resolver,
    early_spf: EarlySpf | None = None,
    rest: Callable[[], bytes] | None = None,
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
    dkim_task = None
    if _has_dkim_signature(message):
        if rest is None:
            dkim_task = in_thread(_check_dkim, lookups, message)
        else:
            dkim_task = in_thread(_check_dkim_spooled, lookups, message, rest, deadline)
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


# A spooled body is read whole only to verify a DKIM signature over it, one at a time: memory
# stays bounded by one large message whatever the number of sessions (the others wait, within
# their budget, and get temperror when it runs out).
_LARGE_BODIES = threading.BoundedSemaphore(1)


def _check_dkim_spooled(
    lookups: _Dns, header: bytes, rest: Callable[[], bytes], deadline: float
) -> list[_Signature]:
    if not _LARGE_BODIES.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
        return [_Signature(TEMPERROR)]
    try:
        if time.monotonic() >= deadline:
            return [_Signature(TEMPERROR)]
        return _check_dkim(lookups, header + rest())
    except OSError:
        return [_Signature(TEMPERROR)]
    finally:
        _LARGE_BODIES.release()


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
