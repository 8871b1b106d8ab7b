"""Numbers in words people read: one plural rule, one size formatter, one way to count pages,
days and durations, in Polish and English (Babel's CLDR data for plurals and separators)."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from babel import Locale
from babel.numbers import format_decimal

NBSP = "\N{NO-BREAK SPACE}"

# Forms by CLDR plural category. Polish: one (1), few (2-4, 22-24, …), many (5-21, 25, …, 12-14),
# other (fractions). English: one, other.
Forms = Mapping[str, str]


@functools.cache
def _locale(language: str) -> Locale:
    return Locale.parse("en" if language == "en" else "pl")


def plural(count: float, forms: Forms, language: str) -> str:
    """The word for ``count`` things: ``forms`` maps CLDR categories (``one``, ``few``,
    ``many``, ``other``) to words; a missing category falls back to ``other``, then ``many``."""
    category = _locale(language).plural_form(count)
    return forms.get(category) or forms.get("other") or forms["many"]


def count_of(count: int, forms: Forms, language: str, sep: str = " ") -> str:
    """'3 strony', '5 stron', '1 page'."""
    return f"{count}{sep}{plural(count, forms, language)}"


def decimal(value: float, language: str, pattern: str = "#,##0.#") -> str:
    """A number with the language's decimal and grouping separators ('1,2' / '1.2')."""
    return str(format_decimal(value, format=pattern, locale=_locale(language)))


_SIZE_UNITS = ("B", "KB", "MB", "GB")


def format_size(size: int, language: str) -> str:
    """A size as people compare it with their file manager: 1,024-based, one decimal below
    100 ('1,2 MB' / '1.2 MB', '512 B'). Every page, mail and report uses this one."""
    value = float(size)
    unit = _SIZE_UNITS[0]
    for unit in _SIZE_UNITS:
        if value < 1024 or unit == _SIZE_UNITS[-1]:
            break
        value /= 1024
    if unit == "B" or value >= 100:
        text = decimal(round(value), language, "0" if value < 1024 else "#,##0")
    else:
        text = decimal(value, language, "0.0")
    return f"{text}{NBSP}{unit}"


def format_bytes_exact(size: int, language: str) -> str:
    """An exact byte count with thousands grouped, for evidence: '1 234 567 B' / '1,234,567 B'."""
    return f"{decimal(size, language, '#,##0').replace(' ', NBSP)}{NBSP}B"


PAGES: Mapping[str, Forms] = {
    "pl": {"one": "strona", "few": "strony", "many": "stron", "other": "strony"},
    "en": {"one": "page", "other": "pages"},
}


def format_pages(pages: int, language: str, sep: str = NBSP) -> str:
    """'1 strona', '3 strony', '12 stron'; '1 page', '3 pages'."""
    return count_of(pages, PAGES["en" if language == "en" else "pl"], language, sep)


_DAYS: Mapping[str, Forms] = {
    "pl": {"one": "dzień", "few": "dni", "many": "dni", "other": "dnia"},
    "en": {"one": "day", "other": "days"},
}
_WORKING_DAYS: Mapping[str, Forms] = {
    "pl": {
        "one": "dzień roboczy",
        "few": "dni robocze",
        "many": "dni roboczych",
        "other": "dnia roboczego",
    },
    "en": {"one": "working day", "other": "working days"},
}


def format_days(amount: int, language: str, *, working: bool = False) -> str:
    """'1 dzień roboczy', '3 dni robocze', '5 dni roboczych', '7 dni'; English alike."""
    table = _WORKING_DAYS if working else _DAYS
    return count_of(amount, table["en" if language == "en" else "pl"], language)


# Polish accusative forms, as the bounce report uses them ("próbowano przez 2 godziny").
_DURATION_UNITS: tuple[tuple[int, Forms, Forms], ...] = (
    (86400, {"one": "dzień", "few": "dni", "many": "dni"}, {"one": "day", "other": "days"}),
    (
        3600,
        {"one": "godzinę", "few": "godziny", "many": "godzin"},
        {"one": "hour", "other": "hours"},
    ),
    (
        60,
        {"one": "minutę", "few": "minuty", "many": "minut"},
        {"one": "minute", "other": "minutes"},
    ),
    (
        1,
        {"one": "sekundę", "few": "sekundy", "many": "sekund"},
        {"one": "second", "other": "seconds"},
    ),
)


def format_duration(seconds: float, language: str) -> str:
    """The largest whole unit: '5 dni', '2 godziny', '1 minute'."""
    for size, polish, english in _DURATION_UNITS:
        if seconds >= size or size == 1:
            n = max(1, round(seconds / size))
            return count_of(n, english if language == "en" else polish, language)
    raise AssertionError("unreachable")
