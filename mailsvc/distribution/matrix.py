"""What the receipts add up to: the receipt matrix of a session (who received, opened and
acknowledged which distribution) and the paper saved since the electronic cut-over."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from mailsvc.config import Settings
from mailsvc.distribution.clock import Clock
from mailsvc.distribution.sessions import Sessions
from mailsvc.domain.receipt_states import (
    EventKind,
    MatrixCell,
    MatrixDistribution,
    MatrixDocument,
    MatrixRow,
    ReceiptMatrix,
    derive_state,
)
from mailsvc.storage.sessions import ReceiptStore


class ReceiptReports:
    def __init__(
        self, settings: Settings, store: ReceiptStore, sessions: Sessions, clock: Clock
    ) -> None:
        self.settings = settings
        self.store = store
        self.sessions = sessions
        self.clock = clock

    async def matrix(self, number: str, *, include_copies: bool = False) -> ReceiptMatrix:
        session = await self.sessions.session(number)
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
            generated_at=self.clock.now(),
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

    def cutover(self) -> date | None:
        value = self.settings.distribution.cutover_date
        return date.fromisoformat(value) if value else None

    async def savings(self, number: str | None = None) -> list[tuple[str, int, int, Decimal]]:
        """Paper saved per session since the cut-over: (session, pages, recipients, PLN).

        Pages are each document's page count (1 where unknown) times the councillors who
        received it electronically and did not need a paper copy."""
        cost = Decimal(self.settings.distribution.cost_per_page)
        cutover = self.cutover()
        sessions = (
            [await self.sessions.session(number)] if number else await self.store.list_sessions()
        )
        out = []
        for session in sessions:
            pages_total = 0
            recipients_total = 0
            for dist in await self.store.distributions(session_id=session.id):
                if dist.status not in ("sending", "sent"):
                    continue
                sent_day = self.clock.to_local(dist.sent_at or dist.due_at).date()
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


def _surname_key(name: str) -> str:
    parts = name.split()
    return (parts[-1] if parts else name).casefold()
