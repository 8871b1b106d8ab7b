"""DMARC (RFC 7489): policy discovery through ``_Dns`` and evaluation against SPF and DKIM."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from publicsuffixlist import PublicSuffixList

from mailsvc.relay.smtp.authres.dns import _CacheMiss, _Dns, _DnsTemporaryFailure
from mailsvc.relay.smtp.authres.results import FAIL, NONE, PASS, PERMERROR, TEMPERROR

log = logging.getLogger(__package__)  # the package's logger, as before the split


@dataclass(frozen=True)
class _DmarcRecord:
    tags: dict[str, str]
    at_org_domain: bool


@dataclass(frozen=True)
class _DmarcLookup:
    """What policy discovery found: a record, nothing (``record is None``), or an error."""

    record: _DmarcRecord | None = None
    error: str | None = None


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
