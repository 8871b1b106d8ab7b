"""The receipts report as the PDF a clerk annexes to the minutes."""

from __future__ import annotations

from collections import Counter
from datetime import tzinfo
from pathlib import Path

from mailsvc.domain.localtime import local_time
from mailsvc.domain.receipt_states import EventKind, ReceiptMatrix, summary
from mailsvc.domain.vocabulary import state_label, state_meaning
from mailsvc.domain.wording import format_bytes_exact
from mailsvc.receipts.report.facts import (
    cell_notes,
    cells_or_none,
    council_zone,
    distribution_title,
    distributions_by_id,
    document_numbers,
    format_local,
    header_lines,
    local_or_blank,
)
from mailsvc.receipts.report.labels import STATE_ORDER, distribution_kind_label, label
from mailsvc.receipts.report.pdfkit import FONT_DIR, RGB, Column, PdfTable, ReportPdf, new_pdf

# Light fills that keep black text readable; the state is always written out as well.
STATE_FILLS: dict[EventKind, RGB] = {
    EventKind.ACKNOWLEDGED: (140, 210, 140),
    EventKind.OPENED: (205, 238, 200),
    EventKind.DELIVERED: (205, 238, 200),
    EventKind.DELIVERED_REMOTE: (205, 238, 200),
    EventKind.SENT: (225, 225, 225),
    EventKind.QUEUED: (225, 225, 225),
    EventKind.DELAYED: (250, 225, 170),
    EventKind.FAILED: (240, 150, 150),
}


def render_pdf(matrix: ReceiptMatrix, *, font_dir: Path = FONT_DIR) -> bytes:
    """The report for the minutes: A4 landscape, header, documents with full SHA-256,
    distributions, summary, legend, the councillor x distribution table (header repeated on
    every page, states written out and colour-coded), and a line for the clerk's signature."""
    language = matrix.language
    zone = council_zone(matrix)
    generated = format_local(local_time(matrix.generated_at, zone), language, seconds=True)
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

    header = header_lines(matrix)
    pdf.heading(header[0], size=13, room=0)
    for line in header[1:]:
        pdf.paragraph(line, size=9)

    pdf.heading(label(language, "documents"))
    documents_section(pdf, matrix)
    pdf.heading(label(language, "distributions"))
    distributions_section(pdf, matrix, zone)
    pdf.heading(label(language, "summary"))
    summary_section(pdf, matrix)
    pdf.heading(label(language, "legend"))
    legend_section(pdf, language)
    pdf.heading(label(language, "matrix"), room=40)
    matrix_section(pdf, matrix, zone)

    if pdf.get_y() + 25 > pdf.page_break_trigger:
        pdf.add_page()
    pdf.ln(12)
    pdf.paragraph(label(language, "signature"), size=9)
    return bytes(pdf.output())


def _state_fill(column: int, state: EventKind) -> dict[int, RGB]:
    fill = STATE_FILLS.get(state)
    return {column: fill} if fill is not None else {}


def documents_section(pdf: ReportPdf, matrix: ReceiptMatrix) -> None:
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


def distributions_section(pdf: ReportPdf, matrix: ReceiptMatrix, zone: tzinfo) -> None:
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
                local_or_blank(distribution.scheduled_for, language, zone),
                local_or_blank(distribution.sent_at, language, zone),
                label(language, "yes" if distribution.late else "no_"),
                document_numbers(distribution, matrix),
                distribution.override_reason,
            ],
            fills={4: STATE_FILLS[EventKind.DELAYED]} if distribution.late else None,
        )


def summary_section(pdf: ReportPdf, matrix: ReceiptMatrix) -> None:
    language = matrix.language
    by_id = distributions_by_id(matrix)
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
            *(Column(distribution_title(i, by_id, language), each, align="R") for i in ids),
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


def legend_section(pdf: ReportPdf, language: str) -> None:
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


def matrix_section(pdf: ReportPdf, matrix: ReceiptMatrix, zone: tzinfo) -> None:
    language = matrix.language
    by_id = distributions_by_id(matrix)
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
        for position, cell in enumerate(cells_or_none(row)):
            if cell is None:
                full = [str(number), row.name, row.address, "—", label(language, "not_sent")]
                table.row([*full, "", "", "", "", ""])
                continue
            address = cell.address or row.address
            state = cell.state.state
            rest = [
                distribution_title(cell.distribution_id, by_id, language),
                state_label(state, language),
                *(
                    local_or_blank(moment, language, zone)
                    for moment in (
                        cell.state.time_of(EventKind.QUEUED),
                        # One column for delivery: to our mailbox, else at the remote end.
                        cell.state.time_of(EventKind.DELIVERED)
                        or cell.state.time_of(EventKind.DELIVERED_REMOTE),
                        cell.state.time_of(EventKind.OPENED),
                        cell.state.time_of(EventKind.ACKNOWLEDGED),
                    )
                ),
                cell_notes(cell, language, zone),
            ]
            full = [str(number), row.name, address, *rest]
            if position == 0:
                shown = full
            else:
                shown = ["", "", address if address != previous_address else "", *rest]
            table.row(shown, fills=_state_fill(4, state), on_new_page=full)
            previous_address = address
