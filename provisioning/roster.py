"""Roster files (CSV exported from Excel by clerks) → desired councillors, with line errors.

Pure except ``read_roster``, which reads the file. Clerks' files come as ``;``- or
``,``-delimited CSV in UTF-8 (with or without BOM) or Windows-1250, with Polish or English
headers. A problem in one row never hides the others: every row problem is collected with
its line and column, and only whole-file problems raise ``RosterFileError``.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TypeVar

from provisioning.errors import NamingError, ProvisioningError
from provisioning.naming import base_local_part, normalise_name, transliterate

ROLES = ("radny", "przewodniczacy", "wiceprzewodniczacy")

_T = TypeVar("_T")

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
_SNIFF_BYTES = 8 * 1024
# Share of control bytes above which a file is not text, whatever its encoding.
_MAX_CONTROL_SHARE = 0.05
_POLISH_LETTERS = frozenset("ąćęłńóśźżĄĆĘŁŃÓŚŹŻ")
# What ISO-8859-2 ą/ś/Ą/Ś/Ź bytes look like when decoded as Windows-1250.
_LATIN2_TELLTALES = frozenset("±¶¦¬ˇ")


class RosterFileError(ProvisioningError):
    """The roster as a whole cannot be read; the message names the file and line if known."""

    def __init__(self, path: str, message: str, *, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.reason = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class RosterEntry:
    """One councillor as the roster wants them; ``line`` is where the row starts."""

    line: int
    given_names: str
    surname: str
    district: str
    club: str
    role: str
    committees: tuple[str, ...]
    term_start: date
    mandate_end: date | None
    private_email: str | None
    phone: str | None
    external_id: str | None

    @property
    def full_name(self) -> str:
        return f"{self.given_names} {self.surname}"


@dataclass(frozen=True)
class RosterProblem:
    """A problem in one row (line 1 is the header); ``column`` is the header as written."""

    path: str
    line: int
    column: str | None
    message: str

    def __str__(self) -> str:
        if self.column is None:
            return f"{self.path}:{self.line}: {self.message}"
        return f"{self.path}:{self.line}: column {self.column!r}: {self.message}"


@dataclass(frozen=True)
class Roster:
    """A parsed roster: the valid rows as entries, the invalid ones as problems."""

    path: str
    encoding: str
    delimiter: str
    entries: tuple[RosterEntry, ...]
    problems: tuple[RosterProblem, ...]


# --- columns -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    field: str
    label: str
    aliases: tuple[str, ...]
    required: bool = False


_COLUMNS = (
    _Column(
        "given_names",
        "given names",
        (
            "imię",
            "imiona",
            "imię i drugie imię",
            "given names",
            "given name",
            "first name",
        ),
        required=True,
    ),
    _Column("surname", "surname", ("nazwisko", "surname", "last name"), required=True),
    _Column("district", "district", ("okręg", "okręg wyborczy", "district"), required=True),
    _Column("club", "club", ("klub", "klub radnych", "club")),
    _Column("role", "role", ("funkcja", "rola", "role")),
    _Column("committees", "committees", ("komisje", "committees")),
    _Column(
        "term_start",
        "term start",
        ("początek kadencji", "data ślubowania", "term start"),
        required=True,
    ),
    _Column("mandate_end", "mandate end", ("koniec mandatu", "wygaśnięcie mandatu", "mandate end")),
    _Column(
        "private_email",
        "private e-mail",
        ("e-mail prywatny", "email prywatny", "e-mail", "private email"),
    ),
    _Column("phone", "phone", ("telefon", "tel", "phone")),
    _Column("external_id", "external id", ("id", "identyfikator", "nr", "external id")),
)


def _header_key(text: str) -> str:
    return re.sub(r"[\s_.\-]+", "", transliterate(text))


_COLUMN_BY_KEY: dict[str, _Column] = {
    _header_key(alias): column for column in _COLUMNS for alias in column.aliases
}


def _accepted_columns() -> str:
    return "; ".join(f"{column.label}: {', '.join(column.aliases)}" for column in _COLUMNS)


# --- roles ---------------------------------------------------------------------------------

_ROLE_ALIASES: dict[str, str] = {
    **dict.fromkeys(
        ("radny", "radna", "councillor", "councilor", "member"),
        "radny",
    ),
    **dict.fromkeys(
        (
            "przewodniczacy",
            "przewodniczaca",
            "przewodniczacyrady",
            "przewodniczacarady",
            "chair",
            "chairman",
            "chairwoman",
            "chairperson",
        ),
        "przewodniczacy",
    ),
    **dict.fromkeys(
        (
            "wiceprzewodniczacy",
            "wiceprzewodniczaca",
            "wiceprzewodniczacyrady",
            "wiceprzewodniczacarady",
            "vicechair",
            "vicechairman",
            "vicechairwoman",
            "vicechairperson",
            "deputychair",
            "deputychairman",
            "deputychairwoman",
            "deputychairperson",
        ),
        "wiceprzewodniczacy",
    ),
}


# --- committees ----------------------------------------------------------------------------


def _committee_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", transliterate(text))


def _without_komisja(key: str) -> str:
    return key[len("komisja") :] if key.startswith("komisja") else key


class _CommitteeIndex:
    """Resolves a committee as clerks write it (slug, full or short name) to its slug."""

    def __init__(self, committees: Mapping[str, str]) -> None:
        self._committees = dict(committees)
        self._by_key: dict[str, str] = {}
        for slug, name in committees.items():
            name_key = _committee_key(name)
            for key in {_committee_key(slug), name_key, _without_komisja(name_key)}:
                if not key:
                    continue
                other = self._by_key.setdefault(key, slug)
                if other != slug:
                    raise ValueError(
                        f"committees {other!r} and {slug!r} cannot be told apart by name"
                    )

    def resolve(self, text: str) -> str | None:
        key = _committee_key(text)
        return self._by_key.get(key) or self._by_key.get(_without_komisja(key))

    def describe(self) -> str:
        return ", ".join(f"{slug} ({name})" for slug, name in self._committees.items())


def _slugify_committee(text: str) -> str:
    ascii_text = re.sub(r"^komisja[\s_\-]+", "", transliterate(text).strip())
    slug = re.sub(r"[^a-z0-9-]", "", re.sub(r"[\s_]+", "-", ascii_text))
    return re.sub(r"-{2,}", "-", slug).strip("-")


# --- cell values ---------------------------------------------------------------------------

_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_POLISH_DATE = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})")
_PHONE = re.compile(r"\+?[0-9 ()\-]+")
_DOMAIN_LABEL = re.compile(r"[^\s@()<>\[\]\\,;:\"]+")
_WHITESPACE = re.compile(r"\s+")


class _CellError(Exception):
    """A cell's value is unusable; the message says why and what to write instead."""


def _parse_date(value: str) -> date:
    if match := _ISO_DATE.fullmatch(value):
        year, month, day = (int(part) for part in match.groups())
    elif match := _POLISH_DATE.fullmatch(value):
        day, month, year = (int(part) for part in match.groups())
    else:
        raise _CellError(f"date {value!r} not understood; write DD.MM.YYYY or YYYY-MM-DD")
    try:
        return date(year, month, day)
    except ValueError:
        raise _CellError(f"date {value!r} does not exist") from None


def _parse_role(value: str) -> str:
    if not value:
        return "radny"
    role = _ROLE_ALIASES.get(_header_key(value))
    if role is None:
        raise _CellError(
            f"unknown role {value!r}; write radny/radna, przewodniczący/przewodnicząca or "
            "wiceprzewodniczący/wiceprzewodnicząca (English: councillor, chair, vice-chair)"
        )
    return role


def _check_email(value: str) -> str:
    def invalid(why: str) -> _CellError:
        return _CellError(f"invalid e-mail address {value!r}: {why}")

    if any(char.isspace() for char in value):
        raise invalid("it contains spaces")
    if len(value) > 254:
        raise invalid("it is longer than 254 characters")
    if value.count("@") != 1:
        raise invalid("it must contain exactly one @")
    local, domain = value.split("@")
    if not local:
        raise invalid("nothing before the @")
    labels = domain.split(".")
    if len(labels) < 2 or not all(
        _DOMAIN_LABEL.fullmatch(label) and not label.startswith("-") and not label.endswith("-")
        for label in labels
    ):
        raise invalid("the part after the @ must be a domain such as example.org")
    return value


def _check_phone(value: str) -> str:
    digits = sum(char.isdigit() for char in value)
    if not _PHONE.fullmatch(value) or not 9 <= digits <= 15:
        raise _CellError(
            f"invalid phone number {value!r}: write 9 to 15 digits, optionally with a leading +, "
            "spaces, hyphens or parentheses"
        )
    return value


def _control_character(value: str) -> str | None:
    for char in value:
        if unicodedata.category(char) == "Cc":
            return char
    return None


# --- decoding ------------------------------------------------------------------------------


def _line_of(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def _check_not_binary(raw: bytes, path: str) -> None:
    sample = raw[:_SNIFF_BYTES]
    if sample.startswith(b"PK\x03\x04"):
        raise RosterFileError(
            path,
            "this is an Excel workbook (.xlsx) or another ZIP file, not CSV; "
            "in Excel use Save As → 'CSV UTF-8 (Comma delimited)'",
        )
    if sample.startswith(b"\xd0\xcf\x11\xe0"):
        raise RosterFileError(
            path,
            "this is an old Excel workbook (.xls), not CSV; "
            "in Excel use Save As → 'CSV UTF-8 (Comma delimited)'",
        )
    if b"\x00" in sample:
        raise RosterFileError(path, "binary file (it contains NUL bytes), not a CSV text file")
    control = sum(
        1 for byte in sample if (byte < 0x20 and byte not in b"\t\n\r\f\v") or byte == 0x7F
    )
    if control > len(sample) * _MAX_CONTROL_SHARE:
        raise RosterFileError(path, "binary file (mostly non-text bytes), not a CSV text file")


def _decode_explicit(raw: bytes, path: str, encoding: str) -> str:
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise RosterFileError(
            path, f"unknown encoding {encoding!r}; use e.g. utf-8 or cp1250"
        ) from None
    if not codec.name.startswith(("utf-16", "utf-32")):
        _check_not_binary(raw, path)
    try:
        return raw.decode(codec.name)
    except UnicodeDecodeError as exc:
        raise RosterFileError(
            path,
            f"byte 0x{raw[exc.start]:02x} cannot be decoded as {encoding}; "
            "check the --encoding option",
            line=_line_of(raw, exc.start),
        ) from None


def _decode_detected(raw: bytes, path: str) -> tuple[str, str]:
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise RosterFileError(
            path,
            "the file is UTF-16 (Excel's 'Unicode text'); save it as 'CSV UTF-8' instead",
        )
    _check_not_binary(raw, path)
    if raw.startswith(codecs.BOM_UTF8):
        bom = len(codecs.BOM_UTF8)
        try:
            return raw[bom:].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as exc:
            raise RosterFileError(
                path,
                "the file starts with a UTF-8 byte-order mark but this line is not valid "
                "UTF-8; pass --encoding with the right encoding",
                line=_line_of(raw, bom + exc.start),
            ) from None
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        first_bad_line = _line_of(raw, exc.start)
    try:
        text = raw.decode("cp1250")
    except UnicodeDecodeError:
        text = ""
    if any(char in _POLISH_LETTERS for char in text) and not any(
        char in _LATIN2_TELLTALES for char in text
    ):
        return text, "cp1250"
    raise RosterFileError(
        path,
        "unknown encoding: this line is not UTF-8 and the file does not look like "
        "Windows-1250; pass --encoding cp1250 (or the right one, e.g. iso-8859-2)",
        line=first_bad_line,
    )


# --- reading -------------------------------------------------------------------------------


def read_roster(
    path: Path | str,
    *,
    encoding: str | None = None,
    committees: Mapping[str, str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Roster:
    """Read and parse a roster file; ``encoding`` overrides detection.

    ``committees`` maps slug → display name; when given, every committee in the file must be
    one of them. Raises RosterFileError for whole-file problems; row problems are returned.
    """
    shown = str(path)
    file = Path(path)
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        raise RosterFileError(shown, "file not found") from None
    except OSError as exc:
        raise RosterFileError(shown, f"cannot read the file: {exc.strerror}") from None
    if file.is_dir():
        raise RosterFileError(shown, "this is a directory, not a roster file")
    if size > max_bytes:
        raise RosterFileError(shown, _too_large(size, max_bytes))
    try:
        with file.open("rb") as stream:
            raw = stream.read(max_bytes + 1)
    except OSError as exc:
        raise RosterFileError(shown, f"cannot read the file: {exc.strerror}") from None
    if len(raw) > max_bytes:
        raise RosterFileError(
            shown, f"the file grew over the limit of {max_bytes} bytes while being read"
        )
    if not raw.strip() or raw.strip() == codecs.BOM_UTF8:
        raise RosterFileError(shown, "the file is empty")
    if encoding is not None:
        text, used = _decode_explicit(raw, shown, encoding), encoding
    else:
        text, used = _decode_detected(raw, shown)
    return parse_roster_text(text, path=shown, committees=committees, encoding=used)


def _too_large(size: int, limit: int) -> str:
    return (
        f"the file is {size} bytes, over the limit of {limit} bytes; "
        "a roster of a council is far smaller, check that this is the right file"
    )


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
    index = _CommitteeIndex(committees) if committees is not None else None
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


def _read_header(cells: list[str], path: str, line: int) -> list[tuple[_Column, str]]:
    """Columns in file order, each with its header as written."""
    labels = [cell.strip() for cell in cells]
    while labels and not labels[-1]:  # Excel repeats trailing separators of empty columns
        labels.pop()
    layout: list[tuple[_Column, str]] = []
    unknown: list[str] = []
    seen: dict[str, str] = {}
    for number, label in enumerate(labels, start=1):
        if not label:
            raise RosterFileError(path, f"column {number} has no header", line=line)
        if _control_character(label) is not None:
            raise RosterFileError(path, f"header {label!r} contains a control character", line=line)
        column = _COLUMN_BY_KEY.get(_header_key(label))
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
            f"unknown column {names}; accepted columns are {_accepted_columns()}",
            line=line,
        )
    missing = [column for column in _COLUMNS if column.required and column.field not in seen]
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
        layout: list[tuple[_Column, str]],
        committees: _CommitteeIndex | None,
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
                value = re.sub(r"\s*[\r\n]+\s*", ",", value)
            bad = _control_character(value)
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
        club = _WHITESPACE.sub(" ", values.get("club", ""))
        if given_names and surname:
            self._check_address(line, given_names, surname)
        role = self._convert(line, values, "role", _parse_role, default="radny")
        committees = self._parse_committees(line, values.get("committees", ""))
        term_start = None
        if self._required(line, values, "term_start", "term start"):
            term_start = self._convert(line, values, "term_start", _parse_date)
        mandate_end = self._convert(line, values, "mandate_end", _parse_date)
        if term_start is not None and mandate_end is not None and mandate_end < term_start:
            self._problem(
                line,
                "mandate_end",
                f"mandate end {values['mandate_end']!r} is before term start "
                f"{values['term_start']!r}",
            )
        private_email = self._convert(line, values, "private_email", _check_email)
        phone = self._convert(line, values, "phone", _check_phone)
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
        value = _WHITESPACE.sub(" ", values.get(field, ""))
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
        except _CellError as exc:
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
                slug = _slugify_committee(item)
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
