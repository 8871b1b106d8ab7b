"""Scheduling distributions: which documents go, whether the notice rules allow the date, and
what a date change or a cancellation does to the session; cancelling a scheduled one; which
are due."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime

from mailsvc.config import Settings
from mailsvc.distribution.clock import Clock
from mailsvc.distribution.errors import (
    DistributionError,
    NoticeRefused,
    in_language,
    unknown_distribution,
)
from mailsvc.distribution.sessions import Sessions
from mailsvc.domain.notice import NoticeBreach, check_notice
from mailsvc.domain.vocabulary import DISTRIBUTION_KINDS
from mailsvc.storage.sessions import CouncilSessionRow, DistributionRow, DocumentRow, ReceiptStore

log = logging.getLogger(__name__)


class Scheduling:
    def __init__(
        self, settings: Settings, store: ReceiptStore, sessions: Sessions, clock: Clock
    ) -> None:
        self.settings = settings
        self.store = store
        self.sessions = sessions
        self.clock = clock

    def _t(self, pl: str, en: str) -> str:
        return in_language(self.settings, pl, en)

    async def pack_documents(
        self, session: CouncilSessionRow, kind: str, explicit: Sequence[int] | None
    ) -> list[DocumentRow]:
        """The documents a distribution of ``kind`` takes: ``explicit`` ones, or the current
        ones (for a supplement: those not sent yet; none for a date change or cancellation)."""
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

    def notice_breach(
        self, session: CouncilSessionRow, due_utc: datetime, pack: Sequence[DocumentRow]
    ) -> NoticeBreach | None:
        """How a notice or supplement delivered at ``due_utc`` breaks the notice rules, if it
        does (the clerk's page asks the same before scheduling)."""
        return check_notice(
            deliver_on=self.clock.to_local(due_utc).date(),
            session_day=session.starts_at.date(),
            session_kind=session.kind,
            document_kinds=[d.doc_kind for d in pack] or ["agenda"],
            rules=self.settings.notice_rules,
            language=self.settings.language,
        )

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
        session = await self.sessions.session(number)
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
        now_utc = now or self.clock.now()
        due_utc = now_utc if at is None else self.clock.to_utc(at)
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
        pack = await self.pack_documents(session, kind, documents)
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
            breach = self.notice_breach(session, due_utc, pack)
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
            raise unknown_distribution(self.settings, distribution_id)
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

    async def due(self, now: datetime | None = None) -> list[DistributionRow]:
        """Distributions to send now: scheduled and due, or left half-sent by a crash."""
        now = now or self.clock.now()
        rows = await self.store.distributions(statuses=("scheduled", "sending"))
        return [d for d in rows if d.status == "sending" or d.due_at <= now]
