"""What a clerk can do, shared by the HTML pages and the JSON API.

Each method calls the existing use cases (``Councillors``, ``Distributions``, the queue, the
relay log) and records the action in the audit log under the clerk's name; nothing here decides
council rules itself. Failures a clerk can correct raise :class:`ActionError` with the HTTP status
the pages and the API answer with and a message saying what to change.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from mailsvc.config import Settings
from mailsvc.directory.councillors import (
    ApplyResult,
    ClerkAccountProtected,
    CouncillorNotFound,
    Councillors,
    CreatedAccount,
)
from mailsvc.directory.roster_import import (
    InvalidRoster,
    PlanChanged,
    PreparedImport,
    apply_import,
    prepare_import,
)
from mailsvc.distribution.service import DistributionError, Distributions, NoticeRefused
from mailsvc.domain.receipt_states import ReceiptMatrix
from mailsvc.errors import MailsvcError
from mailsvc.storage.clerks import WebStore
from mailsvc.storage.db import utcnow
from mailsvc.storage.queue import DeliveryRow, MailQueue, Retried
from mailsvc.storage.register import AuditContext, AuditEntry, RegisterRow
from mailsvc.storage.relaylog import CouncillorStats, RelayLog
from mailsvc.storage.sessions import (
    AgendaItemRow,
    CouncilSessionRow,
    DistributionRow,
    DocumentRow,
)
from provisioning.errors import ProvisioningError
from provisioning.sync import Plan

log = logging.getLogger(__name__)

_COPY_CHUNK = 1024 * 1024


class ActionError(MailsvcError):
    """A request the clerk can correct; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Actor:
    """Who acts and through which door: ``name`` goes to the audit log as the actor."""

    name: str
    channel: str  # "web" or "api"

    def context(self, what: str) -> AuditContext:
        return AuditContext(actor=self.name, command=f"{self.channel}: {what}")


@dataclass(frozen=True)
class ImportPreview:
    """A roster's plan before it is applied, and a digest that pins it."""

    plan: Plan
    problems: list[str]
    addresses: dict[int, str]  # roster line -> planned address of a new mailbox
    digest: str


@dataclass(frozen=True)
class SessionDetail:
    session: CouncilSessionRow
    agenda: list[AgendaItemRow]
    documents: list[DocumentRow]
    distributions: list[DistributionRow]


@dataclass(frozen=True)
class DistributionRequest:
    """A distribution as the clerk describes it (times are the council's local time)."""

    kind: str = "notice"
    at: datetime | None = None  # None: now
    note: str = ""
    new_date: datetime | None = None
    documents: tuple[int, ...] | None = None  # None: the default pack of the kind
    committee: str | None = None


@dataclass(frozen=True)
class NoticeCheck:
    """The notice rule's verdict for a planned distribution, shown before confirming."""

    ok: bool
    message: str
    deliver_on: date
    session_day: date
    documents: list[DocumentRow] = field(default_factory=list)
    applies: bool = True  # False for kinds the notice rules do not govern


@dataclass(frozen=True)
class ClerkServices:
    """The use cases and stores the clerks' actions work with (built by ``serve``)."""

    settings: Settings
    councillors: Councillors
    distributions: Distributions
    queue: MailQueue
    relay_log: RelayLog
    wake_delivery: Callable[[], None] | None = None


class ClerkActions:
    """The clerks' actions over the service's parts; one instance per web app."""

    def __init__(self, services: ClerkServices, store: WebStore) -> None:
        self.services = services
        self.settings = services.settings
        self.distributions = services.distributions
        self.store = store
        self.uploads = services.settings.var_dir / "web-uploads"

    def _wake_delivery(self) -> None:
        if self.services.wake_delivery is not None:
            self.services.wake_delivery()

    async def _audit(
        self,
        actor: Actor,
        what: str,
        action: str,
        *,
        address: str | None = None,
        **details: Any,
    ) -> None:
        await self.store.audit(
            actor.name, f"{actor.channel}: {what}", action, address=address, details=details
        )

    # --- uploads --------------------------------------------------------------------------

    async def save_upload(self, chunks: AsyncIterator[bytes], suffix: str = "") -> Path:
        """Write an uploaded file under var_dir (bounded by web.upload_max_bytes)."""
        limit = self.settings.web.upload_max_bytes
        await asyncio.to_thread(self.uploads.mkdir, parents=True, exist_ok=True, mode=0o700)
        path = self.uploads / f"{secrets.token_hex(16)}{suffix}"
        size = 0
        try:
            with path.open("xb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        mb = limit // (1024 * 1024)
                        raise ActionError(
                            self._t(
                                f"Plik jest większy niż dopuszczalne {mb} MB.",
                                f"The file is larger than the allowed {mb} MB.",
                            ),
                            413,
                        )
                    await asyncio.to_thread(out.write, chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def upload_path(self, upload_id: str) -> Path:
        """The saved roster of an earlier preview, by its id (hex only: no path tricks)."""
        if not upload_id or any(c not in "0123456789abcdef" for c in upload_id):
            raise ActionError(self._t("Nieprawidłowy identyfikator pliku.", "Invalid upload id."))
        path = self.uploads / f"{upload_id}.csv"
        if not path.is_file():
            raise ActionError(
                self._t(
                    "Wczytany plik wygasł; wczytaj spis ponownie.",
                    "The uploaded file is gone; upload the roster again.",
                ),
                410,
            )
        return path

    def purge_uploads(self, older_than: timedelta = timedelta(hours=6)) -> None:
        if not self.uploads.is_dir():
            return
        cutoff = datetime.now().timestamp() - older_than.total_seconds()
        for path in self.uploads.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                continue

    @property
    def pl(self) -> bool:
        return self.settings.language != "en"

    def _t(self, pl: str, en: str) -> str:
        return pl if self.pl else en

    # --- councillors ----------------------------------------------------------------------

    async def councillors(self, include_all: bool = False) -> list[RegisterRow]:
        return await self.services.councillors.listing(include_all=include_all)

    async def _prepare_import(self, path: Path, encoding: str | None) -> PreparedImport:
        try:
            return await prepare_import(
                self.services.councillors,
                path,
                committees=self.settings.committee_names,
                encoding=encoding or None,
                max_bytes=self.settings.web.upload_max_bytes,
            )
        except (ProvisioningError, MailsvcError, UnicodeError, LookupError) as exc:
            raise ActionError(_clean_path(str(exc), path), 422) from None

    async def preview_import(self, path: Path, encoding: str | None = None) -> ImportPreview:
        prepared = await self._prepare_import(path, encoding)
        problems = [_clean_path(p, path) for p in prepared.problems]
        return ImportPreview(prepared.plan, problems, prepared.addresses, prepared.digest)

    async def apply_import(
        self,
        path: Path,
        actor: Actor,
        *,
        encoding: str | None = None,
        skip_invalid: bool = False,
        expected_digest: str | None = None,
    ) -> tuple[ImportPreview, ApplyResult]:
        """Apply the plan whose preview the clerk approved (``expected_digest``), exactly that
        plan: planned once here, checked against the digest, then applied as it is. 409 when
        the roster or the directory changed since the preview; nothing is changed then."""
        prepared = await self._prepare_import(path, encoding)
        preview = ImportPreview(
            prepared.plan,
            [_clean_path(p, path) for p in prepared.problems],
            prepared.addresses,
            prepared.digest,
        )
        try:
            result = await apply_import(
                self.services.councillors,
                prepared,
                actor.context("import roster"),
                language=self.settings.language,
                skip_invalid=skip_invalid,
                expected_digest=expected_digest,
            )
        except PlanChanged as exc:
            raise ActionError(str(exc), 409) from None
        except InvalidRoster:
            raise ActionError(
                self._t(
                    f"Spis ma {len(preview.problems)} błędnych wierszy. Popraw plik albo "
                    "zaznacz „pomiń błędne wiersze”.",
                    f"The roster has {len(preview.problems)} invalid rows. Correct the file "
                    "or tick “skip invalid rows”.",
                ),
                422,
            ) from None
        except ProvisioningError as exc:
            raise ActionError(str(exc), 503) from None
        result.errors = [_clean_path(e, path) for e in result.errors]
        if result.created:
            self._wake_delivery()  # welcome messages
        await self._audit(
            actor,
            "import roster",
            "roster-import",
            created=len(result.created),
            updated=len(result.updated),
            disabled=len(result.disabled),
            unchanged=result.unchanged,
            errors=len(result.errors),
        )
        return preview, result

    async def reset_password(self, address: str, actor: Actor) -> CreatedAccount:
        try:
            return await self.services.councillors.reset_password(
                address, actor.context("reset password")
            )
        except CouncillorNotFound as exc:
            raise ActionError(str(exc), 404) from None
        except ClerkAccountProtected as exc:
            raise ActionError(str(exc), 403) from None

    async def end_mandate(self, address: str, on: date, reason: str, actor: Actor) -> bool:
        try:
            return await self.services.councillors.end_mandate(
                address, on, reason.strip(), actor.context("end mandate")
            )
        except CouncillorNotFound as exc:
            raise ActionError(str(exc), 404) from None

    # --- sessions and documents -----------------------------------------------------------

    async def sessions(self) -> list[CouncilSessionRow]:
        return await self.distributions.store.list_sessions()

    async def session_row(self, session_id: int) -> CouncilSessionRow:
        found = await self.distributions.store.session_by_id(session_id)
        if found is None:
            raise ActionError(
                self._t(f"Nie ma sesji nr {session_id}.", f"No session {session_id}."), 404
            )
        return found

    async def session_detail(self, session_id: int) -> SessionDetail:
        session = await self.session_row(session_id)
        store = self.distributions.store
        return SessionDetail(
            session,
            await store.agenda(session.id),
            await store.documents(session.id),
            await store.distributions(session_id=session.id),
        )

    async def create_session(
        self,
        actor: Actor,
        *,
        number: str,
        kind: str,
        starts_at: datetime,
        place: str,
        title: str = "",
        agenda: Sequence[str] = (),
    ) -> CouncilSessionRow:
        try:
            row = await self.distributions.create_session(
                number=number,
                kind=kind,
                starts_at=starts_at,
                place=place,
                title=title,
                agenda=agenda,
                actor=actor.name,
            )
        except DistributionError as exc:
            raise ActionError(str(exc)) from None
        await self._audit(
            actor,
            "create session",
            "session-create",
            session=row.number,
            kind=row.kind,
            starts_at=row.starts_at.isoformat(),
            agenda_items=len([a for a in agenda if a.strip()]),
        )
        return row

    async def add_agenda_item(self, session_id: int, title: str, actor: Actor) -> AgendaItemRow:
        session = await self.session_row(session_id)
        title = " ".join(title.split())
        if not title:
            raise ActionError(self._t("Podaj treść punktu.", "Give the item's title."))
        item = await self.distributions.store.add_agenda_item(session.id, title)
        await self._audit(
            actor,
            "add agenda item",
            "agenda-add",
            session=session.number,
            position=item.position,
            title=title,
        )
        return item

    async def attach(
        self,
        session_id: int,
        path: Path,
        filename: str,
        actor: Actor,
        *,
        doc_kind: str = "other",
        agenda_item: int | None = None,
    ) -> DocumentRow:
        """Check an uploaded file by its content and attach it; 422 with the reason if not."""
        session = await self.session_row(session_id)
        try:
            doc = await self.distributions.attach(
                session.number,
                path,
                doc_kind=doc_kind,
                agenda_item=agenda_item,
                filename=filename,
                actor=actor.name,
            )
        except DistributionError as exc:
            await self._audit(
                actor,
                "attach document",
                "document-refused",
                session=session.number,
                filename=filename,
                reason=str(exc),
            )
            raise ActionError(str(exc).replace(str(path), filename), 422) from None
        await self._audit(
            actor,
            "attach document",
            "document-attach",
            session=session.number,
            filename=doc.filename,
            sha256=doc.sha256,
            media_type=doc.media_type,
            doc_kind=doc.doc_kind,
        )
        return doc

    async def attach_files(
        self,
        session_id: int,
        files: Sequence[tuple[str, AsyncIterator[bytes]]],
        actor: Actor,
        *,
        doc_kind: str = "other",
        agenda_item: int | None = None,
    ) -> tuple[list[DocumentRow], list[tuple[str, str]]]:
        """Save and attach each uploaded file (its name, its content) in turn: the attached
        documents, and (name, reason) for each refused one; a refusal does not stop the rest."""
        attached: list[DocumentRow] = []
        refused: list[tuple[str, str]] = []
        for name, blocks in files:
            try:
                path = await self.save_upload(blocks)
                try:
                    doc = await self.attach(
                        session_id, path, name, actor, doc_kind=doc_kind, agenda_item=agenda_item
                    )
                finally:
                    await asyncio.to_thread(path.unlink, missing_ok=True)
            except ActionError as exc:
                refused.append((name, exc.message))
                continue
            attached.append(doc)
        return attached, refused

    # --- distributions --------------------------------------------------------------------

    async def notice_check(self, session_id: int, request: DistributionRequest) -> NoticeCheck:
        """The notice rule applied exactly as scheduling will apply it, without scheduling."""
        session = await self.session_row(session_id)
        service = self.distributions
        due_utc = utcnow() if request.at is None else service.to_utc(request.at)
        deliver_on = service.to_local(due_utc).date()
        try:
            pack = await service.pack_documents(session, request.kind, request.documents)
        except DistributionError as exc:
            raise ActionError(str(exc)) from None
        session_day = (request.new_date or session.starts_at).date()
        if request.kind not in ("notice", "supplement"):
            return NoticeCheck(True, "", deliver_on, session_day, pack, applies=False)
        breach = service.notice_breach(session, due_utc, pack)
        if breach is None:
            return NoticeCheck(True, "", deliver_on, session_day, pack)
        return NoticeCheck(False, breach.message, deliver_on, session_day, pack)

    async def schedule(
        self,
        session_id: int,
        request: DistributionRequest,
        actor: Actor,
        *,
        override_reason: str | None = None,
    ) -> DistributionRow:
        """Schedule (and, when due now, send at once). NoticeRefused → 409 with the rule."""
        session = await self.session_row(session_id)
        service = self.distributions
        override = override_reason.strip() if override_reason and override_reason.strip() else None
        try:
            dist = await service.schedule(
                session.number,
                kind=request.kind,
                at=request.at,
                committee=request.committee,
                documents=request.documents,
                note=request.note,
                override_notice=override,
                new_date=request.new_date,
                actor=actor.name,
            )
        except NoticeRefused as exc:
            raise ActionError(str(exc), 409) from None
        except DistributionError as exc:
            raise ActionError(str(exc)) from None
        await self._audit(
            actor,
            "schedule distribution",
            "distribution-schedule",
            session=session.number,
            distribution=dist.id,
            kind=dist.kind,
            due_at_utc=dist.due_at.isoformat(),
            documents=list(dist.document_ids),
            override_reason=override,
        )
        if dist.due_at <= utcnow():
            try:
                await service.send(dist.id)
            except DistributionError as exc:
                # The scheduler retries; the clerk sees the state on the session page.
                log.warning("distribution %d: sending at once failed: %s", dist.id, exc)
            found = await service.store.distribution(dist.id)
            assert found is not None
            dist = found
        return dist

    async def cancel_distribution(self, distribution_id: int, actor: Actor) -> DistributionRow:
        try:
            dist = await self.distributions.cancel(distribution_id)
        except DistributionError as exc:
            raise ActionError(str(exc), 409) from None
        await self._audit(
            actor, "cancel distribution", "distribution-cancel", distribution=distribution_id
        )
        return dist

    async def matrix(self, session_id: int) -> ReceiptMatrix:
        session = await self.session_row(session_id)
        return await self.distributions.matrix(session.number)

    async def evidence_pack(self, session_id: int) -> tuple[bytes, str]:
        """The signed evidence pack of a session and the session's number."""
        session = await self.session_row(session_id)
        return await self.distributions.evidence_pack(session.number), session.number

    # --- relay, audit, queue --------------------------------------------------------------

    async def relay_stats(self, since: date | None = None) -> list[CouncillorStats]:
        moment = datetime(since.year, since.month, since.day) if since else None
        return await self.services.relay_log.stats(moment)

    async def audit_entries(
        self, *, limit: int = 100, offset: int = 0, actor: str | None = None
    ) -> tuple[list[AuditEntry], int]:
        return await self.store.audit_entries(limit=limit, offset=offset, actor=actor)

    async def deliveries(self, statuses: Sequence[str] | None = None) -> list[DeliveryRow]:
        return await self.services.queue.list_deliveries(statuses)

    async def retry(self, actor: Actor, *, queue_id: str | None, dead: bool) -> list[Retried]:
        if not queue_id and not dead:
            raise ActionError(self._t("Wskaż wiadomość do ponowienia.", "Say what to retry."))
        done = await self.services.queue.retry(queue_id or None, dead=dead)
        if done:
            self._wake_delivery()
        await self._audit(
            actor,
            "retry delivery",
            "queue-retry",
            queue_id=queue_id,
            all_dead=dead,
            retried=len(done),
        )
        return done

    async def record(self, actor: Actor, what: str, action: str, **details: Any) -> None:
        """Record a sign-in, sign-out or refusal (actions without a use case of their own)."""
        await self._audit(actor, what, action, **details)


def _clean_path(message: str, path: Path, shown: str = "roster.csv") -> str:
    """Messages name the uploaded file, not where the server keeps it."""
    return message.replace(str(path), shown)
