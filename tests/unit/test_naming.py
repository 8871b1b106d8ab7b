"""Addresses from names: transliteration, reserved local parts, collisions."""

from __future__ import annotations

import re

import pytest

from provisioning.errors import NamingError
from provisioning.naming import (
    MAX_LOCAL_PART_LENGTH,
    base_local_part,
    candidate_local_parts,
    choose_local_part,
    is_reserved,
    normalise_name,
    transliterate,
)

POLISH_LETTERS = [
    ("ą", "a"),
    ("ć", "c"),
    ("ę", "e"),
    ("ł", "l"),
    ("ń", "n"),
    ("ó", "o"),
    ("ś", "s"),
    ("ź", "z"),
    ("ż", "z"),
    ("Ą", "a"),
    ("Ć", "c"),
    ("Ę", "e"),
    ("Ł", "l"),
    ("Ń", "n"),
    ("Ó", "o"),
    ("Ś", "s"),
    ("Ź", "z"),
    ("Ż", "z"),
]


@pytest.mark.parametrize(("letter", "expected"), POLISH_LETTERS)
def test_transliterate_maps_every_polish_letter(letter: str, expected: str) -> None:
    assert transliterate(letter) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Łukasz Żółć", "lukasz zolc"),
        ("ZAŻÓŁĆ GĘŚLĄ JAŹŃ", "zazolc gesla jazn"),
        ("Müller", "muller"),
        ("François", "francois"),
        ("Dvořák", "dvorak"),
        ("ÀÉÎÕÜ", "aeiou"),
        ("Søren", "soren"),
        ("Straße", "strasse"),
        ("Nowak-Kowalska", "nowak-kowalska"),
        ("O'Brien", "o'brien"),
        ("Jan\tMaria", "jan maria"),
        ("Jan\u00a0Maria", "jan maria"),
        ("Иван", ""),
        ("Jan 李", "jan "),
        ("abc\x00\x07def", "abcdef"),
        ("R2D2", "r2d2"),
    ],
)
def test_transliterate_gives_lowercase_ascii(text: str, expected: str) -> None:
    result = transliterate(text)
    assert result == expected
    assert result.isascii()


@pytest.mark.parametrize(
    ("given_names", "surname", "expected"),
    [
        ("Łukasz", "Żółć", "lukasz.zolc"),
        ("Anna", "Nowak-Kowalska", "anna.nowak-kowalska"),
        ("Jan Maria", "Kowalski", "jan.kowalski"),
        ("  Ewa  ", "  Szymańska ", "ewa.szymanska"),
        ("Anna", "de la Cruz", "anna.de-la-cruz"),
        ("Anna", "Nowak - Kowalska", "anna.nowak-kowalska"),
        ("Anna", "Nowak--Kowalska", "anna.nowak-kowalska"),
        ("Anna", "-Nowak-", "anna.nowak"),
        ("Mary-Jane", "O'Brien", "mary-jane.obrien"),
        ("Jan", "St. John", "jan.st-john"),
        ("Jan", "Kowalski (Nowak)", "jan.kowalski-nowak"),
        ("ŁUCJA", "ŻAK", "lucja.zak"),
        ("Zoë", "Brontë", "zoe.bronte"),
    ],
)
def test_base_local_part(given_names: str, surname: str, expected: str) -> None:
    assert base_local_part(given_names, surname) == expected


@pytest.mark.parametrize(
    ("given_names", "surname"),
    [
        ("Łukasz", "Żółć"),
        ("Anna", "Nowak-Kowalska"),
        ("  Jan.  ", "..Kowalski.."),
        ("Jan", "Kowalski_Nowak"),
        ("Jan", "Ko*wal(ski)\\"),
    ],
)
def test_base_local_part_contains_only_safe_characters(given_names: str, surname: str) -> None:
    local = base_local_part(given_names, surname)
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*\.[a-z0-9]+(-[a-z0-9]+)*", local), local


@pytest.mark.parametrize(
    ("given_names", "surname", "fragment"),
    [
        ("", "Kowalski", "given name"),
        ("   ", "Kowalski", "given name"),
        ("Jan", "", "surname"),
        ("Jan", "---", "surname"),
        ("Иван", "Kowalski", "given name"),
        ("Jan", "Петров", "surname"),
        ("Jan", "x" * MAX_LOCAL_PART_LENGTH, "limit"),
    ],
)
def test_base_local_part_refuses_names_without_latin_letters(
    given_names: str, surname: str, fragment: str
) -> None:
    with pytest.raises(NamingError, match=fragment):
        base_local_part(given_names, surname)


@pytest.mark.parametrize(
    "local",
    [
        "postmaster",
        "abuse",
        "hostmaster",
        "webmaster",
        "noreply",
        "no-reply",
        "bounces",
        "mailer-daemon",
        "root",
        "admin",
        "rada",
        "biuro",
        "przewodniczacy",
        "wiceprzewodniczacy",
        "sekretariat",
        "security",
        "info",
        "Postmaster",
        "komisja-budzetowa",
        "KOMISJA-REWIZYJNA",
        "bounces+a1b2c3",
        "komisja",
    ],
)
def test_is_reserved(local: str) -> None:
    assert is_reserved(local)


@pytest.mark.parametrize(
    "local", ["jan.kowalski", "radny2", "bounces2", "komisjant", "rada.miasta"]
)
def test_is_reserved_leaves_ordinary_and_lookalike_names_free(local: str) -> None:
    assert not is_reserved(local)


def test_is_reserved_honours_extra_names_case_insensitively() -> None:
    assert is_reserved("jan.kowalski", extra=["Jan.Kowalski"])
    assert not is_reserved("jan.kowalski", extra=["anna.nowak"])


@pytest.mark.parametrize(
    ("given_names", "surname", "expected"),
    [
        ("Jan", "Kowalski", ["jan.kowalski", "jan.kowalski2", "jan.kowalski3", "jan.kowalski4"]),
        (
            "Jan Maria",
            "Kowalski",
            ["jan.kowalski", "jan.m.kowalski", "jan.kowalski2", "jan.kowalski3"],
        ),
        (
            "Jan Łucjan Piotr",
            "Kowalski",
            ["jan.kowalski", "jan.l.kowalski", "jan.kowalski2", "jan.kowalski3"],
        ),
        ("Jan Иван", "Kowalski", ["jan.kowalski", "jan.kowalski2", "jan.kowalski3"]),
    ],
)
def test_candidate_order(given_names: str, surname: str, expected: list[str]) -> None:
    candidates = candidate_local_parts(given_names, surname)
    assert [next(candidates) for _ in expected] == expected


def test_candidates_are_unbounded_and_numbered_in_order() -> None:
    candidates = candidate_local_parts("Jan", "Kowalski")
    taken = [next(candidates) for _ in range(200)]
    assert taken[-1] == "jan.kowalski200"
    assert len(set(taken)) == 200


@pytest.mark.parametrize(
    ("given_names", "taken", "extra", "expected"),
    [
        ("Jan", set(), (), "jan.kowalski"),
        ("Jan", {"jan.kowalski"}, (), "jan.kowalski2"),
        ("Jan Maria", {"jan.kowalski"}, (), "jan.m.kowalski"),
        ("Jan Maria", {"jan.kowalski", "jan.m.kowalski"}, (), "jan.kowalski2"),
        ("Jan", {"jan.kowalski", "jan.kowalski2"}, (), "jan.kowalski3"),
        # a departed councillor's old address counts as taken: never reused
        ("Jan", {"jan.kowalski", "jan.kowalski2", "jan.kowalski3"}, (), "jan.kowalski4"),
        ("Jan", set(), ("jan.kowalski",), "jan.kowalski2"),
        ("Jan Maria", {"jan.kowalski"}, ("JAN.M.KOWALSKI",), "jan.kowalski2"),
    ],
)
def test_choose_local_part_takes_first_free_candidate(
    given_names: str, taken: set[str], extra: tuple[str, ...], expected: str
) -> None:
    assert choose_local_part(given_names, "Kowalski", taken.__contains__, extra) == expected


def test_choose_local_part_never_returns_a_reserved_name() -> None:
    # "komisja-…" is reserved for committee groups, whatever follows.
    with pytest.raises(NamingError, match="no free address"):
        choose_local_part("Komisja-Rewizyjna", "Rady", lambda _local: False)


def test_choose_local_part_is_deterministic_across_a_roster() -> None:
    people = [("Jan", "Kowalski"), ("Jan", "Kowalski"), ("Jan Maria", "Kowalski")]

    def assign() -> list[str]:
        used: set[str] = set()
        chosen = []
        for given_names, surname in people:
            local = choose_local_part(given_names, surname, used.__contains__)
            used.add(local)
            chosen.append(local)
        return chosen

    assert assign() == assign() == ["jan.kowalski", "jan.kowalski2", "jan.m.kowalski"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Łukasz  Żółć", "lukasz zolc"),
        ("lukasz zolc", "lukasz zolc"),
        ("  ŁUKASZ\tŻÓŁĆ \n", "lukasz zolc"),
        ("Anna Nowak-Kowalska", "anna nowak-kowalska"),
    ],
)
def test_normalise_name(text: str, expected: str) -> None:
    assert normalise_name(text) == expected
