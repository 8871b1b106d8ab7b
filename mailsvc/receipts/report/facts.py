"""What every renderer of the receipts report says the same way: times, notes, headers.

Times: events and distribution times are stored as naive UTC; the session's own date is naive
local time. People read local time in the council's zone, which the matrix carries
(``ReceiptMatrix.time_zone``, set from ``distribution.timezone``); machines read ISO 8601 UTC
with "Z".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailsvc.domain.localtime import local_time, session_local_time
from mailsvc.domain.receipt_states import (
    EventKind,
    MatrixCell,
    MatrixDistribution,
    MatrixRow,
    ReceiptEvent,
    ReceiptMatrix,
)
from mailsvc.domain.vocabulary import state_label
from mailsvc.errors import MailsvcError
from mailsvc.receipts.report.labels import distribution_kind_label, label, session_kind_label

EVIDENCE_SHORT = 160


class ReportError(MailsvcError):
    """A report cannot be produced (for example, its fonts are missing)."""


def council_zone(matrix: ReceiptMatrix) -> ZoneInfo:
    """The zone the matrix's local times are shown in."""
    try:
        return ZoneInfo(matrix.time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ReportError(f"time zone {matrix.time_zone!r} is not known") from exc


def iso_utc(moment: datetime | None) -> str | None:
    """ISO 8601 UTC with "Z" (naive means UTC); ``None`` stays ``None``."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat() + "Z"


def format_local(
    moment: datetime | None, language: str, *, seconds: bool = False, short: bool = False
) -> str:
    """A local time as people read it: "05.03.2026 14:03" (pl) or "2026-03-05 14:03" (en).

    ``moment`` must already be local (see :func:`mailsvc.domain.localtime.local_time`);
    ``short`` drops the year.
    """
    if moment is None:
        return ""
    clock = "%H:%M:%S" if seconds else "%H:%M"
    if language == "pl":
        day = "%d.%m" if short else "%d.%m.%Y"
    else:
        day = "%m-%d" if short else "%Y-%m-%d"
    return moment.strftime(f"{day} {clock}")


def local_or_blank(moment: datetime | None, language: str, zone: tzinfo) -> str:
    """A stored time (naive UTC) as local time in ``zone``; "" for no time."""
    return format_local(local_time(moment, zone), language) if moment is not None else ""


def one_line(text: str) -> str:
    """``text`` with line breaks, tabs and control characters collapsed to single spaces."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(cleaned.split())


def distributions_by_id(matrix: ReceiptMatrix) -> dict[int, MatrixDistribution]:
    return {distribution.id: distribution for distribution in matrix.distributions}


def distribution_title(
    distribution_id: int, by_id: Mapping[int, MatrixDistribution], language: str
) -> str:
    distribution = by_id.get(distribution_id)
    kind = distribution_kind_label(distribution.kind, language) if distribution else "?"
    return f"#{distribution_id} {kind}"


def _first_event(events: Iterable[ReceiptEvent], kind: EventKind) -> ReceiptEvent | None:
    matching = [event for event in events if event.kind == kind]
    return min(matching, key=lambda event: event.at) if matching else None


def _event_note(
    event: ReceiptEvent, title: str, language: str, zone: tzinfo, *, limit: int | None
) -> str:
    when = format_local(local_time(event.at, zone), language)
    evidence = one_line(event.evidence)
    if limit is not None and len(evidence) > limit:
        evidence = evidence[: limit - 1] + "…"
    return f"{title} {when}: {evidence}" if evidence else f"{title} {when}"


def cell_notes(
    cell: MatrixCell, language: str, zone: tzinfo, *, limit: int | None = EVIDENCE_SHORT
) -> str:
    """What a clerk needs to know beyond the state: the failure or delay reason, an earlier
    failure that later evidence overrode, reminders (times local in ``zone``)."""
    notes = []
    state = cell.state.state
    failure = _first_event(cell.events, EventKind.FAILED)
    if failure is not None:
        title = (
            state_label(EventKind.FAILED, language)
            if state == EventKind.FAILED
            else label(language, "earlier_failure")
        )
        notes.append(_event_note(failure, title, language, zone, limit=limit))
    if state == EventKind.DELAYED:
        delay = _first_event(cell.events, EventKind.DELAYED)
        if delay is not None:
            title = state_label(EventKind.DELAYED, language)
            notes.append(_event_note(delay, title, language, zone, limit=limit))
    reminded = cell.state.time_of(EventKind.REMINDED)
    if reminded is not None:
        notes.append(
            f"{state_label(EventKind.REMINDED, language)} "
            f"{format_local(local_time(reminded, zone), language)}"
        )
    return "; ".join(notes)


def cells_or_none(row: MatrixRow) -> tuple[MatrixCell | None, ...]:
    """A councillor no distribution reached still gets one (empty) line in every report."""
    return row.cells if row.cells else (None,)


def header_lines(matrix: ReceiptMatrix) -> list[str]:
    """Title, session, date and place, and when the report was made in which zone."""
    language = matrix.language
    zone = council_zone(matrix)
    kind = session_kind_label(matrix.session_kind, language)
    return [
        f"{label(language, 'title')} — {matrix.council}",
        label(language, "session", number=matrix.session_number, kind=kind),
        label(
            language,
            "when_where",
            at=format_local(session_local_time(matrix.session_at, zone), language),
            place=matrix.place,
        ),
        label(
            language,
            "generated",
            at=format_local(local_time(matrix.generated_at, zone), language, seconds=True),
            tz=zone.key,
        ),
    ]


def document_numbers(distribution: MatrixDistribution, matrix: ReceiptMatrix) -> str:
    """The documents a distribution carried as numbers of the documents list (a short hash for
    one that is not on the list)."""
    numbers = {document.sha256: n for n, document in enumerate(matrix.documents, 1)}
    return ", ".join(
        str(numbers[sha]) if sha in numbers else sha[:12] for sha in distribution.documents
    )
