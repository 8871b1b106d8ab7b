"""Delivery workers: take due messages from the queue and hand them on, each route with its own
client — LMTP to the mailbox store for the council's domain, SMTP to the smarthost for the rest.

After each attempt the outcomes are recorded in one transaction together with what they cause:
a bounce (RFC 3464) to the sender for recipients that failed for good, and an acknowledgement
(RFC 3834) to a resident whose message reached a councillor's mailbox.

Neither goes to the sender of a resident's message (origin ``inbound``) whom the checks at DATA
did not authenticate (SPF pass, or a DKIM pass aligned with the sender's domain: read back from
our Authentication-Results field at the top of the stored message). Anyone can write any
address in MAIL FROM; answering it would send our mail to whoever the sender chose to name.
Why nothing was sent is noted on the message and copied into the relay log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import traceback
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from mailsvc.config import DeliverySettings, Settings
from mailsvc.domain.outcome import Outcome, Reply, settle, stored_text
from mailsvc.domain.receipt_states import EventKind, EventSource
from mailsvc.errors import StorageUnavailable, TemporaryFailure
from mailsvc.relay.counters import DELIVERIES, Counters
from mailsvc.relay.delivery.ack import ack_refusal, acknowledgement_day, build_acknowledgement
from mailsvc.relay.delivery.body import PartedBody
from mailsvc.relay.delivery.claims import LeaseRenewal, renewal_interval
from mailsvc.relay.delivery.dsn import Failure, bounce_refusal, build_dsn
from mailsvc.relay.delivery.lmtp import LmtpClient
from mailsvc.relay.delivery.smarthost import SmarthostClient
from mailsvc.relay.dkim import DkimSigner
from mailsvc.relay.smtp.authres import read_results, sender_unauthenticated
from mailsvc.relay.smtp.authres.dmarc import _organizational_domain
from mailsvc.storage.db import utcnow
from mailsvc.storage.queue import (
    ORIGIN_ACK,
    ORIGIN_DISTRIBUTION,
    ORIGIN_DSN,
    ORIGIN_INBOUND,
    ORIGIN_REMINDER,
    ROUTE_LMTP,
    ROUTE_SMTP,
    ROUTES,
    AckRequest,
    MailQueue,
    Outgoing,
    QueuedMessage,
    ReceiptUpdate,
    backoff,
)
from mailsvc.storage.queue.wakeups import QueueListener
from mailsvc.storage.shared_files import SharedFiles
from mailsvc.storage.spool import remove_orphans

log = logging.getLogger(__name__)

# Give up polling for longer than this even when nothing is due (picks up rows other
# processes added, e.g. the CLI or a second acceptor).
_MAX_IDLE = 5.0
# Passes of drain(): the mail itself, then its bounce or acknowledgement, then theirs.
_DRAIN_PASSES = 3
# Waits between attempts to record outcomes while the database is busy or unavailable.
_RECORD_RETRY_FIRST = 0.05
_RECORD_RETRY_MAX = 5.0
# Concurrent smarthost connections (delivery.workers counts the LMTP ones).
# The reply recorded for a recipient the server gave no answer about.
_NO_REPLY = Reply(451, "4.3.0 no reply for this recipient")


class Transport(Protocol):
    """A client for one route: LmtpClient or SmarthostClient."""

    async def deliver(
        self,
        mail_from: str,
        recipients: Sequence[str],
        body: bytes | PartedBody,
        *,
        dsn_envid: str | None = None,
    ) -> dict[str, Reply]: ...

    async def close(self) -> None: ...


def decide(
    reply: Reply, attempts: int, received_at: datetime, settings: DeliverySettings
) -> tuple[str, datetime | None]:
    """Next state of a delivery after ``reply`` on attempt number ``attempts + 1``."""
    now = utcnow()
    outcome = settle(
        reply, age=now - received_at, retry_period=timedelta(seconds=settings.retry_period)
    )
    if outcome is Outcome.DELIVERED:
        return "delivered", None
    if outcome is Outcome.TEMPORARY:
        wait = backoff(attempts + 1, settings.retry_initial, settings.retry_max_interval)
        return "deferred", now + wait
    return "failed", None


class DeliveryWorkers:
    """``delivery.workers`` LMTP workers and ``smarthost.workers`` smarthost workers.

    ``smarthost`` overrides where smarthost mail goes (the local capture, which speaks plain
    SMTP without AUTH); otherwise ``settings.smarthost`` says.
    """

    def __init__(
        self,
        queue: MailQueue,
        settings: Settings,
        *,
        smarthost: tuple[str, int] | None = None,
        smarthost_workers: int | None = None,
        counters: Counters | None = None,
        shared: SharedFiles | None = None,
    ) -> None:
        self.queue = queue
        # Recorded outcomes by route, for /metrics.
        self.counters = counters
        self.settings = settings
        self.smarthost = smarthost
        self.local_domains = (settings.domain,)
        # Keys are read by start() or drain(), in a thread; a missing one stops them there.
        self.signer = DkimSigner.from_settings(settings)
        # Several nodes (PostgreSQL): bodies spooled and parts encoded on another node.
        self.shared = shared
        self._pool = {
            ROUTE_LMTP: settings.delivery.workers,
            ROUTE_SMTP: smarthost_workers or settings.smarthost.workers,
        }
        self._wake = {route: asyncio.Event() for route in ROUTES}
        # Seconds a dispatcher waits at most before it looks at the queue again unprompted (for
        # rows other processes or nodes added without a wake-up reaching it).
        self.max_idle = _MAX_IDLE
        # Several nodes (PostgreSQL): the leases of this node's claims kept alive, and the
        # other nodes' enqueues heard (both started with the workers).
        self.renewal = LeaseRenewal(queue, renewal_interval(settings))
        self.listener: QueueListener | None = None
        if counters is not None:
            queue.on_lease_event = lambda name, n: counters.inc(name, by=n)
        # Per route: claimed messages waiting for a worker, how many workers are busy, and a
        # signal that one became free (the dispatcher claims only for free workers).
        self._work: dict[str, asyncio.Queue[QueuedMessage]] = {
            route: asyncio.Queue() for route in ROUTES
        }
        self._busy = dict.fromkeys(ROUTES, 0)
        self._free = {route: asyncio.Event() for route in ROUTES}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        # (sender, councillor) pairs acknowledged today, to skip the database for repeats.
        self._acked_day: date | None = None
        self._acked: set[tuple[str, str]] = set()

    def wake(self) -> None:
        """Called after a message is queued: deliver now rather than at the next poll."""
        for event in self._wake.values():
            event.set()

    def wake_routes(self, routes: Sequence[str]) -> None:
        """Another node queued deliveries on ``routes``: one claim round on each (a wake-up
        arriving while one is pending adds nothing)."""
        for route in routes:
            event = self._wake.get(route)
            if event is not None:
                event.set()

    def client(self, route: str) -> Transport:
        """A new, unconnected client for ``route``."""
        s = self.settings
        if route == ROUTE_LMTP:
            return LmtpClient(*s.lmtp_address, lhlo=s.smtp_hostname)
        if self.smarthost is not None:
            host, port = self.smarthost
            return SmarthostClient(
                host, port, helo=s.smtp_hostname, timeout=s.smarthost.timeout, signer=self.signer
            )
        context = None
        if s.smarthost.ca_file:
            context = ssl.create_default_context(cafile=s.smarthost.ca_file)
        return SmarthostClient(
            s.smarthost.host,
            s.smarthost.port,
            security=s.smarthost.security,
            username=s.smarthost.username,
            password=s.smarthost.password,
            helo=s.smtp_hostname,
            timeout=s.smarthost.timeout,
            tls_context=context,
            signer=self.signer,
        )

    async def load_keys(self) -> None:
        """Read the DKIM keys now: a missing or wrong one is a ConfigError at start, not a
        failure at the first outgoing message."""
        if self.signer is not None:
            await asyncio.to_thread(self.signer.load)

    async def start(self) -> None:
        await self.load_keys()
        released = await self.queue.release_claims()
        if released:
            log.warning("%d deliveries were in flight at the last stop; retrying them", released)
        await self.remove_spool_orphans()
        if self.queue.leased:
            self.renewal.start()
            self.listener = QueueListener(self.queue.engine.url, self.wake_routes, ROUTES)
            self.listener.start()
        self._tasks = [
            asyncio.create_task(self._run(route), name=f"delivery-{route}-{i}")
            for route, size in self._pool.items()
            for i in range(size)
        ] + [
            asyncio.create_task(self._dispatch(route), name=f"dispatch-{route}")
            for route in self._pool
        ]

    async def remove_spool_orphans(self) -> list[str]:
        """Remove spool files no kept message names: left by a stop between a message's last
        outcome and the removal of its file, or by a session cut off while it was written.
        A file touched within the SMTP idle timeout may belong to a session at work."""
        in_use = await self.queue.spool_files_in_use()
        removed = await asyncio.to_thread(
            remove_orphans,
            self.settings.var_dir,
            in_use,
            older_than=self.settings.smtp.timeout + 60,
        )
        if removed:
            log.info("removed %d spool files no message needs", len(removed))
        return removed

    async def _release_spool(self, message: QueuedMessage, path: Path) -> None:
        """Remove a spooled body once no recipient of its message needs it any more."""
        try:
            if await self.queue.settled(message.id):
                await asyncio.to_thread(path.unlink, missing_ok=True)
        except StorageUnavailable as exc:  # the file stays; the next start removes it
            log.warning("queue %s: spool file kept for now: %s", message.queue_id, exc)

    async def stop(self) -> None:
        self._stopping = True
        self.wake()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.listener is not None:
            await self.listener.stop()
            self.listener = None
        leftover = []
        for work in self._work.values():
            while not work.empty():
                leftover.append(work.get_nowait())
        with contextlib.suppress(Exception):  # otherwise released at the next start
            await self.queue.release(leftover)
        await self.renewal.stop()

    async def _dispatch(self, route: str) -> None:
        """Claim work for this route's free workers: a few messages per transaction, and no
        second look at a queue that had nothing more due (the claim says when to look again;
        a newly queued message wakes the dispatcher at once)."""
        wake, free, work = self._wake[route], self._free[route], self._work[route]
        while not self._stopping:
            wanted = self._pool[route] - self._busy[route] - work.qsize()
            if wanted <= 0:
                free.clear()
                await free.wait()
                continue
            wake.clear()  # before the claim: a message queued from now on wakes us again
            try:
                claim = await self.queue.claim(route, wanted)
            except StorageUnavailable as exc:  # e.g. another process claimed the same rows
                log.debug("claim on %s: %s", route, exc)
                await asyncio.sleep(0.05)
                continue
            except Exception:
                log.exception("could not claim work from the queue")
                await asyncio.sleep(1)
                continue
            for message in claim.messages:
                work.put_nowait(message)
            if claim.more:
                continue
            due_in = claim.next_due_in
            idle = self.max_idle
            timeout = idle if due_in is None else min(idle, max(due_in, 0.05))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)

    async def _run(self, route: str) -> None:
        client = self.client(route)
        work, free = self._work[route], self._free[route]
        try:
            while not self._stopping:
                message = await work.get()
                self._busy[route] += 1
                try:
                    queued = await self.deliver(client, message)
                finally:
                    self._busy[route] -= 1
                    free.set()
                if queued:  # a bounce or an acknowledgement: possibly for the other route
                    self.wake()
        finally:
            await client.close()

    async def drain(self) -> int:
        """Deliver everything due now, route by route, then return (CLI, outside serve).

        Bounces and acknowledgements queued on the way are delivered too: a few passes over
        the routes, never a loop over retries that happen to fall due while it runs.
        """
        await self.load_keys()
        count = 0
        for _ in range(_DRAIN_PASSES):
            progress = False
            for route in ROUTES:
                client = self.client(route)
                try:
                    while (message := await self.queue.claim_next(route)) is not None:
                        await self.deliver(client, message)
                        count += 1
                        progress = True
                finally:
                    await client.close()
            if not progress:
                break
        return count

    async def deliver(self, client: Transport, message: QueuedMessage) -> list[str]:
        """One attempt for the claimed recipients; returns the queue ids of messages it caused."""
        recipients = [rcpt for _, rcpt, _ in message.deliveries]
        tracked = message.origin == ORIGIN_DISTRIBUTION
        try:
            started = utcnow()
            body: bytes | PartedBody = message.body
            if message.parts is not None:
                # Spooled or encoded on another node: fetched from the database (PostgreSQL).
                await self._fetch_parts(message.parts)
                body = PartedBody.from_stored(message.body, message.parts, self.settings.var_dir)
                body.check()
            # Delivery reports only for what we track, and only where the smarthost's 250 is
            # all we would know. Other mail asks for none: a resident's or councillor's reports
            # would go to a sender who did not ask, and a reminder's to the VERP address of the
            # distribution copy, where a success would be credited to the wrong message.
            envid = message.queue_id if tracked and message.route == ROUTE_SMTP else None
            try:
                replies = await client.deliver(message.mail_from, recipients, body, dsn_envid=envid)
            except TemporaryFailure as exc:
                log.warning("queue %s: %s unavailable: %s", message.queue_id, message.route, exc)
                replies = dict.fromkeys(recipients, Reply(451, f"4.4.1 {exc}"))
            now = datetime.now(UTC)
            outcomes: list[tuple[int, str, str, datetime | None]] = []
            failures: list[Failure] = []
            delivered: list[str] = []
            for delivery_id, rcpt, attempts in message.deliveries:
                reply = replies.get(rcpt, _NO_REPLY)
                status, next_at = decide(
                    reply, attempts, message.received_at, self.settings.delivery
                )
                outcomes.append((delivery_id, status, stored_text(str(reply))[:2000], next_at))
                if status == "failed":
                    failures.append(Failure(rcpt, reply, expired=reply.temporary))
                elif status == "delivered":
                    delivered.append(rcpt)
                log.info(
                    "queue %s to=<%s> route=%s status=%s reply=%s",
                    message.queue_id,
                    rcpt,
                    message.route,
                    status,
                    str(reply).splitlines()[0] if str(reply) else "",
                )
            receipts = self._receipts(message, replies, outcomes, started) if tracked else None
            if message.origin in (ORIGIN_DISTRIBUTION, ORIGIN_REMINDER):
                # Our own return path: a failure is recorded as a receipt, never bounced.
                failures = []
            follow_ups, error, bounce_note = self._bounce(message, failures)
            if error is not None:
                # No bounce could be written: keep the failed recipients as dead letters, so
                # that the sender is not left without word once the cause is fixed.
                log.error(
                    "queue %s: bounce failed, kept as dead letter:\n%s", message.queue_id, error
                )
                outcomes = [(d, "dead" if s == "failed" else s, r, n) for d, s, r, n in outcomes]
            ack, ack_note = self._ack_request(message, delivered, now)
            notes = [n for n in (ack_note, bounce_note) if n]
            caused = await self._record(
                message,
                outcomes,
                follow_ups=follow_ups,
                ack=ack,
                error=error,
                receipts=receipts,
                note="; ".join(notes) or None,
            )
            self._count(message.route, [status for _, status, _, _ in outcomes])
            if isinstance(body, PartedBody) and body.spool_file is not None:
                await self._release_spool(message, body.spool_file)
            return caused
        except asyncio.CancelledError:
            raise  # the claim is released at the next start (at-least-once)
        except StorageUnavailable as exc:
            # The database is busy or down (and the workers are stopping): not the message's
            # fault. Its deliveries stay in flight and are attempted again at the next start
            # (one node), or once their lease passes (several nodes: no longer renewed here).
            log.warning("queue %s: outcome not recorded, retried later: %s", message.queue_id, exc)
            self.queue.let_go(message.id)
            return []
        except Exception:
            error = traceback.format_exc()
            log.error(
                "queue %s: unexpected error, kept as dead letter:\n%s", message.queue_id, error
            )
            with contextlib.suppress(Exception):
                await self.queue.mark_dead(message.id, error)
                self._count(message.route, ["dead"] * len(message.deliveries))
            return []

    async def _fetch_parts(self, parts: str) -> None:
        """The parts another node wrote; a database or disk fault while fetching them is
        temporary (the delivery is tried again), not the message's fault."""
        if self.shared is None:
            return
        try:
            await self.shared.fetch_parts(parts)
        except (OSError, SQLAlchemyError) as exc:
            raise StorageUnavailable(f"the message's parts could not be fetched: {exc}") from exc

    def _count(self, route: str, statuses: list[str]) -> None:
        if self.counters is not None:
            for status in statuses:
                self.counters.inc(DELIVERIES, route, status)

    async def _record(
        self,
        message: QueuedMessage,
        outcomes: list[tuple[int, str, str, datetime | None]],
        *,
        follow_ups: list[Outgoing],
        ack: AckRequest | None,
        error: str | None,
        receipts: ReceiptUpdate | None,
        note: str | None = None,
    ) -> list[str]:
        """Record an attempt's outcomes, waiting out a busy or unavailable database: the attempt
        has been made, and giving up on its record would only make it again."""
        pause = _RECORD_RETRY_FIRST
        while True:
            try:
                return await self.queue.record(
                    message.id,
                    outcomes,
                    follow_ups=follow_ups,
                    ack=ack,
                    error=error,
                    receipts=receipts,
                    note=note,
                )
            except StorageUnavailable as exc:
                if self._stopping:
                    raise
                log.warning(
                    "queue %s: outcome not recorded yet, again in %.1f s: %s",
                    message.queue_id,
                    pause,
                    exc,
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, _RECORD_RETRY_MAX)

    def _receipts(
        self,
        message: QueuedMessage,
        replies: dict[str, Reply],
        outcomes: list[tuple[int, str, str, datetime | None]],
        started: datetime,
    ) -> ReceiptUpdate:
        """Receipt events of a distribution message: sent (first attempt), then delivered
        (sent again when the smarthost took it), delayed or failed, with the server's reply for
        that recipient as evidence."""
        now = utcnow()
        where = (
            "LMTP {}:{}".format(*self.settings.lmtp_address)
            if message.route == ROUTE_LMTP
            else "SMTP smarthost"
        )
        source = EventSource.LMTP if message.route == ROUTE_LMTP else EventSource.SMTP
        # LMTP's 250 puts the copy in the councillor's mailbox; the smarthost's only takes it
        # over (delivery at the remote end shows when its success DSN arrives).
        handed = EventKind.DELIVERED if message.route == ROUTE_LMTP else EventKind.SENT
        kinds = {"delivered": handed, "failed": EventKind.FAILED}
        events: list[tuple[str, str, datetime, str, str]] = []
        for (_, rcpt, attempts), (_, status, reply, _) in zip(
            message.deliveries, outcomes, strict=True
        ):
            if attempts == 0:
                events.append((rcpt, EventKind.SENT, started, source, f"{where}: attempt 1"))
            kind = kinds.get(status, EventKind.DELAYED)
            permanent = replies.get(rcpt, _NO_REPLY).outcome.value
            detail = f"{where}: {reply}" + (f" ({permanent})" if kind is EventKind.FAILED else "")
            events.append((rcpt, kind, now, source, detail))
        return ReceiptUpdate(tuple(events))

    def _bounce(
        self, message: QueuedMessage, failures: list[Failure]
    ) -> tuple[list[Outgoing], str | None, str | None]:
        """The bounce for ``failures`` (if one may be sent), or the error that prevented it,
        and a note when a resident's message gets none for want of an authenticated sender."""
        if not failures:
            return [], None, None
        refusal = bounce_refusal(message.mail_from, message.body, self.local_domains)
        if refusal is None and message.origin == ORIGIN_INBOUND:
            refusal = self._unauthenticated(message)
            if refusal is not None:
                log.info("queue %s: no bounce: %s", message.queue_id, refusal)
                return [], None, f"no bounce: {refusal}"
        if refusal is not None:
            log.info("queue %s: no bounce: %s", message.queue_id, refusal)
            return [], None, None
        try:
            dsn = build_dsn(
                self.settings,
                queue_id=message.queue_id,
                mail_from=message.mail_from,
                arrival=message.received_at,
                original=message.body,
                failures=failures,
            )
        except ValueError as exc:  # the sender's address cannot be written to
            log.warning("queue %s: no bounce: %s", message.queue_id, exc)
            return [], None, None
        except Exception:
            return [], traceback.format_exc(), None
        return [Outgoing("", (message.mail_from,), dsn.as_bytes(), ORIGIN_DSN)], None, None

    def _unauthenticated(self, message: QueuedMessage) -> str | None:
        """Why the sender of this resident's message is not one the checks authenticated."""
        results = read_results(message.body, self.settings.smtp_hostname)
        return sender_unauthenticated(results, message.mail_from)

    def _ack_request(
        self, message: QueuedMessage, delivered: list[str], now: datetime
    ) -> tuple[AckRequest | None, str | None]:
        """What to acknowledge to a resident, or a note why nothing; never fails (the mail is
        delivered by now)."""
        if not (self.settings.relay.acknowledge and delivered and message.route == ROUTE_LMTP):
            return None, None
        # Most deliveries are to councillors this sender was already told about today: skip
        # the parsing and the database for them (the database stays the authority).
        day = acknowledgement_day(now, self.settings.zone)
        sender = message.mail_from.lower()
        if self._acked_day != day:
            self._acked_day, self._acked = day, set()
        delivered = [a for a in delivered if (sender, a.lower()) not in self._acked]
        if not delivered:
            return None, "no acknowledgement: already acknowledged today"
        refusal = ack_refusal(
            message.mail_from, message.body, self.local_domains, origin=message.origin
        )
        if refusal is None:
            refusal = self._unauthenticated(message)
        if refusal is not None:
            log.info("queue %s: no acknowledgement: %s", message.queue_id, refusal)
            inbound = message.origin == ORIGIN_INBOUND
            return None, f"no acknowledgement: {refusal}" if inbound else None

        def compose(fresh: Sequence[tuple[str, str]]) -> Outgoing | None:
            # Runs inside the queue's unit of work, with the register's names of the
            # councillors not acknowledged yet today, once the hourly caps allowed it (a
            # refused one may still be acknowledged later that day: not remembered here).
            if len(self._acked) < 100_000:
                self._acked.update((sender, a.lower()) for _, a in fresh)
            try:
                ack = build_acknowledgement(
                    self.settings,
                    mail_from=message.mail_from,
                    original=message.body,
                    delivered_at=now,
                    councillors=list(fresh),
                )
            except Exception:
                log.exception("queue %s: acknowledgement not sent", message.queue_id)
                return None
            log.info(
                "queue %s: acknowledging to <%s> delivery to %s",
                message.queue_id,
                message.mail_from,
                ",".join(f"<{a}>" for _, a in fresh),
            )
            return Outgoing("", (message.mail_from,), ack.as_bytes(), ORIGIN_ACK)

        relay = self.settings.relay
        return AckRequest(
            message.mail_from,
            tuple(delivered),
            day,
            compose,
            forget_before=day - timedelta(days=relay.log_retention_days),
            hourly_caps=(relay.acknowledge_max_per_hour, relay.acknowledge_max_per_domain_per_hour),
            # Subdomains of one organisation share its allowance.
            cap_domain=_organizational_domain(sender.rpartition("@")[2]),
        ), None
