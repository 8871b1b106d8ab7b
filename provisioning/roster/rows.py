"""Roster text → rows → entries: the delimiter, the header, and every row checked."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import date
from typing import TypeVar

from provisioning.errors import NamingError
from provisioning.naming import base_local_part, normalise_name
from provisioning.roster.fields import (
    COLUMN_BY_KEY,
    COLUMNS,
    WHITESPACE,
    CellError,
    Column,
    CommitteeIndex,
    accepted_columns,
    check_email,
    check_phone,
    control_character,
    header_key,
    parse_date,
    parse_role,
    slugify_committee,
)
from provisioning.roster.result import Roster, RosterEntry, RosterFileError, RosterProblem

_T = TypeVar("_T")
_LINE_BREAKS = re.compile(r"[\r\n]+")
# Subsets of what check_email and check_phone accept, for the fast path in _RowParser: a value
# matching one is returned unchanged by its check; any other value is left to the check.
# E-mail: ASCII, one @, two or more dot-separated domain labels not starting or ending in "-".
_PLAIN_EMAIL = re.compile(
    r"[A-Za-z0-9._%+\-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
)
# Phone: an optional leading +, then 9 to 15 digits among spaces, hyphens and parentheses.
_PLAIN_PHONE = re.compile(r"\+?[ ()\-]*(?:[0-9][ ()\-]*){9,15}")


def parse_roster_text(
    text: str,
    *,
    path: str = "<roster>",
    committees: Mapping[str, str] | None = None,
    encoding: str = "utf-8",
) -> Roster:
    """Parse roster text already decoded (tests, web upload); see ``read_roster``."""
    text = text.removeprefix("\ufeff")
    if not text or text.isspace():  # not text.strip(), which copies the whole text
        raise RosterFileError(path, "the file is empty")
    delimiter, has_sep_line = _detect_delimiter(text, path)
    rows = _rows(text, path, delimiter)
    if has_sep_line:
        next(rows)
    header = next(rows, None)
    if header is None:
        raise RosterFileError(path, "the file is empty")
    header_line, header_cells = header
    layout = _read_header(header_cells, path, header_line)
    index = CommitteeIndex(committees) if committees is not None else None
    parser = _RowParser(path, delimiter, layout, index)
    seen_rows = False
    for line, cells in rows:
        seen_rows = True
        parser.parse(line, cells)
    if not seen_rows:
        raise RosterFileError(path, "the file has a header but no councillors below it")
    return Roster(
        path=path,
        encoding=encoding,
        delimiter=delimiter,
        entries=tuple(parser.entries),
        problems=tuple(parser.problems),
    )


def _count_outside_quotes(line: str, char: str) -> int:
    count, quoted = 0, False
    for current in line:
        if current == '"':
            quoted = not quoted
        elif current == char and not quoted:
            count += 1
    return count


def _first_line(text: str) -> str:
    """``next(line for line in text.splitlines() if line.strip())``, without splitting all
    of a large file: the lines of a prefix are those of the text but for the last one, which
    may go on (or be a CR whose LF follows)."""
    size = 4096
    while True:
        lines = text[:size].splitlines()
        whole = size >= len(text)
        for line in lines if whole else lines[:-1]:
            if line.strip():
                return line
        if whole:
            raise ValueError("no line but blank ones")  # the caller has ruled this out
        size *= 4


def _detect_delimiter(text: str, path: str) -> tuple[str, bool]:
    """The delimiter from the header line; Excel's optional ``sep=;`` first line wins."""
    first = _first_line(text)
    if sep := re.fullmatch(r'\s*"?sep=([;,])"?[;,]*\s*', first):
        return sep.group(1), True
    semicolons = _count_outside_quotes(first, ";")
    commas = _count_outside_quotes(first, ",")
    if not semicolons and not commas:
        raise RosterFileError(
            path,
            "the header has neither ';' nor ',' between column names; "
            "save the sheet as CSV (not tab-separated text)",
            line=1,
        )
    return (";" if semicolons >= commas else ","), False


def _rows(text: str, path: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank rows with the line each starts on (quoted cells may span lines)."""
    reader = csv.reader(_lines(text), delimiter=delimiter, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "end of data" in str(exc):
                message = "a quoted cell starting on this line is never closed"
            else:
                message = f"malformed CSV ({exc}); check the quotes on this line"
            raise RosterFileError(path, message, line=start) from None
        if "".join(cells).strip():  # any(cell.strip() for cell in cells), in one call
            yield start, cells


# A line as ``io.StringIO(text, newline="")`` gives them: ended by CR LF, CR or LF, the end
# kept; the last one may have none.
_LINE = re.compile(r"[^\r\n]*(?:\r\n?|\n)|[^\r\n]+")


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` one at a time, as ``io.StringIO(text, newline="")`` would give
    them, without its copy of the whole text (four bytes a character: 28 MB for a county's
    roster of 50,000)."""
    return map(_match_text, _LINE.finditer(text))


_match_text = re.Match.group


def _read_header(cells: list[str], path: str, line: int) -> list[tuple[Column, str]]:
    """Columns in file order, each with its header as written."""
    labels = [cell.strip() for cell in cells]
    while labels and not labels[-1]:  # Excel repeats trailing separators of empty columns
        labels.pop()
    layout: list[tuple[Column, str]] = []
    unknown: list[str] = []
    seen: dict[str, str] = {}
    for number, label in enumerate(labels, start=1):
        if not label:
            raise RosterFileError(path, f"column {number} has no header", line=line)
        if control_character(label) is not None:
            raise RosterFileError(path, f"header {label!r} contains a control character", line=line)
        column = COLUMN_BY_KEY.get(header_key(label))
        if column is None:
            unknown.append(label)
            continue
        if column.field in seen:
            raise RosterFileError(
                path,
                f"columns {seen[column.field]!r} and {label!r} are the same column "
                f"({column.label}); keep one",
                line=line,
            )
        seen[column.field] = label
        layout.append((column, label))
    if unknown:
        names = ", ".join(repr(label) for label in unknown)
        raise RosterFileError(
            path,
            f"unknown column {names}; accepted columns are {accepted_columns()}",
            line=line,
        )
    missing = [column for column in COLUMNS if column.required and column.field not in seen]
    if missing:
        names = ", ".join(f"{column.aliases[0]!r} ({column.label})" for column in missing)
        raise RosterFileError(path, f"missing required column {names}", line=line)
    return layout


class _CellErrors(CellError):
    """Several problems in one cell (committees: one per committee not understood)."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = tuple(messages)


class _PerSpelling(dict[str, tuple[_T | None, tuple[str, ...]]]):
    """``convert(value)`` for each spelling met: (result, ()) or (None, the error messages).

    A roster of tens of thousands of rows repeats the same few dates, roles and committee
    lists on thousands of them; each spelling is converted once per parse. An error is still
    reported on every line that has it: only the work of finding it is shared. A dict with
    ``__missing__`` makes the look-up of a spelling already met a plain dict look-up.
    """

    def __init__(self, convert: Callable[[str], _T]) -> None:
        super().__init__()
        self._convert = convert

    def __missing__(self, value: str) -> tuple[_T | None, tuple[str, ...]]:
        try:
            known: tuple[_T | None, tuple[str, ...]] = (self._convert(value), ())
        except _CellErrors as exc:
            known = (None, exc.messages)
        except CellError as exc:
            known = (None, (str(exc),))
        self[value] = known
        return known


class _Collapsed(dict[str | None, str]):
    """Inner whitespace collapsed to one space, per spelling; ``""`` for an absent cell."""

    def __init__(self) -> None:
        super().__init__({None: ""})

    def __missing__(self, value: str | None) -> str:
        collapsed = self[value] = WHITESPACE.sub(" ", value or "")
        return collapsed


class _AddressProblems(dict[tuple[str, str], tuple[str | None, str] | None]):
    """Per (given names, surname): the column at fault (None: both) and why no address can be
    made from them, or None when one can. Each side alone first, so that the problem names
    the column at fault; the verdict on one side depends on that name alone and is kept too.
    """

    def __init__(self) -> None:
        super().__init__()
        self._given_names: dict[str, str | None] = {}
        self._surnames: dict[str, str | None] = {}

    def __missing__(self, names: tuple[str, str]) -> tuple[str | None, str] | None:
        given_names, surname = names
        verdict: tuple[str | None, str] | None = None
        given_message = _remembered(self._given_names, given_names, (given_names, "x"))
        if given_message is not None:
            verdict = ("given_names", given_message)
        else:
            surname_message = _remembered(self._surnames, surname, ("x", surname))
            if surname_message is not None:
                verdict = ("surname", surname_message)
            else:
                message = _naming_error(given_names, surname)  # the whole may be too long
                verdict = (None, message) if message is not None else None
        self[names] = verdict
        return verdict


class _RowParser:
    """Turns data rows into entries, collecting every problem with its line and column.

    Built for tens of thousands of rows that repeat the same few thousand names, districts,
    clubs, dates, roles and committee lists: the columns' positions are looked up once from
    the header, and every check that depends on a cell alone is done once per spelling (see
    ``_PerSpelling``). Problems come out in the same order as they always have: extra cells,
    control characters, then the columns' checks in a fixed order, then duplicates.
    """

    def __init__(
        self,
        path: str,
        delimiter: str,
        layout: list[tuple[Column, str]],
        committees: CommitteeIndex | None,
    ) -> None:
        self._path = path
        self._delimiter = delimiter
        self._width = len(layout)
        self._labels = {column.field: label for column, label in layout}
        self._fields = [column.field for column, _label in layout]
        at = {column.field: position for position, (column, _label) in enumerate(layout)}
        # A row's values get one more slot, always None, where the columns the header lacks
        # point: an absent column reads like a rejected cell, with no test for it on each row.
        # Required columns are always there (_read_header refuses a header without them).
        absent = self._width
        self._given_at = at["given_names"]
        self._surname_at = at["surname"]
        self._district_at = at["district"]
        self._term_start_at = at["term_start"]
        self._club_at = at.get("club", absent)
        self._role_at = at.get("role", absent)
        self._committees_at = at.get("committees", absent)
        self._mandate_end_at = at.get("mandate_end", absent)
        self._email_at = at.get("private_email", absent)
        self._phone_at = at.get("phone", absent)
        self._external_id_at = at.get("external_id", absent)
        self._committees = committees
        self._lines_by_id: dict[str, int] = {}
        self._lines_by_person: dict[tuple[str, str], int] = {}
        self._collapsed = _Collapsed()
        self._roles = _PerSpelling(parse_role)
        self._dates = _PerSpelling(parse_date)
        self._committee_lists = _PerSpelling(self._resolve_committees)
        self._address_problems = _AddressProblems()
        self.entries: list[RosterEntry] = []
        self.problems: list[RosterProblem] = []

    def _problem(self, line: int, field: str | None, message: str) -> None:
        column = self._labels[field] if field is not None else None
        self.problems.append(RosterProblem(self._path, line, column, message))

    def parse(self, line: int, cells: list[str]) -> None:
        before = len(self.problems)
        width = self._width
        if len(cells) > width:
            extra = [cell.strip() for cell in cells[width:]]
            if any(extra):
                self._problem(
                    line,
                    None,
                    f"{len(cells)} cells but the header has {width} columns "
                    f"(extra: {', '.join(repr(cell) for cell in extra if cell)}); "
                    f"is there an unquoted {self._delimiter!r} inside a cell?",
                )
        # The row's cells, stripped; a short row's missing cells are empty.
        stripped = list(map(str.strip, cells[:width]))
        if len(stripped) < width:
            stripped += [""] * (width - len(stripped))
        committees_at = self._committees_at
        if committees_at < width:
            value = stripped[committees_at]
            if "\n" in value or "\r" in value:
                # Alt+Enter lists in Excel are line breaks. Split and strip, not
                # re.sub(r"\s*[\r\n]+\s*", ","): that pattern backtracks over a long run of
                # spaces without a line break (minutes for one 120 kB cell).
                stripped[committees_at] = ",".join(
                    part.strip() for part in _LINE_BREAKS.split(value)
                )
        # The cells, then the slot of absent columns (see __init__); a cell with a control
        # character becomes None (reported here, left out of every check below).
        values: list[str | None] = [*stripped, None]
        # A row whose text is all printable has no control character in any cell: one check
        # of the row spares one per cell (the rare row with, say, a no-break space still gets
        # them, as does a row with a line break inside a quoted cell).
        if not "".join(stripped).isprintable():
            for position, value in enumerate(stripped):
                bad = control_character(value)
                if bad is not None:
                    self._problem(
                        line,
                        self._fields[position],
                        f"contains a control character (U+{ord(bad):04X})",
                    )
                    values[position] = None
        entry = self._build(line, values)
        self._check_duplicates(line, values)
        if entry is not None and len(self.problems) == before:
            self.entries.append(entry)

    def _required(self, line: int, value: str | None, field: str, what: str) -> str:
        """The value with inner whitespace collapsed; a problem when the cell is empty."""
        collapsed = self._collapsed[value]
        if not collapsed and value is not None:  # None: a control character was reported
            self._problem(line, field, f"missing {what}")
        return collapsed

    def _known(self, line: int, field: str, known: tuple[_T | None, tuple[str, ...]]) -> _T | None:
        """The result of a ``_PerSpelling`` conversion; None after problems (recorded)."""
        result, messages = known
        for message in messages:
            self._problem(line, field, message)
        return result

    def _build(self, line: int, values: list[str | None]) -> RosterEntry | None:
        """The entry, or None when a cell had a problem (already recorded)."""
        before = len(self.problems)
        given_names = self._required(line, values[self._given_at], "given_names", "given names")
        surname = self._required(line, values[self._surname_at], "surname", "surname")
        district = self._required(line, values[self._district_at], "district", "district")
        club = self._collapsed[values[self._club_at]]
        if given_names and surname:
            # Flag names no address can be made from now, not halfway through a sync.
            verdict = self._address_problems[given_names, surname]
            if verdict is not None:
                self._problem(line, *verdict)

        role: str | None = "radny"
        role_value = values[self._role_at]
        if role_value:
            role = self._known(line, "role", self._roles[role_value])

        committees_value = values[self._committees_at] or ""
        committees = self._known(line, "committees", self._committee_lists[committees_value])

        term_start = None
        term_value = values[self._term_start_at]
        if self._required(line, term_value, "term_start", "term start") and term_value:
            term_start = self._known(line, "term_start", self._dates[term_value])
        mandate_end = None
        mandate_value = values[self._mandate_end_at]
        if mandate_value:
            mandate_end = self._known(line, "mandate_end", self._dates[mandate_value])
        if term_start is not None and mandate_end is not None and mandate_end < term_start:
            self._problem(
                line,
                "mandate_end",
                f"mandate end {mandate_value!r} is before term start {term_value!r}",
            )

        private_email = None
        email_value = values[self._email_at]
        if email_value:
            # Nearly every address is plain ASCII that check_email accepts unchanged; the
            # pattern recognises those at C speed, anything else gets check_email's verdict.
            if len(email_value) <= 254 and _PLAIN_EMAIL.fullmatch(email_value):
                private_email = email_value
            else:
                private_email = self._checked(line, "private_email", email_value, check_email)
        phone = None
        phone_value = values[self._phone_at]
        if phone_value:
            if _PLAIN_PHONE.fullmatch(phone_value):  # what check_phone accepts, see there
                phone = phone_value
            else:
                phone = self._checked(line, "phone", phone_value, check_phone)

        if (
            len(self.problems) > before
            or not (given_names and surname and district)
            or role is None
            or committees is None
            or term_start is None
        ):
            return None
        return new_entry(
            line=line,
            given_names=given_names,
            surname=surname,
            district=district,
            club=club,
            role=role,
            committees=committees,
            term_start=term_start,
            mandate_end=mandate_end,
            private_email=private_email,
            phone=phone,
            external_id=values[self._external_id_at] or None,
        )

    def _checked(
        self, line: int, field: str, value: str, check: Callable[[str], str]
    ) -> str | None:
        """``check(value)``; None after a problem (recorded)."""
        try:
            return check(value)
        except CellError as exc:
            self._problem(line, field, str(exc))
            return None

    def _resolve_committees(self, value: str) -> tuple[str, ...]:
        """The slugs of a committees cell; _CellErrors with a message per bad committee."""
        slugs: list[str] = []
        messages: list[str] = []
        for item in (part.strip() for part in re.split(r"[,|]", value)):
            if not item:
                continue
            if self._committees is None:
                slug = slugify_committee(item)
                if not slug:
                    messages.append(f"committee {item!r} has no letters or digits")
                    continue
            else:
                found = self._committees.resolve(item)
                if found is None:
                    messages.append(
                        f"unknown committee {item!r}; known committees: "
                        f"{self._committees.describe()}"
                    )
                    continue
                slug = found
            if slug not in slugs:
                slugs.append(slug)
        if messages:
            raise _CellErrors(messages)
        return tuple(slugs)

    def _check_duplicates(self, line: int, values: list[str | None]) -> None:
        external_id = values[self._external_id_at]
        if external_id:
            key = external_id.casefold()
            earlier = self._lines_by_id.setdefault(key, line)
            if earlier != line:
                self._problem(
                    line, "external_id", f"id {external_id!r} is already used on line {earlier}"
                )
        given_names = values[self._given_at]
        surname = values[self._surname_at]
        district = values[self._district_at]
        if given_names and surname and district:
            person = (_full_name_key(given_names, surname), normalise_name(district))
            earlier = self._lines_by_person.setdefault(person, line)
            if earlier != line:
                self._problem(
                    line,
                    None,
                    f"{given_names} {surname} in district {district!r} "
                    f"is already on line {earlier}",
                )


def _full_name_key(given_names: str, surname: str) -> str:
    """``normalise_name(f"{given_names} {surname}")``, made of the normalised parts.

    A roster has some ten thousand full names but only a few thousand given names and
    surnames, and normalising (transliterating) is the dear part. The two are equal
    (tests/unit/test_roster_parser.py): normalising maps each character on its own (NFKD
    reorders combining marks only up to the next base character, such as the space between
    the parts) and then squeezes whitespace.
    """
    given_key, surname_key = normalise_name(given_names), normalise_name(surname)
    if given_key and surname_key:
        return f"{given_key} {surname_key}"
    return given_key or surname_key


def _naming_error(given_names: str, surname: str) -> str | None:
    """Why no address can be made from these names, or None when one can."""
    try:
        base_local_part(given_names, surname)
    except NamingError as exc:
        return str(exc)
    return None


def _remembered(cache: dict[str, str | None], key: str, names: tuple[str, str]) -> str | None:
    """``_naming_error(*names)``, computed once per ``key``."""
    if key in cache:
        return cache[key]
    message = cache[key] = _naming_error(*names)
    return message


def new_entry(
    *,
    line: int,
    given_names: str,
    surname: str,
    district: str,
    club: str,
    role: str,
    committees: tuple[str, ...],
    term_start: date,
    mandate_end: date | None,
    private_email: str | None,
    phone: str | None,
    external_id: str | None,
) -> RosterEntry:
    """``RosterEntry(...)`` made several times faster, the same object.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, which
    took a tenth of a whole parse; setting the new instance's slots through their descriptors
    gives an equal entry. tests/unit/test_roster_parser.py checks that these parameters are the
    dataclass's fields, so a field added to RosterEntry must be added here too.
    """
    entry = _new(RosterEntry)
    _set_line(entry, line)
    _set_given_names(entry, given_names)
    _set_surname(entry, surname)
    _set_district(entry, district)
    _set_club(entry, club)
    _set_role(entry, role)
    _set_committees(entry, committees)
    _set_term_start(entry, term_start)
    _set_mandate_end(entry, mandate_end)
    _set_private_email(entry, private_email)
    _set_phone(entry, phone)
    _set_external_id(entry, external_id)
    return entry


_new = object.__new__
_set_line = RosterEntry.__dict__["line"].__set__
_set_given_names = RosterEntry.__dict__["given_names"].__set__
_set_surname = RosterEntry.__dict__["surname"].__set__
_set_district = RosterEntry.__dict__["district"].__set__
_set_club = RosterEntry.__dict__["club"].__set__
_set_role = RosterEntry.__dict__["role"].__set__
_set_committees = RosterEntry.__dict__["committees"].__set__
_set_term_start = RosterEntry.__dict__["term_start"].__set__
_set_mandate_end = RosterEntry.__dict__["mandate_end"].__set__
_set_private_email = RosterEntry.__dict__["private_email"].__set__
_set_phone = RosterEntry.__dict__["phone"].__set__
_set_external_id = RosterEntry.__dict__["external_id"].__set__
