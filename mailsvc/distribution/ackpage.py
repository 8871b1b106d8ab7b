"""The acknowledgement page's content and the councillors' document downloads, read from and
recorded in the distributions' storage. The web serves them (``web.app``); this module decides
what they contain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from mailsvc.config import Settings
from mailsvc.distribution.documents import document_path
from mailsvc.distribution.links import RecipientLinks
from mailsvc.domain.receipt_states import EventKind, EventSource, ReceiptEvent
from mailsvc.storage.sessions import ReceiptStore
from mailsvc.storage.shared_files import SharedFiles


@dataclass(frozen=True)
class AckDocument:
    name: str
    size: int  # bytes
    pages: int | None
    sha256: str
    download_url: str | None  # set when the document is linked rather than attached


@dataclass(frozen=True)
class AckView:
    """Everything the acknowledgement page shows for one councillor and one distribution."""

    councillor_name: str
    council: str
    session_number: str  # "XV/2026"
    session_kind: str  # ordinary | extraordinary | budget | constituent
    session_at: datetime  # local time of the council
    place: str
    distribution_kind: str  # notice | supplement | date-change | cancellation
    documents: tuple[AckDocument, ...]
    acknowledged_at: datetime | None  # the first acknowledgement; naive = UTC
    language: str  # the councillor's preferred language
    # What the council has recorded so far: the first time of each receipt kind, in order
    # (naive UTC). The page shows it so that the councillor sees what the evidence says.
    recorded: tuple[tuple[EventKind, datetime], ...] = ()


@dataclass(frozen=True)
class DocumentFile:
    path: Path
    filename: str  # as the clerk uploaded it, diacritics and all
    media_type: str
    size: int


class AckBackend(Protocol):
    """What the pages need from storage; the real one lives with the distributions."""

    async def ack_view(self, recipient_id: int, distribution_id: int) -> AckView | None:
        """The page's content, or None if the recipient or distribution is unknown."""
        ...

    async def acknowledge(self, recipient_id: int, distribution_id: int, evidence: str) -> AckView:
        """Record the acknowledgement; idempotent: a second call keeps the first time."""
        ...

    async def document(self, recipient_id: int, sha256: str) -> DocumentFile | None:
        """The file of a document this recipient was sent, or None."""
        ...


async def record_acknowledgement(
    store: ReceiptStore, recipient_id: int, distribution_id: int, evidence: str
) -> bool:
    """Record an acknowledgement (the link's POST); the first one counts."""
    recipient = await store.recipient(recipient_id)
    if recipient is None or recipient.distribution_id != distribution_id:
        return False
    return await store.add_event(
        recipient_id, EventKind.ACKNOWLEDGED, EventSource.LINK, evidence, once=True
    )


_SHOWN = (EventKind.DELIVERED, EventKind.OPENED, EventKind.ACKNOWLEDGED)


def _recorded(events: Sequence[ReceiptEvent]) -> tuple[tuple[EventKind, datetime], ...]:
    first: dict[EventKind, datetime] = {}
    for e in events:
        if e.kind in _SHOWN and (e.kind not in first or e.at < first[e.kind]):
            first[e.kind] = e.at
    return tuple(sorted(first.items(), key=lambda item: item[1]))


class AckPages:
    """What the acknowledgement page and the download links read and record (the web
    layer's AckBackend), over the distributions' storage."""

    def __init__(self, settings: Settings, store: ReceiptStore, links: RecipientLinks) -> None:
        self.settings = settings
        self.store = store
        self.links = links

    async def ack_view(self, recipient_id: int, distribution_id: int) -> AckView | None:
        recipient = await self.store.recipient(recipient_id)
        if recipient is None or recipient.distribution_id != distribution_id:
            return None
        dist = await self.store.distribution(distribution_id)
        assert dist is not None
        session = await self.store.session_by_id(dist.session_id)
        assert session is not None
        docs = await self.store.documents_by_id(dist.document_ids)
        events = (await self.store.events([recipient_id]))[recipient_id]
        acked = [e.at for e in events if e.kind is EventKind.ACKNOWLEDGED]
        linked = sum(d.size for d in docs) > self.settings.distribution.attach_max_bytes
        expires = self.links.link_expiry(session)
        return AckView(
            councillor_name=recipient.name or recipient.address,
            council=self.settings.council.name,
            session_number=session.number,
            session_kind=session.kind,
            session_at=session.starts_at,
            place=session.place,
            distribution_kind=dist.kind,
            documents=tuple(
                AckDocument(
                    d.filename,
                    d.size,
                    d.pages,
                    d.sha256,
                    self.links.download_url(recipient_id, d.sha256, expires) if linked else None,
                )
                for d in docs
            ),
            acknowledged_at=min(acked) if acked else None,
            language=self.settings.language,
            recorded=_recorded(events),
        )

    async def acknowledge(self, recipient_id: int, distribution_id: int, evidence: str) -> AckView:
        await record_acknowledgement(self.store, recipient_id, distribution_id, evidence)
        view = await self.ack_view(recipient_id, distribution_id)
        assert view is not None
        return view

    async def document(self, recipient_id: int, sha256: str) -> DocumentFile | None:
        recipient = await self.store.recipient(recipient_id)
        if recipient is None:
            return None
        dist = await self.store.distribution(recipient.distribution_id)
        assert dist is not None
        for d in await self.store.documents_by_id(dist.document_ids):
            if d.sha256 == sha256:
                path = document_path(self.settings.var_dir, d.sha256)
                # Attached on another node: fetched from the database (PostgreSQL).
                await SharedFiles(self.store.engine, self.settings.var_dir).fetch([path])
                return (
                    DocumentFile(path, d.filename, d.media_type, d.size) if path.is_file() else None
                )
        return None
