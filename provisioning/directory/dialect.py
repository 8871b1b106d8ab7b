"""What differs between the two kinds of directory the adapter speaks to (``DirectoryConfig.kind``).

``openldap``: people are ``inetOrgPerson`` entries named ``uid=<local part>``, carrying the
password's ``{ARGON2}`` hash in ``userPassword`` (made by the service) and their status in
``employeeType``; groups are ``groupOfNames``, which must hold at least one member.

``ad`` (Active Directory, Samba's AD DC): people are ``user`` objects named ``CN=<local part>``,
with a ``sAMAccountName`` of at most 20 characters, ``userPrincipalName`` = the mail address, the
password given in clear to the directory through ``unicodePwd`` (over TLS: AD refuses it
otherwise) and hashed by AD itself, and the account disabled by the ACCOUNTDISABLE bit of
``userAccountControl``; groups are ``group`` objects, which may be empty.

Everything here is pure: the adapter asks it for DNs, attributes and changes and does the I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Protocol

from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

# userAccountControl bits (MS-ADTS 2.2.16).
ACCOUNTDISABLE = 0x0002
NORMAL_ACCOUNT = 0x0200
DONT_EXPIRE_PASSWORD = 0x10000
# An enabled councillor: a normal account whose password the service resets, never the user's
# expiry policy (councillors cannot change it in a mail program).
AD_ENABLED = NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD
AD_DISABLED = AD_ENABLED | ACCOUNTDISABLE
# LDAP_MATCHING_RULE_BIT_AND: "(userAccountControl:<rule>:=2)" matches disabled accounts.
BIT_AND = "1.2.840.113556.1.4.803"
# sAMAccountName: at most 20 characters, none of these (MS-ADTS 3.1.1.5.2.2 / Windows' rules).
SAM_MAX = 20
_SAM_FORBIDDEN = set('"/\\[]:;|=,+*?<>@')
AD_PERSON_CLASSES = ("top", "person", "organizationalPerson", "user")
AD_GROUP_CLASSES = ("top", "group")
KINDS = ("openldap", "ad")


class DialectConfig(Protocol):
    """The parts of DirectoryConfig a dialect reads."""

    @property
    def person_object_class(self) -> str: ...
    @property
    def status_attribute(self) -> str: ...
    @property
    def active_value(self) -> str: ...
    @property
    def disabled_value(self) -> str: ...
    @property
    def group_object_class(self) -> str: ...


def sam_account_name(local_part: str) -> str:
    """The ``sAMAccountName`` of the person whose address has ``local_part``: the local part
    itself when it fits (20 characters, none of AD's forbidden ones), else its first 15
    characters, "-" and four hex digits of its SHA-1, so that two long local parts sharing
    their first 20 characters still get two names. A collision with an account that exists
    already is handled as a taken address is: the next candidate address is tried."""
    if len(local_part) <= SAM_MAX and not _SAM_FORBIDDEN & set(local_part):
        return local_part
    cleaned = "".join("_" if c in _SAM_FORBIDDEN else c for c in local_part)
    digest = hashlib.sha1(local_part.encode("utf-8"), usedforsecurity=False).hexdigest()[:4]
    return f"{cleaned[: SAM_MAX - 5].rstrip('.')}-{digest}"


def unicode_pwd(password: str) -> bytes:
    """AD's ``unicodePwd`` value for ``password``: quoted, UTF-16LE (MS-ADTS 3.1.1.3.1.5.1)."""
    return f'"{password}"'.encode("utf-16-le")


class Dialect:
    """OpenLDAP (``inetOrgPerson``, ``groupOfNames``): the default."""

    kind = "openldap"
    # The attribute a person signs in with besides the address (a clerk's login).
    login_attribute = "uid"
    # Whether the service hashes new passwords itself (else the directory does).
    stores_hashes = True
    # groupOfNames needs a member: an empty group holds a placeholder (the groups container).
    needs_placeholder = True
    # Bulk additions: connections used at once, and requests in flight on each. slapd answers
    # thousands of adds a second on many threads.
    add_connections = 8
    add_window = 64
    # Member values per group add or modify (None: all in one). slapd adds a 50,000-member
    # group in one request in about a second; in batches, each add into a growing groupOfNames
    # costs more (a 2,000-value batch scans the values already there), 30 s for 50,000.
    member_batch: int | None = None

    def __init__(self, config: DialectConfig) -> None:
        self.config = config

    def person_classes(self) -> list[str]:
        return ["top", "person", "organizationalPerson", self.config.person_object_class]

    def group_classes(self) -> list[str]:
        return ["top", self.config.group_object_class]

    def person_dn(self, local_part: str, container: str) -> str:
        return f"uid={escape_rdn(local_part)},{container}"

    def status_attributes(self) -> list[str]:
        return [self.config.status_attribute]

    def is_active(self, attributes: Mapping[str, Any]) -> bool:
        values = attributes.get(self.config.status_attribute) or []
        if not isinstance(values, (list, tuple)):
            values = [values]
        return self.config.disabled_value not in [str(v) for v in values]

    def active_filter(self) -> str:
        """The filter part that keeps only enabled accounts (escaped)."""
        c = self.config
        return f"(!({c.status_attribute}={escape_filter_chars(c.disabled_value)}))"

    def status_change(self, active: bool) -> dict[str, list[Any]]:
        c = self.config
        return {c.status_attribute: [c.active_value if active else c.disabled_value]}

    def person_attributes(
        self,
        *,
        login: str,
        address: str | None,
        password: str,
        password_hash: str | None,
    ) -> dict[str, Any]:
        """Login, status and password attributes of a new person entry."""
        if password_hash is None:
            raise ValueError("an OpenLDAP entry needs the password's hash")
        attributes: dict[str, Any] = {
            "uid": login,
            "userPassword": password_hash,
            **{k: v[0] for k, v in self.status_change(True).items()},
        }
        return attributes

    def password_change(self, password: str, password_hash: str | None) -> dict[str, list[Any]]:
        if password_hash is None:
            raise ValueError("an OpenLDAP entry needs the password's hash")
        return {"userPassword": [password_hash]}

    def login_for(self, local_part: str) -> str:
        return local_part

    def group_attributes(self, name: str) -> dict[str, Any]:
        return {"cn": name}


class AdDialect(Dialect):
    """Active Directory (Samba's AD DC): ``user`` and ``group`` objects."""

    kind = "ad"
    login_attribute = "sAMAccountName"
    stores_hashes = False
    needs_placeholder = False
    # A domain controller checks the password policy and hashes every new password on the add:
    # Samba's one process adds about ten users a second, serving one connection's queue while
    # the others wait. One connection with a short queue keeps each wait for an answer well
    # inside directory.timeout; more would not add any speed.
    add_connections = 1
    add_window = 4
    # Samba gave no answer within the 5 s directory.timeout to one add of a 50,000-member group.
    member_batch = 2000

    def person_classes(self) -> list[str]:
        return list(AD_PERSON_CLASSES)

    def group_classes(self) -> list[str]:
        return list(AD_GROUP_CLASSES)

    def person_dn(self, local_part: str, container: str) -> str:
        return f"CN={escape_rdn(local_part)},{container}"

    def status_attributes(self) -> list[str]:
        return ["userAccountControl"]

    def is_active(self, attributes: Mapping[str, Any]) -> bool:
        value = attributes.get("userAccountControl")
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        try:
            flags = int(str(value))
        except ValueError:
            return False  # no readable flags: not known to be enabled
        return not flags & ACCOUNTDISABLE

    def active_filter(self) -> str:
        return f"(!(userAccountControl:{BIT_AND}:={ACCOUNTDISABLE}))"

    def status_change(self, active: bool) -> dict[str, list[Any]]:
        return {"userAccountControl": [str(AD_ENABLED if active else AD_DISABLED)]}

    def person_attributes(
        self,
        *,
        login: str,
        address: str | None,
        password: str,
        password_hash: str | None,
    ) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "sAMAccountName": login,
            "unicodePwd": unicode_pwd(password),
            "userAccountControl": str(AD_ENABLED),
        }
        if address:
            attributes["userPrincipalName"] = address
        return attributes

    def password_change(self, password: str, password_hash: str | None) -> dict[str, list[Any]]:
        return {"unicodePwd": [unicode_pwd(password)]}

    def login_for(self, local_part: str) -> str:
        return sam_account_name(local_part)

    def group_attributes(self, name: str) -> dict[str, Any]:
        # The group's pre-Windows 2000 name: AD would make up a random one otherwise.
        return {"cn": name, "sAMAccountName": sam_account_name(f"g-{name}")[:SAM_MAX]}


def dialect_for(kind: str, config: DialectConfig) -> Dialect:
    if kind == "ad":
        return AdDialect(config)
    if kind == "openldap":
        return Dialect(config)
    raise ValueError(f"directory.kind = {kind!r}: expected one of {', '.join(KINDS)}")
