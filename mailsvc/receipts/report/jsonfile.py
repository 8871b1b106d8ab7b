"""The receipts report as plain JSON values (the API's ``/receipts``, ``--format json``).

Named ``jsonfile`` rather than ``json`` so that it is never mistaken for the standard library.
"""

from __future__ import annotations

from mailsvc.domain.localtime import session_local_time
from mailsvc.domain.receipt_states import EventKind, MatrixCell, ReceiptMatrix, summary
from mailsvc.domain.vocabulary import state_label
from mailsvc.receipts.report.facts import council_zone, iso_utc
from mailsvc.receipts.report.labels import EVENT_ORDER

JSON_FORMAT = "mailsvc.receipts/1"


def render_json(matrix: ReceiptMatrix) -> dict[str, object]:
    """Everything in the matrix as plain JSON values (every event with its evidence), times as
    ISO 8601 UTC with "Z"; labels in the matrix's language beside the stable codes."""
    language = matrix.language
    counts = summary(matrix.rows)
    session_at = session_local_time(matrix.session_at, council_zone(matrix))
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
