"""What the SMTP servers remember about clients between connections, bounded in size and age.

Every such table is keyed by ``client_key``: the IPv4 address, or the /64 network of an IPv6
address (one customer's network: a host can pick any of its 2^64 addresses, so per-address
limits would not limit it). Entries are forgotten once they are older than their window, by a
sweep at most once per window, so neither an address scan nor a long uptime grows them.
"""

from __future__ import annotations

import collections
import time

# The IPv4 address, or the /64 of an IPv6 address (one rule for SMTP and the password guard).
from mailsvc.domain.clients import network_key as client_key

__all__ = ["MissCounter", "RateLimiter", "client_key"]


class _Windowed:
    """Event times per client within a sliding ``window`` (seconds), swept by age."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._events: dict[str, collections.deque[float]] = {}
        self._swept = time.monotonic()

    def _recent(self, ip: str, now: float) -> collections.deque[float]:
        if now - self._swept >= self.window:
            self._sweep(now)
        events = self._events.setdefault(client_key(ip), collections.deque())
        while events and now - events[0] > self.window:
            events.popleft()
        return events

    def _sweep(self, now: float) -> None:
        self._swept = now
        stale = [k for k, v in self._events.items() if not v or now - v[-1] > self.window]
        for key in stale:
            del self._events[key]

    def __len__(self) -> int:
        return len(self._events)


class RateLimiter(_Windowed):
    """Messages per client in a sliding minute."""

    def __init__(self, per_minute: int, window: float = 60.0) -> None:
        super().__init__(window)
        self.per_minute = per_minute

    def allow(self, ip: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        events = self._recent(ip, now)
        if len(events) >= self.per_minute:
            return False
        events.append(now)
        return True


class MissCounter(_Windowed):
    """Refused recipients (unknown addresses, ended mandates) per client in a sliding window."""

    def __init__(self, window: float = 3600.0) -> None:
        super().__init__(window)

    def miss(self, ip: str, now: float | None = None) -> int:
        """Count one miss; the client's misses within the window, this one included."""
        now = time.monotonic() if now is None else now
        events = self._recent(ip, now)
        events.append(now)
        if len(events) > 10_000:  # only the count near the threshold matters
            events.popleft()
        return len(events)
