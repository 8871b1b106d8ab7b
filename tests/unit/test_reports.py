"""Receipts report (table, CSV, JSON, PDF) and the paper print list.

Reports are read back the way their readers read them: the CSV with the csv module (as Excel
would split it), the PDF with pypdf's text extraction, the JSON through json.dumps/loads.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pypdf import PdfReader

from mailsvc.domain.receipt_states import (
    EventKind,
    EventSource,
    MatrixCell,
    MatrixDistribution,
    MatrixDocument,
    MatrixRow,
    ReceiptEvent,
    ReceiptMatrix,
    derive_state,
)
from mailsvc.receipts.printlist import (
    PrintItem,
    district_key,
    paper_cost,
    print_items,
    render_print_list_pdf,
    render_print_list_text,
)
from mailsvc.receipts.report import (
    ReportError,
    render_csv,
    render_json,
    render_pdf,
    render_table,
)

WARSAW = ZoneInfo("Europe/Warsaw")
SHA_AGENDA = "1f" * 32
SHA_BUDGET = "a7" + "0123456789abcdef" * 3 + "0123456789abcd"
SHA_ANNEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
FAILURE = "550 5.1.1 <lukasz.zolc@rada.example>: Recipient address rejected: mailbox unknown"
DOMAIN = "rada.miasto.example"


def at(day: int, hour: int, minute: int = 0, month: int = 3) -> datetime:
    """A naive UTC time in 2026, the way events are stored."""
    return datetime(2026, month, day, hour, minute)


def event(
    kind: EventKind, when: datetime, evidence: str = "", source: EventSource = EventSource.LMTP
) -> ReceiptEvent:
    return ReceiptEvent(kind=kind, at=when, source=source, evidence=evidence)


def cell(distribution_id: int, address: str, *events: ReceiptEvent) -> MatrixCell:
    return MatrixCell(
        distribution_id=distribution_id,
        address=address,
        message_id=f"<d{distribution_id}.{address}>",
        state=derive_state(events),
        events=events,
    )


def delivered(distribution_id: int, address: str, start: datetime) -> tuple[ReceiptEvent, ...]:
    return (
        event(EventKind.QUEUED, start, source=EventSource.SCHEDULER),
        event(EventKind.SENT, start + timedelta(minutes=1)),
        event(EventKind.DELIVERED, start + timedelta(minutes=2), "250 2.0.0 Ok"),
    )


DOCUMENTS = (
    MatrixDocument("Porządek obrad.pdf", SHA_AGENDA, 48_213, 2, ""),
    MatrixDocument(
        "Projekt uchwały budżetowej — Żółkiewka 2026.pdf",
        SHA_BUDGET,
        2_345_678,
        37,
        "3. Projekt uchwały budżetowej",
    ),
    MatrixDocument("Załącznik — opinia RIO.pdf", SHA_ANNEX, 120_000, None, "3a. Opinia RIO"),
)
DISTRIBUTIONS = (
    MatrixDistribution(1, "notice", at(2, 9), at(2, 9, 1), False, "", (SHA_AGENDA, SHA_BUDGET)),
    MatrixDistribution(
        2,
        "supplement",
        at(4, 9),
        at(5, 13),
        True,
        "Wniosek burmistrza o uzupełnienie porządku obrad (art. 20 ust. 1a)",
        (SHA_ANNEX,),
    ),
)


def small_matrix(language: str = "pl") -> ReceiptMatrix:
    """Four councillors: acknowledged + failed, delivered + opened, delayed only, none."""
    lukasz, zazolc, cma = (f"{local}@{DOMAIN}" for local in ("lukasz.zolc", "zazolc", "cma"))
    rows = (
        MatrixRow(
            "Łukasz Żółć",
            lukasz,
            (
                cell(
                    1,
                    lukasz,
                    *delivered(1, lukasz, at(2, 9, 1)),
                    event(EventKind.OPENED, at(2, 18), "\\Seen", EventSource.IMAP),
                    event(EventKind.ACKNOWLEDGED, at(3, 7, 30), "POST /ack", EventSource.LINK),
                ),
                cell(
                    2,
                    lukasz,
                    event(EventKind.QUEUED, at(5, 13), source=EventSource.SCHEDULER),
                    event(EventKind.FAILED, at(5, 13, 2), FAILURE, EventSource.DSN),
                ),
            ),
        ),
        MatrixRow(
            "Zażółć Gęślą",
            zazolc,
            (
                cell(1, zazolc, *delivered(1, zazolc, at(2, 9, 1))),
                cell(
                    2,
                    zazolc,
                    *delivered(2, zazolc, at(5, 13)),
                    event(EventKind.OPENED, at(6, 8, 15), "MDN displayed", EventSource.MDN),
                ),
            ),
        ),
        MatrixRow(
            "Ćma Źdźbło-Ńęą",
            cma,
            (
                cell(
                    1,
                    cma,
                    event(EventKind.QUEUED, at(2, 9, 1), source=EventSource.SCHEDULER),
                    event(EventKind.DELAYED, at(2, 9, 3), "452 4.2.2 Mailbox full"),
                ),
            ),
        ),
        MatrixRow("Anna Ósma", f"anna.osma@{DOMAIN}", ()),
    )
    return ReceiptMatrix(
        council="Rada Miejska w Żółkiewce",
        session_number="XV/2026",
        session_kind="budget",
        session_at=datetime(2026, 3, 12, 10, 0),  # local time
        place="Sala obrad, ul. Długa 1",
        generated_at=at(6, 12, 30),
        documents=DOCUMENTS,
        distributions=DISTRIBUTIONS,
        rows=rows,
        language=language,
    )


def big_matrix(councillors: int) -> ReceiptMatrix:
    """``councillors`` distinct names with diacritics, two distributions each, mixed states."""
    rows = []
    for number in range(councillors):
        address = f"radny{number:04d}@{DOMAIN}"
        first = delivered(1, address, at(2, 9, 1))
        if number % 3 == 0:
            first += (event(EventKind.ACKNOWLEDGED, at(3, 8), "POST /ack", EventSource.LINK),)
        second: tuple[ReceiptEvent, ...] = (
            event(EventKind.QUEUED, at(5, 13), source=EventSource.SCHEDULER),
        )
        if number % 7 == 0:
            second += (event(EventKind.FAILED, at(5, 13, 5), FAILURE, EventSource.DSN),)
        rows.append(
            MatrixRow(
                f"Żaneta Łęcka-Wójcik {number:04d}",
                address,
                (cell(1, address, *first), cell(2, address, *second)),
            )
        )
    return ReceiptMatrix(
        council="Rada Miasta Gdańska",
        session_number="XL/2026",
        session_kind="ordinary",
        session_at=datetime(2026, 3, 12, 10, 0),
        place="Nowy Ratusz",
        generated_at=at(6, 12, 30),
        documents=DOCUMENTS,
        distributions=DISTRIBUTIONS,
        rows=tuple(rows),
    )


def warsaw(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC).astimezone(WARSAW)


def pdf_pages(data: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(data)).pages]


def flat(pages: list[str]) -> str:
    """All pages' text with line breaks as spaces: a cell's text may be wrapped anywhere."""
    return " ".join(" ".join(pages).split())


def csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=";"))


# --- CSV -------------------------------------------------------------------------------------


def test_csv_is_utf8_with_bom_semicolons_and_crlf_for_excel() -> None:
    data = render_csv(small_matrix())

    assert data.startswith(b"\xef\xbb\xbf")
    text = data.decode("utf-8-sig")
    assert "Żółć" in text
    records = text.split("\r\n")
    assert records[-1] == ""  # every record, the last one too, ends with CRLF
    assert not any("\n" in record or "\r" in record for record in records)
    header = next(csv.reader([records[0]], delimiter=";"))
    assert header[:3] == ["Lp.", "Radny/Radna", "Adres"]
    assert ";" in records[0] and "," not in records[0]


def test_csv_has_one_row_per_councillor_and_distribution_with_event_times() -> None:
    matrix = small_matrix()
    rows = csv_rows(render_csv(matrix))

    # 2 + 2 + 1 cells, and one line for the councillor no distribution reached.
    assert [(row["Radny/Radna"], row["Wysyłka (nr)"]) for row in rows] == [
        ("Łukasz Żółć", "1"),
        ("Łukasz Żółć", "2"),
        ("Zażółć Gęślą", "1"),
        ("Zażółć Gęślą", "2"),
        ("Ćma Źdźbło-Ńęą", "1"),
        ("Anna Ósma", ""),
    ]
    failed = rows[1]
    assert failed["Stan"] == "niedoręczone"
    assert failed["Kod stanu"] == "failed"
    assert failed["Rodzaj wysyłki"] == "uzupełnienie"
    assert failed["Message-ID"] == f"<d2.lukasz.zolc@{DOMAIN}>"
    assert failed["niedoręczone (UTC)"] == "2026-03-05T13:02:00Z"
    assert failed["niedoręczone (czas lokalny)"] == warsaw(at(5, 13, 2)).strftime(
        "%Y-%m-%d %H:%M:%S"
    )
    assert FAILURE in failed["Uwagi"]
    assert failed["Dokumenty (SHA-256)"] == SHA_ANNEX

    acknowledged = rows[0]
    assert acknowledged["Kod stanu"] == "acknowledged"
    assert acknowledged["potwierdzono (UTC)"] == "2026-03-03T07:30:00Z"
    assert acknowledged["Dokumenty (SHA-256)"].split() == [SHA_AGENDA, SHA_BUDGET]
    assert rows[4]["Kod stanu"] == "delayed"
    assert "452 4.2.2" in rows[4]["Uwagi"]
    assert rows[5]["Stan"] == "brak wysyłki"


def test_csv_local_time_follows_summer_time() -> None:
    lukasz = f"lukasz.zolc@{DOMAIN}"
    summer = at(1, 8, 0, month=6)  # 10:00 in Warsaw (CEST, UTC+2)
    base = small_matrix()
    matrix = replace(
        base,
        rows=(MatrixRow("Łukasz Żółć", lukasz, (cell(1, lukasz, *delivered(1, lukasz, summer)),)),),
    )

    row = csv_rows(render_csv(matrix))[0]

    assert row["w kolejce (czas lokalny)"] == "2026-06-01 10:00:00"
    assert row["w kolejce (UTC)"] == "2026-06-01T08:00:00Z"


def test_csv_headers_and_states_are_english_when_the_matrix_is() -> None:
    rows = csv_rows(render_csv(small_matrix("en")))

    assert rows[1]["Councillor"] == "Łukasz Żółć"
    assert rows[1]["State"] == "failed"
    assert rows[1]["Distribution kind"] == "supplement"


def test_csv_text_cannot_start_a_formula_in_excel() -> None:
    base = small_matrix()
    address = "x@rada.example"
    matrix = replace(
        base,
        rows=(MatrixRow("=HYPERLINK(1)", address, (cell(1, address),)),),
    )

    row = csv_rows(render_csv(matrix))[0]

    assert row["Radny/Radna"] == "'=HYPERLINK(1)"


# --- JSON ------------------------------------------------------------------------------------


def test_json_round_trips_with_utc_times_and_every_event() -> None:
    matrix = small_matrix()
    report = render_json(matrix)

    back = json.loads(json.dumps(report, ensure_ascii=False))

    assert back == report
    assert back["session"]["at"] == "2026-03-12T09:00:00Z"  # 10:00 in Warsaw in winter
    assert back["generated_at"] == "2026-03-06T12:30:00Z"
    assert [d["sha256"] for d in back["documents"]] == [SHA_AGENDA, SHA_BUDGET, SHA_ANNEX]
    assert back["distributions"][1]["late"] is True
    lukasz = back["rows"][0]
    assert lukasz["name"] == "Łukasz Żółć"
    failed = lukasz["cells"][1]
    assert failed["state"] == "failed"
    assert failed["times"]["failed"] == "2026-03-05T13:02:00Z"
    assert [e["kind"] for e in failed["events"]] == ["queued", "failed"]
    assert failed["events"][1]["evidence"] == FAILURE
    assert failed["events"][1]["source"] == "dsn"
    assert back["summary"] == {
        "acknowledged": 1,
        "failed": 1,
        "delivered": 1,
        "opened": 1,
        "delayed": 1,
    }


# --- Terminal table --------------------------------------------------------------------------


@pytest.mark.parametrize("width", [80, 120, 200])
def test_table_has_a_line_per_councillor_within_the_width(width: int) -> None:
    matrix = small_matrix()

    text = render_table(matrix, width=width)

    lines = text.splitlines()
    for row in matrix.rows:
        assert sum(row.name in line for line in lines) == 1
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    for document in matrix.documents:
        assert document.sha256 in text
    assert "niedoręczone" in text and "potwierdzono" in text


def test_table_shortens_long_names_rather_than_overflowing() -> None:
    base = small_matrix()
    long_name = "Zażółć Gęślą Jaźń " * 8
    address = "long@rada.example"
    matrix = replace(base, rows=(MatrixRow(long_name, address, (cell(1, address),)),))

    lines = render_table(matrix, width=80).splitlines()

    assert any("Zażółć Gęślą" in line and "…" in line for line in lines)
    assert all(len(line) <= 80 for line in lines)


# --- PDF -------------------------------------------------------------------------------------


def test_pdf_shows_names_with_diacritics_hashes_states_and_the_signature_line() -> None:
    matrix = small_matrix()

    pages = pdf_pages(render_pdf(matrix))

    text = "\n".join(pages)
    for row in matrix.rows:
        assert row.name in text
    for document in matrix.documents:
        assert document.sha256 in text  # in full: it is the evidence
    for state in ("potwierdzono", "niedoręczone", "otwarto", "opóźnione", "doręczono"):
        assert state in text
    assert "550 5.1.1" in flat(pages)
    assert "Uzasadnienie odstępstwa" in text
    assert warsaw(at(3, 7, 30)).strftime("%d.%m.%Y %H:%M") in text
    assert "Sporządził(a)" in pages[-1]
    for number, page in enumerate(pages, 1):
        assert f"Strona {number} z {len(pages)}" in page


def test_pdf_is_the_same_for_the_same_matrix_and_dated_by_it() -> None:
    matrix = small_matrix()

    first, second = render_pdf(matrix), render_pdf(matrix)

    assert first == second
    metadata = PdfReader(io.BytesIO(first)).metadata
    assert metadata is not None
    assert metadata.creation_date == datetime(2026, 3, 6, 12, 30, tzinfo=UTC)


def test_pdf_in_english() -> None:
    pages = pdf_pages(render_pdf(small_matrix("en")))

    assert "Page 1 of" in pages[0]
    assert "acknowledged" in "\n".join(pages)


def test_pdf_of_300_councillors_repeats_the_table_header_on_every_page() -> None:
    matrix = big_matrix(300)

    pages = pdf_pages(render_pdf(matrix))

    assert len(pages) > 5
    first_matrix_page = next(i for i, page in enumerate(pages) if "Żaneta" in page)
    for number, page in enumerate(pages, 1):
        assert f"Strona {number} z {len(pages)}" in page
    for page in pages[first_matrix_page:]:
        assert "Radny/Radna" in page and "Potwierdzono" in page
    # Every councillor is there, in order, whatever page they fell on.
    where = [next(i for i, page in enumerate(pages) if row.name in page) for row in matrix.rows]
    assert where == sorted(where)
    assert where[-1] == len(pages) - 1 or where[-1] == len(pages) - 2


def test_pdf_of_1000_councillors_lists_every_one() -> None:
    # Speed is not asserted here (about 1 s on an idle core): only that a big council fits.
    matrix = big_matrix(1000)
    reader = PdfReader(io.BytesIO(render_pdf(matrix)))
    assert len(reader.pages) > 20
    text = "".join(page.extract_text() for page in reader.pages[-3:])
    assert matrix.rows[-1].name in text


def test_pdf_cuts_overlong_names_and_replaces_glyphs_the_font_lacks() -> None:
    base = small_matrix()
    long_name = "Zażółć Gęślą Jaźń " * 12 + "Koniec"
    address = "long@rada.example"
    matrix = replace(
        base,
        rows=(
            MatrixRow(long_name, address, (cell(1, address),)),
            MatrixRow("Jan 漢 Kowalski", address, (cell(1, address),)),
        ),
    )

    text = "\n".join(pdf_pages(render_pdf(matrix)))

    assert "…" in text and "Koniec" not in text
    assert "Jan ? Kowalski" in text


def test_pdf_says_which_package_provides_missing_fonts(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="fonts-dejavu-core"):
        render_pdf(small_matrix(), font_dir=tmp_path)


# --- Print list ------------------------------------------------------------------------------


def test_before_the_cutover_everyone_reached_gets_paper() -> None:
    items = print_items(small_matrix(), cutover=date(2026, 4, 1))

    assert [item.name for item in items] == ["Łukasz Żółć", "Zażółć Gęślą", "Ćma Źdźbło-Ńęą"]
    lukasz = items[0]
    assert [d.sha256 for d in lukasz.documents] == [SHA_AGENDA, SHA_BUDGET, SHA_ANNEX]
    assert "przed przejściem" in lukasz.reason
    assert [d.sha256 for d in items[2].documents] == [SHA_AGENDA, SHA_BUDGET]


def test_after_the_cutover_only_those_who_have_not_acknowledged_get_paper() -> None:
    districts = {f"lukasz.zolc@{DOMAIN}": "Okręg 2"}

    items = print_items(small_matrix(), cutover=date(2026, 3, 1), districts=districts)

    # Łukasz acknowledged the notice, but the supplement failed: paper for the supplement only.
    assert [item.name for item in items] == ["Łukasz Żółć", "Zażółć Gęślą", "Ćma Źdźbło-Ńęą"]
    lukasz, zazolc, cma = items
    assert [d.sha256 for d in lukasz.documents] == [SHA_ANNEX]
    assert "nie powiodło się" in lukasz.reason and "#1" not in lukasz.reason
    assert lukasz.district == "Okręg 2"
    assert [d.sha256 for d in zazolc.documents] == [SHA_AGENDA, SHA_BUDGET, SHA_ANNEX]
    assert "brak potwierdzenia" in zazolc.reason
    assert cma.district == ""


def test_acknowledged_councillors_need_no_paper_after_the_cutover() -> None:
    matrix = big_matrix(6)
    acknowledged_both = replace(
        matrix,
        rows=tuple(
            MatrixRow(
                row.name,
                row.address,
                tuple(
                    cell(
                        c.distribution_id,
                        c.address,
                        *c.events,
                        event(EventKind.ACKNOWLEDGED, at(7, 9), "", EventSource.LINK),
                    )
                    for c in row.cells
                ),
            )
            for row in matrix.rows
        ),
    )

    assert print_items(acknowledged_both, cutover=date(2026, 3, 1)) == []
    assert len(print_items(acknowledged_both, cutover=date(2026, 3, 10))) == 6


def test_unknown_page_counts_are_counted_as_one_and_flagged() -> None:
    known = PrintItem("Łukasz Żółć", "l@x", "", DOCUMENTS[:2], "r")
    guessed = PrintItem("Łukasz Żółć", "l@x", "", DOCUMENTS, "r")

    assert (known.pages, known.pages_estimated) == (39, False)
    assert (guessed.pages, guessed.pages_estimated) == (40, True)


@pytest.mark.parametrize(
    ("pages", "recipients", "price", "cost"),
    [
        (40, 25, Decimal("0.15"), Decimal("150.00")),
        (1, 1, Decimal("0.125"), Decimal("0.13")),  # half up, to the grosz
        (0, 30, Decimal("0.15"), Decimal("0.00")),
        (7, 3, Decimal("0.10"), Decimal("2.10")),
    ],
)
def test_paper_cost(pages: int, recipients: int, price: Decimal, cost: Decimal) -> None:
    assert paper_cost(pages, recipients, price) == cost


def test_paper_cost_refuses_negative_counts_and_float_prices() -> None:
    with pytest.raises(ValueError, match="pages"):
        paper_cost(-1, 3, Decimal("0.1"))
    with pytest.raises(ValueError, match="recipients"):
        paper_cost(1, -3, Decimal("0.1"))
    with pytest.raises(TypeError, match="Decimal"):
        paper_cost(1, 3, 0.1)  # type: ignore[arg-type]


def test_districts_sort_the_polish_way_with_numbers_by_value() -> None:
    names = ["Okręg 10", "Łódzka", "Okręg 2", "", "Lipowa", "Zielona", "Ćwiartka", "Cicha"]

    assert sorted(names, key=district_key) == [
        "Cicha",
        "Ćwiartka",
        "Lipowa",
        "Łódzka",
        "Okręg 2",
        "Okręg 10",
        "Zielona",
        "",
    ]


def _print_list() -> list[PrintItem]:
    return [
        PrintItem("Zażółć Gęślą", "z@x", "Okręg 10", DOCUMENTS[:1], "brak potwierdzenia"),
        PrintItem("Łukasz Żółć", "l@x", "Okręg 2", DOCUMENTS, "niedoręczone"),
        PrintItem("Anna Ósma", "a@x", "Okręg 2", DOCUMENTS[1:2], "brak potwierdzenia"),
    ]


def test_print_list_text_groups_by_district_and_totals_pages() -> None:
    text = render_print_list_text("Rada Miejska w Żółkiewce", "XV/2026", _print_list())

    assert text.index("Okręg 2") < text.index("Łukasz Żółć") < text.index("Anna Ósma")
    assert text.index("Anna Ósma") < text.index("Okręg 10") < text.index("Zażółć Gęślą")
    assert "Adresatów: 3, stron razem: 79*" in text  # 2 + (2 + 37 + 1*) + 37
    assert "Załącznik — opinia RIO.pdf (1* str.)" in text
    assert "przyjęto 1 stronę" in text


def test_print_list_pdf_has_everyone_and_is_repeatable() -> None:
    session_at = datetime(2026, 3, 12, 10, 0)
    generated = at(6, 12)

    data = render_print_list_pdf(
        "Rada Miejska w Żółkiewce",
        "XV/2026",
        session_at,
        _print_list(),
        time_zone="Europe/Warsaw",
        generated_at=generated,
    )

    pages = pdf_pages(data)
    text = "\n".join(pages)
    for item in _print_list():
        assert item.name in text
    assert "Projekt uchwały budżetowej — Żółkiewka 2026.pdf (37 str.)" in flat(pages)
    assert "Termin sesji: 12.03.2026 10:00" in text
    assert "Odbiór (data, podpis)" in text
    assert f"Strona 1 z {len(pages)}" in pages[0]
    assert data == render_print_list_pdf(
        "Rada Miejska w Żółkiewce",
        "XV/2026",
        session_at,
        _print_list(),
        time_zone="Europe/Warsaw",
        generated_at=generated,
    )


def test_empty_print_list_says_so() -> None:
    assert "Nikt nie potrzebuje wydruku." in render_print_list_text("Rada", "I/2026", [])
    pdf = render_print_list_pdf(
        "Rada",
        "I/2026",
        datetime(2026, 3, 12, 10),
        [],
        "en",
        time_zone="Europe/Warsaw",
        generated_at=at(6, 12),
    )
    assert "Nobody needs a paper copy." in pdf_pages(pdf)[0]


# --- The council's time zone -------------------------------------------------------------------
# New York is five hours behind UTC in early March and Warsaw one hour ahead, so every local time
# below would read differently had the renderers kept a zone of their own.


def new_york_matrix() -> ReceiptMatrix:
    return replace(small_matrix(), time_zone="America/New_York")


def test_matrix_defaults_to_the_configured_default_zone() -> None:
    from mailsvc.config import DistributionSettings

    assert small_matrix().time_zone == DistributionSettings().timezone


def test_table_shows_local_times_in_the_matrix_time_zone_and_names_it() -> None:
    text = " ".join(render_table(new_york_matrix(), width=200).split())

    assert "Wygenerowano: 06.03.2026 07:30:00." in text  # 12:30 UTC
    assert "czas lokalny America/New_York" in text
    assert "zaplanowano: 02.03.2026 04:00" in text  # the notice, 09:00 UTC
    assert "potwierdzono 03.03 02:30" in text  # Łukasz's acknowledgement, 07:30 UTC
    assert "Europe/Warsaw" not in text and "13:30:00" not in text and "08:30" not in text


def test_csv_local_times_are_in_the_matrix_time_zone() -> None:
    rows = csv_rows(render_csv(new_york_matrix()))

    failed = rows[1]
    assert failed["niedoręczone (UTC)"] == "2026-03-05T13:02:00Z"
    assert failed["niedoręczone (czas lokalny)"] == "2026-03-05 08:02:00"
    assert "niedoręczone 05.03.2026 08:02: 550 5.1.1" in failed["Uwagi"]
    assert rows[0]["potwierdzono (czas lokalny)"] == "2026-03-03 02:30:00"


def test_pdf_local_times_are_in_the_matrix_time_zone_and_it_names_the_zone() -> None:
    pages = pdf_pages(render_pdf(new_york_matrix()))
    text = flat(pages)

    assert "Wszystkie godziny: czas lokalny America/New_York." in text
    assert "Wygenerowano 06.03.2026 07:30:00" in pages[0]  # the footer
    assert "#1 zawiadomienie 02.03.2026 04:00 02.03.2026 04:01" in text
    assert "03.03.2026 02:30" in text and "niedoręczone 05.03.2026 08:02" in text
    assert "Europe/Warsaw" not in text and "03.03.2026 08:30" not in text


def test_json_session_date_is_local_time_of_the_matrix_zone() -> None:
    session = render_json(new_york_matrix())["session"]

    # US summer time starts on 8 March 2026, three weeks before Europe's.
    assert session == {
        "number": "XV/2026",
        "kind": "budget",
        "at": "2026-03-12T14:00:00Z",
        "at_local": "2026-03-12T10:00:00-04:00",
        "place": "Sala obrad, ul. Długa 1",
    }


def test_unknown_time_zone_in_the_matrix_is_a_report_error() -> None:
    with pytest.raises(ReportError, match="Mars/Olympus_Mons"):
        render_table(replace(small_matrix(), time_zone="Mars/Olympus_Mons"))


def test_print_list_days_are_days_in_the_matrix_time_zone() -> None:
    # The notice went out at 02:00 UTC on 2 March: still 1 March in New York, already
    # 2 March in Warsaw. With the cut-over on 2 March, only New York counts it as before.
    base = small_matrix()
    late_night = replace(base.distributions[0], sent_at=datetime(2026, 3, 2, 2, 0))
    matrix = replace(base, distributions=(late_night, *base.distributions[1:]))
    cutover = date(2026, 3, 2)

    warsaw_items = print_items(matrix, cutover=cutover)
    new_york_items = print_items(replace(matrix, time_zone="America/New_York"), cutover=cutover)

    assert "przed przejściem" not in warsaw_items[0].reason  # Łukasz acknowledged it
    assert "#1 zawiadomienie: przed przejściem" in new_york_items[0].reason


def test_print_list_pdf_shows_times_in_the_given_zone() -> None:
    pages = pdf_pages(
        render_print_list_pdf(
            "Rada",
            "I/2026",
            datetime(2026, 3, 12, 10),
            _print_list(),
            time_zone="America/New_York",
            generated_at=at(6, 12),  # 07:00 in New York, 13:00 in Warsaw
        )
    )

    assert "06.03.2026 07:00" in pages[0] and "06.03.2026 13:00" not in pages[0]
