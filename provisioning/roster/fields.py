"""The roster's columns (Polish or English headers) and the rules for each cell's value."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from provisioning.naming import transliterate

# --- columns -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    field: str
    label: str
    aliases: tuple[str, ...]
    required: bool = False


COLUMNS = (
    Column(
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
    Column("surname", "surname", ("nazwisko", "surname", "last name"), required=True),
    Column("district", "district", ("okręg", "okręg wyborczy", "district"), required=True),
    Column("club", "club", ("klub", "klub radnych", "club")),
    Column("role", "role", ("funkcja", "rola", "role")),
    Column("committees", "committees", ("komisje", "committees")),
    Column(
        "term_start",
        "term start",
        ("początek kadencji", "data ślubowania", "term start"),
        required=True,
    ),
    Column("mandate_end", "mandate end", ("koniec mandatu", "wygaśnięcie mandatu", "mandate end")),
    Column(
        "private_email",
        "private e-mail",
        ("e-mail prywatny", "email prywatny", "e-mail", "private email"),
    ),
    Column("phone", "phone", ("telefon", "tel", "phone")),
    Column("external_id", "external id", ("id", "identyfikator", "nr", "external id")),
)


def header_key(text: str) -> str:
    return re.sub(r"[\s_.\-]+", "", transliterate(text))


COLUMN_BY_KEY: dict[str, Column] = {
    header_key(alias): column for column in COLUMNS for alias in column.aliases
}


def accepted_columns() -> str:
    return "; ".join(f"{column.label}: {', '.join(column.aliases)}" for column in COLUMNS)


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


class CommitteeIndex:
    """Resolves a committee as clerks write it (slug, full or short name) to its slug."""

    def __init__(self, committees: Mapping[str, str]) -> None:
        self._committees = dict(committees)
        self._by_key: dict[str, str] = {}
        self._resolved: dict[str, str | None] = {}
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
        if text in self._resolved:
            return self._resolved[text]
        key = _committee_key(text)
        slug = self._by_key.get(key) or self._by_key.get(_without_komisja(key))
        if len(self._resolved) < 4096:  # the spellings of one roster's committees
            self._resolved[text] = slug
        return slug

    def describe(self) -> str:
        return ", ".join(f"{slug} ({name})" for slug, name in self._committees.items())


def slugify_committee(text: str) -> str:
    ascii_text = re.sub(r"^komisja[\s_\-]+", "", transliterate(text).strip())
    slug = re.sub(r"[^a-z0-9-]", "", re.sub(r"[\s_]+", "-", ascii_text))
    return re.sub(r"-{2,}", "-", slug).strip("-")


# --- cell values ---------------------------------------------------------------------------

_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_POLISH_DATE = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})")
_PHONE = re.compile(r"\+?[0-9 ()\-]+")
_DOMAIN_LABEL = re.compile(r"[^\s@()<>\[\]\\,;:\"]+")
WHITESPACE = re.compile(r"\s+")


class CellError(Exception):
    """A cell's value is unusable; the message says why and what to write instead."""


# A roster repeats the same few dates and roles on thousands of rows: each spelling is read
# once (errors are not cached, so every bad cell is still reported on its own line).
@functools.lru_cache(maxsize=4096)
def parse_date(value: str) -> date:
    if match := _ISO_DATE.fullmatch(value):
        year, month, day = (int(part) for part in match.groups())
    elif match := _POLISH_DATE.fullmatch(value):
        day, month, year = (int(part) for part in match.groups())
    else:
        raise CellError(f"date {value!r} not understood; write DD.MM.YYYY or YYYY-MM-DD")
    try:
        return date(year, month, day)
    except ValueError:
        raise CellError(f"date {value!r} does not exist") from None


@functools.lru_cache(maxsize=4096)
def parse_role(value: str) -> str:
    if not value:
        return "radny"
    role = _ROLE_ALIASES.get(header_key(value))
    if role is None:
        raise CellError(
            f"unknown role {value!r}; write radny/radna, przewodniczący/przewodnicząca or "
            "wiceprzewodniczący/wiceprzewodnicząca (English: councillor, chair, vice-chair)"
        )
    return role


def check_email(value: str) -> str:
    def invalid(why: str) -> CellError:
        return CellError(f"invalid e-mail address {value!r}: {why}")

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


def check_phone(value: str) -> str:
    digits = sum(char.isdigit() for char in value)
    if not _PHONE.fullmatch(value) or not 9 <= digits <= 15:
        raise CellError(
            f"invalid phone number {value!r}: write 9 to 15 digits, optionally with a leading +, "
            "spaces, hyphens or parentheses"
        )
    return value


def control_character(value: str) -> str | None:
    if value.isprintable():  # no character of category Cc (nor any other unprintable one)
        return None
    for char in value:
        if unicodedata.category(char) == "Cc":
            return char
    return None
