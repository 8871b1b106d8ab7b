"""Council sessions and their documents: create a session, find it, attach a file to it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from mailsvc.config import Settings
from mailsvc.distribution.documents import store_document
from mailsvc.distribution.errors import DistributionError, in_language
from mailsvc.domain.vocabulary import DOCUMENT_KINDS, SESSION_KINDS
from mailsvc.storage.sessions import CouncilSessionRow, DocumentRow, ReceiptStore
from mailsvc.storage.shared_files import SharedFiles


class Sessions:
    def __init__(self, settings: Settings, store: ReceiptStore) -> None:
        self.settings = settings
        self.store = store

    def _t(self, pl: str, en: str) -> str:
        return in_language(self.settings, pl, en)

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
            raise DistributionError(
                self._t(
                    f"dokument {replaces} nie należy do tej sesji",
                    f"document {replaces} is not a document of this session",
                )
            )
        try:
            info = await asyncio.to_thread(
                check_document, path, filename or path.name, self.settings.language
            )
        except DocumentRejected as exc:
            raise DistributionError(str(exc)) from None
        except OSError as exc:
            raise DistributionError(
                self._t(
                    f"{path}: nie można odczytać pliku ({exc.strerror})",
                    f"{path}: cannot be read ({exc.strerror})",
                )
            ) from None
        sha, stored = await asyncio.to_thread(store_document, self.settings.var_dir, path)
        # Several nodes: the one that sends (or serves the download) may be another.
        await SharedFiles(self.store.engine, self.settings.var_dir).publish([stored])
        if sha != info.sha256:
            raise DistributionError(
                self._t(
                    f"{path} zmienił się w trakcie odczytu; spróbuj ponownie",
                    f"{path} changed while it was being read; try again",
                )
            )
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
