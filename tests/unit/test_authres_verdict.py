"""Reading our Authentication-Results back (authres.verdict): real checks against the loopback
DNS server of test_authres, their header written as at DATA, then read as the worker reads it."""

from __future__ import annotations

import dns.resolver
import pytest

from mailsvc.relay.smtp.authres import (
    authentication_results_header,
    domain_authenticated,
    parse_results,
    read_results,
    sender_unauthenticated,
)

from .test_authres import AUTHSERV, STRANGER_IP, Key, Zone, check, key, letter, signed, zone

__all__ = ["key", "zone"]  # fixtures used by name below

RECEIVED = b"Received: from mail.example.org ([127.0.0.1]) by mx.rada.example; now\r\n"


async def stored(resolver: dns.resolver.Resolver, message: bytes, **kwargs: str) -> bytes:
    """The message as the queue stores it: our header, our Received, then the message."""
    results = await check(resolver, message, **kwargs)
    return authentication_results_header(results) + RECEIVED + message


async def test_spf_pass_authenticates_the_envelope_sender(
    zone: tuple[Zone, dns.resolver.Resolver],
) -> None:
    server, resolver = zone
    server.txt("example.org", "v=spf1 ip4:127.0.0.1 -all")
    results = read_results(await stored(resolver, letter()), AUTHSERV.upper() + ".")
    assert results is not None and results.spf == "pass"
    assert sender_unauthenticated(results, "jan.kowalski@example.org") is None
    # The same SPF pass says nothing about another domain.
    assert sender_unauthenticated(results, "victim@gmail.example") is not None


@pytest.mark.parametrize("client_ip", [STRANGER_IP])
async def test_forged_sender_without_spf_or_dkim_is_not_authenticated(
    zone: tuple[Zone, dns.resolver.Resolver], client_ip: str
) -> None:
    server, resolver = zone
    server.txt("example.org", "v=spf1 ip4:127.0.0.1 ~all")
    results = read_results(await stored(resolver, letter(), client_ip=client_ip), AUTHSERV)
    reason = sender_unauthenticated(results, "jan.kowalski@example.org")
    assert reason is not None and "spf=softfail" in reason and "dkim=no pass" in reason


async def test_aligned_dkim_pass_authenticates_when_spf_fails(
    zone: tuple[Zone, dns.resolver.Resolver], key: Key
) -> None:
    server, resolver = zone
    server.txt("example.org", "v=spf1 -all")
    server.txt("sel._domainkey.mail.example.org", key.dns_record)
    message = signed(letter(), key, domain="mail.example.org")
    results = read_results(await stored(resolver, message), AUTHSERV)
    assert results is not None and results.spf == "fail"
    assert results.dkim_pass == ("mail.example.org",)
    # Relaxed alignment for the sender: one organisation.
    assert sender_unauthenticated(results, "jan.kowalski@example.org") is None
    # Strict for our own domains: the exact signing domain only.
    assert domain_authenticated(results, "mail.example.org")
    assert not domain_authenticated(results, "example.org")


async def test_a_dkim_pass_of_another_organisation_does_not_authenticate(
    zone: tuple[Zone, dns.resolver.Resolver], key: Key
) -> None:
    server, resolver = zone
    server.txt("sel._domainkey.spammer.example", key.dns_record)
    message = signed(letter(), key, domain="spammer.example")
    results = read_results(await stored(resolver, message, client_ip=STRANGER_IP), AUTHSERV)
    assert results is not None and results.dkim_pass == ("spammer.example",)
    reason = sender_unauthenticated(results, "victim@example.org")
    assert reason is not None and "none aligned with example.org" in reason


@pytest.mark.parametrize(
    "message",
    [
        b"Received: x\r\n\r\nno results at all (the checks were off)\r\n",
        # Somebody else's results: not ours to trust.
        b"Authentication-Results: mx.gmina.example; spf=pass smtp.mailfrom=jan@example.org\r\n"
        b"\r\nbody\r\n",
        # Ours, but not first: only the field we prepend counts.
        RECEIVED + b"Authentication-Results: mx.rada.example; spf=pass "
        b"smtp.mailfrom=jan@example.org\r\n\r\nbody\r\n",
        b"",
        b"\r\n\r\nno header\r\n",
    ],
)
def test_only_our_own_first_field_is_read(message: bytes) -> None:
    assert read_results(message, AUTHSERV) is None
    reason = sender_unauthenticated(None, "jan@example.org")
    assert reason == "sender not authenticated (no Authentication-Results of ours)"


def test_quoted_values_and_comments_are_read_as_rfc_8601_says() -> None:
    value = (
        'mx.rada.example (our host); spf=pass (sender IP is ok) smtp.mailfrom="j; a"@example.org;'
        ' dkim=fail header.d=x.example; dkim=pass header.d="Example.ORG." header.s=s'
    )
    results = parse_results(value)
    assert results is not None
    assert (results.authserv_id, results.spf, results.spf_domain) == (
        "mx.rada.example",
        "pass",
        "example.org",
    )
    assert results.dkim_pass == ("example.org",)
    assert parse_results("") is None and parse_results("; spf=pass") is None
