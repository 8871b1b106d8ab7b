"""Addresses from names: transliteration, collisions and reserved local parts (pure).

A councillor's local part is ``first-given-name.surname`` in lowercase ASCII. When it is taken
(another councillor now, or anyone ever: addresses are never reused) or reserved, the next
candidate in a fixed order is used, so the same roster always yields the same addresses.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Callable, Collection, Iterator

from provisioning.errors import NamingError

# Polish letters spelled out although most of them decompose under NFKD: the mapping is the
# contract, and ł/Ł have no decomposition at all.
_POLISH = str.maketrans(
    {
        "ą": "a",
        "ć": "c",
        "ę": "e",
        "ł": "l",
        "ń": "n",
        "ó": "o",
        "ś": "s",
        "ź": "z",
        "ż": "z",
        "Ą": "a",
        "Ć": "c",
        "Ę": "e",
        "Ł": "l",
        "Ń": "n",
        "Ó": "o",
        "Ś": "s",
        "Ź": "z",
        "Ż": "z",
    }
)

# Latin letters that NFKD leaves alone; without these "Søren" would become "sren".
_LATIN_EXTRA = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "ss",
        "æ": "ae",
        "Æ": "ae",
        "œ": "oe",
        "Œ": "oe",
        "ø": "o",
        "Ø": "o",
        "đ": "d",
        "Đ": "d",
        "ð": "d",
        "Ð": "d",
        "þ": "th",
        "Þ": "th",
        "ı": "i",
    }
)

# RFC 5321 limit on the local part.
MAX_LOCAL_PART_LENGTH = 64

RESERVED_LOCAL_PARTS: frozenset[str] = frozenset(
    {
        # RFC 2142 and mail-system roles
        "postmaster",
        "abuse",
        "hostmaster",
        "webmaster",
        "security",
        "noc",
        "info",
        "marketing",
        "sales",
        "support",
        "noreply",
        "no-reply",
        "donotreply",
        "do-not-reply",
        "bounces",
        "bounce",
        "mailer-daemon",
        "daemon",
        "nobody",
        "root",
        "admin",
        "administrator",
        "sysadmin",
        "listmaster",
        "list",
        "owner",
        "dmarc",
        "mail",
        "smtp",
        "imap",
        "www",
        "ftp",
        "usenet",
        "news",
        "uucp",
        "ssl-admin",
        "ssladmin",
        # the council's own functional addresses
        "rada",
        "radni",
        "radny",
        "radna",
        "biuro",
        "biuro-rady",
        "przewodniczacy",
        "przewodniczaca",
        "wiceprzewodniczacy",
        "wiceprzewodniczaca",
        "sekretariat",
        "kancelaria",
        "komisja",
        "komisje",
        "sesja",
        "sesje",
        "kontakt",
        "urzad",
        "prezydent",
        "burmistrz",
        "wojt",
        "iod",
        "rodo",
        "dpo",
        "bip",
        "epuap",
    }
)

# Committee groups are komisja-<slug>; VERP return paths are bounces+<token>.
_RESERVED_PREFIXES = ("komisja-", "bounces+")

_PART_SEPARATORS = re.compile(r"[\s._]+")
_NOT_IN_PART = re.compile(r"[^a-z0-9-]")
_HYPHEN_RUNS = re.compile(r"-{2,}")
_WHITESPACE = re.compile(r"\s+")

# choose_local_part gives up after this many candidates rather than loop forever on a
# `taken` that answers yes to everything (a broken directory adapter, not a real council).
_MAX_CANDIDATES = 10_000


# Names repeat (a roster of 50,000 has a few thousand distinct ones) and an import spells each
# several times: checking the address, finding duplicates, matching against the register.
@functools.lru_cache(maxsize=1 << 16)
def transliterate(text: str) -> str:
    """Lowercase ASCII spelling of ``text``: "Łukasz Żółć" → "lukasz zolc".

    Polish letters map explicitly, other Latin diacritics are stripped via NFKD, whitespace
    becomes a plain space, and anything else outside printable ASCII is dropped.
    """
    text = text.translate(_POLISH).translate(_LATIN_EXTRA)
    out: list[str] = []
    for char in unicodedata.normalize("NFKD", text):
        if char.isspace():
            out.append(" ")
        elif " " <= char <= "~":
            out.append(char)
    return "".join(out).lower()


@functools.lru_cache(maxsize=1 << 16)
def _slug_part(text: str) -> str:
    """One side of ``given.surname``: transliterated, separators → hyphens, [a-z0-9-] only."""
    ascii_text = transliterate(text)
    hyphenated = _PART_SEPARATORS.sub("-", ascii_text.strip())
    cleaned = _NOT_IN_PART.sub("", hyphenated)
    return _HYPHEN_RUNS.sub("-", cleaned).strip("-")


@functools.lru_cache(maxsize=1 << 16)
def base_local_part(given_names: str, surname: str) -> str:
    """``first-given-name.surname``: ("Łukasz", "Żółć") → "lukasz.zolc".

    Hyphenated surnames stay hyphenated and spaces inside a surname become hyphens.
    Raises NamingError when either side has nothing left after transliteration.
    """
    first = given_names.split()[0] if given_names.split() else ""
    given_part = _slug_part(first)
    if not given_part:
        raise NamingError(
            f"no address can be made from the given name {given_names!r}: "
            "it has no Latin letters or digits; enter it in Latin script"
        )
    surname_part = _slug_part(surname)
    if not surname_part:
        raise NamingError(
            f"no address can be made from the surname {surname!r}: "
            "it has no Latin letters or digits; enter it in Latin script"
        )
    local = f"{given_part}.{surname_part}"
    _check_length(local)
    return local


def _check_length(local: str) -> None:
    if len(local) > MAX_LOCAL_PART_LENGTH:
        raise NamingError(
            f"address {local!r} is {len(local)} characters long, over the limit of "
            f"{MAX_LOCAL_PART_LENGTH}; assign this councillor's address by hand"
        )


def _second_initial(given_names: str) -> str:
    names = given_names.split()
    if len(names) < 2:
        return ""
    for char in _slug_part(names[1]):
        if char.isalnum():
            return char
    return ""


def candidate_local_parts(given_names: str, surname: str) -> Iterator[str]:
    """Candidates in a fixed order: base, with the second given name's initial, then numbered.

    ("Jan Maria", "Kowalski") → jan.kowalski, jan.m.kowalski, jan.kowalski2, jan.kowalski3, …
    The sequence is unbounded; the caller stops at the first free one.
    """
    base = base_local_part(given_names, surname)
    yield base
    initial = _second_initial(given_names)
    if initial:
        given_part, surname_part = base.split(".", 1)
        with_initial = f"{given_part}.{initial}.{surname_part}"
        _check_length(with_initial)
        yield with_initial
    for number in itertools.count(2):
        numbered = f"{base}{number}"
        _check_length(numbered)
        yield numbered


def is_reserved(local: str, extra: Collection[str] = ()) -> bool:
    """True when ``local`` must never be given to a person (roles, groups, return paths)."""
    key = local.strip().lower()
    if key in RESERVED_LOCAL_PARTS or key.startswith(_RESERVED_PREFIXES):
        return True
    return any(key == item.strip().lower() for item in extra)


def choose_local_part(
    given_names: str,
    surname: str,
    taken: Callable[[str], bool],
    extra_reserved: Collection[str] = (),
) -> str:
    """The first candidate that is neither taken nor reserved.

    ``taken`` must answer for every address ever used, including those of departed
    councillors, so that an old address never reaches a new person.
    """
    candidates = candidate_local_parts(given_names, surname)
    for candidate in itertools.islice(candidates, _MAX_CANDIDATES):
        if not is_reserved(candidate, extra_reserved) and not taken(candidate):
            return candidate
    raise NamingError(
        f"no free address for {given_names} {surname} after {_MAX_CANDIDATES} candidates; "
        "check the directory look-up"
    )


@functools.lru_cache(maxsize=1 << 16)
def normalise_name(text: str) -> str:
    """Key for matching people: "Łukasz  Żółć" and "lukasz zolc" both give "lukasz zolc"."""
    return _WHITESPACE.sub(" ", transliterate(text)).strip()
