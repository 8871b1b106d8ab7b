"""A copy that left through the smarthost and came back with a success DSN: "delivered (remote)"
in every report and on the clerk page, with the same words."""

from __future__ import annotations

import json
from dataclasses import replace

from mailsvc.domain.receipt_states import (
    EventKind,
    EventSource,
    MatrixRow,
    ReceiptEvent,
    ReceiptMatrix,
)
from mailsvc.domain.vocabulary import state_label, state_meaning
from mailsvc.receipts.report import render_csv, render_json, render_pdf, render_table
from mailsvc.web.clerk_receipts import document_grid, state_counts
from tests.unit.test_reports import (
    DISTRIBUTIONS,
    SHA_AGENDA,
    at,
    cell,
    csv_rows,
    event,
    flat,
    pdf_pages,
    small_matrix,
    warsaw,
)

MAYOR = "burmistrz@urzad.example"
DSN_EVIDENCE = "DSN from mx.urzad.example: delivered 2.0.0 (permanent)"


def remote_history(dsn: bool = True) -> tuple[ReceiptEvent, ...]:
    smtp = EventSource.SMTP
    events: tuple[ReceiptEvent, ...] = (
        event(EventKind.QUEUED, at(2, 9, 1), source=EventSource.SCHEDULER),
        event(EventKind.SENT, at(2, 9, 2), "SMTP smarthost: attempt 1", smtp),
        event(EventKind.SENT, at(2, 9, 3), "SMTP smarthost: 250 2.0.0 Ok: queued", smtp),
    )
    if dsn:
        events += (event(EventKind.DELIVERED_REMOTE, at(2, 9, 40), DSN_EVIDENCE, EventSource.DSN),)
    return events


def with_mayor(language: str = "pl", *, dsn: bool = True) -> ReceiptMatrix:
    base = small_matrix(language)
    mayor = MatrixRow("", MAYOR, (cell(1, MAYOR, *remote_history(dsn)),))
    return replace(base, rows=(*base.rows, mayor))


def test_csv_names_the_state_and_its_time() -> None:
    rows = csv_rows(render_csv(with_mayor()))

    mayor = next(r for r in rows if r["Adres"] == MAYOR)
    assert mayor["Stan"] == "doręczono (zdalnie)"
    assert mayor["Kod stanu"] == "delivered-remote"
    assert mayor["doręczono (zdalnie) (UTC)"] == "2026-03-02T09:40:00Z"
    assert mayor["doręczono (zdalnie) (czas lokalny)"] == warsaw(at(2, 9, 40)).strftime(
        "%Y-%m-%d %H:%M:%S"
    )
    assert mayor["doręczono (UTC)"] == ""  # the smarthost's 250 is not a delivery
    assert mayor["wysłano (UTC)"] == "2026-03-02T09:02:00Z"


def test_without_a_dsn_the_copy_stays_sent() -> None:
    rows = csv_rows(render_csv(with_mayor(dsn=False)))

    mayor = next(r for r in rows if r["Adres"] == MAYOR)
    assert (mayor["Stan"], mayor["Kod stanu"]) == ("wysłano", "sent")


def test_json_has_the_state_its_label_time_and_evidence() -> None:
    report = render_json(with_mayor("en"))

    back = json.loads(json.dumps(report, ensure_ascii=False))
    mayor = next(r for r in back["rows"] if r["address"] == MAYOR)["cells"][0]
    assert mayor["state"] == "delivered-remote"
    assert mayor["state_label"] == "delivered (remote)"
    assert mayor["times"]["delivered-remote"] == "2026-03-02T09:40:00Z"
    assert "delivered" not in mayor["times"]
    assert mayor["events"][-1] == {
        "kind": "delivered-remote",
        "at": "2026-03-02T09:40:00Z",
        "source": "dsn",
        "evidence": DSN_EVIDENCE,
    }
    assert back["summary"]["delivered-remote"] == 1


def test_pdf_row_legend_and_delivery_column() -> None:
    matrix = with_mayor()

    text = flat(pdf_pages(render_pdf(matrix)))

    label = state_label(EventKind.DELIVERED_REMOTE, "pl")
    assert f"{label} {state_meaning(EventKind.DELIVERED_REMOTE, 'pl')}" in text
    row = text[text.index(MAYOR) :]
    # Distribution, state, then the queued and delivered columns (local time).
    queued = warsaw(at(2, 9, 1)).strftime("%d.%m.%Y %H:%M")
    delivered = warsaw(at(2, 9, 40)).strftime("%d.%m.%Y %H:%M")
    assert row.startswith(f"{MAYOR} #1 zawiadomienie {label} {queued} {delivered}"), row[:160]


def test_pdf_in_english_uses_the_english_label() -> None:
    text = flat(pdf_pages(render_pdf(with_mayor("en"))))

    assert "delivered (remote)" in text


def test_terminal_table_summary_and_legend() -> None:
    text = render_table(with_mayor(), width=200)

    assert "doręczono (zdalnie) 1" in text  # the summary
    meaning = state_meaning(EventKind.DELIVERED_REMOTE, "pl")
    assert f"doręczono (zdalnie) — {meaning}" in " ".join(text.split())


def test_clerk_page_grid_and_counts_use_the_same_label() -> None:
    matrix = with_mayor()

    grid = document_grid(matrix, "pl")
    counts = state_counts(matrix)

    mayor = next(r for r in grid["rows"] if r["address"] == MAYOR)
    agenda = next(c for c in mayor["cells"] if c["sha256"] == SHA_AGENDA)
    assert agenda == {
        "sha256": SHA_AGENDA,
        "state": "delivered-remote",
        "label": state_label(EventKind.DELIVERED_REMOTE, "pl"),
    }
    assert counts[EventKind.DELIVERED_REMOTE] == 1


def test_a_document_carried_twice_shows_the_furthest_state() -> None:
    # Distribution 1 reached the mayor's server; distribution 2, carrying the same agenda,
    # only the smarthost: the agenda's cell shows the remote delivery.
    base = with_mayor()
    second = replace(DISTRIBUTIONS[1], documents=(SHA_AGENDA,))
    mayor = MatrixRow(
        "",
        MAYOR,
        (
            cell(1, MAYOR, *remote_history()),
            cell(2, MAYOR, *remote_history(dsn=False)),
        ),
    )
    matrix = replace(base, distributions=(DISTRIBUTIONS[0], second), rows=(mayor,))

    (row,) = document_grid(matrix, "pl")["rows"]
    agenda = next(c for c in row["cells"] if c["sha256"] == SHA_AGENDA)
    assert agenda["state"] == "delivered-remote"
