"""The council register (councillors table) and the audit log of directory changes."""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailsvc.storage.db import utcnow
from mailsvc.storage.tables import audit_log, councillors


@dataclass(frozen=True)
class RegisterRow:
    address: str
    dn: str | None
    external_id: str | None
    given_names: str
    surname: str
    district: str
    club: str
    role: str
    committees: tuple[str, ...]
    term_start: date | None
    mandate_end: date | None
    end_reason: str | None
    private_email: str | None
    phone: str | None
    status: str
    disabled_at: datetime | None
    removed_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def display_name(self) -> str:
        return f"{self.given_names} {self.surname}"


class RosterValues(NamedTuple):
    """What a roster row says about a councillor, as the register holds it: what an import
    compares (``provisioning.sync.COMPARED_FIELDS``), without the register's own columns.
    A named tuple: an import of tens of thousands makes one per councillor, several times
    faster than a frozen dataclass."""

    external_id: str | None
    given_names: str
    surname: str
    district: str
    club: str
    role: str
    committees: tuple[str, ...]
    term_start: date | None
    mandate_end: date | None
    private_email: str | None
    phone: str | None


@dataclass(frozen=True)
class AuditContext:
    """Who changes the directory, and with which command."""

    actor: str
    command: str


def os_audit_context(command: str) -> AuditContext:
    """``command`` run by the operating-system user of this process (sudo's caller when there
    is one): the CLI and the scheduled jobs."""
    try:
        user = os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        user = f"uid:{os.getuid()}"
    return AuditContext(actor=user, command=command)


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    command: str
    address: str | None
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


_ROW_FIELDS = [f.name for f in fields(RegisterRow)]
_ROSTER_FIELDS = list(RosterValues._fields)


def _to_row(raw: Any) -> RegisterRow:
    data = {name: getattr(raw, name) for name in _ROW_FIELDS}
    data["committees"] = tuple(c for c in (raw.committees or "").split(",") if c)
    return RegisterRow(**data)


def _jsonable(values: Mapping[str, Any] | None) -> str | None:
    if values is None:
        return None

    def conv(v: Any) -> Any:
        if isinstance(v, (date, datetime)):
            return v.isoformat()
        if isinstance(v, tuple):
            return list(v)
        return v

    return json.dumps({k: conv(v) for k, v in values.items()}, ensure_ascii=False, sort_keys=True)


def _db_values(values: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if "committees" in out:
        out["committees"] = ",".join(out["committees"])
    return out


@dataclass(frozen=True)
class RegisterWrite:
    """One change to one councillor: register values (insert or update) plus its audit record."""

    address: str
    action: str
    values: Mapping[str, Any]
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None


class Register:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def all(self, *, include_removed: bool = True) -> list[RegisterRow]:
        query = select(councillors).order_by(councillors.c.surname, councillors.c.given_names)
        if not include_removed:
            query = query.where(councillors.c.status != "removed")
        async with self.engine.connect() as conn:
            return [_to_row(r) for r in (await conn.execute(query)).all()]

    async def roster_values(self) -> dict[str, RosterValues]:
        """Address → roster values of every councillor in the register (removed ones too): all
        an import plans with, read without the columns it does not compare."""
        query = select(councillors.c.address, *(councillors.c[name] for name in _ROSTER_FIELDS))
        committees = _ROSTER_FIELDS.index("committees")
        split: dict[str | None, tuple[str, ...]] = {}  # few distinct committee lists
        out: dict[str, RosterValues] = {}
        async with self.engine.connect() as conn:
            for address, *values in (await conn.execute(query)).all():
                listed = values[committees]
                found = split.get(listed)
                if found is None:
                    found = split[listed] = tuple(c for c in (listed or "").split(",") if c)
                values[committees] = found
                out[address] = RosterValues._make(values)
        return out

    async def get(self, address: str) -> RegisterRow | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(councillors).where(councillors.c.address == address))
            ).first()
        return _to_row(row) if row else None

    async def addresses(self) -> set[str]:
        async with self.engine.connect() as conn:
            return set((await conn.execute(select(councillors.c.address))).scalars())

    async def write(self, context: AuditContext, changes: Sequence[RegisterWrite]) -> None:
        """Apply register changes and their audit records in one transaction.

        New rows go in one multi-row INSERT; updates are grouped by the set of columns they
        change and sent as one executemany each (a bulk import writes thousands at once).
        """
        if not changes:
            return
        now = utcnow()
        async with self.engine.begin() as conn:
            existing: set[str] = set()
            addresses = [c.address for c in changes]
            for i in range(0, len(addresses), 500):  # stay below bind-parameter limits
                existing.update(
                    (
                        await conn.execute(
                            select(councillors.c.address).where(
                                councillors.c.address.in_(addresses[i : i + 500])
                            )
                        )
                    ).scalars()
                )
            inserts: list[dict[str, Any]] = []
            updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for change in changes:
                values = _db_values(change.values)
                if change.address in existing:
                    if values:
                        key = tuple(sorted(values))
                        updates.setdefault(key, []).append({"b_address": change.address, **values})
                else:
                    inserts.append(
                        {"address": change.address, "created_at": now, "updated_at": now, **values}
                    )
                    existing.add(change.address)
            if inserts:
                names = sorted({k for row in inserts for k in row})
                await conn.execute(
                    councillors.insert(), [{c: row.get(c) for c in names} for row in inserts]
                )
            for columns, rows in updates.items():
                await conn.execute(
                    update(councillors)
                    .where(councillors.c.address == bindparam("b_address"))
                    .values({**{c: bindparam(c) for c in columns}, "updated_at": now}),
                    rows,
                )
            await self._audit(conn, context, changes, now)

    async def audit_only(self, context: AuditContext, changes: Iterable[RegisterWrite]) -> None:
        async with self.engine.begin() as conn:
            await self._audit(conn, context, list(changes), utcnow())

    @staticmethod
    async def _audit(
        conn: AsyncConnection,
        context: AuditContext,
        changes: Sequence[RegisterWrite],
        now: datetime,
    ) -> None:
        await conn.execute(
            audit_log.insert(),
            [
                {
                    "at": now,
                    "actor": context.actor,
                    "command": context.command,
                    "address": c.address,
                    "action": c.action,
                    "before": _jsonable(c.before),
                    "after": _jsonable(c.after),
                }
                for c in changes
            ],
        )

    async def history(self, address: str) -> list[AuditEntry]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(audit_log)
                    .where(audit_log.c.address == address)
                    .order_by(audit_log.c.at, audit_log.c.id)
                )
            ).all()
        return [
            AuditEntry(
                at=r.at,
                actor=r.actor,
                command=r.command,
                address=r.address,
                action=r.action,
                before=json.loads(r.before) if r.before else None,
                after=json.loads(r.after) if r.after else None,
            )
            for r in rows
        ]

    async def due_mandate_ends(self, today: date) -> list[RegisterRow]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(councillors).where(
                        councillors.c.status == "active",
                        councillors.c.mandate_end.is_not(None),
                        councillors.c.mandate_end <= today,
                    )
                )
            ).all()
        return [_to_row(r) for r in rows]

    async def due_removals(self, disabled_before: datetime) -> list[RegisterRow]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(councillors).where(
                        councillors.c.status == "disabled",
                        councillors.c.disabled_at.is_not(None),
                        councillors.c.disabled_at <= disabled_before,
                    )
                )
            ).all()
        return [_to_row(r) for r in rows]

    async def active_memberships(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(DN, role, committees) of every active councillor: what groups are made of."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(councillors.c.dn, councillors.c.role, councillors.c.committees).where(
                        councillors.c.status == "active", councillors.c.dn.is_not(None)
                    )
                )
            ).all()
        split: dict[str | None, tuple[str, ...]] = {}  # few distinct committee lists
        out = []
        for dn, role, comm in rows:
            committees = split.get(comm)
            if committees is None:
                committees = split[comm] = tuple(c for c in (comm or "").split(",") if c)
            out.append((dn, role, committees))
        return out
