"""The clerks' use cases with session documents, in the order of the flow:

* :mod:`~mailsvc.distribution.sessions`: sessions, attaching documents (kept by
  :mod:`~mailsvc.distribution.documents`, the file store);
* :mod:`~mailsvc.distribution.schedule`: scheduling, the notice rules, cancelling, what is due;
* :mod:`~mailsvc.distribution.send`: sending, each recipient exactly once, with the links of
  :mod:`~mailsvc.distribution.links`;
* :mod:`~mailsvc.distribution.ackpage` and :mod:`~mailsvc.distribution.opened`: receipts from
  the councillors' side (acknowledgements, the IMAP opened check);
* :mod:`~mailsvc.distribution.matrix`: the receipt matrix and the paper saved;
* :mod:`~mailsvc.distribution.reminders`: reminder rounds.

:class:`Distributions` builds them over one store, queue, directory and clock and names their
use cases in one place for the CLI, the web, the jobs and the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, tzinfo

from mailsvc.config import Settings
from mailsvc.distribution.ackpage import record_acknowledgement
from mailsvc.distribution.clock import Clock
from mailsvc.distribution.errors import DistributionError, NoticeRefused
from mailsvc.distribution.evidence import EvidencePacks
from mailsvc.distribution.links import RecipientLinks, signer_for
from mailsvc.distribution.matrix import ReceiptReports
from mailsvc.distribution.opened import check_opened
from mailsvc.distribution.reminders import Reminders
from mailsvc.distribution.schedule import Scheduling
from mailsvc.distribution.send import GroupDirectory, Sender, SendResult
from mailsvc.distribution.sessions import Sessions
from mailsvc.storage.queue import MailQueue
from mailsvc.storage.sessions import ReceiptStore

__all__ = ["DistributionError", "Distributions", "NoticeRefused", "SendResult"]


class Distributions:
    """Sessions, documents, distributions, receipts: the clerks' use cases (one instance per
    process part: the sender holds the per-distribution locks)."""

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
        self.signer = signer_for(settings)
        self.clock = Clock(settings.distribution.timezone)
        self.links = RecipientLinks(settings, self.signer, self.clock)
        self.sessions = Sessions(settings, store)
        self.scheduling = Scheduling(settings, store, self.sessions, self.clock)
        self.sender = Sender(settings, store, queue, directory, self.links, self.clock, on_queued)
        self.reminders = Reminders(settings, store, queue, self.links, self.clock, on_queued)
        self.reports = ReceiptReports(settings, store, self.sessions, self.clock)
        self.evidence = EvidencePacks(settings, store, self.sessions, self.reports, self.clock)

        self.to_utc = self.clock.to_utc
        self.to_local = self.clock.to_local
        self.create_session = self.sessions.create_session
        self.session = self.sessions.session
        self.attach = self.sessions.attach
        self.pack_documents = self.scheduling.pack_documents
        self.notice_breach = self.scheduling.notice_breach
        self.schedule = self.scheduling.schedule
        self.cancel = self.scheduling.cancel
        self.due = self.scheduling.due
        self.send = self.sender.send
        self.link_expiry = self.links.link_expiry
        self.ack_url = self.links.ack_url
        self.return_path = self.links.return_path
        self.matrix = self.reports.matrix
        self.savings = self.reports.savings
        self.cutover = self.reports.cutover
        self.remind = self.reminders.remind
        self.evidence_pack = self.evidence.export

    @property
    def tz(self) -> tzinfo:
        return self.clock.tz

    @property
    def pl(self) -> bool:
        return self.settings.language != "en"

    @property
    def web_url(self) -> str:
        """Where links point; the running service sets the address it actually bound."""
        return self.links.web_url

    @web_url.setter
    def web_url(self, value: str) -> None:
        self.links.web_url = value

    @property
    def on_queued(self) -> Callable[[], None] | None:
        """Told after each queued chunk (wakes the delivery workers)."""
        return self.sender.on_queued

    @on_queued.setter
    def on_queued(self, value: Callable[[], None] | None) -> None:
        self.sender.on_queued = value
        self.reminders.on_queued = value

    async def acknowledge(self, recipient_id: int, distribution_id: int, evidence: str) -> bool:
        """Record an acknowledgement (the link's POST); the first one counts."""
        return await record_acknowledgement(self.store, recipient_id, distribution_id, evidence)

    async def check_opened(self, *, now: datetime | None = None) -> int:
        """Record as opened the delivered messages now \\Seen in the councillors' mailboxes;
        returns how many were found."""
        return await check_opened(self.settings, self.store, now=now or self.clock.now())
