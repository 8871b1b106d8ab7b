"""Clerk use cases: the office staff who sign in to the web panel.

A clerk is a directory account in the staff subtree (``directory.staff_rdn``) that is a member of
``web.clerks_group``. Staff live apart from the councillors, so a roster import, its plan and the
mandate jobs never see them. A councillor's own account may be in the group too (it then signs
in as well); removing such a clerk only takes the account out of the group.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

from mailsvc import i18n
from mailsvc.config import Settings
from mailsvc.errors import MailsvcError
from mailsvc.passwords import hashes_for, set_new_password
from mailsvc.storage.register import AuditContext, Register, RegisterWrite
from provisioning.directory import CouncillorEntry, Directory
from provisioning.errors import NamingError
from provisioning.naming import candidate_local_parts, is_reserved
from provisioning.passwords import generate_password

# Lower-case letters, digits, dot, hyphen, underscore; a letter or digit at both ends.
_LOGIN = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
GROUP_DESCRIPTION = "Urzędnicy (panel WWW)"


class ClerkExists(MailsvcError):
    """The login or address is taken (by a clerk or a councillor)."""


class ClerkNotFound(MailsvcError):
    """No clerk with that login."""


@dataclass(frozen=True)
class Clerk:
    """One clerk as ``mailsvc clerks list`` shows it."""

    login: str
    name: str
    email: str | None
    dn: str
    active: bool
    in_group: bool
    # "staff": an account of the staff subtree; "councillor": a councillor's account in the group.
    kind: str = "staff"


@dataclass(frozen=True)
class NewClerk:
    """A clerk's account and the password it was just given (shown once, never stored)."""

    login: str
    name: str
    address: str
    dn: str
    password: str = field(repr=False)


class Clerks:
    """Add, remove, list clerks and reset their passwords, over the directory (and the
    register's audit log, when one is given)."""

    def __init__(
        self, settings: Settings, directory: Directory, register: Register | None = None
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.register = register
        self.group = settings.web.clerks_group
        self.domain = settings.domain.lower()

    def _t(self, key: str, **values: object) -> str:
        return i18n.text(self.settings.language, key, **values)

    def _login(self, login: str) -> str:
        clean = login.strip().lower()
        if not _LOGIN.match(clean):
            raise MailsvcError(self._t("clerks.bad_login", login=login))
        return clean

    def address(self, login: str) -> str:
        """The address a login signs in as when the account has none of its own."""
        return f"{login}@{self.domain}"

    async def _staff(self, login: str) -> CouncillorEntry | None:
        """The staff account a login or an address names ("anna", "anna@<domain>" and the
        account's own address alike), as the panel's sign-in finds it."""
        clean = login.strip().lower()
        address = clean if "@" in clean else self.address(self._login(clean))
        local, _, domain = address.partition("@")
        return await self.directory.find_staff(address, local if domain == self.domain else None)

    async def _audit(self, context: AuditContext, address: str, action: str, **after: str) -> None:
        if self.register is not None:
            change = RegisterWrite(address, action, {}, None, dict(after))
            await self.register.audit_only(context, [change])

    # -- commands ----------------------------------------------------------------------------

    async def add(
        self, login: str, name: str, context: AuditContext, email: str | None = None
    ) -> NewClerk:
        """A new account in the staff subtree, in the clerks group, with a generated password."""
        login = self._login(login)
        name = " ".join(name.split())
        if not name or len(name) > 200 or not name.isprintable():
            raise MailsvcError(self._t("clerks.bad_name"))
        email = email.strip().lower() if email else None
        if email is not None and not _EMAIL.match(email):
            raise MailsvcError(self._t("clerks.bad_email", email=email))
        for address in dict.fromkeys(a for a in (self.address(login), email) if a):
            held = await self.directory.find_staff(address, login)
            if held is not None:
                raise ClerkExists(self._t("clerks.exists", login=login, dn=held.dn))
            if await self.directory.find_by_address(address) is not None:
                raise ClerkExists(self._t("clerks.taken", address=address))
        await self.directory.ensure_staff_tree()  # a directory made before staff had one
        password = generate_password(self.settings.provisioning.password_length)
        (hashed,) = await hashes_for(self.settings, self.directory, [password])
        request = self.directory.staff_request(
            login=login, display_name=name, password=password, password_hash=hashed, email=email
        )
        (outcome,) = await self.directory.add_many([request])
        if isinstance(outcome, Exception):
            raise outcome
        try:
            await self.directory.add_member(self.group, outcome, GROUP_DESCRIPTION)
        except BaseException:
            # An account outside the group is of no use and would block a second try.
            with contextlib.suppress(Exception):
                await self.directory.delete(outcome)
            raise
        address = email or self.address(login)
        await self._audit(context, address, "clerk-add", login=login, name=name, dn=outcome)
        return NewClerk(login, name, address, outcome, password)

    async def add_person(
        self, given_name: str, surname: str, context: AuditContext, email: str | None = None
    ) -> NewClerk:
        """A new clerk named by given name and surname: the login is made from them as a
        councillor's address is ("Anna", "Nowak" → anna.nowak, then anna.nowak2, …), skipping
        logins and addresses already held and reserved local parts (roles, groups)."""
        name = " ".join(f"{given_name} {surname}".split())
        try:
            candidates = candidate_local_parts(given_name, surname)
            for _ in range(50):
                login = next(candidates)
                if is_reserved(login, (self.group,)) or not _LOGIN.match(login):
                    continue
                address = self.address(login)
                if await self.directory.find_staff(address, login) is not None:
                    continue
                if await self.directory.find_by_address(address) is not None:
                    continue
                return await self.add(login, name, context, email)
        except NamingError as exc:
            raise MailsvcError(self._t("clerks.bad_person", detail=exc)) from None
        raise ClerkExists(self._t("clerks.no_free_login", name=name))

    async def remove(self, login: str, context: AuditContext) -> Clerk:
        """Take the clerk out of the group and delete a staff account (a councillor's account
        is only taken out of the group). A signed-in clerk's session ends at its next check
        (``web.recheck_minutes``)."""
        entry = await self._staff(login)
        if entry is not None:
            was_member = await self.directory.remove_member(self.group, entry.dn)
            await self.directory.delete(entry.dn)
            clerk = self._clerk(entry, "staff", in_group=was_member)
            address = entry.address or self.address(clerk.login)
            await self._audit(context, address, "clerk-remove", dn=entry.dn)
            return clerk
        clean = login.strip().lower()
        councillor = await self.directory.find_by_address(
            clean if "@" in clean else self.address(clean)
        )
        if councillor is not None and await self.directory.remove_member(self.group, councillor.dn):
            await self._audit(context, councillor.address, "clerk-remove", dn=councillor.dn)
            return self._clerk(councillor, "councillor", in_group=True)
        raise ClerkNotFound(self._t("clerks.not_found", login=login))

    async def reset_password(self, login: str, context: AuditContext) -> NewClerk:
        """A new generated password for a staff account."""
        entry = await self._staff(login)
        if entry is None:
            raise ClerkNotFound(self._t("clerks.not_found", login=login))
        login = self._clerk(entry, "staff", in_group=True).login
        password = generate_password(self.settings.provisioning.password_length)
        await set_new_password(self.settings, self.directory, entry.dn, password)
        address = entry.address or self.address(login)
        await self._audit(context, address, "clerk-reset-password", dn=entry.dn)
        return NewClerk(login, entry.display_name, address, entry.dn, password)

    async def listing(self) -> list[Clerk]:
        """The staff accounts (in the group or not), then the councillors in the group."""
        group = await self.directory.get_group(self.group)
        members = group.members if group is not None else frozenset()
        staff = await self.directory.list_staff()
        out = [self._clerk(e, "staff", in_group=e.dn.lower() in members) for e in staff]
        known = {e.dn.lower() for e in staff}
        if members - known - {self.directory.config.groups_dn.lower()}:
            for brief in await self.directory.list_councillors(brief=True):
                if brief.dn.lower() in members:
                    full = await self.directory.find_by_address(brief.address) or brief
                    out.append(self._clerk(full, "councillor", in_group=True))
        return sorted(out, key=lambda c: (c.kind != "staff", c.login))

    async def ensure_sample(self, login: str, name: str, context: AuditContext) -> NewClerk | None:
        """``make run``: a sample clerk when nobody can sign in to the panel yet, else None."""
        if any(c.in_group and c.active for c in await self.listing()):
            return None
        if await self._staff(login) is not None:
            return None  # made before and taken out of the group on purpose: leave it so
        return await self.add(login, name, context)

    @staticmethod
    def _clerk(entry: CouncillorEntry, kind: str, *, in_group: bool) -> Clerk:
        login = entry.login if kind == "staff" and entry.login else entry.address
        return Clerk(
            login=login,
            name=entry.display_name,
            email=entry.address or None,
            dn=entry.dn,
            active=entry.active,
            in_group=in_group,
            kind=kind,
        )
