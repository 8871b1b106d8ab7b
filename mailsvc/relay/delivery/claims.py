"""Keeping this node's claims while it delivers (several nodes on PostgreSQL).

Every claim holds its deliveries under a lease on the database's clock
(``mailsvc.storage.queue.leases``). While the node is alive it renews the leases of whatever
it holds every min(``cluster.heartbeat_seconds``, ``cluster.lease_seconds`` / 3): a slow
delivery keeps its claim however long it takes, and only a node that stopped renewing (killed,
frozen, cut off from the database) has its deliveries taken over once the lease passes.

A renewal that fails (the database unreachable) is tried again at the next interval; the
claims are lost to another node only if that lasts longer than the lease.
"""

from __future__ import annotations

import asyncio
import logging

from mailsvc.config import Settings
from mailsvc.eventloop import cancel_and_wait
from mailsvc.storage.queue import MailQueue

log = logging.getLogger(__name__)


def renewal_interval(settings: Settings) -> float:
    """Seconds between renewals: often enough that two may fail within one lease."""
    cluster = settings.cluster
    return max(0.05, min(cluster.heartbeat_seconds, cluster.lease_seconds / 3))


class LeaseRenewal:
    """Renews ``queue``'s leases every ``interval`` seconds while it runs."""

    def __init__(self, queue: MailQueue, interval: float) -> None:
        self.queue = queue
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        # Renewals done (for tests and logs).
        self.rounds = 0

    def start(self) -> None:
        if self.queue.leased and self._task is None:
            self._task = asyncio.create_task(self._run(), name="lease-renewal")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.queue.renew_leases()
                self.rounds += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database down: try again at the next interval
                log.warning(
                    "could not renew the leases of %d deliveries in flight: %s",
                    len(self.queue.held),
                    exc,
                )
