"""The receipts report as plain text for a terminal (``mailsvc sessions receipts``)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from datetime import tzinfo

from mailsvc.domain.localtime import local_time
from mailsvc.domain.receipt_states import (
    MatrixDistribution,
    MatrixDocument,
    ReceiptMatrix,
    summary,
)
from mailsvc.domain.vocabulary import state_label, state_meaning
from mailsvc.domain.wording import format_bytes_exact
from mailsvc.receipts.report.facts import (
    council_zone,
    distribution_title,
    distributions_by_id,
    document_numbers,
    format_local,
    header_lines,
    local_or_blank,
    one_line,
)
from mailsvc.receipts.report.labels import STATE_ORDER, distribution_kind_label, label

_MIN_NAME = 14


def _clip(text: str, width: int) -> str:
    text = one_line(text)
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def render_table(matrix: ReceiptMatrix, *, width: int = 120) -> str:
    """The report as plain text for a terminal: the header, documents and distributions, then
    one line per councillor with the state (and its local time) in each distribution, then the
    summary and the legend. The table narrows names and drops times to fit ``width``."""
    language = matrix.language
    zone = council_zone(matrix)
    by_id = distributions_by_id(matrix)
    out: list[str] = []

    def para(text: str, indent: str = "") -> None:
        out.extend(
            textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent + "  ")
            or [""]
        )

    for line in header_lines(matrix):
        para(line)
    out.append("")
    out.append(label(language, "documents") + ":")
    for number, document in enumerate(matrix.documents, 1):
        para(_document_line(number, document, language), "  ")
        out.append(f"     SHA-256 {document.sha256}")
    out.append("")
    out.append(label(language, "distributions") + ":")
    for distribution in matrix.distributions:
        para(_distribution_line(distribution, matrix, zone), "  ")
    out.append("")

    distribution_ids = [distribution.id for distribution in matrix.distributions]
    for row in matrix.rows:  # ids that only appear in cells still get a column
        for cell in row.cells:
            if cell.distribution_id not in distribution_ids:
                distribution_ids.append(cell.distribution_id)
    out.extend(_table_lines(matrix, distribution_ids, by_id, width, zone))
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
    zone: tzinfo,
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
            when = format_local(local_time(moment, zone), language, short=True) if moment else ""
            line.append((state_label(state, language), when))
        states.append(line)

    titles = [distribution_title(i, by_id, language) for i in distribution_ids]
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


def _document_line(number: int, document: MatrixDocument, language: str) -> str:
    item = document.agenda_item or label(language, "whole_session")
    pages = "?" if document.pages is None else str(document.pages)
    return (
        f"{number}. {document.name} — {item}; "
        f"{label(language, 'pages').lower()}: {pages}; "
        f"{format_bytes_exact(document.size, language)}"
    )


def _distribution_line(
    distribution: MatrixDistribution, matrix: ReceiptMatrix, zone: tzinfo
) -> str:
    language = matrix.language
    parts = [
        f"#{distribution.id} {distribution_kind_label(distribution.kind, language)}",
        f"{label(language, 'scheduled').lower()}: "
        f"{local_or_blank(distribution.scheduled_for, language, zone) or '—'}",
        f"{label(language, 'sent').lower()}: "
        f"{local_or_blank(distribution.sent_at, language, zone) or '—'}",
    ]
    if distribution.late:
        parts.append(label(language, "late").lower())
    if distribution.override_reason:
        parts.append(f"{label(language, 'override').lower()}: {distribution.override_reason}")
    numbers = document_numbers(distribution, matrix)
    parts.append(f"{label(language, 'carried').lower()}: {numbers or '—'}")
    return ", ".join(parts)
