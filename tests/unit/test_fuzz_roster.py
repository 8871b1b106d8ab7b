"""Fuzzing the roster reader (issue #13): whatever file a clerk uploads, reading it ends soon
with a roster (entries and row problems) or a ``RosterFileError`` naming the problem, never
with another exception.

Two kinds of input: arbitrary bytes, and near-valid rosters built from the real columns and
cells, then broken the ways Excel exports and hand edits break them (delimiters, quotes, line
ends, BOMs, Windows-1250, NULs, control characters, very long cells).
"""

from __future__ import annotations

import codecs
import time
import unicodedata
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from provisioning.roster import Roster, RosterFileError, parse_roster_text, read_roster
from provisioning.roster.fields import COLUMNS

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

COMMITTEES = {"budzetowa": "Komisja Budżetowa", "rewizyjna": "Komisja Rewizyjna"}
ENCODINGS = (None, "utf-8", "utf-8-sig", "cp1250", "iso-8859-2", "utf-16", "latin-1", "nope-42")

# Pieces of cells, weighted towards what breaks CSV and the cell rules.
PIECES = st.sampled_from(
    [
        *"ąćęłńóśźżĄĆĘŁŃÓŚŹŻ",
        *(";", ",", '"', '""', "\r\n", "\n", "\r", "\t", " ", "|", "\x00", "\x0b", "\x85"),
        *("\u2028", "\ufeff", "\x1c", "@", ".", "-", "+48", "07.05.2024", "2024-02-30"),
        *("sep=;", "radna", "Przewodnicząca Rady", "Budżetowa", "Komisja Rewizyjna"),
        *("jan@example.org", "a@b", "600 000 101", "R01", "x" * 300, " " * 200),
    ]
)
CELL = st.lists(st.one_of(st.text(max_size=6), PIECES), max_size=8).map("".join)
HEADERS = st.lists(
    st.one_of(
        st.sampled_from([alias for column in COLUMNS for alias in column.aliases]),
        st.text(max_size=8),
    ),
    min_size=1,
    max_size=13,
)
REQUIRED = [column.aliases[0] for column in COLUMNS if column.required]


def assert_sane(roster: Roster) -> None:
    """What the reader promises of a roster it returns: entries free of control characters
    (those are row problems), lines that point into the file."""
    for entry in roster.entries:
        assert entry.line >= 2
        for field in fields(entry):
            value = getattr(entry, field.name)
            for text in value if isinstance(value, tuple) else (value,):
                if isinstance(text, str):
                    assert not any(unicodedata.category(ch) == "Cc" for ch in text), entry
    for problem in roster.problems:
        assert problem.line >= 1 and problem.message


def read_or_refuse(path: Path, encoding: str | None) -> Roster | None:
    try:
        roster = read_roster(path, encoding=encoding, committees=COMMITTEES)
    except RosterFileError as exc:
        assert str(exc) and exc.reason
        return None
    assert_sane(roster)
    return roster


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("roster") / "roster.csv"


@FUZZ
@given(raw=st.binary(max_size=3000), encoding=st.sampled_from(ENCODINGS))
@example(raw=b"\xff\xfe" + "imię;nazwisko\r\n".encode("utf-16-le"), encoding=None)
@example(raw=codecs.BOM_UTF8 + b"\r\n\r\n", encoding=None)
@example(raw=b"sep=;\r\n", encoding=None)
def test_arbitrary_bytes_give_a_roster_or_a_file_error(
    scratch: Path, raw: bytes, encoding: str | None
) -> None:
    scratch.write_bytes(raw)
    read_or_refuse(scratch, encoding)


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    delimiter = draw(st.sampled_from([";", ",", "\t"]))
    header = draw(st.one_of(st.just([*REQUIRED, "komisje", "funkcja", "telefon"]), HEADERS))
    rows = draw(st.lists(st.lists(CELL, max_size=len(header) + 2), max_size=6))
    quote = draw(st.booleans())

    def cell(text: str) -> str:
        return '"' + text.replace('"', '""') + '"' if quote else text

    ends = draw(st.lists(st.sampled_from(["\r\n", "\n", "\r", "\r\r\n"]), min_size=1))
    lines = [delimiter.join(map(cell, header))]
    if draw(st.booleans()):
        lines.insert(0, f"sep={delimiter}")
    lines += [delimiter.join(map(cell, r)) for r in rows]
    text = "".join(line + ends[i % len(ends)] for i, line in enumerate(lines))
    if draw(st.booleans()):  # cut anywhere: a half-saved file, an unclosed quote
        text = text[: draw(st.integers(0, len(text)))]
    form = draw(st.sampled_from(["utf-8", "utf-8-sig", "cp1250"]))
    return text.encode(form, errors="replace")


@FUZZ
@given(raw=near_valid(), encoding=st.sampled_from([None, None, "utf-8", "cp1250"]))
def test_near_valid_rosters_give_a_roster_or_a_file_error(
    scratch: Path, raw: bytes, encoding: str | None
) -> None:
    scratch.write_bytes(raw)
    read_or_refuse(scratch, encoding)


@FUZZ
@given(text=st.lists(st.one_of(st.text(), PIECES), max_size=30).map("".join))
def test_decoded_text_gives_a_roster_or_a_file_error(text: str) -> None:
    """The web upload hands decoded text to ``parse_roster_text``: any string, surrogates too."""
    try:
        roster = parse_roster_text(text, committees=None)
    except RosterFileError:
        return
    assert_sane(roster)


def roster_with(cell: str, column: str = "komisje") -> str:
    """A one-row roster whose ``column`` holds ``cell`` (quoted), every other cell valid."""
    values = {"imię": "Jan", "nazwisko": "Kowalski", "okręg": "1"}
    values["początek kadencji"] = "07.05.2024"
    values[column] = cell
    row = ";".join('"' + value.replace('"', '""') + '"' for value in values.values())
    return ";".join(values) + "\r\n" + row + "\r\n"


@pytest.mark.parametrize("column", ["komisje", "imię", "telefon", "e-mail prywatny", "funkcja"])
@pytest.mark.parametrize(
    "cell",
    [
        # The committees cell turned line breaks into commas with r"\s*[\r\n]+\s*", which
        # backtracks over a run of spaces without a line break: minutes for one such cell.
        "a" + " " * 120_000 + "b",
        "a" + "\t \x0b" * 40_000 + "\nb",
        "@" * 120_000,
        "1" * 60_000 + "." + "2" * 60_000,
        "(" * 120_000,
    ],
    ids=["spaces", "mixed-space", "ats", "digits", "parens"],
)
def test_one_huge_cell_is_read_quickly(cell: str, column: str) -> None:
    started = time.monotonic()
    roster = parse_roster_text(roster_with(cell, column), committees=None)
    assert time.monotonic() - started < 3
    assert len(roster.entries) + len(roster.problems) >= 1


def test_a_cell_over_the_csv_field_limit_is_a_file_error(scratch: Path) -> None:
    scratch.write_bytes(roster_with("x" * 200_000).encode())
    with pytest.raises(RosterFileError, match="malformed CSV"):
        read_roster(scratch)
