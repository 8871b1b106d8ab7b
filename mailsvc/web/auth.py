"""Clerks' sign-in: directory credentials, the clerks group, sessions, CSRF and rate limits.

A clerk signs in with the login (or address) and password the directory holds (a bind as the
entry, the same check Dovecot relies on) and must be a member of ``web.clerks_group``. Clerks'
accounts live in the staff subtree (``directory.staff_rdn``, made by ``mailsvc clerks add``);
a councillor's account in the group signs in too. The session cookie
is a random secret kept hashed in the database (``storage.clerks``): signing out or expiring
ends it on the server, not only in the browser. Every form carries the session's CSRF token;
the login form, which has no session yet, carries an HMAC of a random cookie (double submit,
keyed by a server secret). Failed logins are counted per client address and per login name.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import Enum

from provisioning.directory import CouncillorEntry, Directory
from provisioning.errors import DirectoryUnavailable

SESSION_COOKIE = "mailsvc_session"
# Over https the session cookie carries the __Host- prefix: browsers then accept it only with
# Secure, Path=/ and no Domain, so no other host or path can set or shadow it.
SECURE_SESSION_COOKIE = "__Host-mailsvc_session"
LOGIN_COOKIE = "mailsvc_login"
LANGUAGE_COOKIE = "mailsvc_lang"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SECRET_NAME = "web-cookie-key"  # noqa: S105 (the name of a file in var/secrets)


class LoginResult(Enum):
    OK = "ok"
    BAD_CREDENTIALS = "bad-credentials"
    NOT_A_CLERK = "not-a-clerk"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class LoginOutcome:
    result: LoginResult
    address: str = ""
    name: str = ""


class ClerkAuth:
    """Checks credentials against the directory and membership of the clerks group."""

    def __init__(self, directory: Directory, group: str, domain: str, secret: str) -> None:
        self.directory = directory
        self.group = group
        self.domain = domain
        self._key = secret.encode("utf-8")

    def address(self, login: str) -> str:
        """The address to look up: a bare login name gets the council's domain."""
        login = login.strip().lower()
        return login if "@" in login else f"{login}@{self.domain}"

    async def account(self, login: str) -> CouncillorEntry | None:
        """The directory entry a login names: a staff entry (the staff subtree, by its login or
        its address; "anna" and "anna@<domain>" alike), else a councillor's entry (a councillor
        in the clerks group is a clerk too)."""
        address = self.address(login)
        local, _, domain = address.partition("@")
        uid = local if domain == self.domain.lower() else None
        staff = await self.directory.find_staff(address, uid)
        return staff or await self.directory.find_by_address(address)

    async def still_clerk(self, address: str) -> bool | None:
        """Is ``address`` still an active member of the clerks group? None: the directory
        cannot say now (a session is not ended for a directory outage)."""
        try:
            entry = await self.account(address)
            if entry is None or not entry.active:
                return False
            group = await self.directory.get_group(self.group)
        except DirectoryUnavailable:
            return None
        return group is not None and entry.dn.lower() in group.members

    async def login(self, login: str, password: str) -> LoginOutcome:
        address = self.address(login)
        if not login.strip() or not password or len(password) > 1024:
            return LoginOutcome(LoginResult.BAD_CREDENTIALS, address)
        try:
            entry = await self.account(login)
            if (
                entry is None
                or not entry.active
                or not await self.directory.check_password(entry.dn, password)
            ):
                return LoginOutcome(LoginResult.BAD_CREDENTIALS, address)
            group = await self.directory.get_group(self.group)
        except DirectoryUnavailable:
            return LoginOutcome(LoginResult.UNAVAILABLE, address)
        # A staff entry without an address of its own is known by its login's address.
        known_as = entry.address or address
        name = entry.display_name or known_as
        if group is None or entry.dn.lower() not in group.members:
            return LoginOutcome(LoginResult.NOT_A_CLERK, known_as, name)
        return LoginOutcome(LoginResult.OK, known_as, name)

    # --- CSRF of the login form (no session yet) -------------------------------------------

    @staticmethod
    def new_login_nonce() -> str:
        return secrets.token_urlsafe(24)

    def login_csrf(self, nonce: str) -> str:
        return hmac.new(self._key, b"login:" + nonce.encode(), hashlib.sha256).hexdigest()

    def login_csrf_ok(self, nonce: str | None, token: str | None) -> bool:
        return bool(nonce) and csrf_ok(self.login_csrf(nonce or ""), token)


def csrf_ok(expected: str, given: str | None) -> bool:
    """``given`` is the token expected (compared in constant time)."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
