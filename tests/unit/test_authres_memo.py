"""The short per-resolver memo in front of dnspython (authres.dns.MEMO_SECONDS)."""

from __future__ import annotations

import time
from typing import Any

import dns.exception
import dns.resolver
import pytest

from mailsvc.relay.smtp.authres import dns as authdns


class CountingResolver(dns.resolver.Resolver):
    """A resolver whose network is a counter: every name is absent, or the server times out."""

    def __init__(self, *, cache: bool, timeout: bool = False) -> None:
        super().__init__(configure=False)
        self.nameservers = ["192.0.2.1"]
        self.cache = dns.resolver.LRUCache(100) if cache else None
        self.asked = 0
        self.times_out = timeout

    def resolve(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.asked += 1
        if self.times_out:
            raise dns.exception.Timeout()
        raise dns.resolver.NXDOMAIN()


def _ask(resolver: CountingResolver, name: str = "example.net") -> list[Any]:
    return authdns._Dns(resolver, time.monotonic() + 5).query(name, "TXT")


def test_a_caching_resolver_is_asked_once_within_the_memo_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(authdns, "MEMO_SECONDS", 0.2)
    resolver = CountingResolver(cache=True)
    assert _ask(resolver) == [] and _ask(resolver) == [] and _ask(resolver, "EXAMPLE.net") == []
    assert resolver.asked == 1
    assert _ask(resolver, "other.example") == [] and resolver.asked == 2
    time.sleep(0.25)
    assert _ask(resolver) == [] and resolver.asked == 3  # remembered only briefly


def test_a_resolver_without_cache_is_asked_every_time() -> None:
    resolver = CountingResolver(cache=False)
    _ask(resolver)
    _ask(resolver)
    assert resolver.asked == 2


def test_a_timeout_is_not_remembered() -> None:
    resolver = CountingResolver(cache=True, timeout=True)
    for _ in range(2):
        with pytest.raises(authdns._DnsTemporaryFailure):
            _ask(resolver)
    assert resolver.asked == 2
