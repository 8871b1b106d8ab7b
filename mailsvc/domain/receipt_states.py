"""Receipts: what happened to one distribution message for one councillor, derived from events.

Evidence is append-only: every event (an LMTP reply, a DSN, an MDN, a \\Seen flag found by the
IMAP check, an acknowledgement through the link) is stored with its time and raw evidence, and
the state shown to clerks is computed from the events, never stored on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class EventKind(StrEnum):
    QUEUED = "queued"
    # An attempt started, or the smarthost accepted the copy (its 250 says nothing about the
    # remote end).
    SENT = "sent"
    DELIVERED = "delivered"  # LMTP 250 for this recipient, or a DSN for one of our mailboxes
    # A success DSN (delivered, relayed, expanded) for a copy that left through the smarthost.
    DELIVERED_REMOTE = "delivered-remote"
    DELAYED = "delayed"  # a temporary failure (LMTP 4xx, DSN action delayed)
    FAILED = "failed"  # LMTP 5xx or a DSN failure (hard or soft, see ``permanent``)
    OPENED = "opened"  # \Seen found by the IMAP check, or an MDN "displayed"
    ACKNOWLEDGED = "acknowledged"  # the councillor confirmed through the link (POST)
    REMINDED = "reminded"  # a reminder was sent


class EventSource(StrEnum):
    SCHEDULER = "scheduler"
    LMTP = "lmtp"
    SMTP = "smtp"
    DSN = "dsn"
    MDN = "mdn"
    IMAP = "imap"
    LINK = "link"


# How far along a recipient is: a later state never goes back to an earlier one, except that a
# failure after delivery (a late DSN) is shown as failed, and a delay ends when the smarthost
# takes the copy after all. A remote success DSN ranks above a local delivery (it is evidence
# from further along, and a copy never has both unless old records counted the smarthost's 250
# as delivered) and below what the councillor did.
_RANK = {
    EventKind.QUEUED: 0,
    EventKind.SENT: 1,
    EventKind.DELAYED: 2,
    EventKind.DELIVERED: 3,
    EventKind.DELIVERED_REMOTE: 4,
    EventKind.OPENED: 5,
    EventKind.ACKNOWLEDGED: 6,
}
# Evidence that the copy reached a mailbox: ours (LMTP) or the remote end's (DSN).
_DELIVERY = (EventKind.DELIVERED, EventKind.DELIVERED_REMOTE)


@dataclass(frozen=True)
class ReceiptEvent:
    kind: EventKind
    at: datetime  # naive UTC
    source: EventSource
    evidence: str = ""  # the raw reply line, report part or request details


@dataclass(frozen=True)
class ReceiptState:
    """The state of one (distribution, recipient) derived from its events."""

    state: EventKind
    first: dict[EventKind, datetime] = field(default_factory=dict)  # first time of each kind

    def time_of(self, kind: EventKind) -> datetime | None:
        return self.first.get(kind)


def derive_state(events: Iterable[ReceiptEvent]) -> ReceiptState:
    """The state after ``events`` (in any order) and the first time each kind happened."""
    first: dict[EventKind, datetime] = {}
    last: dict[EventKind, datetime] = {}
    for event in sorted(events, key=lambda e: e.at):
        first.setdefault(event.kind, event.at)
        last[event.kind] = event.at
    failed_at = first.get(EventKind.FAILED)
    delivered = [first[k] for k in _DELIVERY if k in first]
    if failed_at is not None and (not delivered or failed_at >= max(delivered)):
        # Opened or acknowledged after a failure means the failure was wrong (or a copy got
        # through): what the councillor did is the stronger evidence.
        if not ({EventKind.OPENED, EventKind.ACKNOWLEDGED} & first.keys()):
            return ReceiptState(EventKind.FAILED, first)
    ranked = [k for k in first if k in _RANK]
    delayed_at, sent_at = last.get(EventKind.DELAYED), last.get(EventKind.SENT)
    if delayed_at is not None and sent_at is not None and sent_at > delayed_at:
        # The smarthost took the copy after a delay: handed over, no longer being retried.
        ranked.remove(EventKind.DELAYED)
    if not ranked:
        return ReceiptState(EventKind.QUEUED, first)
    return ReceiptState(max(ranked, key=_RANK.__getitem__), first)


# --- The report a clerk annexes to the minutes: councillor x document ----------------------


@dataclass(frozen=True)
class MatrixDocument:
    """A document of the session as distributed."""

    name: str  # file name as the clerk gave it (may carry diacritics)
    sha256: str
    size: int
    pages: int | None
    agenda_item: str = ""  # "3. Projekt uchwały budżetowej" or "" for the whole session


@dataclass(frozen=True)
class MatrixDistribution:
    id: int
    kind: str  # notice | supplement | date-change | cancellation
    scheduled_for: datetime | None
    sent_at: datetime | None
    late: bool
    override_reason: str
    documents: tuple[str, ...]  # sha256 of the documents it carried


@dataclass(frozen=True)
class MatrixCell:
    """One councillor x one distribution."""

    distribution_id: int
    address: str
    message_id: str
    state: ReceiptState
    events: tuple[ReceiptEvent, ...]


@dataclass(frozen=True)
class MatrixRow:
    name: str  # "Łukasz Żółć"
    address: str
    cells: tuple[MatrixCell, ...]  # one per distribution that reached this councillor


@dataclass(frozen=True)
class ReceiptMatrix:
    """Everything a receipts report shows for one council session."""

    council: str  # council name
    session_number: str  # "XV/2026"
    session_kind: str  # ordinary | extraordinary | budget | constituent
    session_at: datetime  # local time of the session
    place: str
    generated_at: datetime  # naive UTC
    documents: tuple[MatrixDocument, ...]
    distributions: tuple[MatrixDistribution, ...]
    rows: tuple[MatrixRow, ...]
    language: str = "pl"
    # The council's time zone (``distribution.timezone``): every local time a report shows.
    time_zone: str = "Europe/Warsaw"


def summary(rows: Sequence[MatrixRow]) -> dict[EventKind, int]:
    """How many (councillor, distribution) cells are in each state."""
    counts: dict[EventKind, int] = {}
    for row in rows:
        for cell in row.cells:
            counts[cell.state.state] = counts.get(cell.state.state, 0) + 1
    return counts
