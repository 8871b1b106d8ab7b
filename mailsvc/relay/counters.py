"""Counts of what the relay did, for ``/metrics`` (mailsvc.metrics): SMTP sessions and
refusals, AUTH failures, delivery outcomes.

Plain integers, changed only on the event loop's thread (no lock). Label values are fixed codes
(a server's name, a refusal reason, a route, an outcome), never addresses or client IPs, so the
number of series stays small; a name that somehow got more label sets than ``MAX_SERIES`` counts
the rest under "other".

The delivery process (mailsvc.relay.delivery.process) keeps a ``Counters`` that ``forward``s each
count over its pipe to the parent's, so one ``/metrics`` shows both processes.
"""

from __future__ import annotations

from collections.abc import Callable

# name -> label names (the order of the label values given to ``inc``).
SMTP_SESSIONS = "smtp_sessions"  # (server,): connections accepted
SMTP_REFUSALS = "smtp_refusals"  # (server, reason): 4xx/5xx replies and refused connections
AUTH_FAILURES = "smtp_auth_failures"  # (reason,): failed AUTH on the submission port
DELIVERIES = "deliveries"  # (route, outcome): recorded outcomes of delivery attempts
# Claims with leases (several nodes on PostgreSQL; the names MailQueue reports them under):
TAKEOVERS = "delivery_takeovers"  # (): in-flight deliveries taken over after their lease
LATE_OUTCOMES = "delivery_late_outcomes"  # (): outcomes not applied (claim taken over)
LABELS: dict[str, tuple[str, ...]] = {
    SMTP_SESSIONS: ("server",),
    SMTP_REFUSALS: ("server", "reason"),
    AUTH_FAILURES: ("reason",),
    DELIVERIES: ("route", "outcome"),
    TAKEOVERS: (),
    LATE_OUTCOMES: (),
}
MAX_SERIES = 100

Key = tuple[str, tuple[str, ...]]


class Counters:
    def __init__(self, forward: Callable[[str, tuple[str, ...], int], None] | None = None) -> None:
        self._counts: dict[Key, int] = {}
        self._series: dict[str, int] = dict.fromkeys(LABELS, 0)
        self._forward = forward

    def inc(self, name: str, *labels: str, by: int = 1) -> None:
        if len(labels) != len(LABELS[name]):
            raise ValueError(f"{name}: expected labels {LABELS[name]}, got {labels}")
        key = (name, labels)
        if key not in self._counts:
            if self._series[name] >= MAX_SERIES:
                key = (name, ("other",) * len(labels))
            else:
                self._series[name] += 1
        self._counts[key] = self._counts.get(key, 0) + by
        if self._forward is not None:
            self._forward(name, labels, by)

    def get(self, name: str, *labels: str) -> int:
        return self._counts.get((name, labels), 0)

    def items(self) -> list[tuple[str, tuple[str, ...], int]]:
        """Every (name, label values, count) counted so far."""
        return [(name, labels, count) for (name, labels), count in self._counts.items()]
