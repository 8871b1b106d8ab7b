"""Roster synchronisation planning (pure): desired councillors vs. what exists → a plan.

Matching: by external id when the roster row has one, otherwise by normalised full name plus
district. A row matching more than one existing councillor is reported as ambiguous, never guessed.
Addresses never change: a corrected spelling updates the names and keeps the address.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date

from provisioning.naming import normalise_name
from provisioning.roster import RosterEntry

# Fields compared between the roster and what exists; the plan names the changed ones.
COMPARED_FIELDS = (
    "given_names",
    "surname",
    "district",
    "club",
    "role",
    "committees",
    "term_start",
    "mandate_end",
    "private_email",
    "phone",
    "external_id",
)


@dataclass(frozen=True, slots=True)
class Existing:
    """A councillor as they exist now (directory entry joined with the register); slots: a
    plan holds one for every councillor, tens of thousands in a county."""

    address: str
    dn: str | None
    active: bool
    given_names: str
    surname: str
    district: str
    club: str = ""
    role: str = "radny"
    committees: tuple[str, ...] = ()
    term_start: date | None = None
    mandate_end: date | None = None
    private_email: str | None = None
    phone: str | None = None
    external_id: str | None = None
    registered: bool = True  # False: in the directory but not (yet) in the register


@dataclass(frozen=True)
class Create:
    entry: RosterEntry


@dataclass(frozen=True)
class Update:
    existing: Existing
    entry: RosterEntry
    changes: dict[str, tuple[object, object]]  # field -> (before, after)
    reactivate: bool = False


@dataclass(frozen=True)
class Disable:
    existing: Existing
    reason: str
    entry: RosterEntry | None = None  # set when the roster itself ends the mandate


@dataclass(frozen=True)
class PlanProblem:
    line: int
    message: str


@dataclass
class Plan:
    creates: list[Create] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    disables: list[Disable] = field(default_factory=list)
    unchanged: list[Existing] = field(default_factory=list)
    problems: list[PlanProblem] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return len(self.creates) + len(self.updates) + len(self.disables)


def _name_key(given_names: str, surname: str, district: str) -> tuple[str, str]:
    return (normalise_name(f"{given_names} {surname}"), normalise_name(district))


# The compared fields of a roster entry or an existing councillor, as one tuple: a no-change
# import compares tens of thousands of pairs, and most of them are equal.
_compared = operator.attrgetter(*COMPARED_FIELDS)


def _changes(ex: Existing, entry: RosterEntry) -> dict[str, tuple[object, object]]:
    before, after = _compared(ex), _compared(entry)
    if before == after:
        return {}
    return {
        name: (b, a) for name, b, a in zip(COMPARED_FIELDS, before, after, strict=True) if b != a
    }


def plan_sync(desired: Sequence[RosterEntry], existing: Iterable[Existing], today: date) -> Plan:
    """Compute what to create, update and disable so the directory matches the roster."""
    plan = Plan()
    by_id: dict[str, list[Existing]] = defaultdict(list)
    all_existing = list(existing)
    for ex in all_existing:
        if ex.external_id:
            by_id[ex.external_id].append(ex)
    # Names are normalised (transliterated, folded) only when a row has no id match: with
    # external ids in the roster, a large import never needs the name index.
    name_index: dict[tuple[str, str], list[Existing]] | None = None

    def by_name(key: tuple[str, str]) -> list[Existing]:
        nonlocal name_index
        if name_index is None:
            name_index = defaultdict(list)
            for ex in all_existing:
                name_index[_name_key(ex.given_names, ex.surname, ex.district)].append(ex)
        return name_index.get(key, [])

    matched: set[str] = set()
    for entry in desired:
        candidates: list[Existing] = []
        if entry.external_id:
            candidates = by_id.get(entry.external_id, [])
        if not candidates:
            # Without an id match, fall back to name + district, but never steal an entry
            # that carries a different external id.
            candidates = [
                ex
                for ex in by_name(_name_key(entry.given_names, entry.surname, entry.district))
                if not (
                    entry.external_id and ex.external_id and ex.external_id != entry.external_id
                )
            ]
        if len(candidates) > 1:
            active = [c for c in candidates if c.active]
            if len(active) == 1 and not entry.external_id:
                candidates = active
            else:
                addresses = ", ".join(sorted(c.address for c in candidates))
                plan.problems.append(
                    PlanProblem(
                        entry.line,
                        f"{entry.full_name} ({entry.district}) matches several councillors "
                        f"({addresses}); add the external id column to tell them apart",
                    )
                )
                matched.update(c.address for c in candidates)
                continue
        if not candidates:
            if entry.mandate_end is not None and entry.mandate_end <= today:
                continue  # a mandate that already ended needs no new mailbox
            plan.creates.append(Create(entry))
            continue
        ex = candidates[0]
        if ex.address in matched:
            plan.problems.append(
                PlanProblem(entry.line, f"{entry.full_name} matches {ex.address} a second time")
            )
            continue
        matched.add(ex.address)
        changes = _changes(ex, entry)
        ended = entry.mandate_end is not None and entry.mandate_end <= today
        if ended:
            if ex.active:
                plan.disables.append(Disable(ex, "mandate ended", entry))
            elif changes or not ex.registered:
                plan.updates.append(Update(ex, entry, changes))
            else:
                plan.unchanged.append(ex)
        elif not ex.active and ex.mandate_end is not None and ex.mandate_end <= today:
            # Ended by the clerk (end-mandate); a roster that just omits the end date
            # does not bring the account back.
            plan.unchanged.append(ex)
        elif not ex.active:
            plan.updates.append(Update(ex, entry, changes, reactivate=True))
        elif changes or not ex.registered:
            plan.updates.append(Update(ex, entry, changes))
        else:
            plan.unchanged.append(ex)

    for ex in all_existing:
        if ex.address not in matched and ex.active:
            plan.disables.append(Disable(ex, "no longer in the roster"))
    return plan
