"""Notice rules: the Polish holiday calendar, parsing [notice], counting deadlines, the check."""

from __future__ import annotations

import tomllib
from datetime import date, timedelta

import pytest

from mailsvc.domain.notice import (
    ANY,
    DEFAULT_RULE,
    NoticeBreach,
    NoticeRule,
    Unit,
    applicable_rules,
    check_notice,
    holiday_name,
    is_working_day,
    latest_delivery,
    parse_rules,
    polish_holidays,
)

# --- calendar -------------------------------------------------------------------------------


def test_holidays_2026_are_the_statutory_days_with_polish_names() -> None:
    assert polish_holidays(2026) == {
        date(2026, 1, 1): "Nowy Rok",
        date(2026, 1, 6): "Święto Trzech Króli",
        date(2026, 4, 5): "Niedziela Wielkanocna",
        date(2026, 4, 6): "Poniedziałek Wielkanocny",
        date(2026, 5, 1): "Święto Państwowe",
        date(2026, 5, 3): "Święto Narodowe Trzeciego Maja",
        date(2026, 5, 24): "Zielone Świątki",
        date(2026, 6, 4): "Dzień Bożego Ciała",
        date(2026, 8, 15): "Wniebowzięcie Najświętszej Marii Panny",
        date(2026, 11, 1): "Uroczystość Wszystkich Świętych",
        date(2026, 11, 11): "Narodowe Święto Niepodległości",
        date(2026, 12, 24): "Wigilia Bożego Narodzenia",
        date(2026, 12, 25): "Boże Narodzenie (pierwszy dzień)",
        date(2026, 12, 26): "Boże Narodzenie (drugi dzień)",
    }


def test_one_off_statutory_days_are_known() -> None:
    # 12 November 2018, the centenary of independence, was a day off by its own act.
    assert holiday_name(date(2018, 11, 12)) is not None
    assert not is_working_day(date(2018, 11, 12))  # a Monday
    assert is_working_day(date(2019, 11, 12))
    # Trzech Króli is a day off again only from 2011.
    assert date(2010, 1, 6) not in polish_holidays(2010)
    assert date(2011, 1, 6) in polish_holidays(2011)


@pytest.mark.parametrize(
    ("year", "pentecost", "corpus_christi"),
    [
        (2024, date(2024, 5, 19), date(2024, 5, 30)),
        (2025, date(2025, 6, 8), date(2025, 6, 19)),
        (2027, date(2027, 5, 16), date(2027, 5, 27)),
    ],
)
def test_movable_feasts_follow_easter(year: int, pentecost: date, corpus_christi: date) -> None:
    holidays = polish_holidays(year)
    assert holidays[pentecost] == "Zielone Świątki"
    assert holidays[corpus_christi] == "Dzień Bożego Ciała"
    assert len(holidays) == (14 if year >= 2025 else 13)


def test_christmas_eve_is_a_holiday_from_2025_only() -> None:
    assert date(2024, 12, 24) not in polish_holidays(2024)
    assert polish_holidays(2025)[date(2025, 12, 24)] == "Wigilia Bożego Narodzenia"
    assert is_working_day(date(2024, 12, 24))  # a Tuesday
    assert not is_working_day(date(2025, 12, 24))  # a Wednesday


def test_epiphany_is_a_holiday_from_2011_only() -> None:
    assert date(2010, 1, 6) not in polish_holidays(2010)
    assert date(2011, 1, 6) in polish_holidays(2011)


def test_changing_the_returned_dict_does_not_change_the_calendar() -> None:
    polish_holidays(2026).clear()
    assert holiday_name(date(2026, 12, 25)) == "Boże Narodzenie (pierwszy dzień)"


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2026, 6, 1), True),  # Monday
        (date(2026, 6, 5), True),  # Friday
        (date(2026, 6, 6), False),  # Saturday
        (date(2026, 6, 7), False),  # Sunday
        (date(2026, 6, 4), False),  # Thursday, Boże Ciało
        (date(2026, 4, 6), False),  # Easter Monday
        (date(2026, 11, 11), False),  # Wednesday, Independence Day
        (date(2026, 11, 12), True),
    ],
)
def test_is_working_day(day: date, working: bool) -> None:
    assert is_working_day(day) is working


# --- rules ----------------------------------------------------------------------------------

SAMPLE = """
[notice]
default = "7 days"
[notice.session]
extraordinary = "3 dni"
[notice.session.budget]
default = "10 days"
budget-draft = "21 working days"
[notice.document]
budget-draft = "14 days"
statute-draft = "14 dni roboczych"
"""


def test_parse_rules_reads_every_form_of_the_section() -> None:
    rules = parse_rules(tomllib.loads(SAMPLE)["notice"])
    assert set(rules) == {
        NoticeRule(ANY, ANY, 7, "days"),
        NoticeRule("extraordinary", ANY, 3, "days"),
        NoticeRule("budget", ANY, 10, "days"),
        NoticeRule("budget", "budget-draft", 21, "working-days"),
        NoticeRule(ANY, "budget-draft", 14, "days"),
        NoticeRule(ANY, "statute-draft", 14, "working-days"),
    }
    assert len(rules) == 6


def test_an_empty_section_means_seven_calendar_days() -> None:
    assert parse_rules({}) == (DEFAULT_RULE,)
    assert DEFAULT_RULE == NoticeRule(ANY, ANY, 7, "days")


@pytest.mark.parametrize(
    ("text", "amount", "unit"),
    [
        ("7 days", 7, "days"),
        ("1 day", 1, "days"),
        ("0 days", 0, "days"),
        ("5 working days", 5, "working-days"),
        ("1 working day", 1, "working-days"),
        ("5 working-days", 5, "working-days"),
        ("7 dni", 7, "days"),
        ("1 dzień", 1, "days"),
        ("14 dni roboczych", 14, "working-days"),
        ("3 dni robocze", 3, "working-days"),
        ("1 dzień roboczy", 1, "working-days"),
        ("  10  Days ", 10, "days"),
    ],
)
def test_amount_forms(text: str, amount: int, unit: Unit) -> None:
    assert parse_rules({"default": text}) == (NoticeRule(ANY, ANY, amount, unit),)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"default": "-3 days"}, "notice.default: '-3 days': the number of days must be 0 or more"),
        ({"default": 7}, 'notice.default: expected the amount with its unit, e.g. "7 days"'),
        ({"default": "7 weeks"}, "notice.default: '7 weeks' is not \"<n> days\""),
        ({"default": "seven days"}, "notice.default: 'seven days' is not"),
        ({"default": "4000 days"}, "notice.default: '4000 days': more than a year"),
        ({"defaults": "7 days"}, "notice.defaults: unknown key"),
        ({"session": {"special": "3 days"}}, "notice.session.special: unknown session kind"),
        ({"session": {"budget": "3 hours"}}, "notice.session.budget: '3 hours' is not"),
        ({"session": "3 days"}, "notice.session: expected a table"),
        (
            {"session": {"budget": {"budget_draft": "21 days"}}},
            "notice.session.budget.budget_draft: unknown document kind 'budget_draft'",
        ),
        (
            {"session": {"budget": {"default": "x"}}},
            "notice.session.budget.default: 'x' is not",
        ),
        ({"document": {"minutes": "7 days"}}, "notice.document.minutes: unknown document kind"),
        ({"document": {"agenda": "-1 dni"}}, "notice.document.agenda: '-1 dni': the number"),
    ],
)
def test_parse_rules_names_the_key_and_the_fault(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_rules(table)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("rule", "pl", "en"),
    [
        (NoticeRule(ANY, ANY, 7, "days"), "7 dni przed sesją", "7 days before the session"),
        (NoticeRule(ANY, ANY, 1, "days"), "1 dzień przed sesją", "1 day before the session"),
        (
            NoticeRule(ANY, ANY, 14, "working-days"),
            "14 dni roboczych przed sesją",
            "14 working days before the session",
        ),
        (
            NoticeRule(ANY, ANY, 3, "working-days"),
            "3 dni robocze przed sesją",
            "3 working days before the session",
        ),
        (
            NoticeRule(ANY, ANY, 22, "working-days"),
            "22 dni robocze przed sesją",
            "22 working days before the session",
        ),
        (
            NoticeRule(ANY, ANY, 12, "working-days"),
            "12 dni roboczych przed sesją",
            "12 working days before the session",
        ),
        (
            NoticeRule(ANY, ANY, 1, "working-days"),
            "1 dzień roboczy przed sesją",
            "1 working day before the session",
        ),
        (NoticeRule(ANY, ANY, 0, "days"), "w dniu sesji", "on the session day"),
    ],
)
def test_describe(rule: NoticeRule, pl: str, en: str) -> None:
    assert rule.describe("pl") == pl
    assert rule.describe("en") == en


# --- counting -------------------------------------------------------------------------------


def _days(n: int) -> NoticeRule:
    return NoticeRule(ANY, ANY, n, "days")


def _working(n: int) -> NoticeRule:
    return NoticeRule(ANY, ANY, n, "working-days")


@pytest.mark.parametrize(
    ("session_day", "rule", "deadline"),
    [
        # calendar days: plain subtraction, weekends and holidays do not move it
        (date(2026, 12, 17), _days(14), date(2026, 12, 3)),
        (date(2026, 6, 15), _days(7), date(2026, 6, 8)),
        (date(2026, 6, 14), _days(7), date(2026, 6, 7)),  # a Sunday stays a Sunday
        (date(2027, 1, 5), _days(7), date(2026, 12, 29)),  # across the new year
        (date(2026, 6, 15), _days(0), date(2026, 6, 15)),
        # working days: the session day is not counted, the N-th working day before it is
        (date(2026, 6, 15), _working(1), date(2026, 6, 12)),  # Monday → the Friday before
        (date(2026, 6, 15), _working(5), date(2026, 6, 8)),
        (date(2026, 6, 13), _working(1), date(2026, 6, 12)),  # a Saturday session
        (date(2026, 6, 15), _working(0), date(2026, 6, 15)),
        # Boże Ciało (Thursday 2026-06-04) is skipped
        (date(2026, 6, 8), _working(3), date(2026, 6, 2)),
        # Easter: Monday 2026-04-06 is a holiday, the weekend too
        (date(2026, 4, 8), _working(2), date(2026, 4, 3)),  # Good Friday is a working day
        # Christmas 2026: 24, 25, 26 (Thu–Sat), then Sunday; 1 January 2027 is a Friday
        (date(2026, 12, 28), _working(1), date(2026, 12, 23)),
        (date(2027, 1, 4), _working(3), date(2026, 12, 29)),
        # 2024: Wigilia (Tuesday) was still a working day
        (date(2024, 12, 27), _working(1), date(2024, 12, 24)),
        (date(2025, 12, 29), _working(1), date(2025, 12, 23)),
        # 1 and 3 May 2027 (Saturday 1 May, Monday 3 May)
        (date(2027, 5, 4), _working(1), date(2027, 4, 30)),
    ],
)
def test_latest_delivery(session_day: date, rule: NoticeRule, deadline: date) -> None:
    assert latest_delivery(session_day, rule) == deadline


def test_a_working_day_deadline_is_always_a_working_day_with_n_working_days_to_the_session() -> (
    None
):
    start = date(2025, 11, 1)
    for offset in range(120):
        session_day = start + timedelta(days=offset)
        for n in (1, 5, 14):
            deadline = latest_delivery(session_day, _working(n))
            assert is_working_day(deadline)
            between = [deadline + timedelta(days=i) for i in range((session_day - deadline).days)]
            assert sum(is_working_day(d) for d in between) == n


# --- precedence and the check ---------------------------------------------------------------

RULES = parse_rules(
    {
        "default": "7 days",
        "session": {"extraordinary": "3 days", "budget": {"budget-draft": "21 days"}},
        "document": {"budget-draft": "14 days", "statute-draft": "10 working days"},
    }
)


@pytest.mark.parametrize(
    ("session_kind", "documents", "expected"),
    [
        ("ordinary", ["agenda"], [NoticeRule(ANY, ANY, 7, "days")]),
        ("extraordinary", ["agenda"], [NoticeRule("extraordinary", ANY, 3, "days")]),
        # a document rule beats a session rule, even when it is the longer one
        ("extraordinary", ["budget-draft"], [NoticeRule(ANY, "budget-draft", 14, "days")]),
        # both kinds named beats the document kind alone
        ("budget", ["budget-draft"], [NoticeRule("budget", "budget-draft", 21, "days")]),
        (
            "ordinary",
            ["agenda", "budget-draft", "agenda", "statute-draft"],
            [
                NoticeRule(ANY, ANY, 7, "days"),
                NoticeRule(ANY, "budget-draft", 14, "days"),
                NoticeRule(ANY, "statute-draft", 10, "working-days"),
            ],
        ),
        ("extraordinary", [], [NoticeRule("extraordinary", ANY, 3, "days")]),
    ],
)
def test_applicable_rules_prefers_the_most_specific(
    session_kind: str, documents: list[str], expected: list[NoticeRule]
) -> None:
    assert applicable_rules(RULES, session_kind, documents) == expected


def test_applicable_rules_refuses_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown session kind 'special'"):
        applicable_rules(RULES, "special", ["agenda"])
    with pytest.raises(ValueError, match="unknown document kind 'minutes'"):
        applicable_rules(RULES, "ordinary", ["minutes"])


def test_no_rules_means_no_breach() -> None:
    assert (
        check_notice(
            deliver_on=date(2026, 6, 15),
            session_day=date(2026, 6, 15),
            session_kind="ordinary",
            document_kinds=["agenda"],
            rules=[],
        )
        is None
    )


def test_late_budget_draft_is_refused_with_the_rule_and_three_dates() -> None:
    breach = check_notice(
        deliver_on=date(2026, 12, 10),
        session_day=date(2026, 12, 17),
        session_kind="ordinary",
        document_kinds=["agenda", "budget-draft"],
        rules=RULES,
    )
    assert breach is not None
    assert breach.rule == NoticeRule(ANY, "budget-draft", 14, "days")
    assert breach.deadline == date(2026, 12, 3)
    assert breach.deliver_on == date(2026, 12, 10)
    assert breach.session_day == date(2026, 12, 17)
    assert breach.message == (
        "Zawiadomienie dotarłoby 2026-12-10, a reguła „14 dni przed sesją” (projekt budżetu) "
        "wymaga doręczenia najpóźniej 2026-12-03 (sesja 2026-12-17)."
    )


def test_the_message_in_english_and_for_the_default_rule() -> None:
    breach = check_notice(
        deliver_on=date(2026, 6, 10),
        session_day=date(2026, 6, 15),
        session_kind="ordinary",
        document_kinds=["agenda"],
        rules=RULES,
        language="en",
    )
    assert breach is not None
    assert breach.message == (
        "The notice would arrive on 2026-06-10, but the rule “7 days before the session” requires "
        "delivery by 2026-06-08 (session on 2026-06-15)."
    )


@pytest.mark.parametrize(
    ("deliver_on", "late"),
    [
        (date(2026, 6, 7), False),
        (date(2026, 6, 8), False),  # on the deadline: in time
        (date(2026, 6, 9), True),
        (date(2026, 6, 16), True),  # after the session
    ],
)
def test_the_deadline_day_itself_is_in_time(deliver_on: date, late: bool) -> None:
    breach = check_notice(
        deliver_on=deliver_on,
        session_day=date(2026, 6, 15),
        session_kind="ordinary",
        document_kinds=["agenda"],
        rules=RULES,
    )
    assert (breach is not None) is late


def test_the_earliest_deadline_of_the_pack_decides_across_units() -> None:
    # Session Monday 2027-01-04. Budget draft: 14 days → 2026-12-21. Statute draft: 10 working
    # days over Christmas and New Year → 2026-12-16. The working-day rule is the stricter one.
    breach = check_notice(
        deliver_on=date(2026, 12, 18),
        session_day=date(2027, 1, 4),
        session_kind="ordinary",
        document_kinds=["budget-draft", "statute-draft"],
        rules=RULES,
    )
    assert breach is not None
    assert breach.rule == NoticeRule(ANY, "statute-draft", 10, "working-days")
    assert breach.deadline == date(2026, 12, 16)
    assert "„10 dni roboczych przed sesją” (projekt statutu)" in breach.message


def test_a_rule_naming_both_kinds_shows_both_in_the_message() -> None:
    breach = check_notice(
        deliver_on=date(2026, 12, 1),
        session_day=date(2026, 12, 17),
        session_kind="budget",
        document_kinds=["budget-draft"],
        rules=RULES,
    )
    assert breach is not None
    assert breach.deadline == date(2026, 11, 26)
    assert "(projekt budżetu, sesja budżetowa)" in breach.message


def test_extraordinary_session_with_only_an_agenda_gets_the_short_rule() -> None:
    def check(deliver_on: date) -> NoticeBreach | None:
        return check_notice(
            deliver_on=deliver_on,
            session_day=date(2026, 6, 15),
            session_kind="extraordinary",
            document_kinds=["agenda"],
            rules=RULES,
        )

    assert check(date(2026, 6, 12)) is None
    breach = check(date(2026, 6, 13))
    assert breach is not None
    assert "„3 dni przed sesją” (sesja nadzwyczajna)" in breach.message
