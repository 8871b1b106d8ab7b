"""The fast roster row parser (provisioning/roster/rows.py) against the straightforward one it
replaced (roster_reference.py): for every roster, the same entries and the same problems, in
the same order with the same messages, or the same file error.

The rows are made of cells that are valid, invalid in every way a column can be, repeated
(the fast parser keeps its conversions per spelling), and broken by control characters,
no-break spaces and line breaks inside quoted cells (it checks control characters per row).
"""

from __future__ import annotations

import dataclasses
import inspect
import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from provisioning.naming import normalise_name
from provisioning.roster import Roster, RosterFileError, rows
from provisioning.roster.fields import COLUMNS, CellError, check_email, check_phone
from provisioning.roster.result import RosterEntry
from provisioning.roster.rows import _PLAIN_EMAIL, _PLAIN_PHONE, _full_name_key, new_entry

from . import roster_reference

COMMITTEE_SETS = st.sampled_from(
    [
        None,
        {"budzetowa": "Komisja Budżetowa", "rewizyjna": "Komisja Rewizyjna"},
        {
            "budzetowa": "Komisja Budżetowa",
            "rewizyjna": "Komisja Rewizyjna",
            "skarg": "Komisja Skarg, Wniosków i Petycji",
            "oswiaty": "Komisja Oświaty i Kultury",
        },
    ]
)

# Per column: values a clerk writes, good and bad. Short lists, so that rows repeat them.
SAMPLES: dict[str, list[str]] = {
    "given_names": [
        *("Jan", "Anna", "Jan Maria", "Łukasz", "jan", "JAN", "Zoë", "Jan  Maria", "Jan\tMaria"),
        *("", " ", "Ян", "-", "a" * 70, "J\u00a0an", "\u200bJan", "Jan\x85", "\x01Jan"),
    ],
    "surname": [
        *("Kowalski", "Nowak", "Żółć", "Nowak-Kowalska", "kowalski", "Kowal  ski", "b" * 40),
        *("", "Иванов", "a" * 70, "Nowak\x7f", "Nowak\u2003"),
    ],
    "district": ["Okręg 1", "okręg  1", "OKRĘG 1", "2", "", "  ", "Okręg\x0b2"],
    "club": ["", "Klub A", "Klub   B\u2003C", "Klub\x1fX"],
    "role": [
        *("", "radny", "radna", "Przewodnicząca Rady", "Vice-Chair", "chair"),
        *("boss", "radny\x00", "wice przewodniczący"),
    ],
    "committees": [
        *("", "budzetowa", "budzetowa, skarg", "Budżetowa|Rewizyjna", "Komisja Rewizyjna"),
        *("nieznana", ",,", "budzetowa, budzetowa", "x, y, skarg", "!!!", "Budżetowa\x07"),
        *("budzetowa\nrewizyjna", "budzetowa\r\n  skarg \r\n", "\n", "rewizyjna\rskarg"),
    ],
    "term_start": [
        *("07.05.2024", "2024-05-07", "7.5.2024", "01.01.2020", "", "31.02.2024"),
        *("2024/05/07", "32.13.2024", "٠٧.٠٥.٢٠٢٤", "07.05.2024\x1b"),
    ],
    "mandate_end": ["", "", "01.01.2020", "2030-01-01", "zz", "30.02.2025", "07.05.2024"],
    "private_email": [
        *("", "jan@example.org", "a.b+c@sub.example.co.uk", "A@B.ORG", "a@b.c", "a@b"),
        *("a b@c.d", "@x.org", "a@@b.org", "a@-b.org", "a@b-.org", "a@b..org", "ą@é.pl"),
        *("x" * 250 + "@a.org", "a@b.c" + "d" * 250, "a@b.c\u00a0", "a@[1.2.3.4]", "a@b.c\n"),
    ],
    "phone": [
        *("", "600000101", "+48 600 000 101", "+48 (12) 345-67-89", "123", "+48+600"),
        *("600 000 1011111111111", "１２３４５６７８９", "60000010a", "(((", "+ 123456789"),
        *("1234567890123456", "(600) 000-101"),
    ],
    "external_id": ["", "R1", "r1", "R2", "R3", "ID\x02", "ℝ1", "multi\nline"],
}
# Anything at all, now and then, and pieces that break CSV and the cell rules.
ODD_CELLS = st.one_of(
    st.text(max_size=8),
    st.sampled_from(['"', ";", ",", "\r\n", "\t", " " * 3, "\x00", "\u2028", "\ufeff", "|"]),
)


@st.composite
def rosters(draw: st.DrawFn) -> str:
    required = [column for column in COLUMNS if column.required]
    optional = draw(st.lists(st.sampled_from([c for c in COLUMNS if not c.required]), unique=True))
    columns = draw(st.permutations(required + optional))
    header = [draw(st.sampled_from(column.aliases)) for column in columns]
    cell_of = {
        column.field: st.one_of(st.sampled_from(SAMPLES[column.field]), ODD_CELLS)
        if draw(st.booleans())
        else st.sampled_from(SAMPLES[column.field])
        for column in columns
    }
    body: list[list[str]] = []
    for _ in range(draw(st.integers(1, 8))):
        if body and draw(st.integers(0, 4)) == 0:  # the same person twice
            body.append(list(draw(st.sampled_from(body))))
            continue
        row = [draw(cell_of[column.field]) for column in columns]
        if draw(st.integers(0, 9)) == 0:  # too few or too many cells
            row = row[: draw(st.integers(0, len(row)))] + draw(st.lists(ODD_CELLS, max_size=2))
        body.append(row)
    delimiter = draw(st.sampled_from([";", ","]))
    always_quote = draw(st.booleans())

    def cell(text: str) -> str:
        if always_quote or any(char in text for char in f'"\r\n{delimiter}'):
            return '"' + text.replace('"', '""') + '"'
        return text

    end = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    lines = [delimiter.join(map(cell, row)) for row in [header, *body]]
    if draw(st.booleans()):
        lines.insert(draw(st.integers(1, len(lines))), "")  # a blank line
    return "".join(line + end for line in lines)


def parse(module: object, text: str, committees: dict[str, str] | None) -> Roster | str:
    try:
        result = module.parse_roster_text(text, path="r.csv", committees=committees)  # type: ignore[attr-defined]
    except RosterFileError as exc:
        return str(exc)
    assert isinstance(result, Roster)
    return result


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=rosters(), committees=COMMITTEE_SETS)
@example(
    text="imię;nazwisko;okręg;początek kadencji;komisje\r\n"
    'Jan;Kowalski;1;07.05.2024;"budzetowa\r\nrewizyjna"\r\n'
    'Jan;"Kowal\nski";1;07.05.2024;\r\n'
    "Jan;Kowalski; 1 ;2024-05-07;nieznana, inna\r\n",
    committees={"budzetowa": "Komisja Budżetowa", "rewizyjna": "Komisja Rewizyjna"},
)
def test_the_parser_reports_what_the_straightforward_one_does(
    text: str, committees: dict[str, str] | None
) -> None:
    assert parse(rows, text, committees) == parse(roster_reference, text, committees)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_gives_what_the_straightforward_parser_gives(text: str) -> None:
    header = "imię;nazwisko;okręg;początek kadencji;funkcja;e-mail;telefon;id\n"
    for candidate in (text, header + text, header + text.replace(",", ";")):
        assert parse(rows, candidate, None) == parse(roster_reference, candidate, None)


# The fast paths for e-mail addresses and phone numbers accept only values that the checks
# accept unchanged; everything else is left to the checks.
EMAILISH = st.text(alphabet=st.sampled_from(list("aZ09._%+-@ \u00a0ą[]()\n")), max_size=40)
PHONEISH = st.text(alphabet=st.sampled_from(list("0123456789 ()-+x１\n")), max_size=24)


@settings(max_examples=2000, deadline=None)
@given(value=EMAILISH)
@example(value="a@b.c")
@example(value="a@-b.c")
def test_a_plain_email_is_one_check_email_accepts(value: str) -> None:
    if len(value) <= 254 and _PLAIN_EMAIL.fullmatch(value):
        assert check_email(value) == value


@settings(max_examples=2000, deadline=None)
@given(value=PHONEISH)
@example(value="+48 (12) 345-67-89")
@example(value="123456789012345")
@example(value="1234567890123456")
def test_a_plain_phone_is_one_check_phone_accepts(value: str) -> None:
    if _PLAIN_PHONE.fullmatch(value):
        assert check_phone(value) == value
    else:
        try:
            check_phone(value)
        except CellError:
            return
        raise AssertionError(f"{value!r}: check_phone accepts it, the fast path does not")


def test_new_entry_takes_the_fields_of_roster_entry_and_makes_an_equal_one() -> None:
    names = [field.name for field in dataclasses.fields(RosterEntry)]
    assert list(inspect.signature(new_entry).parameters) == names
    values = {name: f"v-{name}" for name in names}
    made, constructed = new_entry(**values), RosterEntry(**values)  # type: ignore[arg-type]
    assert made == constructed and repr(made) == repr(constructed)
    assert hash(made) == hash(constructed)
    assert dataclasses.astuple(made) == dataclasses.astuple(constructed)
    assert not hasattr(made, "__dict__")  # slots only, as the dataclass has
    assert re.fullmatch(r"RosterEntry\(.*\)", repr(made))


# Names as clerks type them, and what transliteration and normalisation care about: Polish and
# other Latin letters, combining marks (which NFKD reorders), spaces of every kind, letters
# that expand ("ß" → "ss"), and characters that are dropped.
NAME_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("aZ -.ąŁśŻßæøÞıéü\u0301\u0327\u031b\u00a0\u2003\t\n\ufb01ḱ̃Яア")),
        st.characters(),
    ),
    max_size=12,
)


@settings(max_examples=1000, deadline=None)
@given(given_names=NAME_TEXT, surname=NAME_TEXT)
@example(given_names="", surname="\u0301a")
@example(given_names="a\u0327", surname="\u0301Ł")
@example(given_names="Ян", surname="Kowal")
@example(given_names="Jan", surname="Иванов")
def test_the_full_name_key_is_made_of_the_parts(given_names: str, surname: str) -> None:
    assert _full_name_key(given_names, surname) == normalise_name(f"{given_names} {surname}")


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from(["\r", "\n", "\r\n", " ", " " * 4095, "\u2028", "\x85", "\x0c", "x;y"]),
        min_size=1,
        max_size=40,
    )
)
@example(pieces=[" " * 4095, "\r\n", "imię;nazwisko"])
@example(pieces=["\n" * 5000, "x;y"])
def test_the_first_line_is_the_first_that_splitlines_gives(pieces: list[str]) -> None:
    text = "".join(pieces)
    if not text.strip():
        return
    assert rows._first_line(text) == next(line for line in text.splitlines() if line.strip())


@given(st.text(alphabet=st.sampled_from(["\r", "\n", "a", ";", '"', "ż", "\u2028", " "])))
@example("a\r\nb\rc\nd")
@example("\r\r\n\n")
def test_the_lines_are_those_string_io_gives_without_its_copy(text: str) -> None:
    # csv reads the roster a line at a time; the lines must be io.StringIO(newline="")'s,
    # which the parser used to read through (a copy of the whole text, four bytes a character).
    import io

    assert list(rows._lines(text)) == list(io.StringIO(text, newline=""))
