"""Councillor use cases: roster import (plan, apply), mandates, passwords, groups, history.

The directory holds the accounts; the register (database) holds the roster data and every address
ever used; the audit log records each directory change. Every directory change is one LDAP
operation per entry, so a failure part-way leaves each entry fully changed or untouched, and a
second run completes the rest (entries found in the directory but not in the register are adopted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from mailsvc.config import Settings
from mailsvc.errors import MailsvcError
from mailsvc.passwords import hashes_for, set_new_password
from mailsvc.storage.db import utcnow
from mailsvc.storage.queue import MailQueue
from mailsvc.storage.register import AuditContext, Register, RegisterRow, RegisterWrite
from provisioning.directory import CouncillorEntry, Directory
from provisioning.errors import DirectoryUnavailable
from provisioning.naming import choose_local_part
from provisioning.passwords import generate_password
from provisioning.roster import RosterEntry
from provisioning.sync import Create, Disable, Existing, Plan, Update, plan_sync

log = logging.getLogger(__name__)

ROLE_GROUPS = {"przewodniczacy": "przewodniczacy", "wiceprzewodniczacy": "wiceprzewodniczacy"}
ALL_COUNCILLORS_GROUP = "rada"
_CHUNK = 1000
_PARALLEL = 8  # directory connections used at once by bulk changes

Progress = Callable[[int, int], None]
# New passwords and their hashes, in order (no hashes where the directory hashes them itself).
_Credentials = tuple[list[str], list[str | None]]


class ClerkAccountProtected(MailsvcError):
    """A clerk's password is not reset from the panel or the API: an operator does it from the
    command line (otherwise one clerk's stolen session could take over every other clerk)."""


class CouncillorNotFound(MailsvcError):
    """No councillor with that address."""


@dataclass(frozen=True)
class CreatedAccount:
    address: str
    password: str = field(repr=False)
    display_name: str = ""
    district: str = ""
    private_email: str | None = None
    dn: str = ""


@dataclass
class ApplyResult:
    created: list[CreatedAccount] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "created": [{"address": c.address, "password": c.password} for c in self.created],
            "updated": self.updated,
            "disabled": self.disabled,
            "unchanged": self.unchanged,
            "errors": self.errors,
        }


def committee_group(slug: str) -> str:
    return f"komisja-{slug}"


def _register_values(entry: RosterEntry) -> dict[str, Any]:
    return {
        "external_id": entry.external_id,
        "given_names": entry.given_names,
        "surname": entry.surname,
        "district": entry.district,
        "club": entry.club,
        "role": entry.role,
        "committees": entry.committees,
        "term_start": entry.term_start,
        "mandate_end": entry.mandate_end,
        "private_email": entry.private_email,
        "phone": entry.phone,
    }


class Councillors:
    """The use cases, over a directory, the register and (for welcome mail) the queue."""

    def __init__(
        self,
        settings: Settings,
        directory: Directory,
        register: Register,
        queue: MailQueue | None = None,
        compose_welcome: Callable[[str, str], EmailMessage] | None = None,
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.register = register
        self.queue = queue
        self.compose_welcome = compose_welcome
        self.domain = settings.domain.lower()

    # -- current state ---------------------------------------------------------------------

    async def current(self) -> list[Existing]:
        """Every councillor with a directory entry, joined with the register.

        The directory is asked only for address, DN and status (the register holds the rest);
        entries the register does not know are read in full and adopted.
        """
        entries = await self.directory.list_councillors(brief=True)
        by_address = await self.register.roster_values()
        out = []
        for e in entries:
            reg = by_address.get(e.address)
            if reg is not None:
                out.append(
                    Existing(
                        address=e.address,
                        dn=e.dn,
                        active=e.active,
                        given_names=reg.given_names,
                        surname=reg.surname,
                        district=reg.district,
                        club=reg.club,
                        role=reg.role,
                        committees=reg.committees,
                        term_start=reg.term_start,
                        mandate_end=reg.mandate_end,
                        private_email=reg.private_email,
                        phone=reg.phone,
                        external_id=reg.external_id,
                    )
                )
                continue
            # Created outside the register (or a run interrupted): adopt it.
            full = await self.directory.find_by_address(e.address) or e
            out.append(
                Existing(
                    address=full.address,
                    dn=full.dn,
                    active=full.active,
                    given_names=full.given_name,
                    surname=full.surname,
                    district=full.district,
                    club=full.club,
                    role=full.role or "radny",
                    phone=full.phone,
                    external_id=full.external_id,
                    registered=False,
                )
            )
        return out

    async def taken_local_parts(self) -> set[str]:
        """Local parts a new mailbox may not have: every address ever used, and the clerks'
        logins (a clerk signs in to the panel as "<login>@<domain>" too)."""
        suffix = "@" + self.domain
        addresses = await self.register.addresses()
        addresses |= {e.address for e in await self.directory.list_councillors(brief=True)}
        staff = await self.directory.list_staff()
        addresses |= {e.address for e in staff}
        logins = {e.login.lower() for e in staff if e.login}
        return {a[: -len(suffix)] for a in addresses if a.endswith(suffix)} | logins

    async def current_councillors(self) -> list[Existing]:
        """``current`` without the members of the clerks' group: office staff with a mailbox
        here are not councillors, and a roster never disables them."""
        current = await self.current()
        clerks = await self.directory.get_group(self.settings.web.clerks_group)
        if clerks is not None and clerks.members:
            staff = {dn.lower() for dn in clerks.members}
            current = [e for e in current if (e.dn or "").lower() not in staff]
        return current

    def plan(
        self, entries: Sequence[RosterEntry], current: Sequence[Existing], today: date | None = None
    ) -> Plan:
        """What importing ``entries`` changes, against ``current_councillors()``."""
        return plan_sync(entries, current, today or date.today())

    # -- applying ----------------------------------------------------------------------------

    def _attrs(self, entry: RosterEntry) -> dict[str, list[str]]:
        return self.directory.roster_attributes(
            external_id=entry.external_id,
            district=entry.district,
            club=entry.club,
            role=entry.role,
            phone=entry.phone,
        )

    async def choose_addresses(self, creates: Sequence[Create]) -> list[tuple[Create, str]]:
        """Local parts for new mailboxes, in roster order, so the outcome is deterministic."""
        if not creates:
            return []
        taken = await self.taken_local_parts()
        # Active Directory: the account name derived from a local part (sAMAccountName) must
        # be free in the whole domain too, where other people's accounts live.
        logins = await self.directory.taken_logins()
        login_for = self.directory.dialect.login_for

        def is_taken(local: str) -> bool:
            return local in taken or (bool(logins) and login_for(local).lower() in logins)

        reserved = set(self.settings.committee_names) | {
            committee_group(s) for s in self.settings.committee_names
        }
        chosen: list[tuple[Create, str]] = []
        for create in creates:
            e = create.entry
            local = choose_local_part(e.given_names, e.surname, is_taken, extra_reserved=reserved)
            taken.add(local)
            logins.add(login_for(local).lower())
            chosen.append((create, local))
        return chosen

    async def apply(
        self,
        plan: Plan,
        context: AuditContext,
        progress: Progress | None = None,
        chosen: list[tuple[Create, str]] | None = None,
    ) -> ApplyResult:
        """Carry out ``plan``. ``chosen``: addresses already picked by ``choose_addresses``."""
        result = ApplyResult(unchanged=len(plan.unchanged))
        total = plan.changes
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, total)

        if plan.creates:
            if chosen is None or len(chosen) != len(plan.creates):
                chosen = await self.choose_addresses(plan.creates)
            chunks = _chunks(chosen, _CHUNK)
            # Three stages overlap: the passwords of the next chunk are hashed (all the CPUs)
            # while this chunk's entries are added and the previous chunk's register rows are
            # written (both mostly waiting for slapd's and SQLite's fsync).
            hashing: asyncio.Task[_Credentials] | None = asyncio.create_task(
                self._credentials(len(chunks[0]))
            )
            writing: asyncio.Task[None] | None = None
            try:
                for number, chunk in enumerate(chunks):
                    assert hashing is not None
                    this_chunk, hashing = hashing, None
                    credentials = await this_chunk
                    if number + 1 < len(chunks):
                        hashing = asyncio.create_task(self._credentials(len(chunks[number + 1])))
                    writes, unavailable = await self._create_chunk(chunk, credentials, result)
                    if writing is not None:
                        await writing
                    writing = asyncio.create_task(self.register.write(context, writes))
                    if unavailable is not None:
                        raise unavailable
                    tick(len(chunk))
            finally:
                if hashing is not None:  # stopped early: the queued hashes are not needed
                    hashing.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await hashing
                if writing is not None:
                    await writing
        for chunk in _chunks(plan.updates, _CHUNK):
            await self._update_chunk(chunk, context, result)
            tick(len(chunk))
        for chunk in _chunks(plan.disables, _CHUNK):
            await self._disable_chunk(chunk, context, result)
            tick(len(chunk))
        await self.sync_groups()
        if result.created and self.queue is not None and self.compose_welcome is not None:
            await self._send_welcome(result.created)
        return result

    async def _credentials(self, count: int) -> _Credentials:
        """``count`` new passwords and their hashes (``hashes_for``)."""
        length = self.settings.provisioning.password_length
        passwords = [generate_password(length) for _ in range(count)]
        # The slow part of an import: the whole chunk at once, on every core, off the loop.
        return passwords, await hashes_for(self.settings, self.directory, passwords)

    async def _create_chunk(
        self,
        chunk: Sequence[tuple[Create, str]],
        credentials: _Credentials,
        result: ApplyResult,
    ) -> tuple[list[RegisterWrite], Exception | None]:
        """Add a chunk's entries with ``credentials`` (one password and hash each); returns
        their register writes and the first temporary failure (the caller writes the
        register, then stops on the failure)."""
        passwords, hashes = credentials
        prepared = []
        for (create, local), password, password_hash in zip(chunk, passwords, hashes, strict=True):
            e = create.entry
            request = self.directory.councillor_request(
                local_part=local,
                address=f"{local}@{self.domain}",
                given_name=" ".join(e.given_names.split()),
                surname=e.surname,
                password=password,
                password_hash=password_hash,
                extra=self._attrs(e),
            )
            prepared.append((create, local, password, request))
        # One thread hop per connection, each adding its share in sequence.
        parallel = min(_PARALLEL, self.directory.dialect.add_connections)
        shares = [prepared[i::parallel] for i in range(parallel)]
        answers = await asyncio.gather(
            *(self.directory.add_many([p[3] for p in share]) for share in shares if share)
        )
        writes = []
        unavailable: Exception | None = None
        for share, outcomes in zip([s for s in shares if s], answers, strict=True):
            for (create, local, password, _), outcome in zip(share, outcomes, strict=True):
                e = create.entry
                if isinstance(outcome, Exception):
                    result.errors.append(f"line {e.line}: {outcome}")
                    if isinstance(outcome, DirectoryUnavailable):
                        unavailable = outcome
                    continue
                address = f"{local}@{self.domain}"
                values = {**_register_values(e), "dn": outcome, "status": "active"}
                writes.append(RegisterWrite(address, "create", values, None, _register_values(e)))
                result.created.append(
                    CreatedAccount(
                        address,
                        password,
                        f"{e.given_names} {e.surname}",
                        e.district,
                        e.private_email,
                        outcome,
                    )
                )
        return writes, unavailable

    async def _update_chunk(
        self, chunk: Sequence[Update], context: AuditContext, result: ApplyResult
    ) -> None:
        gate = asyncio.Semaphore(_PARALLEL)

        async def update_one(u: Update) -> RegisterWrite:
            e, ex = u.entry, u.existing
            changes: dict[str, Any] = {
                **self.directory.name_changes(" ".join(e.given_names.split()), e.surname),
                **self._attrs(e),
            }
            if u.reactivate:
                changes.update(self.directory.status_change(True))
            assert ex.dn is not None
            async with gate:
                await self.directory.modify(ex.dn, changes)
            values = {**_register_values(e), "dn": ex.dn}
            if u.reactivate:
                values.update(status="active", disabled_at=None, end_reason=None)
            before = {k: b for k, (b, _) in u.changes.items()}
            after = {k: a for k, (_, a) in u.changes.items()}
            action = "reactivate" if u.reactivate else ("update" if ex.registered else "adopt")
            return RegisterWrite(ex.address, action, values, before, after)

        await self._run_writes(chunk, update_one, context, result.updated, result)

    async def _disable_chunk(
        self, chunk: Sequence[Disable], context: AuditContext, result: ApplyResult
    ) -> None:
        gate = asyncio.Semaphore(_PARALLEL)

        async def disable_one(d: Disable) -> RegisterWrite:
            assert d.existing.dn is not None
            async with gate:
                await self.directory.set_active(d.existing.dn, False)
            values: dict[str, Any] = {
                "dn": d.existing.dn,
                "status": "disabled",
                "disabled_at": utcnow(),
                "end_reason": d.reason,
            }
            if d.entry is not None:
                values.update(_register_values(d.entry))
            elif not d.existing.registered:
                values.update(
                    given_names=d.existing.given_names,
                    surname=d.existing.surname,
                    district=d.existing.district,
                )
            return RegisterWrite(
                d.existing.address,
                "disable",
                values,
                {"status": "active"},
                {"status": "disabled", "reason": d.reason},
            )

        await self._run_writes(chunk, disable_one, context, result.disabled, result)

    async def _run_writes(
        self,
        chunk: Sequence[Any],
        one: Callable[[Any], Any],
        context: AuditContext,
        bucket: list[str],
        result: ApplyResult,
    ) -> None:
        outcomes = await asyncio.gather(*(one(item) for item in chunk), return_exceptions=True)
        writes = []
        for item, outcome in zip(chunk, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                result.errors.append(f"{item.existing.address}: {outcome}")
                continue
            writes.append(outcome)
            bucket.append(outcome.address)
        await self.register.write(context, writes)
        self._raise_if_unavailable(outcomes)

    @staticmethod
    def _raise_if_unavailable(outcomes: Sequence[object]) -> None:
        """Stop at the first chunk that met an unreachable directory (the rest would too)."""
        for outcome in outcomes:
            if isinstance(outcome, DirectoryUnavailable):
                raise outcome

    async def _send_welcome(self, created: Sequence[CreatedAccount]) -> None:
        assert self.queue is not None and self.compose_welcome is not None
        for account in created:
            msg = self.compose_welcome(account.display_name, account.address)
            await self.queue.enqueue(
                self.settings.office_address, [account.address], msg.as_bytes(), client="welcome"
            )

    # -- groups ------------------------------------------------------------------------------

    async def sync_groups(self) -> int:
        """Groups follow the register: all active councillors, committees, role holders."""
        active = await self.register.active_memberships()
        wanted: dict[str, tuple[set[str], str]] = {
            ALL_COUNCILLORS_GROUP: ({dn for dn, _, _ in active}, "Wszyscy radni")
        }
        for slug, name in self.settings.committee_names.items():
            wanted[committee_group(slug)] = (set(), name)
        # Councillors by (role, committees): a few dozen kinds however many councillors, so
        # each group takes its members a kind at a time.
        kinds: dict[tuple[str, tuple[str, ...]], list[str]] = defaultdict(list)
        for dn, role, committees in active:
            kinds[(role, committees)].append(dn)
        for (role, committees), dns in kinds.items():
            for slug in committees:
                wanted.setdefault(committee_group(slug), (set(), slug))[0].update(dns)
            if role in ROLE_GROUPS:
                wanted.setdefault(ROLE_GROUPS[role], (set(), role))[0].update(dns)
        for group in ROLE_GROUPS.values():
            wanted.setdefault(group, (set(), group))
        return await self.directory.sync_groups(wanted)

    # -- single-councillor commands ----------------------------------------------------------

    async def add(
        self, given_names: str, surname: str, context: AuditContext, district: str = ""
    ) -> CreatedAccount:
        """Create one mailbox outside a roster import (recorded in the register and audit)."""
        from datetime import date as _date

        entry = RosterEntry(
            line=0,
            given_names=" ".join(given_names.split()),
            surname=" ".join(surname.split()),
            district=district,
            club="",
            role="radny",
            committees=(),
            term_start=_date.today(),
            mandate_end=None,
            private_email=None,
            phone=None,
            external_id=None,
        )
        result = await self.apply(Plan(creates=[Create(entry)]), context)
        if result.errors:
            raise MailsvcError(result.errors[0])
        return result.created[0]

    async def _entry(self, address: str) -> CouncillorEntry:
        entry = await self.directory.find_by_address(address.strip().lower())
        if entry is None:
            raise CouncillorNotFound(f"no councillor with the address {address}")
        return entry

    async def reset_password(
        self, address: str, context: AuditContext, *, allow_clerks: bool = False
    ) -> CreatedAccount:
        """A new password for ``address``. Members of ``web.clerks_group`` only with
        ``allow_clerks`` (the operator's command line), else ClerkAccountProtected."""
        entry = await self._entry(address)
        if not allow_clerks:
            group = await self.directory.get_group(self.settings.web.clerks_group)
            if group is not None and entry.dn.lower() in group.members:
                raise ClerkAccountProtected(
                    f"{entry.address} należy do grupy urzędników: jego hasło zmienia operator "
                    "poleceniem mailsvc councillors reset-password"
                    if self.settings.language != "en"
                    else f"{entry.address} is in the clerks group: an operator resets that "
                    "password with mailsvc councillors reset-password"
                )
        password = generate_password(self.settings.provisioning.password_length)
        await set_new_password(self.settings, self.directory, entry.dn, password)
        await self.register.audit_only(
            context, [RegisterWrite(entry.address, "reset-password", {}, None, None)]
        )
        reg = await self.register.get(entry.address)
        return CreatedAccount(
            entry.address,
            password,
            entry.display_name,
            reg.district if reg else entry.district,
            reg.private_email if reg else None,
        )

    async def end_mandate(
        self, address: str, on: date, reason: str, context: AuditContext, today: date | None = None
    ) -> bool:
        """Record the end of a mandate; True if the account was disabled now (date reached)."""
        entry = await self._entry(address)
        reg = await self.register.get(entry.address)
        before = {"mandate_end": reg.mandate_end if reg else None}
        values: dict[str, Any] = {"mandate_end": on, "end_reason": reason, "dn": entry.dn}
        if reg is None:
            values.update(
                given_names=entry.given_name, surname=entry.surname, district=entry.district
            )
        await self.register.write(
            context,
            [
                RegisterWrite(
                    entry.address,
                    "end-mandate",
                    values,
                    before,
                    {"mandate_end": on, "reason": reason},
                )
            ],
        )
        if on <= (today or date.today()):
            return entry.address in await self.apply_due_mandate_ends(context, today)
        return False

    async def apply_due_mandate_ends(
        self, context: AuditContext, today: date | None = None
    ) -> list[str]:
        """Disable every active account whose mandate has ended (scheduled job; idempotent)."""
        due = await self.register.due_mandate_ends(today or date.today())
        disabled = []
        for row in due:
            entry = await self.directory.find_by_address(row.address)
            if entry is not None and entry.active:
                await self.directory.set_active(entry.dn, False)
            await self.register.write(
                context,
                [
                    RegisterWrite(
                        row.address,
                        "disable",
                        {"status": "disabled", "disabled_at": utcnow()},
                        {"status": "active"},
                        {"status": "disabled", "reason": row.end_reason or "mandate ended"},
                    )
                ],
            )
            log.info("mandate of %s ended on %s: account disabled", row.address, row.mandate_end)
            disabled.append(row.address)
        if disabled:
            await self.sync_groups()
        return disabled

    async def remove_expired(self, context: AuditContext, now: datetime | None = None) -> list[str]:
        """Remove mailboxes kept past the retention period (scheduled job; logs what it removes)."""
        cutoff = (now or utcnow()) - timedelta(days=self.settings.provisioning.retention_days)
        removed = []
        for row in await self.register.due_removals(cutoff):
            if row.dn:
                await self.directory.delete(row.dn)
            local, _, domain = row.address.partition("@")
            maildir = self.settings.var_dir / "mail" / domain / local
            existed = maildir.exists()
            await asyncio.to_thread(shutil.rmtree, maildir, True)
            await self.register.write(
                context,
                [
                    RegisterWrite(
                        row.address,
                        "remove",
                        {"status": "removed", "removed_at": utcnow()},
                        {"status": "disabled"},
                        {"status": "removed", "mailbox_deleted": existed},
                    )
                ],
            )
            log.warning(
                "removed the mailbox of %s (disabled %s, retention %d days)%s",
                row.address,
                row.disabled_at,
                self.settings.provisioning.retention_days,
                f"; deleted {maildir}" if existed else "",
            )
            removed.append(row.address)
        return removed

    async def listing(self, include_all: bool = False) -> list[RegisterRow]:
        rows = await self.register.all()
        return rows if include_all else [r for r in rows if r.status == "active"]


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
