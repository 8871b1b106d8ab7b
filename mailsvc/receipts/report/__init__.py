"""The receipts report a clerk annexes to the minutes: terminal table, CSV, JSON and PDF.

All four renderers are pure functions of a :class:`ReceiptMatrix`: the same matrix gives the same
bytes (the PDF's creation date is the matrix's ``generated_at``), so a report can be produced
again later and compared with the annexed copy. Local times are in the matrix's ``time_zone``
(the configured ``distribution.timezone``), and the header names that zone.

- :mod:`.labels` — the report's own words (states and kinds come from the domain vocabulary);
- :mod:`.facts` — times, notes and header lines every renderer shares;
- :mod:`.pdfkit` — fonts, pages and tables over fpdf2, shared with the paper print list;
- :mod:`.text`, :mod:`.csvfile`, :mod:`.jsonfile`, :mod:`.pdf` — one renderer each.
"""

from __future__ import annotations

from mailsvc.receipts.report.csvfile import render_csv
from mailsvc.receipts.report.facts import (
    ReportError,
    cell_notes,
    council_zone,
    format_local,
    iso_utc,
    one_line,
)
from mailsvc.receipts.report.jsonfile import JSON_FORMAT, render_json
from mailsvc.receipts.report.labels import (
    EVENT_ORDER,
    LABELS,
    STATE_ORDER,
    distribution_kind_label,
    label,
    session_kind_label,
)
from mailsvc.receipts.report.pdf import STATE_FILLS, render_pdf
from mailsvc.receipts.report.pdfkit import (
    FONT_DIR,
    FONT_FILES,
    RGB,
    Column,
    PdfTable,
    ReportPdf,
    fit_text,
    new_pdf,
    printable,
    wrap_text,
)
from mailsvc.receipts.report.text import render_table

__all__ = [
    "EVENT_ORDER",
    "FONT_DIR",
    "FONT_FILES",
    "JSON_FORMAT",
    "LABELS",
    "RGB",
    "STATE_FILLS",
    "STATE_ORDER",
    "Column",
    "PdfTable",
    "ReportError",
    "ReportPdf",
    "cell_notes",
    "council_zone",
    "distribution_kind_label",
    "fit_text",
    "format_local",
    "iso_utc",
    "label",
    "new_pdf",
    "one_line",
    "printable",
    "render_csv",
    "render_json",
    "render_pdf",
    "render_table",
    "session_kind_label",
    "wrap_text",
]
