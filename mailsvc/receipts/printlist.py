"""The paper fallback: who needs a printed copy of which session documents, and what it costs.

Until the council's electronic cut-over date every distribution also goes out on paper to each
of its recipients; from that date on, paper is only for councillors who have not acknowledged
the electronic one (its delivery failed, or they simply have not confirmed it).

A document whose page count is unknown is counted as one page and flagged ("*"), so a print
run is never planned short without anyone noticing.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from itertools import groupby
from pathlib import Path
from zoneinfo import ZoneInfo

from mailsvc.domain.localtime import local_time, session_local_time
from mailsvc.domain.receipt_states import (
    EventKind,
    MatrixDistribution,
    MatrixDocument,
    ReceiptMatrix,
)
from mailsvc.domain.vocabulary import pick
from mailsvc.receipts.report.facts import council_zone, format_local
from mailsvc.receipts.report.labels import distribution_kind_label, label
from mailsvc.receipts.report.pdfkit import FONT_DIR, Column, PdfTable, new_pdf

_LABELS: dict[str, dict[str, str]] = {
    "title": {"pl": "Lista wydruków", "en": "Print list"},
    "session": {"pl": "sesja nr {number}", "en": "session {number}"},
    "session_at": {"pl": "Termin sesji: {at}", "en": "Session date: {at}"},
    "totals": {
        "pl": "Adresatów: {recipients}, stron razem: {pages}",
        "en": "Recipients: {recipients}, pages in total: {pages}",
    },
    "estimated": {
        "pl": "* liczba stron nieznana: przyjęto 1 stronę na dokument",
        "en": "* page count unknown: counted as 1 page per document",
    },
    "no_district": {"pl": "bez okręgu", "en": "no district"},
    "district": {"pl": "Okręg", "en": "District"},
    "reason": {"pl": "Powód", "en": "Reason"},
    "pages_total": {"pl": "Razem stron", "en": "Pages in total"},
    "pages_short": {"pl": "str.", "en": "p."},
    "no": {"pl": "Lp.", "en": "No."},
    "councillor": {"pl": "Radny/Radna", "en": "Councillor"},
    "address": {"pl": "Adres", "en": "Address"},
    "documents": {"pl": "Dokumenty", "en": "Documents"},
    "pages": {"pl": "Stron", "en": "Pages"},
    "handed_over": {"pl": "Odbiór (data, podpis)", "en": "Received (date, signature)"},
    "nothing": {"pl": "Nikt nie potrzebuje wydruku.", "en": "Nobody needs a paper copy."},
}

REASONS: dict[str, dict[str, str]] = {
    "before_cutover": {
        "pl": "przed przejściem na doręczenia elektroniczne",
        "en": "before the electronic cut-over",
    },
    "failed": {
        "pl": "doręczenie elektroniczne nie powiodło się",
        "en": "electronic delivery failed",
    },
    "not_acknowledged": {"pl": "brak potwierdzenia odbioru", "en": "receipt not acknowledged"},
}


def _text(language: str, key: str, **values: object) -> str:
    return pick(_LABELS[key], language).format(**values)


# --- What to print ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PrintItem:
    """One councillor's paper copy: the documents to print and why."""

    name: str
    address: str
    district: str
    documents: tuple[MatrixDocument, ...]
    reason: str

    @property
    def pages(self) -> int:
        """Sheets' worth of pages to print, a document of unknown length counted as one."""
        return sum(document_pages(document)[0] for document in self.documents)

    @property
    def pages_estimated(self) -> bool:
        """Whether :attr:`pages` counts some document whose page count is unknown."""
        return any(document_pages(document)[1] for document in self.documents)


def document_pages(document: MatrixDocument) -> tuple[int, bool]:
    """(pages to print, whether that is a guess): an unknown count is taken as 1."""
    if document.pages is None or document.pages < 1:
        return 1, True
    return document.pages, False


def print_items(
    matrix: ReceiptMatrix, *, cutover: date, districts: Mapping[str, str] | None = None
) -> list[PrintItem]:
    """Who needs paper, in the matrix's row order: every recipient of a distribution dated
    (sent, else scheduled, in the matrix's time zone) before ``cutover``, and from ``cutover``
    on every recipient who has not acknowledged it. ``districts`` maps addresses to district
    names.

    A councillor no distribution reached is not listed: there is nothing recorded to print.
    """
    language = matrix.language
    by_id = {distribution.id: distribution for distribution in matrix.distributions}
    documents = {document.sha256: document for document in matrix.documents}
    items = []
    for row in matrix.rows:
        wanted: dict[str, MatrixDocument] = {}
        reasons: list[str] = []
        for cell in row.cells:
            distribution = by_id.get(cell.distribution_id)
            if distribution is None:
                continue
            if _day_of(distribution, matrix) < cutover:
                key = "before_cutover"
            elif cell.state.state == EventKind.ACKNOWLEDGED:
                continue
            elif cell.state.state == EventKind.FAILED:
                key = "failed"
            else:
                key = "not_acknowledged"
            kind = distribution_kind_label(distribution.kind, language)
            reasons.append(f"#{distribution.id} {kind}: {pick(REASONS[key], language)}")
            for sha in distribution.documents:
                if sha in documents:
                    wanted.setdefault(sha, documents[sha])
        if reasons:
            items.append(
                PrintItem(
                    name=row.name,
                    address=row.address,
                    district=(districts or {}).get(row.address, ""),
                    documents=tuple(wanted.values()),
                    reason="; ".join(reasons),
                )
            )
    return items


def _day_of(distribution: MatrixDistribution, matrix: ReceiptMatrix) -> date:
    moment = distribution.sent_at or distribution.scheduled_for or matrix.generated_at
    return local_time(moment, council_zone(matrix)).date()


def paper_cost(pages: int, recipients: int, cost_per_page: Decimal) -> Decimal:
    """What printing ``pages`` pages for each of ``recipients`` costs, rounded to the grosz.

    ``cost_per_page`` must be a Decimal: a float price (0.1) is not exact and would round wrong.
    """
    if isinstance(pages, bool) or not isinstance(pages, int) or pages < 0:
        raise ValueError(f"pages must be a whole number ≥ 0, not {pages!r}")
    if isinstance(recipients, bool) or not isinstance(recipients, int) or recipients < 0:
        raise ValueError(f"recipients must be a whole number ≥ 0, not {recipients!r}")
    if not isinstance(cost_per_page, Decimal) or not cost_per_page.is_finite():
        raise TypeError(f"cost_per_page must be a finite Decimal, not {cost_per_page!r}")
    if cost_per_page < 0:
        raise ValueError(f"cost_per_page must be ≥ 0, not {cost_per_page}")
    return (cost_per_page * pages * recipients).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


# --- Order -----------------------------------------------------------------------------------

_ALPHABET = "aąbcćdeęfghijklłmnńoóprqsśtuvwxyzźż"
_ORDER = {letter: index for index, letter in enumerate(_ALPHABET)}
_PARTS = re.compile(r"(\d+)")


def district_key(district: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key for district names: Polish alphabet (ł after l), numbers by value ("Okręg 2"
    before "Okręg 10"), the empty district last."""
    if not district:
        return ((2, ""),)
    key: list[tuple[int, int | str]] = []
    for part in _PARTS.split(district.casefold()):
        if part.isdigit():
            key.append((0, int(part)))
        elif part:
            key.append((1, "".join(_collation_char(ch) for ch in part)))
    return tuple(key)


def _collation_char(ch: str) -> str:
    # Spaces and punctuation first, then the Polish alphabet, then other letters (é, ü).
    if ch in _ORDER:
        return chr(0x10000 + _ORDER[ch])
    return "\U00010100" + ch if ch.isalpha() else ch


def _by_district(items: Sequence[PrintItem]) -> list[PrintItem]:
    """Items grouped by district for the messengers; the given order is kept within one."""
    return sorted(items, key=lambda item: district_key(item.district))


# --- Rendering -------------------------------------------------------------------------------


def _document_line(document: MatrixDocument, language: str) -> str:
    pages, estimated = document_pages(document)
    mark = "*" if estimated else ""
    return f"{document.name} ({pages}{mark} {_text(language, 'pages_short')})"


def _pages_text(item: PrintItem) -> str:
    return f"{item.pages}*" if item.pages_estimated else str(item.pages)


def _totals(items: Sequence[PrintItem], language: str) -> str:
    pages = sum(item.pages for item in items)
    estimated = any(item.pages_estimated for item in items)
    return _text(
        language, "totals", recipients=len(items), pages=f"{pages}*" if estimated else pages
    )


def render_print_list_text(
    council: str, session_number: str, items: Sequence[PrintItem], language: str = "pl"
) -> str:
    """The print list as plain text, grouped by district, with pages per person and in total."""
    title = f"{_text(language, 'title')} — {council}, "
    title += _text(language, "session", number=session_number)
    out = [title, _totals(items, language), ""]
    if not items:
        out.append(_text(language, "nothing"))
    number = 0
    for district, group in groupby(_by_district(items), key=lambda item: item.district):
        heading = district or _text(language, "no_district")
        out.append(f"{heading[:1].upper()}{heading[1:]}:")
        for item in group:
            number += 1
            out.append(f"  {number}. {item.name} <{item.address}>")
            reason = f"{_text(language, 'reason')}: {item.reason}"
            out.extend(textwrap.wrap(reason, 96, initial_indent="     ", subsequent_indent="     "))
            out.extend(f"     - {_document_line(doc, language)}" for doc in item.documents)
            out.append(f"     {_text(language, 'pages_total')}: {_pages_text(item)}")
        out.append("")
    if any(item.pages_estimated for item in items):
        out.append(_text(language, "estimated"))
    return "\n".join(out).rstrip("\n") + "\n"


def render_print_list_pdf(
    council: str,
    session_number: str,
    session_at: datetime,
    items: Sequence[PrintItem],
    language: str = "pl",
    *,
    time_zone: str,
    generated_at: datetime | None = None,
    font_dir: Path = FONT_DIR,
) -> bytes:
    """The print list as an A4 landscape PDF with a column where the councillor signs for the
    paper copy. Times are shown in ``time_zone`` (the council's, ``distribution.timezone``);
    ``generated_at`` (naive UTC) fixes the creation date so reruns give the same bytes;
    without it the current time is used."""
    zone = ZoneInfo(time_zone)
    title = f"{_text(language, 'title')} — {council}, "
    title += _text(language, "session", number=session_number)
    note = ""
    if generated_at is not None:
        note = format_local(local_time(generated_at, zone), language)
    pdf = new_pdf(
        orientation="L",
        running_head=title,
        footer_note=note,
        language=language,
        created_at=generated_at,
        title=title,
        font_dir=font_dir,
    )
    pdf.set_author(council)
    pdf.heading(title, size=13, room=0)
    when = format_local(session_local_time(session_at, zone), language)
    pdf.paragraph(_text(language, "session_at", at=when), size=9)
    pdf.paragraph(_totals(items, language), size=9)
    pdf.ln(3)

    fixed = 8 + 42 + 48 + 24 + 14 + 36
    table = PdfTable(
        pdf,
        [
            Column(_text(language, "no"), 8, align="R"),
            Column(_text(language, "councillor"), 42, bold=True, max_lines=3),
            Column(_text(language, "address"), 48, max_lines=3),
            Column(_text(language, "district"), 24, max_lines=3),
            Column(_text(language, "documents"), pdf.epw - fixed - 36, max_lines=30),
            Column(_text(language, "pages"), 14, align="R"),
            Column(_text(language, "reason"), 36, max_lines=12),
            Column(_text(language, "handed_over"), 36),
        ],
        font_size=7.5,
    )
    if items:
        table.start()
    else:
        pdf.paragraph(_text(language, "nothing"), size=9)
    for number, item in enumerate(_by_district(items), 1):
        table.row(
            [
                str(number),
                item.name,
                item.address,
                item.district or _text(language, "no_district"),
                "\n".join(_document_line(doc, language) for doc in item.documents) or "—",
                _pages_text(item),
                item.reason,
                "",
            ],
            min_height=12,  # room for a signature
        )
    if any(item.pages_estimated for item in items):
        pdf.ln(2)
        pdf.paragraph(_text(language, "estimated"), size=8)
    if pdf.get_y() + 25 > pdf.page_break_trigger:
        pdf.add_page()
    pdf.ln(12)
    pdf.paragraph(label(language, "signature"), size=9)
    return bytes(pdf.output())
