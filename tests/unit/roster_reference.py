"""The roster row parser as it was before it was made fast (git show 2ae4167:provisioning/
roster/rows.py), kept verbatim as the reference of test_roster_parser.py: a straightforward
check of every cell of every row, with no caching, no fast paths, and no shortcuts.

Do not optimise this file; change it only together with a deliberate change of what the
roster reader reports (messages, order), so that the two still have to agree.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Mapping
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


def parse_roster_text(
    text: str,
    *,
    path: str = "<roster>",
    committees: Mapping[str, str] | None = None,
    encoding: str = "utf-8",
) -> Roster:
    """Parse roster text already decoded (tests, web upload); see ``read_roster``."""
    text = text.removeprefix("\ufeff")
    if not text.strip():
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


def _detect_delimiter(text: str, path: str) -> tuple[str, bool]:
    """The delimiter from the header line; Excel's optional ``sep=;`` first line wins."""
    lines = (line for line in text.splitlines() if line.strip())
    first = next(lines)
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
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
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
        if any(cell.strip() for cell in cells):
            yield start, cells


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


class _RowParser:
    """Turns data rows into entries, collecting every problem with its line and column."""

    def __init__(
        self,
        path: str,
        delimiter: str,
        layout: list[tuple[Column, str]],
        committees: CommitteeIndex | None,
    ) -> None:
        self._path = path
        self._delimiter = delimiter
        self._layout = layout
        self._labels = {column.field: label for column, label in layout}
        self._committees = committees
        self._lines_by_id: dict[str, int] = {}
        self._lines_by_person: dict[tuple[str, str], int] = {}
        self.entries: list[RosterEntry] = []
        self.problems: list[RosterProblem] = []

    def _problem(self, line: int, field: str | None, message: str) -> None:
        column = self._labels[field] if field is not None else None
        self.problems.append(RosterProblem(self._path, line, column, message))

    def parse(self, line: int, cells: list[str]) -> None:
        before = len(self.problems)
        extra = [cell.strip() for cell in cells[len(self._layout) :]]
        if any(extra):
            self._problem(
                line,
                None,
                f"{len(cells)} cells but the header has {len(self._layout)} columns "
                f"(extra: {', '.join(repr(cell) for cell in extra if cell)}); "
                f"is there an unquoted {self._delimiter!r} inside a cell?",
            )
        values: dict[str, str] = {}
        for position, (column, _label) in enumerate(self._layout):
            value = cells[position].strip() if position < len(cells) else ""
            if column.field == "committees":  # Alt+Enter lists in Excel are line breaks
                # Split and strip, not re.sub(r"\s*[\r\n]+\s*", ","): that pattern backtracks
                # over a long run of spaces without a line break (minutes for one 120 kB cell).
                value = ",".join(part.strip() for part in _LINE_BREAKS.split(value))
            bad = control_character(value)
            if bad is not None:
                self._problem(
                    line, column.field, f"contains a control character (U+{ord(bad):04X})"
                )
                continue
            values[column.field] = value
        entry = self._build(line, values)
        self._check_duplicates(line, values)
        if entry is not None and len(self.problems) == before:
            self.entries.append(entry)

    def _build(self, line: int, values: dict[str, str]) -> RosterEntry | None:
        """The entry, or None when a cell had a problem (already recorded)."""
        before = len(self.problems)
        given_names = self._required(line, values, "given_names", "given names")
        surname = self._required(line, values, "surname", "surname")
        district = self._required(line, values, "district", "district")
        club = WHITESPACE.sub(" ", values.get("club", ""))
        if given_names and surname:
            self._check_address(line, given_names, surname)
        role = self._convert(line, values, "role", parse_role, default="radny")
        committees = self._parse_committees(line, values.get("committees", ""))
        term_start = None
        if self._required(line, values, "term_start", "term start"):
            term_start = self._convert(line, values, "term_start", parse_date)
        mandate_end = self._convert(line, values, "mandate_end", parse_date)
        if term_start is not None and mandate_end is not None and mandate_end < term_start:
            self._problem(
                line,
                "mandate_end",
                f"mandate end {values['mandate_end']!r} is before term start "
                f"{values['term_start']!r}",
            )
        private_email = self._convert(line, values, "private_email", check_email)
        phone = self._convert(line, values, "phone", check_phone)
        if (
            len(self.problems) > before
            or not (given_names and surname and district)
            or role is None
            or committees is None
            or term_start is None
        ):
            return None
        return RosterEntry(
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
            external_id=values.get("external_id") or None,
        )

    def _required(self, line: int, values: dict[str, str], field: str, what: str) -> str:
        """The value with inner whitespace collapsed; a problem when the cell is empty."""
        value = WHITESPACE.sub(" ", values.get(field, ""))
        if not value and field in values:  # absent: a control character was reported
            self._problem(line, field, f"missing {what}")
        return value

    def _convert(
        self,
        line: int,
        values: dict[str, str],
        field: str,
        convert: Callable[[str], _T],
        default: _T | None = None,
    ) -> _T | None:
        """The converted cell; ``default`` when empty or absent; None after a problem."""
        value = values.get(field, "")
        if not value:
            return default
        try:
            return convert(value)
        except CellError as exc:
            self._problem(line, field, str(exc))
            return None

    def _check_address(self, line: int, given_names: str, surname: str) -> None:
        """Flag names no address can be made from now, not halfway through a sync."""
        for field, args in (
            ("given_names", (given_names, "x")),
            ("surname", ("x", surname)),
            (None, (given_names, surname)),
        ):
            try:
                base_local_part(*args)
            except NamingError as exc:
                self._problem(line, field, str(exc))
                return

    def _parse_committees(self, line: int, value: str) -> tuple[str, ...] | None:
        slugs: list[str] = []
        ok = True
        for item in (part.strip() for part in re.split(r"[,|]", value)):
            if not item:
                continue
            if self._committees is None:
                slug = slugify_committee(item)
                if not slug:
                    self._problem(
                        line, "committees", f"committee {item!r} has no letters or digits"
                    )
                    ok = False
                    continue
            else:
                found = self._committees.resolve(item)
                if found is None:
                    self._problem(
                        line,
                        "committees",
                        f"unknown committee {item!r}; known committees: "
                        f"{self._committees.describe()}",
                    )
                    ok = False
                    continue
                slug = found
            if slug not in slugs:
                slugs.append(slug)
        return tuple(slugs) if ok else None

    def _check_duplicates(self, line: int, values: dict[str, str]) -> None:
        external_id = values.get("external_id", "")
        if external_id:
            key = external_id.casefold()
            earlier = self._lines_by_id.setdefault(key, line)
            if earlier != line:
                self._problem(
                    line, "external_id", f"id {external_id!r} is already used on line {earlier}"
                )
        given_names = values.get("given_names", "")
        surname = values.get("surname", "")
        district = values.get("district", "")
        if given_names and surname and district:
            person = (normalise_name(f"{given_names} {surname}"), normalise_name(district))
            earlier = self._lines_by_person.setdefault(person, line)
            if earlier != line:
                self._problem(
                    line,
                    None,
                    f"{given_names} {surname} in district {district!r} "
                    f"is already on line {earlier}",
                )
