"""Use cases of the clerks' work with session documents: sessions, documents, distributions,
sending, receipts from every source, reminders, reports and paper saved.

The database is the truth. Sending a distribution writes, per recipient and in one transaction,
the recipient row (unique per distribution and address), its queued message and its "queued"
event: a crash at any point leaves each recipient either fully queued or not at all, and the
next run skips those already done — each councillor gets each distribution exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import secrets
import shutil
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from mailsvc import secret_store
from mailsvc.config import Settings, reminder_offsets
from mailsvc.distribution.mail import (
    Pack,
    PackDocument,
    SessionFacts,
    prepare_pack,
    render_head,
    render_reminder,
    render_summary,
)
from mailsvc.domain.notice import NoticeBreach, check_notice
from mailsvc.domain.receipt_states import (
    EventKind,
    EventSource,
    MatrixCell,
    MatrixDistribution,
    MatrixDocument,
    MatrixRow,
    ReceiptMatrix,
    derive_state,
)
from mailsvc.domain.vocabulary import DISTRIBUTION_KINDS, DOCUMENT_KINDS, SESSION_KINDS
from mailsvc.errors import MailsvcError
from mailsvc.receipts.tokens import TokenSigner
from mailsvc.relay.delivery.body import PartedBody, documents_dir
from mailsvc.storage.db import utcnow
from mailsvc.storage.queue import ORIGIN_DISTRIBUTION, ORIGIN_LOCAL, ORIGIN_REMINDER, MailQueue
from mailsvc.storage.sessions import (
    CouncilSessionRow,
    DistributionRow,
    DocumentRow,
    ReceiptStore,
)
from provisioning.directory import CouncillorEntry

log = logging.getLogger(__name__)

RECEIPTS_KEY = "receipts-key"  # the name of a secret file
# Recipients written per transaction while sending (one fsync per chunk, bounded memory).
SEND_CHUNK = 50
COUNCIL_GROUP = "rada"


class DistributionError(MailsvcError):
    """A clerk's request that cannot be carried out; the message says what to change."""


class NoticeRefused(DistributionError):
    def __init__(self, breach: NoticeBreach) -> None:
        super().__init__(breach.message)
        self.breach = breach


class GroupDirectory(Protocol):
    """What sending needs from the directory (provisioning.directory.Directory has it)."""

    async def expand_group(self, name: str) -> list[CouncillorEntry] | None: ...


def signer_for(settings: Settings) -> TokenSigner:
    """The token signer with the service's key (made once, kept in var/secrets)."""
    key = secret_store.load_or_create_secret(settings, RECEIPTS_KEY, length=48)
    return TokenSigner(key.encode("ascii"))


def document_path(var_dir: Path, sha256: str) -> Path:
    return documents_dir(var_dir) / sha256[:2] / sha256


def store_document(var_dir: Path, source: Path) -> tuple[str, Path]:
    """Copy ``source`` into the content-addressed store (fsync'd, atomic); (sha256, path)."""
    digest = hashlib.sha256()
    with source.open("rb") as fh:
        while block := fh.read(1024 * 1024):
            digest.update(block)
    sha = digest.hexdigest()
    target = document_path(var_dir, sha)
    if target.exists():
        return sha, target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    with source.open("rb") as src, tmp.open("wb") as out:
        shutil.copyfileobj(src, out, 1024 * 1024)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return sha, target


@dataclass(frozen=True)
class SendResult:
    distribution_id: int
    queued: int  # recipients queued by this run
    skipped: int  # recipients already queued by an earlier run
    late: bool


class Distributions:
    """Sessions, documents, distributions, receipts: the clerks' use cases."""

    def __init__(
        self,
        settings: Settings,
        store: ReceiptStore,
        queue: MailQueue,
        directory: GroupDirectory | None,
        *,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.directory = directory
        self.on_queued = on_queued
        self.signer = signer_for(settings)
        self.tz = zoneinfo.ZoneInfo(settings.distribution.timezone)
        # Where links point; the running service sets the address it actually bound.
        self.web_url = settings.web_url
        # One send per distribution at a time in this process (the database guards the rest).
        self._sending: dict[int, asyncio.Lock] = {}

    def _t(self, pl: str, en: str) -> str:
        """The clerk-facing message in the configured language."""
        return en if self.settings.language == "en" else pl

    # --- time -----------------------------------------------------------------------------

    def to_utc(self, local: datetime) -> datetime:
        """A naive local time (the council's zone) as naive UTC."""
        return local.replace(tzinfo=self.tz).astimezone(UTC).replace(tzinfo=None)

    def to_local(self, utc: datetime) -> datetime:
        return utc.replace(tzinfo=UTC).astimezone(self.tz).replace(tzinfo=None)

    # --- sessions and documents -----------------------------------------------------------

    async def create_session(
        self,
        *,
        number: str,
        kind: str,
        starts_at: datetime,
        place: str,
        title: str = "",
        agenda: Sequence[str] = (),
        actor: str,
    ) -> CouncilSessionRow:
        number = " ".join(number.split())
        if not number or len(number) > 64 or any(not c.isprintable() for c in number):
            raise DistributionError(
                self._t(
                    f"numer sesji {number!r}: oczekiwano tekstu takiego jak XV/2026",
                    f"session number {number!r}: expected printable text such as XV/2026",
                )
            )
        if kind not in SESSION_KINDS:
            raise DistributionError(
                self._t(
                    f"rodzaj sesji {kind!r}: dozwolone {', '.join(SESSION_KINDS)}",
                    f"session kind {kind!r}: expected one of {', '.join(SESSION_KINDS)}",
                )
            )
        if await self.store.session(number) is not None:
            raise DistributionError(
                self._t(f"sesja {number} już istnieje", f"session {number} already exists")
            )
        return await self.store.create_session(
            number=number,
            kind=kind,
            starts_at=starts_at.replace(second=0, microsecond=0),
            place=" ".join(place.split()),
            title=title.strip(),
            actor=actor,
            agenda=[" ".join(a.split()) for a in agenda if a.strip()],
        )

    async def session(self, number: str) -> CouncilSessionRow:
        found = await self.store.session(" ".join(number.split()))
        if found is None:
            raise DistributionError(
                self._t(
                    f"nie ma sesji {number!r} (listę pokazuje: mailsvc sessions list)",
                    f"session {number!r} not found (mailsvc sessions list shows them)",
                )
            )
        return found

    async def attach(
        self,
        number: str,
        path: Path,
        *,
        doc_kind: str = "other",
        agenda_item: int | None = None,
        filename: str | None = None,
        replaces: int | None = None,
        actor: str,
    ) -> DocumentRow:
        """Check the file by its content, store it by SHA-256 and attach it to the session (or
        to its agenda item number ``agenda_item``)."""
        from mailsvc.domain.documents import DocumentRejected, check_document

        session = await self.session(number)
        if doc_kind not in DOCUMENT_KINDS:
            raise DistributionError(
                f"document kind {doc_kind!r}: expected one of {', '.join(DOCUMENT_KINDS)}"
            )
        item_id = None
        if agenda_item is not None:
            items = {i.position: i for i in await self.store.agenda(session.id)}
            if agenda_item not in items:
                numbers = ", ".join(str(p) for p in items)
                raise DistributionError(
                    self._t(
                        f"punkt porządku obrad {agenda_item}: sesja {session.number} ma punkty "
                        f"{numbers or 'żadne'}",
                        f"agenda item {agenda_item}: session {session.number} has items "
                        f"{numbers or 'none'}",
                    )
                )
            item_id = items[agenda_item].id
        if replaces is not None and replaces not in {
            d.id for d in await self.store.documents(session.id)
        }:
            raise DistributionError(f"document {replaces} is not a document of this session")
        try:
            info = await asyncio.to_thread(
                check_document, path, filename or path.name, self.settings.language
            )
        except DocumentRejected as exc:
            raise DistributionError(str(exc)) from None
        except OSError as exc:
            raise DistributionError(f"{path}: cannot be read ({exc.strerror})") from None
        sha, _ = await asyncio.to_thread(store_document, self.settings.var_dir, path)
        if sha != info.sha256:
            raise DistributionError(f"{path} changed while it was being read; try again")
        return await self.store.add_document(
            session_id=session.id,
            agenda_item_id=item_id,
            sha256=sha,
            filename=info.filename,
            media_type=info.media_type,
            doc_kind=doc_kind,
            size=info.size,
            pages=info.pages,
            actor=actor,
            replaces=replaces,
        )

    # --- distributions --------------------------------------------------------------------

    async def _pack_documents(
        self, session: CouncilSessionRow, kind: str, explicit: Sequence[int] | None
    ) -> list[DocumentRow]:
        docs = await self.store.documents(session.id)
        if explicit is not None:
            known = {d.id: d for d in docs}
            missing = [i for i in explicit if i not in known]
            if missing:
                raise DistributionError(
                    f"documents {', '.join(map(str, missing))} are not documents of session "
                    f"{session.number}"
                )
            return [known[i] for i in explicit]
        if kind in ("date-change", "cancellation"):
            return []
        current = [d for d in docs if d.replaced_by is None]
        if kind == "supplement":
            sent: set[int] = set()
            for dist in await self.store.distributions(session_id=session.id):
                if dist.status != "cancelled":
                    sent.update(dist.document_ids)
            current = [d for d in current if d.id not in sent]
        return current

    async def schedule(
        self,
        number: str,
        *,
        kind: str = "notice",
        at: datetime | None = None,
        committee: str | None = None,
        documents: Sequence[int] | None = None,
        note: str = "",
        override_notice: str | None = None,
        new_date: datetime | None = None,
        actor: str,
        now: datetime | None = None,
    ) -> DistributionRow:
        """Schedule a distribution at local time ``at`` (None: now). A notice or supplement
        that would arrive later than the notice rules allow is refused (NoticeRefused) unless
        ``override_notice`` gives the reason, which is recorded."""
        session = await self.session(number)
        if kind not in DISTRIBUTION_KINDS:
            raise DistributionError(
                f"distribution kind {kind!r}: expected one of {', '.join(DISTRIBUTION_KINDS)}"
            )
        if session.status == "cancelled":
            raise DistributionError(
                self._t(
                    f"sesja {session.number} jest odwołana",
                    f"session {session.number} is cancelled",
                )
            )
        if committee is not None and committee not in self.settings.committee_names:
            known = ", ".join(self.settings.committee_names)
            raise DistributionError(
                self._t(
                    f"komisja {committee!r}: nie ma takiej; są: {known}",
                    f"committee {committee!r}: expected one of {known}",
                )
            )
        if override_notice is not None and not override_notice.strip():
            raise DistributionError('--override-notice needs the reason, e.g. "pilna sprawa"')
        now_utc = now or utcnow()
        due_utc = now_utc if at is None else self.to_utc(at)
        if kind == "date-change":
            if new_date is None:
                raise DistributionError("a date change needs the new date (--new-date)")
            session = dataclasses.replace(session, starts_at=new_date)
        if kind == "notice":
            earlier = [
                d
                for d in await self.store.distributions(session_id=session.id)
                if d.kind == "notice" and d.status != "cancelled" and (d.committee == committee)
            ]
            if earlier:
                raise DistributionError(
                    self._t(
                        f"sesja {session.number} ma już zawiadomienie #{earlier[0].id} "
                        f"({earlier[0].status}): wyślij uzupełnienie albo najpierw je anuluj",
                        f"session {session.number} already has notice #{earlier[0].id} "
                        f"({earlier[0].status}): send a supplement, or cancel that one first",
                    )
                )
        pack = await self._pack_documents(session, kind, documents)
        if kind == "supplement" and not pack and not note.strip():
            raise DistributionError(
                self._t(
                    "uzupełnienie wymaga nowych dokumentów (najpierw je dołącz) "
                    "albo opisu zmian (--note)",
                    "a supplement needs new documents (attach them first) or a note of what "
                    "changed (--note)",
                )
            )
        replies_to = None
        if kind != "notice":
            earlier = [
                d
                for d in await self.store.distributions(session_id=session.id)
                if d.status in ("sending", "sent", "scheduled") and d.kind == "notice"
            ]
            replies_to = earlier[0].id if earlier else None
        if kind in ("notice", "supplement"):
            breach = check_notice(
                deliver_on=self.to_local(due_utc).date(),
                session_day=session.starts_at.date(),
                session_kind=session.kind,
                document_kinds=[d.doc_kind for d in pack] or ["agenda"],
                rules=self.settings.notice_rules,
                language=self.settings.language,
            )
            if breach is not None and override_notice is None:
                raise NoticeRefused(breach)
            if breach is not None:
                log.warning(
                    "session %s: notice rule overridden by %s: %s (reason: %s)",
                    session.number,
                    actor,
                    breach.message,
                    override_notice,
                )
        created = await self.store.create_distribution(
            session_id=session.id,
            kind=kind,
            due_at=due_utc,
            committee=committee,
            document_ids=[d.id for d in pack],
            note=" ".join(note.split()) if "\n" not in note else note.strip(),
            replies_to=replies_to,
            override_reason=override_notice.strip() if override_notice else None,
            actor=actor,
        )
        # The session changes only once the distribution announcing it is stored.
        if kind == "cancellation":
            await self.store.update_session(session.id, status="cancelled")
        if kind == "date-change":
            await self.store.update_session(session.id, starts_at=session.starts_at)
        return created

    async def cancel(self, distribution_id: int) -> DistributionRow:
        dist = await self.store.distribution(distribution_id)
        if dist is None:
            raise DistributionError(
                self._t(
                    f"nie ma rozesłania {distribution_id}",
                    f"distribution {distribution_id} not found",
                )
            )
        if not await self.store.cancel_distribution(distribution_id):
            raise DistributionError(
                self._t(
                    f"rozesłanie {distribution_id} ma stan {dist.status}: anulować można tylko "
                    "zaplanowane (zamiast tego wyślij odwołanie sesji)",
                    f"distribution {distribution_id} is {dist.status}: only a scheduled one can "
                    "be cancelled (send a cancellation of the session instead)",
                )
            )
        found = await self.store.distribution(distribution_id)
        assert found is not None
        return found

    # --- sending --------------------------------------------------------------------------

    async def due(self, now: datetime | None = None) -> list[DistributionRow]:
        """Distributions to send now: scheduled and due, or left half-sent by a crash."""
        now = now or utcnow()
        rows = await self.store.distributions(statuses=("scheduled", "sending"))
        return [d for d in rows if d.status == "sending" or d.due_at <= now]

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

    async def _facts(self, session: CouncilSessionRow) -> SessionFacts:
        agenda = await self.store.agenda(session.id)
        return SessionFacts(
            session.number,
            session.kind,
            session.starts_at,
            session.place,
            tuple((i.position, i.title) for i in agenda),
        )

    async def _pack(self, dist: DistributionRow, session: CouncilSessionRow) -> Pack:
        docs = await self.store.documents_by_id(dist.document_ids)
        positions = {i.id: i.position for i in await self.store.agenda(session.id)}
        pack_docs = []
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
        facts = await self._facts(session)
        return await asyncio.to_thread(
            prepare_pack,
            self.settings,
            distribution_id=dist.id,
            kind=dist.kind,
            session=facts,
            note=dist.note,
            documents=pack_docs,
        )

    def link_expiry(self, session: CouncilSessionRow) -> datetime:
        return self.to_utc(session.starts_at) + timedelta(
            days=self.settings.distribution.link_valid_days
        )

    def ack_url(self, recipient_id: int, distribution_id: int, expires: datetime) -> str:
        token = self.signer.ack_token(recipient_id, distribution_id, expires)
        return f"{self.web_url}/a/{token}"

    def return_path(self, recipient_id: int) -> str:
        return f"bounces+{self.signer.verp_token(recipient_id)}@{self.settings.domain}"

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
            return await self._send(distribution_id, now or utcnow(), progress)

    async def _send(
        self,
        distribution_id: int,
        now: datetime,
        progress: Callable[[int, int], None] | None = None,
    ) -> SendResult:
        dist = await self.store.distribution(distribution_id)
        if dist is None:
            raise DistributionError(f"distribution {distribution_id} not found")
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
        expires = self.link_expiry(session)
        for start in range(0, len(todo), SEND_CHUNK):
            assert pack is not None
            await self._queue_chunk(
                dist, pack, todo[start : start + SEND_CHUNK], originals, expires
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
            len(todo),
            len(recipients) - len(todo),
        )
        return SendResult(dist.id, len(todo), len(recipients) - len(todo), late)

    async def _queue_chunk(
        self,
        dist: DistributionRow,
        pack: Pack,
        chunk: Sequence[tuple[str, str, str]],
        originals: dict[str, str],
        expires: datetime,
    ) -> None:
        now = utcnow()
        valid_until = self.to_local(expires).date().isoformat()
        async with self.queue.engine.begin() as conn:
            for address, name, role in chunk:
                message_id = f"<{secrets.token_hex(10)}.d{dist.id}@{self.settings.domain}>"
                recipient_id = await self.store.insert_recipient(
                    conn,
                    distribution_id=dist.id,
                    address=address,
                    name=name,
                    role=role,
                    message_id=message_id,
                    queue_message_id=None,
                    at=now,
                )
                downloads = {
                    d.id: f"{self.web_url}/d/"
                    + self.signer.download_token(recipient_id, d.sha256, expires)
                    for d in pack.documents
                }
                references = [originals[address.lower()]] if address.lower() in originals else []
                head = render_head(
                    self.settings,
                    pack,
                    to=(name, address),
                    message_id=message_id,
                    return_path=self.return_path(recipient_id),
                    ack_url=self.ack_url(recipient_id, dist.id, expires),
                    download_urls=downloads,
                    links_valid_until=valid_until,
                    references=references,
                )
                parts = (
                    PartedBody.to_stored(pack.boundary, list(pack.part_names))
                    if pack.part_names
                    else None
                )
                queue_row, _ = await self.queue.insert(
                    conn,
                    self.return_path(recipient_id),
                    [address],
                    head,
                    "",
                    ORIGIN_DISTRIBUTION,
                    parts=parts,
                )
                await self.store.set_queue_message(conn, recipient_id, queue_row)
                await self.store.insert_event(
                    conn,
                    recipient_id,
                    EventKind.QUEUED,
                    EventSource.SCHEDULER,
                    f"queued as {message_id} for <{address}>",
                    now,
                )

    # --- receipts from the councillors' side ----------------------------------------------

    async def acknowledge(self, recipient_id: int, distribution_id: int, evidence: str) -> bool:
        """Record an acknowledgement (the link's POST); the first one counts."""
        recipient = await self.store.recipient(recipient_id)
        if recipient is None or recipient.distribution_id != distribution_id:
            return False
        return await self.store.add_event(
            recipient_id, EventKind.ACKNOWLEDGED, EventSource.LINK, evidence, once=True
        )

    async def check_opened(self, *, now: datetime | None = None) -> int:
        """Look for the \\Seen flag of delivered, not yet opened distribution messages in the
        councillors' mailboxes (read-only, through the mailbox store's master user). Returns
        how many were found opened."""
        from mailsvc.mailstore import master_credentials
        from mailsvc.receipts.imapcheck import check_many

        now = now or utcnow()
        since = now - timedelta(days=self.settings.distribution.imap_check_days)
        targets: dict[str, dict[str, int]] = {}
        for dist in await self.store.distributions(statuses=("sending", "sent")):
            if (dist.started_at or dist.due_at) < since:
                continue
            delivered = await self.store.recipients_with_kind(dist.id, EventKind.DELIVERED)
            opened = await self.store.recipients_with_kind(dist.id, EventKind.OPENED)
            for r in await self.store.recipients(dist.id):
                if r.role == "councillor" and r.id in delivered and r.id not in opened:
                    targets.setdefault(r.address, {})[r.message_id] = r.id
        if not targets:
            return 0
        host, port, _ = self.settings.client_imap
        results = await check_many(
            {mailbox: list(ids) for mailbox, ids in targets.items()},
            lambda mailbox: master_credentials(self.settings, mailbox),
            host,
            port,
        )
        found = 0
        for result in results:
            if result.error is not None:
                log.warning("IMAP check of %s: %s", result.mailbox, result.error)
                continue
            for message_id, folder in result.seen.items():
                recipient_id = targets[result.mailbox].get(message_id)
                if recipient_id is None:
                    continue
                evidence = f"IMAP: {message_id} has \\Seen in folder {folder!r} of {result.mailbox}"
                if await self.store.add_event(
                    recipient_id, EventKind.OPENED, EventSource.IMAP, evidence, once=True
                ):
                    found += 1
        return found

    # --- reports --------------------------------------------------------------------------

    async def matrix(self, number: str, *, include_copies: bool = False) -> ReceiptMatrix:
        session = await self.session(number)
        dists = [
            d
            for d in await self.store.distributions(session_id=session.id)
            if d.status != "cancelled"
        ]
        docs = await self.store.documents(session.id)
        items = {i.id: f"{i.position}. {i.title}" for i in await self.store.agenda(session.id)}
        by_address: dict[str, tuple[str, list[MatrixCell]]] = {}
        for dist in dists:
            recipients = [
                r
                for r in await self.store.recipients(dist.id)
                if include_copies or r.role == "councillor"
            ]
            events = await self.store.events([r.id for r in recipients])
            for r in recipients:
                cell = MatrixCell(
                    dist.id,
                    r.address,
                    r.message_id,
                    derive_state(events[r.id]),
                    tuple(events[r.id]),
                )
                _, cells = by_address.setdefault(r.address.lower(), (r.name, []))
                cells.append(cell)
        rows = tuple(
            MatrixRow(name or address, address, tuple(cells))
            for address, (name, cells) in sorted(
                by_address.items(), key=lambda kv: (_surname_key(kv[1][0]), kv[0])
            )
        )
        return ReceiptMatrix(
            council=self.settings.council.name,
            session_number=session.number,
            session_kind=session.kind,
            session_at=session.starts_at,
            place=session.place,
            generated_at=utcnow(),
            documents=tuple(
                MatrixDocument(
                    d.filename,
                    d.sha256,
                    d.size,
                    d.pages,
                    items.get(d.agenda_item_id, "") if d.agenda_item_id else "",
                )
                for d in docs
            ),
            distributions=tuple(
                MatrixDistribution(
                    d.id,
                    d.kind,
                    d.due_at,
                    d.sent_at,
                    d.late,
                    d.override_reason or "",
                    tuple(x.sha256 for x in docs if x.id in d.document_ids),
                )
                for d in dists
            ),
            rows=rows,
            language=self.settings.language,
            time_zone=self.settings.distribution.timezone,
        )

    # --- paper ----------------------------------------------------------------------------

    def cutover(self) -> date | None:
        value = self.settings.distribution.cutover_date
        return date.fromisoformat(value) if value else None

    @property
    def pl(self) -> bool:
        return self.settings.language != "en"

    async def savings(self, number: str | None = None) -> list[tuple[str, int, int, Decimal]]:
        """Paper saved per session since the cut-over: (session, pages, recipients, PLN).

        Pages are each document's page count (1 where unknown) times the councillors who
        received it electronically and did not need a paper copy."""
        cost = Decimal(self.settings.distribution.cost_per_page)
        cutover = self.cutover()
        sessions = [await self.session(number)] if number else await self.store.list_sessions()
        out = []
        for session in sessions:
            pages_total = 0
            recipients_total = 0
            for dist in await self.store.distributions(session_id=session.id):
                if dist.status not in ("sending", "sent"):
                    continue
                sent_day = self.to_local(dist.sent_at or dist.due_at).date()
                if cutover is None or sent_day < cutover:
                    continue
                docs = await self.store.documents_by_id(dist.document_ids)
                pages = sum(d.pages or 1 for d in docs)
                # Paper is saved for those who acknowledged: the others stay on the print
                # list (the paper fallback).
                acked = await self.store.recipients_with_kind(dist.id, EventKind.ACKNOWLEDGED)
                recipients = [
                    r
                    for r in await self.store.recipients(dist.id)
                    if r.role == "councillor" and r.id in acked
                ]
                pages_total += pages * len(recipients)
                recipients_total += len(recipients)
            out.append((session.number, pages_total, recipients_total, pages_total * cost))
        return out

    # --- reminders ------------------------------------------------------------------------

    async def remind(self, *, now: datetime | None = None) -> int:
        """One pass of the reminder rounds that have come due; returns reminders queued."""
        now = now or utcnow()
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
            starts_utc = self.to_utc(session.starts_at)
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
        facts = await self._facts(session)
        docs = await self.store.documents_by_id(dist.document_ids)
        expires = self.link_expiry(session)
        assert dist.sent_at is not None
        sent_local = self.to_local(dist.sent_at).strftime("%Y-%m-%d %H:%M")
        now = utcnow()
        summary = None
        if pending:
            items = [
                PrintItem(
                    r.name or r.address,
                    r.address,
                    "",
                    tuple(MatrixDocument(d.filename, d.sha256, d.size, d.pages) for d in docs),
                    "brak potwierdzenia" if self.pl else "not acknowledged",
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
            for r in pending:
                body = render_reminder(
                    self.settings,
                    facts,
                    to=(r.name, r.address),
                    ack_url=self.ack_url(r.id, dist.id, expires),
                    sent_at=sent_local,
                    references=[r.message_id],
                )
                await self.queue.insert(
                    conn, self.return_path(r.id), [r.address], body, "", ORIGIN_REMINDER
                )
                await self.store.insert_event(
                    conn, r.id, EventKind.REMINDED, EventSource.SCHEDULER, f"reminder {key}", now
                )
            if summary is not None:
                await self.queue.insert(
                    conn, "", [self.settings.office_address], summary, "", ORIGIN_LOCAL
                )
            await self.store.insert_reminder_round(conn, dist.id, key, len(pending))
        if pending and self.on_queued is not None:
            self.on_queued()
        log.info(
            "distribution %d: reminder %s to %d councillors without acknowledgement",
            dist.id,
            key,
            len(pending),
        )
        return len(pending)


def _surname_key(name: str) -> str:
    parts = name.split()
    return (parts[-1] if parts else name).casefold()
