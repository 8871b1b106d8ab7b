"""Reminders: at the configured offsets (hours after sending, or before the session) each
councillor who has not acknowledged a notice or supplement is reminded once per round, and
the office gets the round's summary with the print list of those still without it.

Once per round however many nodes run it: the round's row (unique per distribution and round)
is written first, INSERT … ON CONFLICT DO NOTHING, in the transaction that queues the round's
reminders and summary; the run that did not write it queues nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from mailsvc.config import Settings, reminder_offsets
from mailsvc.distribution.clock import Clock
from mailsvc.distribution.errors import in_language
from mailsvc.distribution.links import RecipientLinks
from mailsvc.distribution.mail import render_reminder, render_summary
from mailsvc.distribution.send import session_facts
from mailsvc.domain.receipt_states import EventKind, EventSource, MatrixDocument
from mailsvc.storage.queue import ORIGIN_LOCAL, ORIGIN_REMINDER, MailQueue
from mailsvc.storage.sessions import CouncilSessionRow, DistributionRow, ReceiptStore

log = logging.getLogger(__name__)


class Reminders:
    def __init__(
        self,
        settings: Settings,
        store: ReceiptStore,
        queue: MailQueue,
        links: RecipientLinks,
        clock: Clock,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.links = links
        self.clock = clock
        self.on_queued = on_queued

    async def remind(self, *, now: datetime | None = None) -> int:
        """One pass of the reminder rounds that have come due; returns reminders queued."""
        now = now or self.clock.now()
        offsets = reminder_offsets(self.settings.distribution.reminders)
        if not offsets:
            return 0
        total = 0
        for dist in await self.store.distributions(statuses=("sent",)):
            if dist.kind not in ("notice", "supplement") or dist.sent_at is None:
                continue
            session = await self.store.session_by_id(dist.session_id)
            if session is None or session.status == "cancelled":
                continue
            starts_utc = self.clock.to_utc(session.starts_at)
            if now >= starts_utc:
                continue
            for side, hours in offsets:
                key = f"{hours}h-{side}"
                at = (
                    dist.sent_at + timedelta(hours=hours)
                    if side == "after"
                    else starts_utc - timedelta(hours=hours)
                )
                if now < at or at < dist.sent_at:
                    continue
                if await self.store.reminder_done(dist.id, key):
                    continue
                total += await self._remind_round(dist, session, key)
        return total

    async def _remind_round(
        self, dist: DistributionRow, session: CouncilSessionRow, key: str
    ) -> int:
        from mailsvc.receipts.printlist import PrintItem, render_print_list_pdf

        acked = await self.store.recipients_with_kind(dist.id, EventKind.ACKNOWLEDGED)
        pending = [
            r
            for r in await self.store.recipients(dist.id)
            if r.role == "councillor" and r.id not in acked
        ]
        facts = await session_facts(self.store, session)
        docs = await self.store.documents_by_id(dist.document_ids)
        expires = self.links.link_expiry(session)
        assert dist.sent_at is not None
        sent_local = self.clock.to_local(dist.sent_at).strftime("%Y-%m-%d %H:%M")
        now = self.clock.now()
        summary = None
        if pending:
            not_acknowledged = in_language(self.settings, "brak potwierdzenia", "not acknowledged")
            items = [
                PrintItem(
                    r.name or r.address,
                    r.address,
                    "",
                    tuple(MatrixDocument(d.filename, d.sha256, d.size, d.pages) for d in docs),
                    not_acknowledged,
                )
                for r in pending
            ]
            pdf = await asyncio.to_thread(
                render_print_list_pdf,
                self.settings.council.name,
                session.number,
                session.starts_at,
                items,
                self.settings.language,
                time_zone=self.settings.distribution.timezone,
            )
            summary = render_summary(
                self.settings,
                facts,
                round_name=key,
                sent_at=sent_local,
                names=[r.name or r.address for r in pending],
                print_list_pdf=pdf,
            )
        async with self.queue.engine.begin() as conn:
            # The round's row first: the claim of its reminders (another node's run of the
            # same round, at the same time, waits for ours and then finds it taken).
            if not await self.store.claim_reminder_round(conn, dist.id, key, len(pending)):
                log.info("distribution %d: reminder %s already sent by another node", dist.id, key)
                return 0
            for r in pending:
                body = render_reminder(
                    self.settings,
                    facts,
                    to=(r.name, r.address),
                    ack_url=self.links.ack_url(r.id, dist.id, expires),
                    sent_at=sent_local,
                    references=[r.message_id],
                )
                await self.queue.insert(
                    conn, self.links.return_path(r.id), [r.address], body, "", ORIGIN_REMINDER
                )
            # One statement, one turn at the distribution's evidence chain.
            await self.store.insert_events(
                conn,
                [
                    (r.id, EventKind.REMINDED, EventSource.SCHEDULER, f"reminder {key}", now)
                    for r in pending
                ],
            )
            if summary is not None:
                await self.queue.insert(
                    conn, "", [self.settings.office_address], summary, "", ORIGIN_LOCAL
                )
        if pending and self.on_queued is not None:
            self.on_queued()
        log.info(
            "distribution %d: reminder %s to %d councillors without acknowledgement",
            dist.id,
            key,
            len(pending),
        )
        return len(pending)
