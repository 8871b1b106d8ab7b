"""Import a roster: read and validate it, plan the directory changes, then apply exactly the
plan that was shown.

Two steps, so that whoever approves a plan (a clerk in the web, an operator at the terminal)
gets that plan applied and no other: ``prepare`` reads the file and plans against the directory
as it is now; ``apply`` carries out a prepared import. The web shows a preview, keeps its
fingerprint in the form, prepares again on confirmation and applies only when the fingerprint
is unchanged (``PlanChanged`` otherwise: the roster or the directory changed since the preview).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from mailsvc import i18n
from mailsvc.directory.councillors import ApplyResult, Councillors
from mailsvc.errors import MailsvcError
from mailsvc.storage.register import AuditContext
from provisioning.roster import Roster
from provisioning.roster.apart import read_roster_apart
from provisioning.sync import Create, Plan


class InvalidRoster(MailsvcError):
    """The roster has invalid rows and invalid rows are not to be skipped."""


class PlanChanged(MailsvcError):
    """The plan is no longer the one that was approved."""


@dataclass(frozen=True)
class PreparedImport:
    """A roster read and planned: what ``apply`` will do, and its fingerprint."""

    roster: Roster
    plan: Plan
    problems: list[str]  # row problems, "file:line: column 'x': what is wrong"
    chosen: list[tuple[Create, str]]  # the local part picked for each new mailbox
    addresses: dict[int, str]  # roster line -> planned address of a new mailbox
    digest: str


def plan_digest(plan: Plan, addresses: dict[int, str]) -> str:
    """A short fingerprint of a plan: applying checks the plan is still the one shown."""
    parts: list[Any] = [
        sorted((c.entry.line, addresses.get(c.entry.line, "")) for c in plan.creates),
        sorted(
            (u.existing.address, sorted((k, str(v)) for k, v in u.changes.items()), u.reactivate)
            for u in plan.updates
        ),
        sorted((d.existing.address, d.reason) for d in plan.disables),
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


async def prepare_import(
    councillors: Councillors,
    path: Path,
    *,
    committees: Mapping[str, str] | None = None,
    encoding: str | None = None,
    today: date | None = None,
    max_bytes: int | None = None,
) -> PreparedImport:
    """Read and validate ``path`` and plan it against the directory. Nothing is changed.

    The file is read (apart from the event loop, a large one in a process of its own) while
    the directory and the register are read; a problem of the file is reported first, as if
    it had been read before anything else."""
    reading = asyncio.create_task(
        read_roster_apart(
            path,
            encoding=encoding,
            committees=committees,
            **({"max_bytes": max_bytes} if max_bytes else {}),
        )
    )
    current = asyncio.create_task(councillors.current_councillors())
    try:
        roster = await reading
    except BaseException:
        current.cancel()
        with contextlib.suppress(BaseException):
            await current
        raise
    problems = [str(p) for p in roster.problems]
    plan = councillors.plan(roster.entries, await current, today)
    problems += [f"{roster.path}:{p.line}: {p.message}" for p in plan.problems]
    chosen = await councillors.choose_addresses(plan.creates)
    addresses = {c.entry.line: f"{local}@{councillors.domain}" for c, local in chosen}
    return PreparedImport(roster, plan, problems, chosen, addresses, plan_digest(plan, addresses))


def refuse_invalid(prepared: PreparedImport, *, language: str, skip_invalid: bool) -> None:
    """``InvalidRoster`` naming every invalid row, unless there is none or they are skipped."""
    if prepared.problems and not skip_invalid:
        count = len(prepared.problems)
        summary = i18n.text(language, "import.invalid", count=count)
        raise InvalidRoster("\n".join([*prepared.problems, summary]))


async def apply_import(
    councillors: Councillors,
    prepared: PreparedImport,
    context: AuditContext,
    *,
    language: str,
    skip_invalid: bool = False,
    expected_digest: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ApplyResult:
    """Carry out a prepared import: refused with ``PlanChanged`` when ``expected_digest`` (the
    plan that was approved) differs from the prepared one, and with ``InvalidRoster`` when rows
    are invalid and not to be skipped. Nothing is changed when it is refused."""
    if expected_digest is not None and prepared.digest != expected_digest:
        raise PlanChanged(i18n.text(language, "import.plan_changed"))
    refuse_invalid(prepared, language=language, skip_invalid=skip_invalid)
    result = await councillors.apply(
        prepared.plan, context, progress=progress, chosen=prepared.chosen
    )
    result.errors = prepared.problems + result.errors
    return result
