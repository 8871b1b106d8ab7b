"""Minimum notice before a council session, counted in days or in Polish working days.

The council's statute says how many days before a session councillors must receive the notice
(agenda, draft resolutions); budget and statute drafts often need longer. This module holds the
calendar (Polish statutory holidays), the rules read from the ``[notice]`` settings section, and
the check that refuses a distribution arriving later than the strictest applicable rule allows.

Counting (one convention everywhere, so "7 days" and "7 working days" agree in spirit):

* ``N days``: the notice must arrive no later than ``session_day - N`` calendar days. Delivered on
  that day, the delivery day plus the days in between make N days. Weekends and holidays do not
  move a calendar-day deadline: e-mail arrives on Sundays too.
* ``N working days``: step back from the session day over N working days (Monday to Friday, not a
  public holiday); the session day itself is not counted. The N-th working day found is the
  deadline, so the delivery day counts as one of the N and the deadline is always a working day.
  Saturdays are not working days here.
* ``0`` of either unit: delivery on the session day itself is still in time.

Pure: no I/O, no clock. Dates are ``datetime.date`` in the council's local calendar.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import Literal

import holidays

from mailsvc.domain.vocabulary import (
    DOCUMENT_KINDS,
    SESSION_KINDS,
    Catalogue,
    kind_label,
    session_kind_phrase,
)
from mailsvc.domain.wording import format_days

# --- the calendar ---------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _holidays(year: int) -> Mapping[date, str]:
    # The `holidays` package keeps Poland's statutory days off, amendments (Trzech Króli from
    # 2011, Wigilia from 2025) and one-off days (12 November 2018) included.
    days = holidays.country_holidays("PL", years=year, language="pl")
    return MappingProxyType(dict(sorted(days.items())))  # read-only: the cache is shared


def polish_holidays(year: int) -> dict[date, str]:
    """The statutory non-working days of Poland in ``year`` with their Polish names."""
    return dict(_holidays(year))


def holiday_name(day: date) -> str | None:
    """The Polish name of the holiday on ``day``, or None on an ordinary day."""
    return _holidays(day.year).get(day)


def is_working_day(day: date) -> bool:
    """Monday to Friday and not a public holiday (Saturdays are not working days here)."""
    return day.weekday() < 5 and holiday_name(day) is None


# --- rules ----------------------------------------------------------------------------------

ANY = "*"

Unit = Literal["days", "working-days"]

# What the settings may say; one unit per alternative. Polish forms cover 1, 2–4 and 5+.
_AMOUNT = re.compile(
    r"""^\s*(?P<amount>[+-]?\d+)\s+(?:
        (?P<working>working[\s-]+days?|dni\s+robocz(?:e|ych)|dzień\s+roboczy)
        |(?P<days>days?|dni|dzień)
    )\s*$""",
    re.VERBOSE | re.IGNORECASE,
)


def _language(language: str) -> str:
    return "pl" if language == "pl" else "en"


@dataclass(frozen=True)
class NoticeRule:
    """Notice of at least ``amount`` ``unit`` before a session of a kind, for a document kind.

    ``session_kind`` and ``document_kind`` are "*" when the rule applies to any kind.
    """

    session_kind: str
    document_kind: str
    amount: int
    unit: Unit

    def describe(self, language: str = "pl") -> str:
        """'7 dni przed sesją', '14 dni roboczych przed sesją', '7 days before the session'."""
        working = self.unit == "working-days"
        lang = _language(language)
        if self.amount == 0:
            return "w dniu sesji" if lang == "pl" else "on the session day"
        days = format_days(self.amount, lang, working=working)
        return f"{days} przed sesją" if lang == "pl" else f"{days} before the session"

    def scope(self, language: str = "pl") -> str:
        """What the rule is for, e.g. 'projekt budżetu' or 'sesja nadzwyczajna'; '' if general."""
        lang = _language(language)
        parts = []
        if self.document_kind != ANY:
            parts.append(kind_label(Catalogue.DOCUMENT, self.document_kind, lang))
        if self.session_kind != ANY:
            parts.append(session_kind_phrase(self.session_kind, lang))
        return ", ".join(parts)

    @property
    def specificity(self) -> int:
        """Precedence: document and session kind (3) > document kind (2) > session kind (1) >
        the default (0)."""
        return (2 if self.document_kind != ANY else 0) + (1 if self.session_kind != ANY else 0)


DEFAULT_RULE = NoticeRule(ANY, ANY, 7, "days")


def parse_amount(value: object, key: str) -> tuple[int, Unit]:
    """'7 days' → (7, 'days'); '5 working days' / '5 dni roboczych' → (5, 'working-days').

    ``key`` is the full settings key, used in the error message.
    """
    if not isinstance(value, str):
        raise ValueError(
            f'{key}: expected the amount with its unit, e.g. "7 days" or "5 working days" '
            f"(got {value!r})"
        )
    match = _AMOUNT.match(value)
    if match is None:
        raise ValueError(
            f'{key}: {value!r} is not "<n> days" or "<n> working days" '
            '("<n> dni" and "<n> dni roboczych" are accepted too)'
        )
    amount = int(match["amount"])
    if amount < 0:
        raise ValueError(f"{key}: {value!r}: the number of days must be 0 or more")
    if amount > 366:
        raise ValueError(f"{key}: {value!r}: more than a year of notice is surely a typo")
    return amount, "working-days" if match["working"] else "days"


def _known(kind: str, known: Mapping[str, object], key: str, what: str) -> None:
    if kind not in known:
        raise ValueError(f"{key}: unknown {what} {kind!r}; expected one of: {', '.join(known)}")


def parse_rules(table: Mapping[str, object]) -> tuple[NoticeRule, ...]:
    """Rules from the ``[notice]`` settings section (the section's own table).

    Shape::

        [notice]
        default = "7 days"              # any session, any document; 7 days when left out
        [notice.session]                # per session kind, any document
        extraordinary = "3 days"
        [notice.document]               # per document kind, any session kind
        budget-draft = "14 days"
        statute-draft = "14 working days"
        [notice.session.budget]         # a session kind as a table: its own default and
        default = "10 days"             # rules for document kinds at that session kind only
        budget-draft = "21 days"

    Amounts are "<n> days" or "<n> working days" (also "1 day", "1 working day", "<n> dni",
    "<n> dni roboczych", "2 dni robocze", "1 dzień roboczy"); "0 days" means none. Session kinds:
    ordinary, extraordinary, budget, constituent. Document kinds: agenda, draft-resolution,
    budget-draft, statute-draft, other.

    Raises ValueError naming the full key (``notice.session.budget.budget-draft``) and the fault.
    """
    rules: list[NoticeRule] = []
    for key in table:
        if key not in ("default", "session", "document"):
            raise ValueError(f"notice.{key}: unknown key; expected default, session or document")
    amount, unit = parse_amount(table.get("default", "7 days"), "notice.default")
    rules.append(NoticeRule(ANY, ANY, amount, unit))

    sessions = _table(table.get("session", {}), "notice.session")
    for session_kind, value in sessions.items():
        key = f"notice.session.{session_kind}"
        _known(session_kind, SESSION_KINDS, key, "session kind")
        if not isinstance(value, Mapping):
            rules.append(NoticeRule(session_kind, ANY, *parse_amount(value, key)))
            continue
        for document_kind, inner in value.items():
            inner_key = f"{key}.{document_kind}"
            if document_kind == "default":
                rules.append(NoticeRule(session_kind, ANY, *parse_amount(inner, inner_key)))
                continue
            _known(document_kind, DOCUMENT_KINDS, inner_key, "document kind")
            rules.append(NoticeRule(session_kind, document_kind, *parse_amount(inner, inner_key)))

    documents = _table(table.get("document", {}), "notice.document")
    for document_kind, value in documents.items():
        key = f"notice.document.{document_kind}"
        _known(document_kind, DOCUMENT_KINDS, key, "document kind")
        rules.append(NoticeRule(ANY, document_kind, *parse_amount(value, key)))
    return tuple(rules)


def _table(value: object, key: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{key}: expected a table ([{key}]), got {value!r}")
    return value


# --- counting and checking ------------------------------------------------------------------


def latest_delivery(session_day: date, rule: NoticeRule) -> date:
    """The last day the notice may reach councillors under ``rule`` (see the module docstring)."""
    if rule.unit == "days":
        return session_day - timedelta(days=rule.amount)
    day, remaining = session_day, rule.amount
    while remaining > 0:
        day -= timedelta(days=1)
        if is_working_day(day):
            remaining -= 1
    return day


def _validate_kinds(session_kind: str, document_kinds: Sequence[str]) -> None:
    if session_kind not in SESSION_KINDS:
        raise ValueError(
            f"unknown session kind {session_kind!r}; expected one of: {', '.join(SESSION_KINDS)}"
        )
    for kind in document_kinds:
        if kind not in DOCUMENT_KINDS:
            raise ValueError(
                f"unknown document kind {kind!r}; expected one of: {', '.join(DOCUMENT_KINDS)}"
            )


def _matches(rule: NoticeRule, session_kind: str, document_kind: str) -> bool:
    return rule.session_kind in (ANY, session_kind) and rule.document_kind in (
        ANY,
        document_kind,
    )


def applicable_rules(
    rules: Iterable[NoticeRule], session_kind: str, document_kinds: Iterable[str]
) -> list[NoticeRule]:
    """The rule deciding each document kind of the pack: the most specific matching one.

    Precedence per document: a rule for that document kind at that session kind, then one for
    the document kind at any session, then one for the session kind, then the default. With an
    empty pack the notice itself is judged by the session-kind rule or the default. The result
    is in pack order without repeats; which of them is strictest depends on the session day
    (see :func:`check_notice`). Raises ValueError for an unknown kind.
    """
    kinds = list(dict.fromkeys(document_kinds)) or [ANY]
    _validate_kinds(session_kind, [k for k in kinds if k != ANY])
    candidates = list(rules)
    chosen: list[NoticeRule] = []
    for kind in kinds:
        matching = [r for r in candidates if _matches(r, session_kind, kind)]
        if not matching:
            continue
        best = max(matching, key=lambda r: r.specificity)  # first of the most specific wins
        if best not in chosen:
            chosen.append(best)
    return chosen


@dataclass(frozen=True)
class NoticeBreach:
    """A notice that would arrive too late: the deciding rule and the dates, with a message."""

    rule: NoticeRule
    deadline: date  # the last day delivery is in time
    deliver_on: date  # the planned delivery day
    session_day: date
    message: str


_BREACH = {
    "pl": (
        "Zawiadomienie dotarłoby {deliver_on}, a reguła „{rule}”{scope} wymaga doręczenia "
        "najpóźniej {deadline} (sesja {session_day})."
    ),
    "en": (
        "The notice would arrive on {deliver_on}, but the rule “{rule}”{scope} requires delivery "
        "by {deadline} (session on {session_day})."
    ),
}


def deciding_rule(
    *,
    session_day: date,
    session_kind: str,
    document_kinds: Iterable[str],
    rules: Sequence[NoticeRule],
) -> tuple[NoticeRule, date] | None:
    """The strictest rule for this pack and its deadline (the last day delivery is in time):
    the earliest deadline, on equal deadlines the more specific rule; None when no rule
    applies."""
    deciding = applicable_rules(rules, session_kind, document_kinds)
    if not deciding:
        return None
    return min(
        ((r, latest_delivery(session_day, r)) for r in deciding),
        key=lambda pair: (pair[1], -pair[0].specificity),
    )


def check_notice(
    *,
    deliver_on: date,
    session_day: date,
    session_kind: str,
    document_kinds: Iterable[str],
    rules: Sequence[NoticeRule],
    language: str = "pl",
) -> NoticeBreach | None:
    """None when a notice delivered on ``deliver_on`` is in time for every document of the pack;
    otherwise the breach of the strictest applicable rule (the earliest deadline; on equal
    deadlines the more specific rule). Dates in messages are ISO (2026-12-03)."""
    decided = deciding_rule(
        session_day=session_day,
        session_kind=session_kind,
        document_kinds=document_kinds,
        rules=rules,
    )
    if decided is None:
        return None
    rule, deadline = decided
    if deliver_on <= deadline:
        return None
    lang = _language(language)
    scope = rule.scope(lang)
    message = _BREACH[lang].format(
        deliver_on=deliver_on.isoformat(),
        rule=rule.describe(lang),
        scope=f" ({scope})" if scope else "",
        deadline=deadline.isoformat(),
        session_day=session_day.isoformat(),
    )
    return NoticeBreach(rule, deadline, deliver_on, session_day, message)
