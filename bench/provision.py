"""Provisioning benchmark: a national-size roster through the import path, beside ldapadd.

One run, two private slapd servers (mailsvc.stack.LocalStack, same generated configuration, free
loopback ports, temporary var_dirs under /tmp):

1. first import of N synthetic councillors (all creations)          → entries/s
2. the same roster again (must plan and apply 0 changes)            → wall time (goal ≤ 5 s)
3. the roster with 1 % of rows changed (club, district or phone)   → wall time, must be 1 % updates
4. peer: ldapadd of the same N entries from LDIF into the 2nd slapd  → entries/s
   ratio mailsvc / ldapadd

Every new councillor's password is hashed with Argon2id ({ARGON2}, the configured cost), tens of
milliseconds of CPU each by design. The import hashes on its thread pool; ldapadd loads
pre-computed hashes, as it is used, made beforehand on the same pool and timed apart. The
ratio that has a goal (≥ 1.0) is mailsvc against ldapadd plus that hashing: the work both sides
must do. The report gives the bare ratio against ldapadd too.

Each import runs in its own child process (the code of `mailsvc councillors import --json`:
``run_import(parts, path, quiet=True)`` inside ``open_parts(settings)``), so its wall time and its
peak RSS (goal ≤ 300 MB) belong to the import alone. Welcome messages are off for the benchmark.

    .venv/bin/python bench/provision.py               # 50,000 councillors (all of Poland)
    .venv/bin/python bench/provision.py --count 2000  # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import functools
import multiprocessing
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

with warnings.catch_warnings():
    # pyasn1 0.6 deprecates names that ldap3 2.9 still imports.
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3  # noqa: F401

from mailsvc import secret_store
from mailsvc.config import DEFAULT_CONFIG, Settings, load_settings
from mailsvc.passwords import argon2_params
from mailsvc.stack import LocalStack, free_ports
from provisioning import roster as roster_module
from provisioning.naming import choose_local_part, transliterate
from provisioning.passwords import (
    HASHING_THREADS,
    Argon2Params,
    generate_password,
    hash_password,
    hash_passwords_blocking,
)

LOOPBACK = "127.0.0.1"
DEFAULT_COUNT = 50_000
QUICK_COUNT = 2_000  # --quick: about two minutes on two cores
GOAL_RATIO = 1.0  # mailsvc import / (ldapadd + hashing its LDIF)
GOAL_NO_CHANGE_SECONDS = 5.0
GOAL_PEAK_RSS_MB = 300.0
MB = 1024 * 1024

# --- synthetic roster ------------------------------------------------------------------------
# Most common first: names are drawn with Zipf-like weights, so at 50,000 rows the most common
# full names (Anna Nowak, Piotr Kowalski, …) recur a few hundred times and every address needs
# the collision rules (anna.nowak, anna.nowak2, … anna.nowak300).

GIVEN_FEMALE = (
    "Anna", "Maria", "Katarzyna", "Małgorzata", "Agnieszka", "Barbara", "Ewa", "Krystyna",
    "Elżbieta", "Zofia", "Joanna", "Magdalena", "Monika", "Jadwiga", "Danuta", "Teresa",
    "Aleksandra", "Beata", "Dorota", "Halina", "Grażyna", "Bożena", "Urszula", "Żaneta",
    "Jolanta", "Iwona", "Sławomira", "Bogumiła", "Wiesława", "Łucja",
)  # fmt: skip
GIVEN_MALE = (
    "Piotr", "Krzysztof", "Andrzej", "Tomasz", "Paweł", "Jan", "Michał", "Marcin", "Stanisław",
    "Jakub", "Józef", "Marek", "Łukasz", "Grzegorz", "Adam", "Wojciech", "Zbigniew", "Mariusz",
    "Dariusz", "Henryk", "Ryszard", "Kazimierz", "Jarosław", "Sławomir", "Przemysław",
    "Radosław", "Mieczysław", "Bolesław", "Zdzisław", "Jędrzej",
)  # fmt: skip
SURNAMES = (
    "Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski",
    "Zieliński", "Szymański", "Woźniak", "Dąbrowski", "Kozłowski", "Jankowski", "Mazur",
    "Wojciechowski", "Kwiatkowski", "Krawczyk", "Kaczmarek", "Piotrowski", "Grabowski", "Zając",
    "Pawłowski", "Michalski", "Król", "Wieczorek", "Jabłoński", "Wróbel", "Nowakowski",
    "Majewski", "Olszewski", "Stępień", "Malinowski", "Jaworski", "Adamczyk", "Dudek", "Nowicki",
    "Pawlak", "Górski", "Witkowski", "Walczak", "Sikora", "Baran", "Rutkowski", "Michalak",
    "Szewczyk", "Ostrowski", "Tomaszewski", "Pietrzak", "Zalewski", "Wróblewski", "Marciniak",
    "Jasiński", "Zawadzki", "Bąk", "Jakubowski", "Sadowski", "Duda", "Włodarczyk", "Wilk",
    "Chmielewski", "Borkowski", "Sokołowski", "Szczepański", "Sawicki", "Lis", "Kucharski",
    "Kalinowski", "Wysocki", "Mazurek", "Kubiak", "Maciejewski", "Czarnecki", "Kołodziej",
    "Urbański", "Kaźmierczak", "Sobczak", "Głowacki", "Zakrzewski", "Gołębiowski", "Żółć",
)  # fmt: skip
TOWNS = (
    "Warszawa", "Kraków", "Łódź", "Wrocław", "Poznań", "Gdańsk", "Szczecin", "Bydgoszcz",
    "Lublin", "Białystok", "Katowice", "Gdynia", "Częstochowa", "Radom", "Toruń", "Sosnowiec",
    "Rzeszów", "Kielce", "Gliwice", "Olsztyn", "Zabrze", "Bielsko-Biała", "Bytom",
    "Zielona Góra", "Rybnik", "Ruda Śląska", "Opole", "Tychy", "Gorzów Wielkopolski", "Elbląg",
    "Płock", "Wałbrzych", "Włocławek", "Tarnów", "Chorzów", "Koszalin", "Kalisz", "Legnica",
    "Grudziądz", "Słupsk",
)  # fmt: skip
DISTRICTS_PER_TOWN = 15
CLUBS = (
    "Koalicja Obywatelska", "Prawo i Sprawiedliwość", "Trzecia Droga", "Lewica",
    "Konfederacja", "Bezpartyjni Samorządowcy", "Klub Radnych Niezależnych",
    "Porozumienie Samorządowe", "",
)  # fmt: skip
# Committee cells as clerks write them (slug, full name, name without "Komisja"); the benchmark
# uses the configured set, so every one resolves.
COMMITTEE_SPELLINGS = {
    "budzetowa": ("Budżetowa", "Komisja Budżetowa", "budzetowa"),
    "rewizyjna": ("Rewizyjna", "Komisja Rewizyjna"),
    "skarg": ("Skarg", "skarg"),
    "oswiaty": ("Oświaty i Kultury", "Komisja Oświaty i Kultury"),
}
HEADER = (
    "Imię", "Nazwisko", "Okręg", "Klub", "Funkcja", "Komisje", "Początek kadencji",
    "Koniec mandatu", "E-mail prywatny", "Telefon", "Identyfikator",
)  # fmt: skip
TERM_START = date(2024, 5, 7)  # the councils elected on 7 April 2024 took the oath in May


@dataclass
class Person:
    """One roster row (values as a clerk's spreadsheet holds them)."""

    external_id: str
    given_names: str
    surname: str
    female: bool
    district: str
    club: str
    role: str
    committees: str
    term_start: str
    mandate_end: str
    private_email: str
    phone: str

    def row(self) -> list[str]:
        return [
            self.given_names,
            self.surname,
            self.district,
            self.club,
            self.role,
            self.committees,
            self.term_start,
            self.mandate_end,
            self.private_email,
            self.phone,
            self.external_id,
        ]


def _zipf_weights(n: int, exponent: float = 0.5) -> list[float]:
    return [1 / (rank**exponent) for rank in range(1, n + 1)]


def _feminine(surname: str) -> str:
    for ending, female in (("ski", "ska"), ("cki", "cka"), ("dzki", "dzka")):
        if surname.endswith(ending):
            return surname[: -len(ending)] + female
    return surname


def _phone(rng: random.Random) -> str:
    digits = f"{rng.choice('5678')}{rng.randrange(10**8):08d}"
    return f"+48 {digits[:3]} {digits[3:6]} {digits[6:]}"


@dataclass
class Council:
    """The synthetic roster and what the benchmark needs to change it consistently."""

    people: list[Person]
    districts: list[str]
    districts_of: dict[tuple[str, str], set[str]] = field(default_factory=dict)


def make_council(count: int, seed: int) -> Council:
    rng = random.Random(seed)
    districts = [
        f"{town} – okręg nr {number}"
        for town in TOWNS
        for number in range(1, DISTRICTS_PER_TOWN + 1)
    ]
    given_weights = _zipf_weights(len(GIVEN_FEMALE))
    surname_weights = _zipf_weights(len(SURNAMES))
    council = Council([], districts)
    committee_slugs = list(COMMITTEE_SPELLINGS)
    while len(council.people) < count:
        index = len(council.people) + 1
        female = rng.random() < 0.45
        names = GIVEN_FEMALE if female else GIVEN_MALE
        given = rng.choices(names, given_weights)[0]
        if rng.random() < 0.1:  # a second given name
            given = f"{given} {rng.choice([n for n in names if n != given])}"
        surname = rng.choices(SURNAMES, surname_weights)[0]
        surname = _feminine(surname) if female else surname
        if rng.random() < 0.02:  # a double-barrelled surname
            other = rng.choice(SURNAMES)
            surname = f"{surname}-{_feminine(other) if female else other}"
        used = council.districts_of.setdefault((given, surname), set())
        if len(used) >= len(districts):
            continue  # the roster may hold a person once per district only
        district = rng.choice(districts)
        while district in used:
            district = rng.choice(districts)
        used.add(district)
        draw = rng.random()
        if draw < 0.02:
            role = "Przewodnicząca Rady" if female else "Przewodniczący Rady"
        elif draw < 0.07:
            role = "wiceprzewodnicząca" if female else "wiceprzewodniczący"
        else:
            role = "radna" if female else "radny"
        committees = ", ".join(
            rng.choice(COMMITTEE_SPELLINGS[slug])
            for slug in rng.sample(committee_slugs, rng.choice((0, 1, 1, 2, 2, 3)))
        )
        if rng.random() < 0.9:
            start = TERM_START
        else:  # by-elections and replacements later in the term
            start = TERM_START + timedelta(days=rng.randrange(30, 600))
        term_start = start.isoformat() if rng.random() < 0.1 else f"{start:%d.%m.%Y}"
        mandate_end = "30.04.2029" if rng.random() < 0.03 else ""
        email = ""
        if rng.random() < 0.4:
            first = transliterate(given.split()[0])
            last = transliterate(surname).replace(" ", "")
            email = f"{first}.{last}{index}@poczta.example.pl"
        council.people.append(
            Person(
                external_id=f"PKW-{index:06d}",
                given_names=given,
                surname=surname,
                female=female,
                district=district,
                club=rng.choice(CLUBS),
                role=role,
                committees=committees,
                term_start=term_start,
                mandate_end=mandate_end,
                private_email=email,
                phone=_phone(rng) if rng.random() < 0.7 else "",
            )
        )
    return council


def change_one_percent(council: Council, seed: int) -> tuple[list[Person], int]:
    """A copy of the roster with 1 % of the rows changed (club, phone or district), ids kept."""
    rng = random.Random(seed + 1)
    people = list(council.people)
    changed = max(1, len(people) // 100)
    for n, i in enumerate(sorted(rng.sample(range(len(people)), changed))):
        p = people[i]
        kind = n % 3
        if kind == 0:
            club = rng.choice([c for c in CLUBS if c != p.club])
            people[i] = replace(p, club=club)
        elif kind == 1:
            phone = _phone(rng)
            while phone == p.phone:
                phone = _phone(rng)
            people[i] = replace(p, phone=phone)
        else:
            used = council.districts_of[(p.given_names, p.surname)]
            district = rng.choice(council.districts)
            while district in used:
                district = rng.choice(council.districts)
            people[i] = replace(p, district=district)
    return people, changed


def write_roster(path: Path, people: list[Person], encoding: str) -> None:
    """A roster as Excel saves it: ``;``-separated, CRLF, UTF-8 with BOM or Windows-1250."""
    with path.open("w", encoding=encoding, newline="") as fh:
        writer = csv.writer(fh, delimiter=";", lineterminator="\r\n")
        writer.writerow(HEADER)
        writer.writerows(p.row() for p in people)


# --- the peer: the same entries as LDIF for ldapadd --------------------------------------------


def _ldif_line(attr: str, value: str) -> str:
    safe = value.isascii() and value == value.strip() and not value.startswith((":", "<"))
    if safe:
        return f"{attr}: {value}\n"
    return f"{attr}:: {base64.b64encode(value.encode('utf-8')).decode('ascii')}\n"


def write_ldif(path: Path, settings: Settings, people: list[Person]) -> float:
    """The entries the import creates (Directory.add_councillor + roster attributes), same
    addresses (choose_local_part in roster order), each with its own password hashed as the
    import hashes it (Argon2id of the configured cost, on the same thread pool). Returns the
    seconds spent hashing."""
    from provisioning.roster import parse_roster_text  # the same normalisation as the import

    d = settings.directory
    parsed = parse_roster_text(
        "\n".join(";".join(row) for row in [list(HEADER), *(p.row() for p in people)]),
        committees=settings.committee_names,
    )
    if parsed.problems:
        raise SystemExit(f"generated roster has problems, e.g. {parsed.problems[0]}")
    reserved = set(settings.committee_names) | {f"komisja-{s}" for s in settings.committee_names}
    taken: set[str] = set()
    domain = settings.domain.lower()
    start = time.perf_counter()
    hashes = hash_passwords_blocking(
        [generate_password(settings.provisioning.password_length) for _ in parsed.entries],
        argon2_params(settings),
    )
    hashing_seconds = time.perf_counter() - start
    with path.open("w", encoding="utf-8") as fh:
        for e, password_hash in zip(parsed.entries, hashes, strict=True):
            local = choose_local_part(
                e.given_names, e.surname, taken.__contains__, extra_reserved=reserved
            )
            taken.add(local)
            given = " ".join(e.given_names.split())
            attrs = [
                ("dn", f"uid={local},{d.councillors_dn}"),
                *(
                    ("objectClass", oc)
                    for oc in ("top", "person", "organizationalPerson", d.person_object_class)
                ),
                ("uid", local),
                ("cn", f"{given} {e.surname}"),
                ("sn", e.surname),
                ("givenName", given),
                ("displayName", f"{given} {e.surname}"),
                (d.mail_attribute, f"{local}@{domain}"),
                ("userPassword", password_hash),
                (d.status_attribute, d.active_value),
            ]
            for attr, value in (
                (d.external_id_attribute, e.external_id),
                (d.district_attribute, e.district),
                (d.club_attribute, e.club),
                (d.role_attribute, e.role),
                (d.phone_attribute, e.phone),
            ):
                if value:
                    attrs.append((attr, value))
            fh.write("".join(_ldif_line(a, v) for a, v in attrs) + "\n")
    return hashing_seconds


def hash_rates(params: Argon2Params, count: int = 32) -> tuple[float, float]:
    """Hashes per second on one thread and on the hashing pool of HASHING_THREADS (argon2-cffi
    releases the GIL, so the pool should scale with the cores)."""
    passwords = [generate_password() for _ in range(count)]
    hash_password("warm-up-password-1234", params)
    start = time.perf_counter()
    for password in passwords:
        hash_password(password, params)
    one = count / (time.perf_counter() - start)
    start = time.perf_counter()
    hash_passwords_blocking(passwords, params)
    pool = count / (time.perf_counter() - start)
    return one, pool


# --- private stacks ------------------------------------------------------------------------------


def slapd_without_fsync() -> None:
    """Make LocalStack write 'dbnosync' into the mdb database section (benchmark option only)."""
    from mailsvc.stack import configs

    generate = configs.slapd_conf

    def without_fsync(*args: Any, **kwargs: Any) -> str:
        text = generate(*args, **kwargs)
        assert "\ndirectory " in text, "the generated slapd.conf has no 'directory' line"
        return text.replace("\ndirectory ", "\ndbnosync\ndirectory ", 1)

    configs.slapd_conf = without_fsync


@dataclass(frozen=True)
class StackSpec:
    """What a child process needs to rebuild the same settings (picklable, no secrets)."""

    var_dir: str
    ldap_port: int
    imap_port: int
    lmtp_port: int
    smtp_port: int

    @classmethod
    def fresh(cls, prefix: str) -> StackSpec:
        return cls(tempfile.mkdtemp(prefix=prefix, dir="/tmp"), *free_ports(4))

    def settings(self) -> Settings:
        # The environment is ignored on purpose: a developer's MAILSVC_* must not point the
        # benchmark at their own directory.
        return load_settings(DEFAULT_CONFIG, env={}).with_changes(
            var_dir=Path(self.var_dir),
            stack={
                "host": LOOPBACK,
                "ldap_port": self.ldap_port,
                "imap_port": self.imap_port,
                "lmtp_port": self.lmtp_port,
            },
            smtp={"host": LOOPBACK, "port": self.smtp_port},
            provisioning={"send_welcome": False},
        )


# --- one import, in a child process --------------------------------------------------------------


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def slapd_pid(stack: LocalStack) -> int:
    for status in stack.status():
        if status.name == "slapd" and status.pid is not None:
            return status.pid
    raise SystemExit(f"slapd of {stack.settings.var_dir} is not running")


class SlapdCpu:
    """CPU seconds slapd spends during a step: wall time moves with whatever else the machine
    runs, CPU time per entry much less, so both are reported."""

    def __init__(self, stack: LocalStack) -> None:
        self.pid = slapd_pid(stack)
        self.start = process_cpu(self.pid)

    def used(self) -> float:
        return process_cpu(self.pid) - self.start


def _peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _children_peak_rss() -> int:
    """Largest peak RSS of this process's finished children (the import's roster reader)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def _with_children() -> list[int]:
    """This process and its children (the import's roster reader, while it runs)."""
    from relay_procs import child_pids  # bench/, beside this file, is on sys.path

    return [os.getpid(), *child_pids(os.getpid())]


class PhaseTimes:
    """Wall time and calls of named steps of the import (wrappers around the real methods)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.peak_growth: dict[str, int] = {}
        self.order: list[str] = []

    def add(self, name: str, seconds: float, peak_before: int) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1
        growth = _peak_rss() - peak_before
        self.peak_growth[name] = self.peak_growth.get(name, 0) + growth

    def wrap_async(self, owner: Any, attr: str, name: str) -> None:
        self.order.append(name)
        original = getattr(owner, attr)

        @functools.wraps(original)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            peak, start = _peak_rss(), time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - start, peak)

        setattr(owner, attr, timed)

    def wrap_sync(self, owner: Any, attr: str, name: str) -> None:
        self.order.append(name)
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            peak, start = _peak_rss(), time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - start, peak)

        setattr(owner, attr, timed)


# Overlaps the adds of the chunk before: the next chunk is hashed while one is added.
HASHING_PHASE = "  password hashing (Argon2id), overlapping the adds"


def _instrument(phases: PhaseTimes, max_bytes: int | None) -> None:
    import mailsvc.directory.councillors as councillors_module
    import mailsvc.directory.roster_import as roster_import
    from mailsvc.directory.councillors import Councillors
    from mailsvc.storage.register import Register
    from provisioning.directory import Directory

    phases.wrap_async(
        roster_import, "read_roster_apart", "read and check the roster file (own process)"
    )
    phases.wrap_async(
        Councillors, "current_councillors", "list directory + register, while it is read"
    )
    phases.wrap_sync(Councillors, "plan", "plan (diff)")
    phases.wrap_async(Councillors, "choose_addresses", "choose addresses")
    phases.wrap_async(Councillors, "apply", "apply")
    phases.wrap_async(Councillors, "_create_chunk", "  creates: LDAP adds")
    phases.wrap_async(councillors_module, "hashes_for", HASHING_PHASE)
    phases.wrap_async(Councillors, "_update_chunk", "  updates: LDAP modifies + register writes")
    phases.wrap_async(Councillors, "sync_groups", "  sync groups")
    phases.wrap_async(Register, "write", "of which: register writes (SQLite)")
    phases.wrap_async(Directory, "list_councillors", "of which: directory listings (all entries)")


async def _import(spec: StackSpec, roster: Path, max_bytes: int | None) -> dict[str, Any]:
    from mailsvc.app import open_parts
    from mailsvc.cli.councillors import run_import

    phases = PhaseTimes()
    _instrument(phases, max_bytes)
    settings = spec.settings()
    cpu, start = _own_cpu(), time.perf_counter()
    async with open_parts(settings) as parts:
        plan, result, problems, _ = await run_import(parts, roster, quiet=True, max_bytes=max_bytes)
    seconds = time.perf_counter() - start
    cpu = _own_cpu() - cpu
    assert result is not None
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "planned": {
            "create": len(plan.creates),
            "update": len(plan.updates),
            "disable": len(plan.disables),
            "unchanged": len(plan.unchanged),
        },
        "created": len(result.created),
        "updated": len(result.updated),
        "disabled": len(result.disabled),
        "unchanged": result.unchanged,
        "errors": result.errors[:5],
        "error_count": len(result.errors),
        "problems": problems[:5],
        "phases": [
            (name, phases.calls[name], phases.seconds[name], phases.peak_growth[name])
            for name in phases.order
            if name in phases.calls
        ],
    }


def load_patch(path: str | None) -> None:
    """Run ``apply()`` of a Python file: a change tried without editing the tree (--patch)."""
    if path is None:
        return
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_patch", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--patch {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.apply()


def _import_child(
    spec: StackSpec, roster: str, max_bytes: int | None, patch: str | None, out: Connection
) -> None:
    try:
        load_patch(patch)
        from relay_procs import RssSampler

        # What the import and its roster reader hold at once, every 10 ms: peaks summed as if
        # they coincided would overstate it (the reader has ended before the import's peak).
        with RssSampler(_with_children, interval=0.01, pss=False) as together:
            report = asyncio.run(_import(spec, Path(roster), max_bytes))
        # The sampler's own CPU is the benchmark's, not the import's.
        report["cpu_seconds"] = max(0.0, report["cpu_seconds"] - together.cpu_seconds)
        report["sampler_cpu_seconds"] = together.cpu_seconds
        # The roster reader runs beside the import: what both hold at once counts.
        report["reader_rss_bytes"] = _children_peak_rss()
        report["own_rss_bytes"] = _peak_rss()
        report["max_rss_bytes"] = max(together.peak, report["own_rss_bytes"])
        report["summed_rss_bytes"] = report["own_rss_bytes"] + report["reader_rss_bytes"]
        out.send(("ok", report))
    except BaseException:
        out.send(("error", traceback.format_exc()))
    finally:
        out.close()


class ServerCpu(Protocol):
    def used(self) -> float: ...


def first_import(
    spec: Any,
    roster: Path,
    max_bytes: int | None,
    patch: str | None,
    count: int,
    server: ServerCpu,
    key: str,
) -> dict[str, Any]:
    """The first import (all creations) in a child, checked; the server's CPU under ``key``."""
    report = run_import_in_child(spec, roster, max_bytes, patch)
    report[key] = server.used()
    assert report["error_count"] == 0, report["errors"]
    assert report["created"] == count, f"created {report['created']} of {count}"
    return report


def run_import_in_child(
    spec: StackSpec, roster: Path, max_bytes: int | None, patch: str | None = None
) -> dict[str, Any]:
    """`mailsvc councillors import` in a fresh process; its own wall time and peak RSS."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_import_child, args=(spec, str(roster), max_bytes, patch, send))
    started = time.perf_counter()
    child.start()
    send.close()
    try:
        status, payload = receive.recv()
    except EOFError:
        status, payload = "error", "the import process died without a report"
    child.join()
    if status != "ok":
        raise SystemExit(f"import of {roster} failed:\n{payload}")
    payload["process_seconds"] = time.perf_counter() - started
    return dict(payload)


# --- the peer ---------------------------------------------------------------------------------


def person_dns(
    url: str,
    bind_dn: str,
    password_file: Path,
    settings: Settings,
    env: Mapping[str, str] | None = None,
) -> set[str]:
    """The DNs (lower case) of the person entries under the councillors' container, read with
    ldapsearch (paged) as ``bind_dn``."""
    d = settings.ldap
    result = subprocess.run(
        [
            "ldapsearch",
            "-x",
            "-LLL",
            "-o",
            "ldif-wrap=no",
            "-H",
            url,
            "-D",
            bind_dn,
            "-y",
            str(password_file),
            "-b",
            d.councillors_dn,
            "-E",
            "pr=1000/noprompt",
            f"(objectClass={d.person_object_class})",
            "1.1",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    dns = set()
    for line in result.stdout.splitlines():
        if line.startswith("dn:: "):
            dns.add(base64.b64decode(line[5:]).decode("utf-8").lower())
        elif line.startswith("dn: "):
            dns.add(line[4:].lower())
    return dns


def ldap_count(settings: Settings, password_file: Path) -> int:
    """Councillor entries in a directory, counted with ldapsearch as the admin."""
    return len(person_dns(settings.ldap_url, settings.ldap.admin_dn, password_file, settings))


def password_file(settings: Settings, directory: Path) -> Path:
    """The admin password in a 0600 file for ldap-utils' -y (no trailing newline)."""
    path = directory / "admin.pw"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secret_store.admin_password(settings))
    return path


def run_ldapadd(settings: Settings, ldif: Path, pw: Path) -> tuple[float, float]:
    """ldapadd of ``ldif``: wall seconds and ldapadd's own CPU seconds."""
    d = settings.directory
    argv = ["ldapadd", "-x", "-H", settings.ldap_url, "-D", d.admin_dn, "-y", str(pw)]
    cpu, start = _children_cpu(), time.perf_counter()
    result = subprocess.run([*argv, "-f", str(ldif)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    cpu = _children_cpu() - cpu
    if result.returncode != 0:
        raise SystemExit(f"ldapadd failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return seconds, cpu


# --- the machine and the report ---------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    fs = "?"
    try:
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, fstype, *_ = line.split()
            if "/tmp".startswith(mount) and len(mount) > len(best):
                best, fs = mount, f"{fstype} (mounted on {mount})"
    except OSError:
        pass
    slapd = subprocess.run(["slapd", "-VV"], capture_output=True, text=True).stderr
    slapd_version = slapd.split("$OpenLDAP:", 1)[-1].split("(")[0].strip() if slapd else "?"
    return {
        "cpu": f"{os.cpu_count()} × {model} (nproc {len(os.sched_getaffinity(0))})",
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "slapd": slapd_version,
        "/tmp": fs,
    }


def fsync_probe(directory: Path, writes: int = 50) -> float:
    """Median milliseconds of a 4 KiB write + fdatasync in ``directory``: slapd (mdb) and SQLite
    sync every commit, so the disk's mood on a shared machine moves every figure."""
    path = directory / "fsync-probe"
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(writes):
            start = time.perf_counter()
            os.write(fd, b"x" * 4096)
            os.fdatasync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return sorted(times)[len(times) // 2] * 1000


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f} entries/s"


def _mb(n: float) -> str:
    return f"{n / MB:,.0f} MB"


def _yes(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _print_phases(report: dict[str, Any]) -> None:
    for name, calls, seconds, growth in report["phases"]:
        grew = f"peak RSS +{growth / MB:,.0f} MB" if growth >= MB else ""
        plural = "s" if calls != 1 else " "
        print(f"      {name:<44} {seconds:8.2f} s  {calls:>4} call{plural}  {grew}".rstrip())


def _step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _table(rows: list[tuple[str, str, str, str]]) -> Iterator[str]:
    head = ("measure", "value", "goal", "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    for i, r in enumerate([head, *rows]):
        yield "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        if i == 0:
            yield "  ".join("-" * w for w in widths)


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Provisioning benchmark: roster import into a real slapd vs. ldapadd.",
        epilog="example: .venv/bin/python bench/provision.py --count 2000",
    )
    parser.add_argument("--count", type=int, help=f"councillors ({DEFAULT_COUNT})")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_COUNT:,} councillors unless --count is given"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the synthetic roster")
    parser.add_argument(
        "--encoding",
        choices=("utf-8-sig", "cp1250"),
        default="utf-8-sig",
        help="roster file encoding: Excel's 'CSV UTF-8' (default) or Windows-1250",
    )
    parser.add_argument(
        "--slapd-nosync",
        action="store_true",
        help="add 'dbnosync' to both generated slapd.conf files: measures the CPU path instead "
        "of the disk's fsync latency (not the configuration the service runs with)",
    )
    parser.add_argument(
        "--skip-peer", action="store_true", help="no ldapadd step (for quick experiments)"
    )
    parser.add_argument(
        "--patch",
        metavar="FILE.py",
        help="call apply() of FILE.py in the benchmark and in each import process first: "
        "try a change (monkeypatch) without editing the tree",
    )
    parser.add_argument(
        "--directory",
        choices=("openldap", "samba"),
        default="openldap",
        help="samba: the service in directory.kind 'ad' against Samba's AD DC, beside ldapadd "
        "and ldbadd (bench/provision_samba.py; as root; ~7 users/s: a small --count, e.g. 500)",
    )
    parser.add_argument("--skip-ldbadd", action="store_true", help="--directory samba: no ldbadd")
    parser.add_argument(
        "--peer-beside",
        action="store_true",
        help="--directory samba: ldapadd into its own DC at the same time as the first import "
        "(both see the same machine; one pass's wall time instead of two)",
    )
    args = parser.parse_args(argv)
    if args.count is None:
        args.count = QUICK_COUNT if args.quick else DEFAULT_COUNT
    if args.count < 1:
        parser.error("--count must be at least 1")
    if args.directory == "samba":
        import provision_samba  # bench/, beside this file, is on sys.path

        return provision_samba.run(args)

    count: int = args.count
    work = Path(tempfile.mkdtemp(prefix="bench-provision-", dir="/tmp"))
    ours = StackSpec.fresh("bp-mailsvc-")
    peer = StackSpec.fresh("bp-ldapadd-")
    stacks: list[LocalStack] = []
    notes: list[str] = ["welcome messages off (provisioning.send_welcome = false)"]
    if args.patch:
        args.patch = str(Path(args.patch).absolute())
        load_patch(args.patch)
        notes.append(f"patched with {args.patch} (--patch): not the code in the tree")
    if args.slapd_nosync:
        slapd_without_fsync()
        notes.append(
            "both slapd run with 'dbnosync' (--slapd-nosync): no fsync per LDAP write, unlike "
            "the generated configuration"
        )
    load_before = os.getloadavg()[0]
    fsync_before = fsync_probe(work)
    try:
        _step(f"generating {count:,} councillors")
        council = make_council(count, args.seed)
        roster = work / "radni.csv"
        write_roster(roster, council.people, args.encoding)
        changed_people, changed = change_one_percent(council, args.seed)
        changed_roster = work / "radni-zmiany.csv"
        write_roster(changed_roster, changed_people, args.encoding)
        roster_size = roster.stat().st_size
        size = max(roster_size, changed_roster.stat().st_size)
        max_bytes = None
        if size > roster_module.DEFAULT_MAX_BYTES:
            max_bytes = size
            notes.append(
                f"the roster ({size:,} bytes) is over provisioning.roster.DEFAULT_MAX_BYTES "
                f"({roster_module.DEFAULT_MAX_BYTES:,}): the benchmark passes max_bytes={size:,} "
                "to run_import"
            )
        pairs = Counter((p.given_names.split()[0], p.surname) for p in council.people)
        ((common, most),) = pairs.most_common(1)

        ours_settings = ours.settings()
        params = argon2_params(ours_settings)
        _step(f"hash rate of Argon2id {params} on 1 and {HASHING_THREADS} threads")
        rates = hash_rates(params)
        stack = LocalStack(ours_settings)
        stacks.append(stack)
        _step(f"starting slapd + Dovecot in {ours.var_dir} (ldap port {ours.ldap_port})")
        stack.up()

        _step(f"1/4 first import of {count:,} councillors")
        first = first_import(
            ours, roster, max_bytes, args.patch, count, SlapdCpu(stack), "slapd_cpu_seconds"
        )

        _step("2/4 the same roster again (no changes)")
        again = run_import_in_child(ours, roster, max_bytes, args.patch)
        assert again["error_count"] == 0, again["errors"]
        no_changes = (again["created"], again["updated"], again["disabled"])
        assert no_changes == (0, 0, 0), f"a no-change import changed {no_changes}"
        assert again["unchanged"] == count, f"unchanged {again['unchanged']} of {count}"

        _step(f"3/4 the roster with 1 % of rows changed ({changed:,})")
        update = run_import_in_child(ours, changed_roster, max_bytes, args.patch)
        assert update["error_count"] == 0, update["errors"]
        got = (update["created"], update["updated"], update["disabled"])
        assert got == (0, changed, 0), f"expected {changed} updates only, got {got}"

        ldapadd_seconds = ldif_hashing = None
        ldapadd_cpu = peer_slapd_cpu = 0.0
        if not args.skip_peer:
            _step("4/4 peer: ldapadd of the same entries into a second slapd")
            peer_settings = peer.settings()
            ldif = work / "radni.ldif"
            ldif_hashing = write_ldif(ldif, peer_settings, council.people)
            peer_stack = LocalStack(peer_settings)
            stacks.append(peer_stack)
            peer_stack.start_service("slapd")
            pw = password_file(peer_settings, work)
            slapd_cpu = SlapdCpu(peer_stack)
            ldapadd_seconds, ldapadd_cpu = run_ldapadd(peer_settings, ldif, pw)
            peer_slapd_cpu = slapd_cpu.used()
            peer_count = ldap_count(peer_settings, pw)
            assert peer_count == count, f"ldapadd left {peer_count} entries, expected {count}"
        ours_pw = password_file(ours_settings, Path(ours.var_dir))
        ours_count = ldap_count(ours_settings, ours_pw)
        ours_pw.unlink()
        assert ours_count == count, f"the import left {ours_count} entries, expected {count}"
        fsync_after = fsync_probe(work)
    finally:
        for s in reversed(stacks):
            try:
                s.down()
            except Exception as exc:  # report and go on stopping the other one
                print(f"could not stop the stack in {s.settings.var_dir}: {exc}", file=sys.stderr)
        if args.keep:
            print(f"kept: {work} {ours.var_dir} {peer.var_dir}", file=sys.stderr)
        else:
            for path in (work, Path(ours.var_dir), Path(peer.var_dir)):
                shutil.rmtree(path, ignore_errors=True)

    ratio = None if ldapadd_seconds is None else ldapadd_seconds / first["seconds"]
    hashing = sum(sec for name, _, sec, _ in first["phases"] if name == HASHING_PHASE)
    with_hashing = (
        None
        if ldapadd_seconds is None or ldif_hashing is None
        else (ldapadd_seconds + ldif_hashing) / first["seconds"]
    )
    peak = max(r["max_rss_bytes"] for r in (first, again, update))
    ours_cpu = (first["cpu_seconds"] + first["slapd_cpu_seconds"]) / count * 1000
    peer_cpu = (ldapadd_cpu + peer_slapd_cpu) / count * 1000
    info = machine()
    print()
    print(f"Provisioning benchmark: {count:,} councillors, one run")
    for key, value in info.items():
        print(f"  {key + ':':<8} {value}")
    print(
        f"  disk:    fdatasync of 4 KiB in /tmp {fsync_before:.2f} ms before, "
        f"{fsync_after:.2f} ms after (median of 50)"
    )
    print(
        f"  load:    {load_before:.2f} (1-minute load average at the start; other work shares it)"
    )
    print(
        f"  roster:  {roster_size:,} bytes, ';', {args.encoding}; {len(pairs):,} distinct "
        f"first name + surname pairs, the most common ({' '.join(common)}) {most}×"
    )
    print(
        f"  hashes:  Argon2id m={params.memory_kib} KiB, t={params.time_cost}, "
        f"p={params.parallelism} (provisioning.argon2_*), {HASHING_THREADS} hashing threads"
    )
    for note in notes:
        print(f"  note:    {note}")
    print()
    rows = [
        (
            "mailsvc import, all creations",
            f"{first['seconds']:.1f} s = {_rate(count, first['seconds'])}",
            "",
            "",
        ),
        (
            "ldapadd, same entries",
            "skipped (--skip-peer)"
            if ldapadd_seconds is None
            else f"{ldapadd_seconds:.1f} s = {_rate(count, ldapadd_seconds)}",
            "",
            "",
        ),
        (
            "ratio mailsvc / bare ldapadd",
            "—" if ratio is None else f"{ratio:.2f}",
            "",
            "",
        ),
        (
            "of the import: password hashing",
            f"{hashing:.1f} s = {hashing / first['seconds']:.0%} ({count / hashing:,.0f} hashes/s)"
            if hashing
            else "—",
            "",
            "",
        ),
        (
            "ldapadd + hashing its LDIF",
            "—"
            if ldapadd_seconds is None or ldif_hashing is None
            else f"{ldapadd_seconds:.1f} s + {ldif_hashing:.1f} s hashing on the same pool",
            "",
            "",
        ),
        (
            "ratio mailsvc / (ldapadd + hashing)",
            "—" if with_hashing is None else f"{with_hashing:.2f}",
            f"≥ {GOAL_RATIO}",
            "" if with_hashing is None else _yes(with_hashing >= GOAL_RATIO),
        ),
        (
            "Argon2id hashes/s",
            f"{rates[0]:.1f} on 1 thread, {rates[1]:.1f} on {HASHING_THREADS} "
            f"({rates[1] / rates[0]:.2f} ×)",
            "",
            "",
        ),
        (
            "CPU per entry, mailsvc import",
            f"{ours_cpu:.2f} ms (import process {first['cpu_seconds'] / count * 1000:.2f} "
            f"+ slapd {first['slapd_cpu_seconds'] / count * 1000:.2f})",
            "",
            "",
        ),
        (
            "CPU per entry, ldapadd",
            "—"
            if ldapadd_seconds is None
            else f"{peer_cpu:.2f} ms (ldapadd {ldapadd_cpu / count * 1000:.2f} "
            f"+ slapd {peer_slapd_cpu / count * 1000:.2f})",
            "",
            "",
        ),
        (
            "no-change import (0 changes)",
            f"{again['seconds']:.1f} s",
            f"≤ {GOAL_NO_CHANGE_SECONDS:g} s",
            _yes(again["seconds"] <= GOAL_NO_CHANGE_SECONDS),
        ),
        (f"1 % change import ({changed:,} updates)", f"{update['seconds']:.1f} s", "", ""),
        (
            "peak RSS of an import with its roster reader, at once",
            f"{_mb(peak)} (first {_mb(first['max_rss_bytes'])}, no-change "
            f"{_mb(again['max_rss_bytes'])}, 1 % {_mb(update['max_rss_bytes'])}; the "
            f"no-change's import process {_mb(again['own_rss_bytes'])} and reader "
            f"{_mb(again['reader_rss_bytes'])}, if their peaks coincided "
            f"{_mb(again['summed_rss_bytes'])})",
            f"≤ {GOAL_PEAK_RSS_MB:g} MB",
            _yes(peak <= GOAL_PEAK_RSS_MB * MB),
        ),
    ]
    for line in _table(rows):
        print(line)
    print()
    print(
        "Where the import time goes (wall time of the real methods, measured by wrappers; "
        "peak RSS +N: how much the process's peak grew during those calls):"
    )
    for label, report in (("first import", first), ("no-change", again), ("1 % change", update)):
        print(f"  {label}: {report['seconds']:.2f} s in the import, "
              f"{report['process_seconds']:.2f} s with process start-up")  # fmt: skip
        _print_phases(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
