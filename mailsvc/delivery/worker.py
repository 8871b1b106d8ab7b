"""Delivery workers: take due messages from the queue and hand them to Dovecot over LMTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from datetime import datetime, timedelta

from mailsvc.config import DeliverySettings
from mailsvc.delivery.lmtp import LmtpClient, LmtpUnavailable, Reply
from mailsvc.storage.db import utcnow
from mailsvc.storage.queue import MailQueue, QueuedMessage, backoff

log = logging.getLogger(__name__)

# Give up polling for longer than this even when nothing is due (picks up rows other
# processes added, e.g. the CLI or a second acceptor).
_MAX_IDLE = 5.0


def decide(
    reply: Reply, attempts: int, received_at: datetime, settings: DeliverySettings
) -> tuple[str, datetime | None]:
    """Next state of a delivery after ``reply`` on attempt number ``attempts + 1``."""
    if reply.ok:
        return "delivered", None
    if reply.temporary:
        if utcnow() - received_at >= timedelta(seconds=settings.retry_period):
            return "failed", None
        wait = backoff(attempts + 1, settings.retry_initial, settings.retry_max_interval)
        return "deferred", utcnow() + wait
    return "failed", None


class DeliveryWorkers:
    """A fixed number of workers, each with its own LMTP connection."""

    def __init__(
        self, queue: MailQueue, settings: DeliverySettings, lmtp: tuple[str, int], lhlo: str
    ) -> None:
        self.queue = queue
        self.settings = settings
        self.lmtp = lmtp
        self.lhlo = lhlo
        self._wake = asyncio.Event()
        self._claim_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def wake(self) -> None:
        """Called after a message is queued: deliver now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        released = await self.queue.release_claims()
        if released:
            log.warning("%d deliveries were in flight at the last stop; retrying them", released)
        self._tasks = [
            asyncio.create_task(self._run(i), name=f"delivery-{i}")
            for i in range(self.settings.workers)
        ]

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _claim(self) -> QueuedMessage | None:
        async with self._claim_lock:
            return await self.queue.claim_next()

    async def _idle(self) -> None:
        try:
            due_in = await self.queue.next_due_in()
        except Exception:  # database briefly unavailable: poll again soon
            log.exception("could not read the queue")
            due_in = 1.0
        timeout = _MAX_IDLE if due_in is None else min(_MAX_IDLE, max(due_in, 0.05))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _run(self, index: int) -> None:
        client = LmtpClient(*self.lmtp, lhlo=self.lhlo)
        try:
            while not self._stopping:
                try:
                    message = await self._claim()
                except Exception:
                    log.exception("could not claim work from the queue")
                    await asyncio.sleep(1)
                    continue
                if message is None:
                    if self._wake.is_set():  # woken since the claim: look again first
                        self._wake.clear()
                        continue
                    await self._idle()
                    continue
                # More work may be waiting: let an idle sibling look too.
                self._wake.set()
                await self.deliver(client, message)
        finally:
            await client.close()

    async def drain(self) -> int:
        """Deliver everything due now on one connection, then return (CLI, outside serve)."""
        client = LmtpClient(*self.lmtp, lhlo=self.lhlo)
        count = 0
        try:
            while (message := await self.queue.claim_next()) is not None:
                await self.deliver(client, message)
                count += 1
        finally:
            await client.close()
        return count

    async def deliver(self, client: LmtpClient, message: QueuedMessage) -> None:
        recipients = [rcpt for _, rcpt, _ in message.deliveries]
        try:
            try:
                replies = await client.deliver(message.mail_from, recipients, message.body)
            except LmtpUnavailable as exc:
                log.warning("queue %s: mailbox store unavailable: %s", message.queue_id, exc)
                replies = dict.fromkeys(recipients, Reply(451, f"4.4.1 {exc}"))
            outcomes = []
            for delivery_id, rcpt, attempts in message.deliveries:
                reply = replies[rcpt]
                status, next_at = decide(reply, attempts, message.received_at, self.settings)
                outcomes.append((delivery_id, status, str(reply)[:2000], next_at))
                log.info(
                    "queue %s to=<%s> status=%s reply=%s",
                    message.queue_id,
                    rcpt,
                    status,
                    str(reply).splitlines()[0],
                )
            await self.queue.record(message.id, outcomes)
        except asyncio.CancelledError:
            raise  # the claim is released at the next start (at-least-once)
        except Exception:
            error = traceback.format_exc()
            log.error(
                "queue %s: unexpected error, kept as dead letter:\n%s", message.queue_id, error
            )
            with contextlib.suppress(Exception):
                await self.queue.mark_dead(message.id, error)
