"""The receipts report as CSV for Excel with Polish settings.

Named ``csvfile`` rather than ``csv`` so that it is never mistaken for the standard library's
module it uses.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import tzinfo

from mailsvc.domain.localtime import local_time
from mailsvc.domain.receipt_states import (
    MatrixCell,
    MatrixDistribution,
    MatrixDocument,
    MatrixRow,
    ReceiptMatrix,
)
from mailsvc.domain.vocabulary import state_label
from mailsvc.receipts.report.facts import (
    cell_notes,
    cells_or_none,
    council_zone,
    distributions_by_id,
    iso_utc,
    one_line,
)
from mailsvc.receipts.report.labels import EVENT_ORDER, distribution_kind_label, label

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(text: str) -> str:
    """A text field Excel will not run as a formula (a DSN's diagnostic text comes from
    outside)."""
    text = one_line(text)
    return "'" + text if text.startswith(_FORMULA_START) else text


def render_csv(matrix: ReceiptMatrix) -> bytes:
    """One row per (councillor, distribution), for Excel with Polish settings: UTF-8 with BOM,
    ";" between fields, CRLF line ends, one header row (so the autofilter works directly).
    Every event kind has a local-time column (the matrix's zone) Excel reads as a date and an
    ISO UTC column."""
    language = matrix.language
    zone = council_zone(matrix)
    by_id = distributions_by_id(matrix)
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
        for cell in cells_or_none(row):
            writer.writerow(
                _csv_row(number, row, cell, matrix.session_number, by_id, documents, language, zone)
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
    zone: tzinfo,
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
            local_time(moment, zone).strftime("%Y-%m-%d %H:%M:%S") if moment is not None else ""
        )
        values.append(iso_utc(moment) or "")
    values.append(_csv_text(cell_notes(cell, language, zone, limit=None)))
    values.append(" ".join(carried))
    values.append(
        _csv_text(" | ".join(documents[sha].name if sha in documents else sha for sha in carried))
    )
    return values
