"""The signed evidence pack of a session: the receipt matrix, the documents' SHA-256, the
notice deadlines met or missed, each councillor's timeline and the event chain, as PDF/A-3
with the machine-readable data embedded, signed with the office's certificate."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mailsvc.config import Settings
from mailsvc.distribution.clock import Clock
from mailsvc.distribution.matrix import ReceiptReports
from mailsvc.distribution.sessions import Sessions
from mailsvc.domain.notice import deciding_rule
from mailsvc.domain.receipt_states import EventKind, ReceiptMatrix
from mailsvc.receipts.evidence.verify import verify_session
from mailsvc.storage.chain import session_chains
from mailsvc.storage.sessions import ReceiptStore

if TYPE_CHECKING:
    from mailsvc.receipts.evidence.pack import NoticeFinding

# The distributions whose arrival the notice rules judge (as scheduling does).
JUDGED_KINDS = ("notice", "supplement")


class EvidencePacks:
    def __init__(
        self,
        settings: Settings,
        store: ReceiptStore,
        sessions: Sessions,
        reports: ReceiptReports,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sessions = sessions
        self.reports = reports
        self.clock = clock

    async def export(self, number: str) -> bytes:
        """The signed pack of session ``number`` (SessionNotFound when there is none)."""
        # The PDF and signing libraries (fpdf2's PDF/A, pyhanko) load only when a pack is made:
        # every process of the service builds these use cases, few ever export.
        from mailsvc.receipts.evidence.pack import (
            ChainLink,
            ChainSummary,
            EvidenceFacts,
            Signer,
            evidence_json,
            render_evidence_pdf,
        )
        from mailsvc.receipts.evidence.signing import identity, sign_pdf

        matrix = await self.reports.matrix(number)
        session = await self.sessions.session(number)
        kinds = {d.sha256: d.doc_kind for d in await self.store.documents(session.id)}
        notice = tuple(
            self._notice(matrix, d.id, [kinds[h] for h in d.documents if h in kinds])
            for d in matrix.distributions
            if d.kind in JUDGED_KINDS
        )
        who = await asyncio.to_thread(identity, self.settings)
        signer = Signer(
            who.subject,
            who.fingerprint,
            who.not_after,
            who.self_signed,
            self.settings.evidence.tsa_url,
        )
        check = await verify_session(self.store.engine, session.number)
        stored = await session_chains(self.store.engine, session.number) or []
        chain = tuple(
            ChainSummary(d.check.distribution_id, d.check.checked, d.check.head.hash or "")
            for d in (check.distributions if check else ())
        )
        links = tuple(
            ChainLink(
                c.distribution_id,
                e.id,
                e.seq,
                e.content.recipient,
                e.content.kind,
                e.prev_hash,
                e.content_hash,
            )
            for c in stored
            for e in c.events
        )
        broken = ""
        if check is not None and check.broken is not None:
            b = check.broken
            broken = (
                f"#{b.distribution_id}, event {b.event_id}: {b.kind.value} "
                f"({b.expected} ≠ {b.found})"
            )
        facts = EvidenceFacts(matrix, notice, signer, chain, links, broken)
        data = evidence_json(facts)
        pdf = await asyncio.to_thread(render_evidence_pdf, facts, data)
        reason = (
            f"Evidence pack of session {matrix.session_number}"
            if matrix.language == "en"
            else f"Pakiet dowodowy sesji {matrix.session_number}"
        )
        return await asyncio.to_thread(
            sign_pdf,
            pdf,
            who,
            reason=reason,
            location=self.settings.council.name,
            tsa_url=self.settings.evidence.tsa_url,
            tsa_roots=Path(ca) if (ca := self.settings.evidence.tsa_ca_file) else None,
        )

    def _notice(
        self, matrix: ReceiptMatrix, distribution_id: int, document_kinds: Sequence[str]
    ) -> NoticeFinding:
        from mailsvc.receipts.evidence.pack import NoticeFinding, deliveries_by_deadline

        decided = deciding_rule(
            session_day=matrix.session_at.date(),
            session_kind=matrix.session_kind,
            document_kinds=list(document_kinds) or ["agenda"],
            rules=self.settings.notice_rules,
        )
        cells = []
        for row in matrix.rows:
            for cell in row.cells:
                if cell.distribution_id == distribution_id:
                    at = cell.state.time_of(EventKind.DELIVERED)
                    cells.append((row.address, self.clock.to_local(at).date() if at else None))
        if decided is None:
            return NoticeFinding(distribution_id, "", None, (), (), ())
        rule, deadline = decided
        in_time, late, missing = deliveries_by_deadline(cells, deadline)
        return NoticeFinding(
            distribution_id, rule.describe(matrix.language), deadline, in_time, late, missing
        )
