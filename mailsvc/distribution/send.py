"""Sending a distribution: one personal message per recipient, the documents encoded once.

The database is the truth. Sending a distribution writes, per recipient and in one transaction,
the recipient row (unique per distribution and address), its queued message and its "queued"
event: a crash at any point leaves each recipient either fully queued or not at all, and the
next run skips those already done — each councillor gets each distribution exactly once.

Several nodes: the recipient row is the claim. It is written with INSERT … ON CONFLICT DO
NOTHING in the transaction that queues the message, and only the rows this transaction wrote
get a message; so two senders of one distribution at once (a leader that lost its lead
mid-send and the node that took over, or a clerk's `mailsvc distribute send`) share the
recipients between them and none is queued twice.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from mailsvc.config import Settings
from mailsvc.distribution.clock import Clock
from mailsvc.distribution.documents import document_path
from mailsvc.distribution.errors import DistributionError, unknown_distribution
from mailsvc.distribution.links import RecipientLinks
from mailsvc.distribution.mail import HeadTemplate, Pack, PackDocument, SessionFacts, prepare_pack
from mailsvc.domain.receipt_states import EventKind, EventSource
from mailsvc.relay.delivery.body import PartedBody, parts_dir
from mailsvc.storage.queue import ORIGIN_DISTRIBUTION, MailQueue
from mailsvc.storage.sessions import CouncilSessionRow, DistributionRow, ReceiptStore
from mailsvc.storage.shared_files import SharedFiles
from provisioning.directory import CouncillorEntry

log = logging.getLogger(__name__)

# Recipients written per transaction while sending (one fsync per chunk, bounded memory).
SEND_CHUNK = 50
COUNCIL_GROUP = "rada"


class GroupDirectory(Protocol):
    """What sending needs from the directory (provisioning.directory.Directory has it)."""

    async def expand_group(self, name: str) -> list[CouncillorEntry] | None: ...


@dataclass(frozen=True)
class SendResult:
    distribution_id: int
    queued: int  # recipients queued by this run
    skipped: int  # recipients already queued by an earlier run
    late: bool


async def session_facts(store: ReceiptStore, session: CouncilSessionRow) -> SessionFacts:
    """What the messages say about the session (its agenda included)."""
    agenda = await store.agenda(session.id)
    return SessionFacts(
        session.number,
        session.kind,
        session.starts_at,
        session.place,
        tuple((i.position, i.title) for i in agenda),
    )


class Sender:
    def __init__(
        self,
        settings: Settings,
        store: ReceiptStore,
        queue: MailQueue,
        directory: GroupDirectory | None,
        links: RecipientLinks,
        clock: Clock,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.directory = directory
        self.links = links
        self.clock = clock
        self.on_queued = on_queued
        # One send per distribution at a time in this process (the database guards the rest).
        self._sending: dict[int, asyncio.Lock] = {}

    async def send(
        self,
        distribution_id: int,
        *,
        now: datetime | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> SendResult:
        """Send one distribution: every recipient not yet queued gets its message. Safe to call
        again after a crash or from a concurrent trigger (nobody gets it twice). ``progress``
        is told (queued so far, to queue) after each chunk."""
        lock = self._sending.setdefault(distribution_id, asyncio.Lock())
        async with lock:
            return await self._send(distribution_id, now or self.clock.now(), progress)

    async def _send(
        self,
        distribution_id: int,
        now: datetime,
        progress: Callable[[int, int], None] | None = None,
    ) -> SendResult:
        dist = await self.store.distribution(distribution_id)
        if dist is None:
            raise unknown_distribution(self.settings, distribution_id)
        if dist.status in ("sent", "cancelled"):
            return SendResult(dist.id, 0, 0, dist.late)
        late = dist.late
        if dist.status == "scheduled":
            # Late: it fell due more than a sync interval ago (the service was down).
            grace = timedelta(seconds=max(60.0, 3 * self.settings.distribution.sync_interval))
            late = now - dist.due_at > grace
            if not await self.store.start_sending(dist.id, late=late):
                return SendResult(dist.id, 0, 0, late)  # another trigger has it
            if late:
                log.warning(
                    "distribution %d was due %s UTC and is sent late (the service was down)",
                    dist.id,
                    dist.due_at,
                )
        session = await self.store.session_by_id(dist.session_id)
        assert session is not None
        recipients = await self._recipients(dist)
        done = await self.store.recipient_addresses(dist.id)
        todo = [r for r in recipients if r[0].lower() not in done]
        pack = await self._pack(dist, session) if todo else None
        originals: dict[str, str] = {}
        if dist.replies_to is not None:
            originals = {
                r.address.lower(): r.message_id
                for r in await self.store.recipients(dist.replies_to)
            }
        expires = self.links.link_expiry(session)
        heads = HeadTemplate(self.settings, pack) if pack is not None else None
        queued = 0
        for start in range(0, len(todo), SEND_CHUNK):
            assert heads is not None
            queued += await self._queue_chunk(
                dist, heads, todo[start : start + SEND_CHUNK], originals, expires
            )
            if self.on_queued is not None:
                self.on_queued()
            if progress is not None:
                progress(min(start + SEND_CHUNK, len(todo)), len(todo))
        await self.store.finish_sending(dist.id)
        log.info(
            "distribution %d (%s of session %s): %d queued, %d already queued before",
            dist.id,
            dist.kind,
            session.number,
            queued,
            len(recipients) - queued,
        )
        return SendResult(dist.id, queued, len(recipients) - queued, late)

    async def _recipients(self, dist: DistributionRow) -> list[tuple[str, str, str]]:
        """(address, display name, role) of the councillors active now, plus the copies."""
        if self.directory is None:
            raise DistributionError("no directory to find the councillors")
        group = f"komisja-{dist.committee}" if dist.committee else COUNCIL_GROUP
        members = await self.directory.expand_group(group)
        if members is None:
            raise DistributionError(f"group {group} not found in the directory")
        out: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        for entry in sorted(members, key=lambda e: (e.surname, e.given_name, e.address)):
            if entry.active and entry.address.lower() not in seen:
                seen.add(entry.address.lower())
                out.append((entry.address, entry.display_name, "councillor"))
        for copy in (a.strip() for a in self.settings.distribution.copies.split(",")):
            if copy and copy.lower() not in seen:
                seen.add(copy.lower())
                out.append((copy, "", "copy"))
        return out

    async def _pack(self, dist: DistributionRow, session: CouncilSessionRow) -> Pack:
        docs = await self.store.documents_by_id(dist.document_ids)
        positions = {i.id: i.position for i in await self.store.agenda(session.id)}
        pack_docs = []
        shared = SharedFiles(self.store.engine, self.settings.var_dir)
        # Attached on another node: fetched from the database (PostgreSQL).
        await shared.fetch([document_path(self.settings.var_dir, d.sha256) for d in docs])
        for d in docs:
            path = document_path(self.settings.var_dir, d.sha256)
            if not path.is_file():
                raise DistributionError(f"document {d.filename} ({d.sha256}) is missing at {path}")
            pack_docs.append(
                PackDocument(
                    d.id,
                    path,
                    d.filename,
                    d.media_type,
                    d.size,
                    d.pages,
                    d.sha256,
                    positions.get(d.agenda_item_id) if d.agenda_item_id else None,
                )
            )
        facts = await session_facts(self.store, session)
        pack = await asyncio.to_thread(
            prepare_pack,
            self.settings,
            distribution_id=dist.id,
            kind=dist.kind,
            session=facts,
            note=dist.note,
            documents=pack_docs,
        )
        # The encoded parts, for the delivery workers of the other nodes.
        directory = parts_dir(self.settings.var_dir)
        await shared.publish([directory / name for name in pack.part_names])
        return pack

    async def _queue_chunk(
        self,
        dist: DistributionRow,
        heads: HeadTemplate,
        chunk: Sequence[tuple[str, str, str]],
        originals: dict[str, str],
        expires: datetime,
    ) -> int:
        """Queue one chunk's messages with their claims; returns how many this call queued
        (a recipient another sender claimed meanwhile is left to it)."""
        now = self.clock.now()
        valid_until = self.clock.to_local(expires).date().isoformat()
        links = self.links
        pack = heads.pack
        parts = (
            PartedBody.to_stored(pack.boundary, list(pack.part_names)) if pack.part_names else None
        )
        message_ids = [
            f"<{secrets.token_hex(10)}.d{dist.id}@{self.settings.domain}>" for _ in chunk
        ]
        # One transaction per chunk, a handful of statements each (not a few per recipient).
        async with self.queue.engine.begin() as conn:
            claimed = await self.store.claim_recipients(
                conn,
                distribution_id=dist.id,
                recipients=[
                    (address, name, role, message_id)
                    for (address, name, role), message_id in zip(chunk, message_ids, strict=True)
                ],
                at=now,
            )
            mine = [
                (entry, message_id, claimed[entry[0]])
                for entry, message_id in zip(chunk, message_ids, strict=True)
                if entry[0] in claimed
            ]
            if len(mine) < len(chunk):
                log.info(
                    "distribution %d: %d recipients already queued by another sender",
                    dist.id,
                    len(chunk) - len(mine),
                )
            if not mine:
                return 0
            items: list[tuple[str, Sequence[str], bytes, str | None]] = []
            for (address, name, _), message_id, recipient_id in mine:
                downloads = (
                    {
                        d.id: links.download_url(recipient_id, d.sha256, expires)
                        for d in pack.documents
                    }
                    if pack.linked
                    else {}
                )
                original = originals.get(address.lower())
                return_path = links.return_path(recipient_id)
                head = heads.render(
                    to=(name, address),
                    message_id=message_id,
                    return_path=return_path,
                    ack_url=links.ack_url(recipient_id, dist.id, expires),
                    download_urls=downloads,
                    links_valid_until=valid_until,
                    references=[original] if original else [],
                )
                items.append((return_path, [address], head, parts))
            queued = await self.queue.insert_many(conn, items, "", ORIGIN_DISTRIBUTION)
            await self.store.set_queue_messages(
                conn, [(r, row) for (_, _, r), (row, _) in zip(mine, queued, strict=True)]
            )
            await self.store.insert_events(
                conn,
                [
                    (
                        recipient_id,
                        EventKind.QUEUED,
                        EventSource.SCHEDULER,
                        f"queued as {message_id} for <{address}>",
                        now,
                    )
                    for (address, _, _), message_id, recipient_id in mine
                ],
            )
        return len(mine)
