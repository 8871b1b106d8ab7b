"""Roster files: encodings, delimiters, headers, row problems with line and column, file errors."""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

import pytest

from provisioning.errors import ProvisioningError
from provisioning.naming import choose_local_part
from provisioning.roster import (
    ROLES,
    Roster,
    RosterFileError,
    RosterProblem,
    parse_roster_text,
    read_roster,
)

SAMPLE_ROSTER = Path(__file__).resolve().parents[2] / "config" / "sample-roster.csv"

COMMITTEES = {
    "budzetowa": "Komisja Budżetowa",
    "rewizyjna": "Komisja Rewizyjna",
    "skarg": "Komisja Skarg, Wniosków i Petycji",
    "oswiaty": "Komisja Oświaty i Kultury",
}

COLUMNS = (
    "imię",
    "nazwisko",
    "okręg",
    "klub",
    "funkcja",
    "komisje",
    "początek kadencji",
    "koniec mandatu",
    "e-mail prywatny",
    "telefon",
    "id",
)
HEADER = ";".join(COLUMNS)
# The same header without Polish letters, for byte-level encoding tests.
ASCII_HEADER = (
    "imie;nazwisko;okreg;klub;funkcja;komisje;poczatek kadencji;koniec mandatu;e-mail;tel;id"
)
DEFAULTS = {
    "imię": "Jan",
    "nazwisko": "Kowalski",
    "okręg": "1",
    "klub": "Forum",
    "funkcja": "radny",
    "komisje": "budzetowa",
    "początek kadencji": "07.05.2024",
    "koniec mandatu": "",
    "e-mail prywatny": "jan@example.org",
    "telefon": "600 000 101",
    "id": "R01",
}
LUKASZ_ZOLC = {"imię": "Łukasz", "nazwisko": "Żółć", "okręg": "Okręg 2", "id": "R02"}


def row(delimiter: str = ";", **cells: str) -> str:
    """A data row in COLUMNS order; keys are headers, or ASCII short forms of them."""
    values = dict(DEFAULTS)
    for key, value in cells.items():
        values[_column(key)] = value
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerow(
        [values[name] for name in COLUMNS]
    )
    return buffer.getvalue().removesuffix("\r\n")


def _column(key: str) -> str:
    aliases = {
        "imie": "imię",
        "okreg": "okręg",
        "poczatek": "początek kadencji",
        "koniec": "koniec mandatu",
        "email": "e-mail prywatny",
    }
    return aliases.get(key, key)


def parse(*lines: str, committees: dict[str, str] | None = COMMITTEES) -> Roster:
    return parse_roster_text("\r\n".join(lines) + "\r\n", path="roster.csv", committees=committees)


def write(tmp_path: Path, data: bytes, name: str = "roster.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def only_problem(roster: Roster) -> RosterProblem:
    assert len(roster.problems) == 1, roster.problems
    return roster.problems[0]


# --- encodings and delimiters ------------------------------------------------------------


def test_utf8_with_bom_and_semicolons(tmp_path: Path) -> None:
    text = "\r\n".join([HEADER, row(**LUKASZ_ZOLC)]) + "\r\n"
    path = write(tmp_path, b"\xef\xbb\xbf" + text.encode("utf-8"))
    roster = read_roster(path, committees=COMMITTEES)
    assert (roster.encoding, roster.delimiter, roster.problems) == ("utf-8-sig", ";", ())
    assert [entry.full_name for entry in roster.entries] == ["Łukasz Żółć"]


def test_plain_utf8_with_commas(tmp_path: Path) -> None:
    text = "\n".join([",".join(COLUMNS), row(",", imie="Łukasz", nazwisko="Żółć")]) + "\n"
    roster = read_roster(write(tmp_path, text.encode("utf-8")), committees=COMMITTEES)
    assert (roster.encoding, roster.delimiter, roster.problems) == ("utf-8", ",", ())
    assert roster.entries[0].surname == "Żółć"


def test_windows_1250_is_detected(tmp_path: Path) -> None:
    text = "\r\n".join([HEADER, row(**LUKASZ_ZOLC)]) + "\r\n"
    roster = read_roster(write(tmp_path, text.encode("cp1250")), committees=COMMITTEES)
    assert (roster.encoding, roster.problems) == ("cp1250", ())
    assert roster.entries[0].full_name == "Łukasz Żółć"
    assert roster.entries[0].district == "Okręg 2"


def test_explicit_encoding_overrides_detection(tmp_path: Path) -> None:
    # ISO-8859-2 "ą" and "ś" look like "±" and "¶" in Windows-1250, so detection refuses it.
    text = "\r\n".join([HEADER, row(imie="Małgorzata", nazwisko="Wąsiśka")]) + "\r\n"
    path = write(tmp_path, text.encode("iso-8859-2"))
    with pytest.raises(RosterFileError, match="--encoding"):
        read_roster(path, committees=COMMITTEES)
    roster = read_roster(path, encoding="iso-8859-2", committees=COMMITTEES)
    assert roster.encoding == "iso-8859-2"
    assert roster.entries[0].surname == "Wąsiśka"


def test_explicit_encoding_decode_error_names_the_line(tmp_path: Path) -> None:
    text = "\r\n".join([ASCII_HEADER, row(), row(**LUKASZ_ZOLC)]) + "\r\n"
    path = write(tmp_path, text.encode("cp1250"))
    with pytest.raises(RosterFileError) as caught:
        read_roster(path, encoding="utf-8")
    assert caught.value.line == 3
    assert str(caught.value).startswith(f"{path}:3: ")


def test_unknown_encoding_asks_for_the_option(tmp_path: Path) -> None:
    # Latin-1 "ü" is not UTF-8 and gives no Polish letters in Windows-1250.
    text = "\r\n".join([ASCII_HEADER, row(), row(nazwisko="Müller", id="R02")]) + "\r\n"
    path = write(tmp_path, text.encode("latin-1"))
    with pytest.raises(RosterFileError, match=r"unknown encoding.*--encoding cp1250") as caught:
        read_roster(path)
    assert caught.value.line == 3
    assert str(path) in str(caught.value)


def test_unknown_encoding_name_is_a_file_error(tmp_path: Path) -> None:
    path = write(tmp_path, f"{HEADER}\n{row()}\n".encode())
    with pytest.raises(RosterFileError, match="unknown encoding 'klingon'"):
        read_roster(path, encoding="klingon")


def test_bom_in_uploaded_text_is_ignored() -> None:
    roster = parse("\ufeff" + HEADER, row())
    assert roster.problems == ()
    assert roster.entries[0].given_names == "Jan"


def test_excel_sep_line_sets_the_delimiter() -> None:
    roster = parse("sep=,", ",".join(COLUMNS), row(","), row(**LUKASZ_ZOLC).replace(";", ","))
    assert roster.delimiter == ","
    assert [entry.line for entry in roster.entries] == [3, 4]


# --- headers -----------------------------------------------------------------------------


def test_english_headers_and_roles() -> None:
    header = (
        "Given names,Surname,District,Club,Role,Committees,Term start,Mandate end,"
        "Private email,Phone,External ID"
    )
    roster = parse(
        header,
        "Anna,Nowak,North,,Chairwoman,budzetowa|rewizyjna,2024-05-07,,,,A1",
        "Jan,Kowalski,North,,Vice-Chair,,2024-05-07,,,,A2",
        "Piotr,Wójcik,South,,councillor,,2024-05-07,2025-01-31,,,A3",
    )
    assert roster.problems == ()
    assert [(entry.surname, entry.role) for entry in roster.entries] == [
        ("Nowak", "przewodniczacy"),
        ("Kowalski", "wiceprzewodniczacy"),
        ("Wójcik", "radny"),
    ]
    assert roster.entries[0].committees == ("budzetowa", "rewizyjna")
    assert roster.entries[2].mandate_end == date(2025, 1, 31)


@pytest.mark.parametrize(
    "header",
    [
        "Imiona;Nazwisko;Okręg wyborczy;Data ślubowania",
        "IMIĘ I DRUGIE IMIĘ;NAZWISKO;OKRĘG;POCZĄTEK KADENCJI",
        "first_name;last-name;District;term.start",
        "Given name;Surname;district;Term Start",
        "imie;nazwisko;okreg;poczatek kadencji",
    ],
)
def test_header_aliases_are_matched_after_normalisation(header: str) -> None:
    roster = parse(header, "Jan;Kowalski;1;07.05.2024")
    assert roster.problems == ()
    assert roster.entries[0].full_name == "Jan Kowalski"
    assert roster.entries[0].term_start == date(2024, 5, 7)


@pytest.mark.parametrize(
    ("header", "extra_cells", "field", "expected"),
    [
        ("Klub radnych", "Forum", "club", "Forum"),
        ("Rola", "radna", "role", "radny"),
        ("Wygaśnięcie mandatu", "31.12.2025", "mandate_end", date(2025, 12, 31)),
        ("Email prywatny", "a@example.org", "private_email", "a@example.org"),
        ("E-mail", "a@example.org", "private_email", "a@example.org"),
        ("Tel.", "600000101", "phone", "600000101"),
        ("Identyfikator", "X7", "external_id", "X7"),
        ("Nr", "7", "external_id", "7"),
    ],
)
def test_optional_column_aliases(
    header: str, extra_cells: str, field: str, expected: object
) -> None:
    roster = parse(
        f"imię;nazwisko;okręg;początek kadencji;{header}", f"Jan;K;1;07.05.2024;{extra_cells}"
    )
    assert roster.problems == ()
    assert getattr(roster.entries[0], field) == expected


@pytest.mark.parametrize(
    ("header", "fragments"),
    [
        ("imię;nazwisko;początek kadencji", ["missing required column", "'okręg'"]),
        ("nazwisko;okręg", ["'imię'", "'początek kadencji'"]),
        (HEADER + ";uwagi", ["unknown column 'uwagi'", "accepted columns", "e-mail prywatny"]),
        (HEADER + ";imiona", ["'imię' and 'imiona'", "same column"]),
        (HEADER + ";telefon", ["'telefon' and 'telefon'"]),
        ("imię;;nazwisko;okręg;początek kadencji", ["column 2 has no header"]),
        ("imię nazwisko okręg", ["neither ';' nor ','"]),
    ],
)
def test_bad_header_is_a_file_error_naming_the_column(header: str, fragments: list[str]) -> None:
    with pytest.raises(RosterFileError) as caught:
        parse(header, row())
    message = str(caught.value)
    assert message.startswith("roster.csv:1: ")
    for fragment in fragments:
        assert fragment in message


def test_trailing_empty_columns_and_blank_rows_are_ignored() -> None:
    roster = parse(HEADER + ";;", row() + ";;", ";;;;;;;;;;;;", "", row(**LUKASZ_ZOLC) + ";;")
    assert roster.problems == ()
    assert [entry.line for entry in roster.entries] == [2, 5]


# --- cell values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "radny"),
        ("radny", "radny"),
        ("Radna", "radny"),
        ("councillor", "radny"),
        ("przewodniczący", "przewodniczacy"),
        ("Przewodnicząca", "przewodniczacy"),
        ("przewodniczacy", "przewodniczacy"),
        ("Chair", "przewodniczacy"),
        ("chairman", "przewodniczacy"),
        ("wiceprzewodniczący", "wiceprzewodniczacy"),
        ("Wiceprzewodnicząca", "wiceprzewodniczacy"),
        ("vice-chair", "wiceprzewodniczacy"),
        ("Deputy chair", "wiceprzewodniczacy"),
    ],
)
def test_roles_are_normalised(value: str, expected: str) -> None:
    roster = parse(HEADER, row(funkcja=value))
    assert roster.problems == ()
    assert roster.entries[0].role == expected
    assert expected in ROLES


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("budzetowa", ("budzetowa",)),
        ("Budżetowa", ("budzetowa",)),
        ("Komisja Budżetowa", ("budzetowa",)),
        ("KOMISJA BUDŻETOWA", ("budzetowa",)),
        ("komisja-budzetowa", ("budzetowa",)),
        ("skarg", ("skarg",)),
        ("Skarg Wniosków i Petycji", ("skarg",)),
        ("Oświaty i Kultury, Rewizyjna", ("oswiaty", "rewizyjna")),
        ("rewizyjna | budzetowa", ("rewizyjna", "budzetowa")),
        ("budzetowa,budzetowa", ("budzetowa",)),
        ("Budżetowa\nRewizyjna", ("budzetowa", "rewizyjna")),
        ("", ()),
    ],
)
def test_committees_match_slug_or_name(cell: str, expected: tuple[str, ...]) -> None:
    roster = parse(HEADER, row(komisje=cell))
    assert roster.problems == ()
    assert roster.entries[0].committees == expected


def test_unknown_committee_names_it_and_lists_the_known_ones() -> None:
    problem = only_problem(parse(HEADER, row(komisje="Budżetowa, Sportu")))
    assert (problem.line, problem.column) == (2, "komisje")
    assert "'Sportu'" in problem.message
    assert "budzetowa (Komisja Budżetowa)" in problem.message
    assert "skarg (Komisja Skarg, Wniosków i Petycji)" in problem.message


def test_without_a_committee_list_any_committee_is_slugified() -> None:
    roster = parse(HEADER, row(komisje="Komisja Budżetowa, Oświaty i Kultury"), committees=None)
    assert roster.problems == ()
    assert roster.entries[0].committees == ("budzetowa", "oswiaty-i-kultury")


@pytest.mark.parametrize("value", ["2024-05-07", "07.05.2024", "7.5.2024", "2024-5-7"])
def test_dates_in_iso_and_polish_form(value: str) -> None:
    roster = parse(HEADER, row(poczatek=value))
    assert roster.problems == ()
    assert roster.entries[0].term_start == date(2024, 5, 7)


def test_ldap_special_characters_are_kept_literally() -> None:
    special = 'Klub "A*B" (x), y+z <q>; =\\'
    roster = parse(HEADER, row(klub=special, okreg="Okręg #1 (Śródmieście)=*", nazwisko="O'Brien"))
    assert roster.problems == ()
    entry = roster.entries[0]
    assert entry.club == special
    assert entry.district == "Okręg #1 (Śródmieście)=*"
    assert entry.surname == "O'Brien"


def test_values_are_stripped_and_optional_cells_may_be_empty() -> None:
    roster = parse(
        HEADER,
        row(imie="  Jan   Maria ", nazwisko=" Kowalski ", email=" ", telefon="", id="", klub=""),
    )
    assert roster.problems == ()
    entry = roster.entries[0]
    assert (entry.given_names, entry.surname) == ("Jan Maria", "Kowalski")
    assert (entry.private_email, entry.phone, entry.external_id, entry.club) == (
        None,
        None,
        None,
        "",
    )


@pytest.mark.parametrize(
    ("cells", "column", "fragment"),
    [
        ({"nazwisko": ""}, "nazwisko", "missing surname"),
        ({"imie": ""}, "imię", "missing given names"),
        ({"okreg": " "}, "okręg", "missing district"),
        ({"poczatek": ""}, "początek kadencji", "missing term start"),
        ({"poczatek": "31.02.2024"}, "początek kadencji", "does not exist"),
        ({"poczatek": "2024-13-01"}, "początek kadencji", "does not exist"),
        ({"poczatek": "7/5/2024"}, "początek kadencji", "not understood"),
        ({"poczatek": "07.05.24"}, "początek kadencji", "not understood"),
        ({"koniec": "maj 2025"}, "koniec mandatu", "not understood"),
        ({"koniec": "06.05.2024"}, "koniec mandatu", "before term start"),
        ({"email": "jan"}, "e-mail prywatny", "exactly one @"),
        ({"email": "jan@@example.org"}, "e-mail prywatny", "exactly one @"),
        ({"email": "@example.org"}, "e-mail prywatny", "nothing before"),
        ({"email": "jan@example"}, "e-mail prywatny", "domain"),
        ({"email": "jan@example..org"}, "e-mail prywatny", "domain"),
        ({"email": "jan kowalski@example.org"}, "e-mail prywatny", "spaces"),
        ({"telefon": "12345"}, "telefon", "9 to 15 digits"),
        ({"telefon": "600-abc-101"}, "telefon", "9 to 15 digits"),
        ({"telefon": "+48 600 000 101 000 000"}, "telefon", "9 to 15 digits"),
        ({"telefon": "600 000 10+1"}, "telefon", "9 to 15 digits"),
        ({"funkcja": "skarbnik"}, "funkcja", "unknown role 'skarbnik'"),
        ({"nazwisko": "Kowal\x07ski"}, "nazwisko", "control character (U+0007)"),
        ({"klub": "Forum\x00"}, "klub", "control character (U+0000)"),
        ({"imie": "Jan\nMaria"}, "imię", "control character (U+000A)"),
        ({"nazwisko": "Петров"}, "nazwisko", "Latin"),
    ],
)
def test_bad_cell_is_a_row_problem_with_line_and_column(
    cells: dict[str, str], column: str, fragment: str
) -> None:
    roster = parse(HEADER, row(**LUKASZ_ZOLC), row(**cells))
    problem = only_problem(roster)
    assert (problem.line, problem.column) == (3, column)
    assert fragment in problem.message
    assert [entry.line for entry in roster.entries] == [2]


@pytest.mark.parametrize(
    ("phone"), ["600000101", "600 000 101", "+48 600-000-101", "(22) 123 45 67", "+48600000101123"]
)
def test_valid_phone_numbers(phone: str) -> None:
    roster = parse(HEADER, row(telefon=phone))
    assert roster.problems == ()
    assert roster.entries[0].phone == phone


def test_problem_str_names_file_line_and_column() -> None:
    problem = only_problem(parse(HEADER, row(), row(nazwisko="", id="R02")))
    assert str(problem) == "roster.csv:3: column 'nazwisko': missing surname"


def test_every_problem_of_a_row_is_reported() -> None:
    roster = parse(HEADER, row(nazwisko="", telefon="1", email="x"))
    assert [(problem.line, problem.column) for problem in roster.problems] == [
        (2, "nazwisko"),
        (2, "e-mail prywatny"),
        (2, "telefon"),
    ]
    assert roster.entries == ()


def test_line_numbers_count_from_the_row_start_across_quoted_newlines() -> None:
    roster = parse(
        HEADER,
        row(klub="Klub; z średnikiem", komisje="Budżetowa\r\nRewizyjna\r\nSkarg"),
        row(**LUKASZ_ZOLC, komisje="Skarg\r\nBudżetowa", telefon="zły"),
        row(imie="Anna", nazwisko="Nowak", id="R03", email="bez-małpy"),
    )
    assert roster.entries[0].club == "Klub; z średnikiem"
    assert roster.entries[0].committees == ("budzetowa", "rewizyjna", "skarg")
    assert [(problem.line, problem.column) for problem in roster.problems] == [
        (5, "telefon"),
        (7, "e-mail prywatny"),
    ]


def test_row_with_more_cells_than_the_header() -> None:
    problem = only_problem(parse(HEADER, row(), row(**LUKASZ_ZOLC) + ";nadmiar"))
    assert (problem.line, problem.column) == (3, None)
    assert "12 cells but the header has 11 columns" in problem.message
    assert "'nadmiar'" in problem.message


def test_row_with_fewer_cells_treats_the_rest_as_empty() -> None:
    roster = parse(HEADER, "Jan;Kowalski;Okręg 1;;;;07.05.2024", "Anna;Nowak;Okręg 2")
    assert roster.entries[0].committees == ()
    problem = only_problem(roster)
    assert (problem.line, problem.column) == (3, "początek kadencji")
    assert problem.message == "missing term start"


def test_duplicate_external_id_names_the_earlier_line() -> None:
    roster = parse(HEADER, row(), row(**LUKASZ_ZOLC), row(imię="Anna", nazwisko="Nowak", id="r01"))
    problem = only_problem(roster)
    assert (problem.line, problem.column) == (4, "id")
    assert "already used on line 2" in problem.message
    assert len(roster.entries) == 2


def test_duplicate_person_in_a_district_names_the_earlier_line() -> None:
    roster = parse(
        HEADER,
        row(**LUKASZ_ZOLC),
        row(id="R05"),
        row(imię="Lukasz", nazwisko="  ZOLC", okręg="okręg  2", id="R09"),
    )
    problem = only_problem(roster)
    assert (problem.line, problem.column) == (4, None)
    assert "already on line 2" in problem.message


def test_same_name_in_another_district_is_not_a_duplicate() -> None:
    roster = parse(HEADER, row(), row(okreg="Okręg 3", id="R02"), row(imie="Jan Maria", id="R03"))
    assert roster.problems == ()
    assert len(roster.entries) == 3


# --- whole-file errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fragment", "line"),
    [
        (b"", "empty", None),
        (b" \r\n\r\n", "empty", None),
        (b"\xef\xbb\xbf", "empty", None),
        (HEADER.encode() + b"\r\n", "no councillors", None),
        (HEADER.encode() + b"\r\n;;;;;;;;;;\r\n", "no councillors", None),
        (HEADER.encode() + b'\r\nJan;"Kowalski;Okr\r\n', "never closed", 2),
        (HEADER.encode() + b'\r\nJan;"Kowalski"x;1\r\n', "malformed CSV", 2),
        (b"imi\x00\x00;nazwisko\r\n" * 3, "NUL bytes", None),
        (b"PK\x03\x04\x14\x00\x06\x00" + b"x" * 100, "Excel workbook (.xlsx)", None),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"x" * 100, ".xls", None),
        (bytes(range(1, 32)) * 20, "non-text", None),
        ("imię;nazwisko".encode("utf-16"), "UTF-16", None),
    ],
)
def test_file_errors(tmp_path: Path, data: bytes, fragment: str, line: int | None) -> None:
    path = write(tmp_path, data)
    with pytest.raises(RosterFileError) as caught:
        read_roster(path)
    assert fragment in str(caught.value)
    assert str(caught.value).startswith(str(path))
    assert caught.value.line == line


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nie-ma.csv"
    with pytest.raises(RosterFileError, match=r"nie-ma\.csv: file not found"):
        read_roster(path)


def test_directory_is_not_a_roster(tmp_path: Path) -> None:
    with pytest.raises(RosterFileError, match="directory"):
        read_roster(tmp_path)


def test_oversize_file_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, f"{HEADER}\r\n{row()}\r\n".encode())
    size = path.stat().st_size

    def no_reading(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the file was opened")

    monkeypatch.setattr(Path, "open", no_reading)
    with pytest.raises(RosterFileError) as caught:
        read_roster(path, max_bytes=100)
    assert f"{size} bytes" in str(caught.value)
    assert "limit of 100 bytes" in str(caught.value)


def test_file_at_the_size_limit_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, f"{HEADER}\r\n{row()}\r\n".encode())
    roster = read_roster(path, max_bytes=path.stat().st_size)
    assert len(roster.entries) == 1


def test_roster_file_error_is_a_provisioning_error() -> None:
    with pytest.raises(ProvisioningError):
        parse_roster_text("", path="x.csv")


def test_nul_in_uploaded_text_is_a_row_problem_not_a_crash() -> None:
    problem = only_problem(parse(HEADER, row(id="R\x001")))
    assert (problem.line, problem.column) == (2, "id")


# --- the sample roster ---------------------------------------------------------------------


def test_sample_roster_parses_cleanly() -> None:
    roster = read_roster(SAMPLE_ROSTER, committees=COMMITTEES)
    assert roster.problems == ()
    assert (roster.encoding, roster.delimiter) == ("utf-8-sig", ";")
    assert len(roster.entries) == 25
    assert [entry.external_id for entry in roster.entries] == [f"R{n:02d}" for n in range(1, 26)]
    roles = [entry.role for entry in roster.entries]
    assert roles.count("przewodniczacy") == 1
    assert roles.count("wiceprzewodniczacy") == 2
    assert {slug for entry in roster.entries for slug in entry.committees} == set(COMMITTEES)
    assert all(entry.term_start == date(2024, 5, 7) for entry in roster.entries)
    assert all(entry.mandate_end is None for entry in roster.entries)


def test_sample_roster_addresses_show_collision_handling() -> None:
    roster = read_roster(SAMPLE_ROSTER, committees=COMMITTEES)
    used: set[str] = set()
    addresses = {}
    for entry in roster.entries:
        local = choose_local_part(entry.given_names, entry.surname, used.__contains__)
        used.add(local)
        addresses[(entry.full_name, entry.district)] = local
    assert len(used) == 25
    assert addresses[("Łukasz Żółć", "Okręg 1")] == "lukasz.zolc"
    assert addresses[("Anna Nowak-Kowalska", "Okręg 1")] == "anna.nowak-kowalska"
    assert addresses[("Jan Kowalski", "Okręg 1")] == "jan.kowalski"
    assert addresses[("Jan Kowalski", "Okręg 3")] == "jan.kowalski2"
    assert addresses[("Jan Maria Kowalski", "Okręg 4")] == "jan.m.kowalski"


def test_bom_file_with_an_invalid_line_names_it(tmp_path: Path) -> None:
    text = f"{HEADER}\r\n{row()}\r\n".encode() + "Łukasz;Żółć;2;;;;07.05.2024\r\n".encode("cp1250")
    with pytest.raises(RosterFileError, match="byte-order mark") as caught:
        read_roster(write(tmp_path, b"\xef\xbb\xbf" + text))
    assert caught.value.line == 3


def test_committees_that_cannot_be_told_apart_are_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="cannot be told apart"):
        parse(HEADER, row(), committees={"sport": "Komisja Sportu", "sportu": "Sportu"})


def test_a_value_repeated_on_many_rows_is_reported_on_each_bad_one() -> None:
    # Dates, roles and committees are read once per spelling; a bad one still gets a problem
    # on every line it is on, and the good rows around them are all kept.
    rows = []
    for i in range(6):
        bad = i % 2 == 1
        rows.append(
            row(
                imie=f"Jan{chr(ord('a') + i)}",
                id=f"R{i}",
                poczatek="31.02.2024" if bad else "07.05.2024",
                funkcja="sołtys" if bad else "radna",
                komisje="Sportu" if bad else "Budżetowa",
            )
        )
    roster = parse(HEADER, *rows)
    assert [e.line for e in roster.entries] == [2, 4, 6]
    assert {e.role for e in roster.entries} == {"radny"} and len(roster.entries) == 3
    for line in (3, 5, 7):
        columns = sorted(p.column or "" for p in roster.problems if p.line == line)
        assert columns == ["funkcja", "komisje", "początek kadencji"], line
