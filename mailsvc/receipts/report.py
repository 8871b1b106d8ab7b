"""The receipts report a clerk annexes to the minutes: terminal table, CSV, JSON and PDF.

All four renderers are pure functions of a :class:`ReceiptMatrix`: the same matrix gives the same
bytes (the PDF's creation date is the matrix's ``generated_at``), so a report can be produced
again later and compared with the annexed copy.

Times: events and distribution times are stored as naive UTC; the session's own date is naive
local time (Europe/Warsaw). People read Warsaw local time (table, PDF, and beside UTC in CSV);
machines read ISO 8601 UTC with "Z" (JSON, CSV).

The section "Shared with printlist" holds the font, time and PDF-table helpers that
:mod:`mailsvc.receipts.printlist` uses too.
"""

from __future__ import annotations

import csv
import io
import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from fpdf import FPDF

from mailsvc.domain.receipt_states import (
    EventKind,
    MatrixCell,
    MatrixDistribution,
    MatrixDocument,
    MatrixRow,
    ReceiptEvent,
    ReceiptMatrix,
    summary,
)
from mailsvc.domain.vocabulary import (
    Catalogue,
    kind_label,
    pick,
    state_label,
    state_meaning,
)
from mailsvc.domain.wording import format_bytes_exact
from mailsvc.errors import MailsvcError

# ============================================================================================
# Shared with printlist: language, time, fonts, PDF tables
# ============================================================================================

COUNCIL_TZ = ZoneInfo("Europe/Warsaw")
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT_FILES = {  # (family, style) -> file in fonts-dejavu-core
    ("DejaVu", ""): "DejaVuSans.ttf",
    ("DejaVu", "B"): "DejaVuSans-Bold.ttf",
    ("DejaVuMono", ""): "DejaVuSansMono.ttf",
}
RGB = tuple[int, int, int]


class ReportError(MailsvcError):
    """A report cannot be produced (for example, its fonts are missing)."""


def local_time(moment: datetime) -> datetime:
    """A stored time (naive means UTC) in the council's time zone."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(COUNCIL_TZ)


def session_local_time(moment: datetime) -> datetime:
    """The session's date (naive means already Warsaw local time) as an aware local time."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=COUNCIL_TZ)
    return moment.astimezone(COUNCIL_TZ)


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

    ``moment`` must already be local (see :func:`local_time`); ``short`` drops the year.
    """
    if moment is None:
        return ""
    clock = "%H:%M:%S" if seconds else "%H:%M"
    if language == "pl":
        day = "%d.%m" if short else "%d.%m.%Y"
    else:
        day = "%m-%d" if short else "%Y-%m-%d"
    return moment.strftime(f"{day} {clock}")


def one_line(text: str) -> str:
    """``text`` with line breaks, tabs and control characters collapsed to single spaces."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(cleaned.split())


def new_pdf(
    *,
    orientation: Literal["P", "L"],
    running_head: str,
    footer_note: str,
    language: str,
    created_at: datetime | None,
    title: str,
    font_dir: Path = FONT_DIR,
) -> ReportPdf:
    """An A4 report with DejaVu fonts (Polish diacritics), running head and page numbers."""
    pdf = ReportPdf(
        orientation=orientation,
        running_head=running_head,
        footer_note=footer_note,
        language=language,
        font_dir=font_dir,
    )
    if created_at is not None:  # a fixed date makes repeated runs give the same bytes
        stamp = created_at if created_at.tzinfo is not None else created_at.replace(tzinfo=UTC)
        pdf.set_creation_date(stamp)
    pdf.set_title(title)
    pdf.set_creator("mailsvc")
    pdf.set_lang(language)
    pdf.add_page()
    return pdf


class ReportPdf(FPDF):
    """A4 pages with a small running head, "Strona 1 z 3" in the footer and DejaVu fonts."""

    def __init__(
        self,
        *,
        orientation: Literal["P", "L"],
        running_head: str,
        footer_note: str,
        language: str,
        font_dir: Path,
    ) -> None:
        super().__init__(orientation=orientation, unit="mm", format="A4")
        for (family, style), file_name in FONT_FILES.items():
            path = font_dir / file_name
            if not path.is_file():
                raise ReportError(
                    f"Font {path} is missing: install the Debian package fonts-dejavu-core "
                    "(apt-get install fonts-dejavu-core)."
                )
            self.add_font(family, style, path)
        self.running_head = running_head
        self.footer_note = footer_note
        self.language = language
        self.set_margins(10, 14, 10)
        self.set_auto_page_break(auto=True, margin=14)
        self.set_draw_color(120, 120, 120)
        self.set_line_width(0.15)

    def header(self) -> None:
        self.set_font("DejaVu", "", 7)
        self.set_text_color(90, 90, 90)
        self.text(self.l_margin, 9, fit_text(self, self.running_head, self.epw))
        self.set_text_color(0, 0, 0)
        self.set_y(self.t_margin)

    def footer(self) -> None:
        self.set_y(-11)
        self.set_font("DejaVu", "", 7)
        self.set_text_color(90, 90, 90)
        self.cell(self.epw / 2, 5, self.footer_note, align="L")
        page = pick(
            {"pl": "Strona {page} z {total}", "en": "Page {page} of {total}"}, self.language
        )
        self.cell(self.epw / 2, 5, page.format(page=self.page_no(), total="{nb}"), align="R")
        self.set_text_color(0, 0, 0)

    def heading(self, text: str, *, size: float = 10, room: float = 25) -> None:
        """A bold section heading, moved to a new page when less than ``room`` mm is left."""
        if self.get_y() + room > self.page_break_trigger:
            self.add_page()
        self.ln(2)
        self.set_font("DejaVu", "B", size)
        self.multi_cell(self.epw, size * 0.5, printable(self, text), new_x="LMARGIN", new_y="NEXT")
        self.ln(1)

    def paragraph(self, text: str, *, size: float = 8, bold: bool = False) -> None:
        self.set_font("DejaVu", "B" if bold else "", size)
        self.multi_cell(self.epw, size * 0.5, printable(self, text), new_x="LMARGIN", new_y="NEXT")


def printable(pdf: FPDF, text: str) -> str:
    """``text`` on one line, characters the current font lacks shown as "?" (never dropped)."""
    text = one_line(text)
    font = pdf.current_font
    cmap = getattr(font, "cmap", None)
    if cmap is None or all(ord(ch) in cmap for ch in text):
        return text
    return "".join(ch if ord(ch) in cmap else "?" for ch in text)


def fit_text(pdf: FPDF, text: str, width: float) -> str:
    """``text`` cut with "…" so that it fits ``width`` mm in the current font."""
    text = printable(pdf, text)
    if pdf.get_string_width(text) <= width:
        return text
    low, high = 0, len(text)  # longest prefix that fits together with the ellipsis
    while low < high:
        middle = (low + high + 1) // 2
        if pdf.get_string_width(text[:middle].rstrip() + "…") <= width:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + "…"


def wrap_text(pdf: FPDF, text: str, width: float, max_lines: int) -> list[str]:
    """``text`` broken into at most ``max_lines`` lines of ``width`` mm; the last one is cut
    with "…" when the text does not fit. "\n" starts a new line; words longer than a line
    are split."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        lines.extend(_wrap_paragraph(pdf, printable(pdf, paragraph), width))
    if len(lines) > max_lines:
        rest = " ".join(lines[max_lines - 1 :])
        lines = [*lines[: max_lines - 1], fit_text(pdf, rest, width)]
    return lines


def _wrap_paragraph(pdf: FPDF, text: str, width: float) -> list[str]:
    if pdf.get_string_width(text) <= width:
        return [text]
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if pdf.get_string_width(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word
        while pdf.get_string_width(current) > width and len(current) > 1:
            cut = _longest_fitting_prefix(pdf, current, width)
            lines.append(current[:cut])
            current = current[cut:]
    if current:
        lines.append(current)
    return lines


def _longest_fitting_prefix(pdf: FPDF, text: str, width: float) -> int:
    low, high = 1, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if pdf.get_string_width(text[:middle]) <= width:
            low = middle
        else:
            high = middle - 1
    return low


@dataclass(frozen=True)
class Column:
    """One column of a :class:`PdfTable`; ``width`` in mm."""

    title: str
    width: float
    align: Literal["L", "C", "R"] = "L"
    mono: bool = False
    bold: bool = False
    max_lines: int = 2


class PdfTable:
    """A bordered table drawn row by row, its header repeated at the top of every page.

    Drawn with ``rect`` and ``text`` rather than fpdf2's ``table()``: a thousand councillors with
    several distributions each must render in about a second.
    """

    HEADER_FILL: RGB = (225, 225, 225)

    def __init__(
        self, pdf: FPDF, columns: Sequence[Column], *, font_size: float = 7.0, padding: float = 0.8
    ) -> None:
        self.pdf = pdf
        self.columns = tuple(columns)
        self.font_size = font_size
        self.padding = padding
        self.line_height = font_size * 0.3528 * 1.25  # pt -> mm, with leading

    def start(self) -> None:
        """Draw the header row (on a new page if not even the header and one row fit)."""
        needed = 2 * (self.line_height * 2 + 2 * self.padding)
        if self.pdf.get_y() + needed > self.pdf.page_break_trigger:
            self.pdf.add_page()
        self._draw_header()

    def row(
        self,
        values: Sequence[str],
        *,
        fills: Mapping[int, RGB] | None = None,
        on_new_page: Sequence[str] | None = None,
        min_height: float = 0.0,
    ) -> None:
        """Draw one row; ``on_new_page`` replaces ``values`` when the row starts a new page
        (a councillor's name left blank under its first row is shown again there)."""
        wrapped = self._wrap(values)
        height = self._height(wrapped, min_height)
        if self.pdf.get_y() + height > self.pdf.page_break_trigger:
            self.pdf.add_page()
            self._draw_header()
            if on_new_page is not None:
                wrapped = self._wrap(on_new_page)
                height = self._height(wrapped, min_height)
        self._draw(wrapped, height, fills or {}, header=False)

    def _wrap(self, values: Sequence[str]) -> list[list[str]]:
        pdf = self.pdf
        result = []
        for column, value in zip(self.columns, values, strict=True):
            self._use_font(column, header=False)
            inner = column.width - 2 * self.padding
            result.append(wrap_text(pdf, value, inner, column.max_lines))
        return result

    def _height(self, wrapped: Sequence[Sequence[str]], min_height: float) -> float:
        lines = max((len(cell) for cell in wrapped), default=1)
        return max(lines * self.line_height + 2 * self.padding, min_height)

    def _draw_header(self) -> None:
        wrapped = []
        for column in self.columns:
            self._use_font(column, header=True)
            wrapped.append(wrap_text(self.pdf, column.title, column.width - 2 * self.padding, 3))
        fills = dict.fromkeys(range(len(self.columns)), self.HEADER_FILL)
        self._draw(wrapped, self._height(wrapped, 0.0), fills, header=True)

    def _use_font(self, column: Column, *, header: bool) -> None:
        if header:
            self.pdf.set_font("DejaVu", "B", self.font_size)
        elif column.mono:
            self.pdf.set_font("DejaVuMono", "", self.font_size)
        else:
            self.pdf.set_font("DejaVu", "B" if column.bold else "", self.font_size)

    def _draw(
        self,
        wrapped: Sequence[Sequence[str]],
        height: float,
        fills: Mapping[int, RGB],
        *,
        header: bool,
    ) -> None:
        pdf = self.pdf
        x = pdf.l_margin
        y = pdf.get_y()
        ascent = self.font_size * 0.3528 * 0.95
        for index, (column, lines) in enumerate(zip(self.columns, wrapped, strict=True)):
            fill = fills.get(index)
            if fill is not None:
                pdf.set_fill_color(*fill)
                pdf.rect(x, y, column.width, height, style="DF")
            else:
                pdf.rect(x, y, column.width, height)
            self._use_font(column, header=header)
            for number, line in enumerate(lines):
                if not line:
                    continue
                baseline = y + self.padding + number * self.line_height + ascent
                if column.align == "L" or header:
                    left = x + self.padding
                else:
                    free = column.width - 2 * self.padding - pdf.get_string_width(line)
                    left = x + self.padding + (free if column.align == "R" else free / 2)
                pdf.text(left, baseline, line)
            x += column.width
        pdf.set_xy(pdf.l_margin, y + height)


# ============================================================================================
# Labels
# ============================================================================================

# The order events are listed in (columns of the CSV, keys of the JSON "times").
EVENT_ORDER = (
    EventKind.QUEUED,
    EventKind.SENT,
    EventKind.DELAYED,
    EventKind.DELIVERED,
    EventKind.FAILED,
    EventKind.OPENED,
    EventKind.ACKNOWLEDGED,
    EventKind.REMINDED,
)
# The states derive_state can produce, in the order the summary and the legend list them.
STATE_ORDER = (
    EventKind.ACKNOWLEDGED,
    EventKind.OPENED,
    EventKind.DELIVERED,
    EventKind.SENT,
    EventKind.QUEUED,
    EventKind.DELAYED,
    EventKind.FAILED,
)


# Light fills that keep black text readable; the state is always written out as well.
STATE_FILLS: dict[EventKind, RGB] = {
    EventKind.ACKNOWLEDGED: (140, 210, 140),
    EventKind.OPENED: (205, 238, 200),
    EventKind.DELIVERED: (205, 238, 200),
    EventKind.SENT: (225, 225, 225),
    EventKind.QUEUED: (225, 225, 225),
    EventKind.DELAYED: (250, 225, 170),
    EventKind.FAILED: (240, 150, 150),
}


LABELS: dict[str, dict[str, str]] = {
    "title": {
        "pl": "Potwierdzenia doręczenia dokumentów sesji",
        "en": "Receipts of session documents",
    },
    "session": {"pl": "Sesja nr {number} ({kind})", "en": "Session {number} ({kind})"},
    "when_where": {"pl": "Termin: {at}, miejsce: {place}", "en": "Date: {at}, place: {place}"},
    "generated": {
        "pl": "Wygenerowano: {at}. Wszystkie godziny: czas lokalny {tz}.",
        "en": "Generated: {at}. All times are local time {tz}.",
    },
    "generated_short": {"pl": "Wygenerowano {at}", "en": "Generated {at}"},
    "documents": {"pl": "Dokumenty", "en": "Documents"},
    "distributions": {"pl": "Wysyłki", "en": "Distributions"},
    "summary": {
        "pl": "Podsumowanie (radni × wysyłki)",
        "en": "Summary (councillors × distributions)",
    },
    "legend": {"pl": "Legenda", "en": "Legend"},
    "matrix": {"pl": "Radni i wysyłki", "en": "Councillors and distributions"},
    "no": {"pl": "Lp.", "en": "No."},
    "name": {"pl": "Nazwa pliku", "en": "File name"},
    "agenda_item": {"pl": "Punkt porządku obrad", "en": "Agenda item"},
    "pages": {"pl": "Stron", "en": "Pages"},
    "size": {"pl": "Rozmiar [B]", "en": "Size [B]"},
    "sha256": {"pl": "SHA-256", "en": "SHA-256"},
    "distribution": {"pl": "Wysyłka", "en": "Distribution"},
    "kind": {"pl": "Rodzaj", "en": "Kind"},
    "scheduled": {"pl": "Zaplanowano", "en": "Scheduled"},
    "sent": {"pl": "Wysłano", "en": "Sent"},
    "late": {"pl": "Po terminie", "en": "Late"},
    "yes": {"pl": "tak", "en": "yes"},
    "no_": {"pl": "nie", "en": "no"},
    "override": {"pl": "Uzasadnienie odstępstwa", "en": "Override reason"},
    "carried": {"pl": "Dokumenty (Lp.)", "en": "Documents (No.)"},
    "councillor": {"pl": "Radny/Radna", "en": "Councillor"},
    "address": {"pl": "Adres", "en": "Address"},
    "state": {"pl": "Stan", "en": "State"},
    "state_code": {"pl": "Kod stanu", "en": "State code"},
    "notes": {"pl": "Uwagi", "en": "Notes"},
    "total": {"pl": "Razem", "en": "Total"},
    "councillors": {"pl": "Radnych: {count}", "en": "Councillors: {count}"},
    "not_sent": {"pl": "brak wysyłki", "en": "not sent"},
    "earlier_failure": {"pl": "wcześniejszy błąd", "en": "earlier failure"},
    "local": {"pl": "{label} (czas lokalny)", "en": "{label} (local time)"},
    "utc": {"pl": "{label} (UTC)", "en": "{label} (UTC)"},
    "session_col": {"pl": "Sesja", "en": "Session"},
    "distribution_id": {"pl": "Wysyłka (nr)", "en": "Distribution (no.)"},
    "distribution_kind": {"pl": "Rodzaj wysyłki", "en": "Distribution kind"},
    "documents_sha": {"pl": "Dokumenty (SHA-256)", "en": "Documents (SHA-256)"},
    "documents_names": {"pl": "Dokumenty (nazwy)", "en": "Documents (names)"},
    "whole_session": {"pl": "cała sesja", "en": "whole session"},
    "signature": {
        "pl": "Sporządził(a): ........................................   "
        "Data: ....................   Podpis: ........................................",
        "en": "Prepared by: ........................................   "
        "Date: ....................   Signature: ........................................",
    },
}


def label(language: str, key: str, **values: object) -> str:
    return pick(LABELS[key], language).format(**values)


def distribution_kind_label(kind: str, language: str) -> str:
    return kind_label(Catalogue.DISTRIBUTION, kind, language)


def session_kind_label(kind: str, language: str) -> str:
    return kind_label(Catalogue.SESSION, kind, language)


# ============================================================================================
# Facts shared by the renderers
# ============================================================================================

_EVIDENCE_SHORT = 160


def _distributions_by_id(matrix: ReceiptMatrix) -> dict[int, MatrixDistribution]:
    return {distribution.id: distribution for distribution in matrix.distributions}


def _distribution_title(
    distribution_id: int, by_id: Mapping[int, MatrixDistribution], language: str
) -> str:
    distribution = by_id.get(distribution_id)
    kind = distribution_kind_label(distribution.kind, language) if distribution else "?"
    return f"#{distribution_id} {kind}"


def _first_event(events: Iterable[ReceiptEvent], kind: EventKind) -> ReceiptEvent | None:
    matching = [event for event in events if event.kind == kind]
    return min(matching, key=lambda event: event.at) if matching else None


def _event_note(event: ReceiptEvent, title: str, language: str, *, limit: int | None) -> str:
    when = format_local(local_time(event.at), language)
    evidence = one_line(event.evidence)
    if limit is not None and len(evidence) > limit:
        evidence = evidence[: limit - 1] + "…"
    return f"{title} {when}: {evidence}" if evidence else f"{title} {when}"


def cell_notes(cell: MatrixCell, language: str, *, limit: int | None = _EVIDENCE_SHORT) -> str:
    """What a clerk needs to know beyond the state: the failure or delay reason, an earlier
    failure that later evidence overrode, reminders."""
    notes = []
    state = cell.state.state
    failure = _first_event(cell.events, EventKind.FAILED)
    if failure is not None:
        title = (
            state_label(EventKind.FAILED, language)
            if state == EventKind.FAILED
            else label(language, "earlier_failure")
        )
        notes.append(_event_note(failure, title, language, limit=limit))
    if state == EventKind.DELAYED:
        delay = _first_event(cell.events, EventKind.DELAYED)
        if delay is not None:
            notes.append(
                _event_note(delay, state_label(EventKind.DELAYED, language), language, limit=limit)
            )
    reminded = cell.state.time_of(EventKind.REMINDED)
    if reminded is not None:
        notes.append(
            f"{state_label(EventKind.REMINDED, language)} "
            f"{format_local(local_time(reminded), language)}"
        )
    return "; ".join(notes)


def _local_or_blank(moment: datetime | None, language: str) -> str:
    return format_local(local_time(moment), language) if moment is not None else ""


def _cells_or_none(row: MatrixRow) -> tuple[MatrixCell | None, ...]:
    """A councillor no distribution reached still gets one (empty) line in every report."""
    return row.cells if row.cells else (None,)


# ============================================================================================
# Terminal table
# ============================================================================================

_MIN_NAME = 14


def _clip(text: str, width: int) -> str:
    text = one_line(text)
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def render_table(matrix: ReceiptMatrix, *, width: int = 120) -> str:
    """The report as plain text for a terminal: the header, documents and distributions, then
    one line per councillor with the state (and its local time) in each distribution, then the
    summary and the legend. The table narrows names and drops times to fit ``width``."""
    language = matrix.language
    by_id = _distributions_by_id(matrix)
    out: list[str] = []

    def para(text: str, indent: str = "") -> None:
        out.extend(
            textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent + "  ")
            or [""]
        )

    for line in _header_lines(matrix):
        para(line)
    out.append("")
    out.append(label(language, "documents") + ":")
    for number, document in enumerate(matrix.documents, 1):
        para(_document_line(number, document, language), "  ")
        out.append(f"     SHA-256 {document.sha256}")
    out.append("")
    out.append(label(language, "distributions") + ":")
    for distribution in matrix.distributions:
        para(_distribution_line(distribution, matrix, language), "  ")
    out.append("")

    distribution_ids = [distribution.id for distribution in matrix.distributions]
    for row in matrix.rows:  # ids that only appear in cells still get a column
        for cell in row.cells:
            if cell.distribution_id not in distribution_ids:
                distribution_ids.append(cell.distribution_id)
    out.extend(_table_lines(matrix, distribution_ids, by_id, width))
    out.append("")

    counts = summary(matrix.rows)
    parts = [f"{state_label(state, language)} {counts.get(state, 0)}" for state in STATE_ORDER]
    para(f"{label(language, 'summary')}: " + ", ".join(parts))
    out.append(label(language, "legend") + ":")
    for state in STATE_ORDER:
        para(f"{state_label(state, language)} — {state_meaning(state, language)}", "  ")
    return "\n".join(out) + "\n"


def _table_lines(
    matrix: ReceiptMatrix,
    distribution_ids: Sequence[int],
    by_id: Mapping[int, MatrixDistribution],
    width: int,
) -> list[str]:
    language = matrix.language
    states: list[list[tuple[str, str]]] = []  # per row, per distribution: (label, short time)
    for row in matrix.rows:
        cells = {cell.distribution_id: cell for cell in row.cells}
        line = []
        for distribution_id in distribution_ids:
            cell = cells.get(distribution_id)
            if cell is None:
                line.append(("—", ""))
                continue
            state = cell.state.state
            moment = cell.state.time_of(state)
            when = format_local(local_time(moment), language, short=True) if moment else ""
            line.append((state_label(state, language), when))
        states.append(line)

    titles = [_distribution_title(i, by_id, language) for i in distribution_ids]
    number_width = max(len(label(language, "no")), len(str(len(matrix.rows))))

    def column_widths(with_times: bool) -> list[int]:
        widths = []
        for index, title in enumerate(titles):
            texts = [_state_text(r[index], with_times) for r in states]
            content = max((len(text) for text in texts), default=0)
            widths.append(max(content, min(len(title), 12)))
        return widths

    with_times = True
    widths = column_widths(with_times)
    fixed = number_width + 1 + sum(w + 2 for w in widths)
    if width - fixed < _MIN_NAME:
        with_times = False
        widths = column_widths(with_times)
        fixed = number_width + 1 + sum(w + 2 for w in widths)
    room = max(width - fixed, _MIN_NAME)

    longest_name = max((len(row.name) for row in matrix.rows), default=0)
    longest_address = max((len(row.address) for row in matrix.rows), default=0)
    name_width = max(longest_name, len(label(language, "councillor")))
    address_width = max(longest_address, len(label(language, "address")))
    show_address = room >= name_width + 2 + address_width
    if show_address:
        address_width = room - name_width - 2
    else:
        name_width = room

    def line_of(number: str, name: str, address: str, cells: Sequence[str]) -> str:
        parts = [number.rjust(number_width), _clip(name, name_width).ljust(name_width)]
        if show_address:
            parts.append(" " + _clip(address, address_width).ljust(address_width))
        parts.extend(" " + _clip(text, w).ljust(w) for text, w in zip(cells, widths, strict=True))
        return " ".join(parts).rstrip()

    head = line_of(
        label(language, "no"),
        label(language, "councillor"),
        label(language, "address"),
        titles,
    )
    lines = [head, "-" * min(len(head), width)]
    for number, (row, row_states) in enumerate(zip(matrix.rows, states, strict=True), 1):
        texts = [_state_text(pair, with_times) for pair in row_states]
        lines.append(line_of(str(number), row.name, row.address, texts))
    return lines


def _state_text(pair: tuple[str, str], with_time: bool) -> str:
    state, when = pair
    return f"{state} {when}".rstrip() if with_time else state


def _header_lines(matrix: ReceiptMatrix) -> list[str]:
    language = matrix.language
    kind = session_kind_label(matrix.session_kind, language)
    return [
        f"{label(language, 'title')} — {matrix.council}",
        label(language, "session", number=matrix.session_number, kind=kind),
        label(
            language,
            "when_where",
            at=format_local(session_local_time(matrix.session_at), language),
            place=matrix.place,
        ),
        label(
            language,
            "generated",
            at=format_local(local_time(matrix.generated_at), language, seconds=True),
            tz=COUNCIL_TZ.key,
        ),
    ]


def _document_line(number: int, document: MatrixDocument, language: str) -> str:
    item = document.agenda_item or label(language, "whole_session")
    pages = "?" if document.pages is None else str(document.pages)
    return (
        f"{number}. {document.name} — {item}; "
        f"{label(language, 'pages').lower()}: {pages}; "
        f"{format_bytes_exact(document.size, language)}"
    )


def _distribution_line(
    distribution: MatrixDistribution, matrix: ReceiptMatrix, language: str
) -> str:
    parts = [
        f"#{distribution.id} {distribution_kind_label(distribution.kind, language)}",
        f"{label(language, 'scheduled').lower()}: "
        f"{_local_or_blank(distribution.scheduled_for, language) or '—'}",
        f"{label(language, 'sent').lower()}: "
        f"{_local_or_blank(distribution.sent_at, language) or '—'}",
    ]
    if distribution.late:
        parts.append(label(language, "late").lower())
    if distribution.override_reason:
        parts.append(f"{label(language, 'override').lower()}: {distribution.override_reason}")
    numbers = _document_numbers(distribution, matrix)
    parts.append(f"{label(language, 'carried').lower()}: {numbers or '—'}")
    return ", ".join(parts)


def _document_numbers(distribution: MatrixDistribution, matrix: ReceiptMatrix) -> str:
    """The documents a distribution carried as numbers of the documents list (a short hash for
    one that is not on the list)."""
    numbers = {document.sha256: n for n, document in enumerate(matrix.documents, 1)}
    return ", ".join(
        str(numbers[sha]) if sha in numbers else sha[:12] for sha in distribution.documents
    )


# ============================================================================================
# CSV
# ============================================================================================

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(text: str) -> str:
    """A text field Excel will not run as a formula (a DSN's diagnostic text comes from
    outside)."""
    text = one_line(text)
    return "'" + text if text.startswith(_FORMULA_START) else text


def render_csv(matrix: ReceiptMatrix) -> bytes:
    """One row per (councillor, distribution), for Excel with Polish settings: UTF-8 with BOM,
    ";" between fields, CRLF line ends, one header row (so the autofilter works directly).
    Every event kind has a local-time column Excel reads as a date and an ISO UTC column."""
    language = matrix.language
    by_id = _distributions_by_id(matrix)
    documents = {document.sha256: document for document in matrix.documents}
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    header = [
        label(language, "no"),
        label(language, "councillor"),
        label(language, "address"),
        label(language, "session_col"),
        label(language, "distribution_id"),
        label(language, "distribution_kind"),
        "Message-ID",
        label(language, "state"),
        label(language, "state_code"),
    ]
    for kind in EVENT_ORDER:
        name = state_label(kind, language)
        header.append(label(language, "local", label=name))
        header.append(label(language, "utc", label=name))
    header += [
        label(language, "notes"),
        label(language, "documents_sha"),
        label(language, "documents_names"),
    ]
    writer.writerow(header)
    for number, row in enumerate(matrix.rows, 1):
        for cell in _cells_or_none(row):
            writer.writerow(
                _csv_row(number, row, cell, matrix.session_number, by_id, documents, language)
            )
    return buffer.getvalue().encode("utf-8-sig")


def _csv_row(
    number: int,
    row: MatrixRow,
    cell: MatrixCell | None,
    session_number: str,
    by_id: Mapping[int, MatrixDistribution],
    documents: Mapping[str, MatrixDocument],
    language: str,
) -> list[str]:
    start = [str(number), _csv_text(row.name)]
    if cell is None:
        blanks = [""] * (2 * len(EVENT_ORDER) + 3)
        return [
            *start,
            _csv_text(row.address),
            _csv_text(session_number),
            "",
            "",
            "",
            label(language, "not_sent"),
            "",
            *blanks,
        ]
    distribution = by_id.get(cell.distribution_id)
    carried = distribution.documents if distribution else ()
    values = [
        *start,
        _csv_text(cell.address or row.address),
        _csv_text(session_number),
        str(cell.distribution_id),
        distribution_kind_label(distribution.kind, language) if distribution else "",
        _csv_text(cell.message_id),
        state_label(cell.state.state, language),
        cell.state.state.value,
    ]
    for kind in EVENT_ORDER:
        moment = cell.state.time_of(kind)
        values.append(
            local_time(moment).strftime("%Y-%m-%d %H:%M:%S") if moment is not None else ""
        )
        values.append(iso_utc(moment) or "")
    values.append(_csv_text(cell_notes(cell, language, limit=None)))
    values.append(" ".join(carried))
    values.append(
        _csv_text(" | ".join(documents[sha].name if sha in documents else sha for sha in carried))
    )
    return values


# ============================================================================================
# JSON
# ============================================================================================

JSON_FORMAT = "mailsvc.receipts/1"


def render_json(matrix: ReceiptMatrix) -> dict[str, object]:
    """Everything in the matrix as plain JSON values (every event with its evidence), times as
    ISO 8601 UTC with "Z"; labels in the matrix's language beside the stable codes."""
    language = matrix.language
    counts = summary(matrix.rows)
    session_at = session_local_time(matrix.session_at)
    return {
        "format": JSON_FORMAT,
        "language": language,
        "council": matrix.council,
        "session": {
            "number": matrix.session_number,
            "kind": matrix.session_kind,
            "at": iso_utc(session_at),
            "at_local": session_at.isoformat(),
            "place": matrix.place,
        },
        "generated_at": iso_utc(matrix.generated_at),
        "documents": [
            {
                "name": document.name,
                "agenda_item": document.agenda_item,
                "pages": document.pages,
                "size": document.size,
                "sha256": document.sha256,
            }
            for document in matrix.documents
        ],
        "distributions": [
            {
                "id": distribution.id,
                "kind": distribution.kind,
                "scheduled_for": iso_utc(distribution.scheduled_for),
                "sent_at": iso_utc(distribution.sent_at),
                "late": distribution.late,
                "override_reason": distribution.override_reason,
                "documents": list(distribution.documents),
            }
            for distribution in matrix.distributions
        ],
        "rows": [
            {
                "name": row.name,
                "address": row.address,
                "cells": [_json_cell(cell, language) for cell in row.cells],
            }
            for row in matrix.rows
        ],
        "summary": {state.value: counts[state] for state in EventKind if state in counts},
    }


def _json_cell(cell: MatrixCell, language: str) -> dict[str, object]:
    return {
        "distribution_id": cell.distribution_id,
        "address": cell.address,
        "message_id": cell.message_id,
        "state": cell.state.state.value,
        "state_label": state_label(cell.state.state, language),
        "times": {
            kind.value: iso_utc(cell.state.time_of(kind))
            for kind in EVENT_ORDER
            if cell.state.time_of(kind) is not None
        },
        "events": [
            {
                "kind": event.kind.value,
                "at": iso_utc(event.at),
                "source": event.source.value,
                "evidence": event.evidence,
            }
            for event in sorted(cell.events, key=lambda event: event.at)
        ],
    }


# ============================================================================================
# PDF
# ============================================================================================


def render_pdf(matrix: ReceiptMatrix, *, font_dir: Path = FONT_DIR) -> bytes:
    """The report for the minutes: A4 landscape, header, documents with full SHA-256,
    distributions, summary, legend, the councillor x distribution table (header repeated on
    every page, states written out and colour-coded), and a line for the clerk's signature."""
    language = matrix.language
    generated = format_local(local_time(matrix.generated_at), language, seconds=True)
    title = f"{label(language, 'title')} — {matrix.council}, {matrix.session_number}"
    pdf = new_pdf(
        orientation="L",
        running_head=title,
        footer_note=label(language, "generated_short", at=generated),
        language=language,
        created_at=matrix.generated_at,
        title=title,
        font_dir=font_dir,
    )
    pdf.set_author(matrix.council)
    pdf.set_subject(label(language, "session", number=matrix.session_number, kind=""))

    header = _header_lines(matrix)
    pdf.heading(header[0], size=13, room=0)
    for line in header[1:]:
        pdf.paragraph(line, size=9)

    pdf.heading(label(language, "documents"))
    _pdf_documents(pdf, matrix)
    pdf.heading(label(language, "distributions"))
    _pdf_distributions(pdf, matrix)
    pdf.heading(label(language, "summary"))
    _pdf_summary(pdf, matrix)
    pdf.heading(label(language, "legend"))
    _pdf_legend(pdf, language)
    pdf.heading(label(language, "matrix"), room=40)
    _pdf_matrix(pdf, matrix)

    if pdf.get_y() + 25 > pdf.page_break_trigger:
        pdf.add_page()
    pdf.ln(12)
    pdf.paragraph(label(language, "signature"), size=9)
    return bytes(pdf.output())


def _state_fill(column: int, state: EventKind) -> dict[int, RGB]:
    fill = STATE_FILLS.get(state)
    return {column: fill} if fill is not None else {}


def _pdf_documents(pdf: ReportPdf, matrix: ReceiptMatrix) -> None:
    language = matrix.language
    pdf.set_font("DejaVuMono", "", 7)
    sha_width = pdf.get_string_width("0" * 64) + 2 * 0.8 + 1
    rest = pdf.epw - 8 - 12 - 24 - sha_width
    table = PdfTable(
        pdf,
        [
            Column(label(language, "no"), 8, align="R"),
            Column(label(language, "name"), rest * 0.5, max_lines=3),
            Column(label(language, "agenda_item"), rest * 0.5, max_lines=3),
            Column(label(language, "pages"), 12, align="R"),
            Column(label(language, "size"), 24, align="R"),
            Column(label(language, "sha256"), sha_width, mono=True, max_lines=1),
        ],
    )
    table.start()
    for number, document in enumerate(matrix.documents, 1):
        table.row(
            [
                str(number),
                document.name,
                document.agenda_item or label(language, "whole_session"),
                "?" if document.pages is None else str(document.pages),
                format_bytes_exact(document.size, language),
                document.sha256,
            ]
        )


def _pdf_distributions(pdf: ReportPdf, matrix: ReceiptMatrix) -> None:
    language = matrix.language
    fixed = 18 + 30 + 30 + 30 + 18 + 30
    table = PdfTable(
        pdf,
        [
            Column(label(language, "distribution"), 18),
            Column(label(language, "kind"), 30),
            Column(label(language, "scheduled"), 30),
            Column(label(language, "sent"), 30),
            Column(label(language, "late"), 18),
            Column(label(language, "carried"), 30, max_lines=3),
            Column(label(language, "override"), pdf.epw - fixed, max_lines=4),
        ],
    )
    table.start()
    for distribution in matrix.distributions:
        table.row(
            [
                f"#{distribution.id}",
                distribution_kind_label(distribution.kind, language),
                _local_or_blank(distribution.scheduled_for, language),
                _local_or_blank(distribution.sent_at, language),
                label(language, "yes" if distribution.late else "no_"),
                _document_numbers(distribution, matrix),
                distribution.override_reason,
            ],
            fills={4: STATE_FILLS[EventKind.DELAYED]} if distribution.late else None,
        )


def _pdf_summary(pdf: ReportPdf, matrix: ReceiptMatrix) -> None:
    language = matrix.language
    by_id = _distributions_by_id(matrix)
    per_distribution: Counter[tuple[int, EventKind]] = Counter()
    for row in matrix.rows:
        for cell in row.cells:
            per_distribution[(cell.distribution_id, cell.state.state)] += 1
    ids = [distribution.id for distribution in matrix.distributions]
    ids += sorted({key[0] for key in per_distribution} - set(ids))
    totals = summary(matrix.rows)
    each = min(30.0, (pdf.epw - 40 - 22) / max(len(ids), 1))
    table = PdfTable(
        pdf,
        [
            Column(label(language, "state"), 40),
            *(Column(_distribution_title(i, by_id, language), each, align="R") for i in ids),
            Column(label(language, "total"), 22, align="R", bold=True),
        ],
    )
    table.start()
    for state in STATE_ORDER:
        table.row(
            [
                state_label(state, language),
                *(str(per_distribution[(i, state)]) for i in ids),
                str(totals.get(state, 0)),
            ],
            fills=_state_fill(0, state),
        )
    pdf.paragraph(label(language, "councillors", count=len(matrix.rows)), size=8)


def _pdf_legend(pdf: ReportPdf, language: str) -> None:
    table = PdfTable(
        pdf,
        [
            Column(label(language, "state"), 40),
            Column("", pdf.epw - 40),
        ],
    )
    for state in STATE_ORDER:
        table.row(
            [state_label(state, language), state_meaning(state, language)],
            fills=_state_fill(0, state),
        )


def _pdf_matrix(pdf: ReportPdf, matrix: ReceiptMatrix) -> None:
    language = matrix.language
    by_id = _distributions_by_id(matrix)
    # 6.5 pt keeps a full "05.03.2026 14:03" in 23 mm and leaves room for names and addresses.
    times = 23.0
    fixed = 9 + 25 + 20 + 4 * times
    free = pdf.epw - fixed
    columns = [
        Column(label(language, "no"), 9, align="R"),
        Column(label(language, "councillor"), free * 0.31, bold=True),
        Column(label(language, "address"), free * 0.32),
        Column(label(language, "distribution"), 25),
        Column(label(language, "state"), 20),
        Column(state_label(EventKind.QUEUED, language).capitalize(), times),
        Column(state_label(EventKind.DELIVERED, language).capitalize(), times),
        Column(state_label(EventKind.OPENED, language).capitalize(), times),
        Column(state_label(EventKind.ACKNOWLEDGED, language).capitalize(), times),
        Column(label(language, "notes"), free * 0.37, max_lines=4),
    ]
    table = PdfTable(pdf, columns, font_size=6.5)
    table.start()
    for number, row in enumerate(matrix.rows, 1):
        previous_address = ""
        for position, cell in enumerate(_cells_or_none(row)):
            if cell is None:
                full = [str(number), row.name, row.address, "—", label(language, "not_sent")]
                table.row([*full, "", "", "", "", ""])
                continue
            address = cell.address or row.address
            state = cell.state.state
            rest = [
                _distribution_title(cell.distribution_id, by_id, language),
                state_label(state, language),
                *(
                    _local_or_blank(cell.state.time_of(kind), language)
                    for kind in (
                        EventKind.QUEUED,
                        EventKind.DELIVERED,
                        EventKind.OPENED,
                        EventKind.ACKNOWLEDGED,
                    )
                ),
                cell_notes(cell, language),
            ]
            full = [str(number), row.name, address, *rest]
            if position == 0:
                shown = full
            else:
                shown = ["", "", address if address != previous_address else "", *rest]
            table.row(shown, fills=_state_fill(4, state), on_new_page=full)
            previous_address = address
