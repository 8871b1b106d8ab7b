"""What the directory adapter is configured with and what it returns: the settings, the entries,
the escaped filters and DNs, and the LDAP result codes it tells apart."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ldap3.utils.conv import escape_filter_chars

from provisioning.directory.dialect import dialect_for

# Result codes that mean "try again later", not "no".
TEMPORARY_RESULTS = {
    3,  # timeLimitExceeded
    51,  # busy
    52,  # unavailable
    80,  # other (slapd uses it for transient backend trouble)
}
NO_SUCH_OBJECT = 32
ALREADY_EXISTS = 68
CONFIDENTIALITY_REQUIRED = 13


def bind_refusal_hint(code: object) -> str:
    """What to check when the directory refuses the service's bind with ``code``."""
    if code == CONFIDENTIALITY_REQUIRED:
        return "the directory accepts binds only over TLS: use StartTLS or ldaps://"
    return "check the directory credentials"


@dataclass(frozen=True)
class DirectoryConfig:
    """What the directory adapter needs; built by the service from its settings."""

    url: str
    base_dn: str
    bind_dn: str
    bind_password: str = field(repr=False)
    councillors_dn: str
    groups_dn: str
    # Office staff (the web panel's clerks), a subtree apart from the councillors'.
    staff_dn: str
    person_object_class: str = "inetOrgPerson"
    mail_attribute: str = "mail"
    status_attribute: str = "employeeType"
    disabled_value: str = "disabled"
    active_value: str = "active"
    # Where roster fields live on the person entry (inetOrgPerson by default).
    external_id_attribute: str = "employeeNumber"
    district_attribute: str = "l"
    club_attribute: str = "o"
    role_attribute: str = "title"
    phone_attribute: str = "mobile"
    group_object_class: str = "groupOfNames"
    member_attribute: str = "member"
    timeout: float = 5.0
    pool_size: int = 8
    # PEM bundle verifying the server's certificate (ldaps://, or ldap:// with starttls);
    # empty: the system's CAs.
    ca_file: str = ""
    # ldap:// only: StartTLS on every connection before anything else is sent; a directory
    # that refuses it, or a certificate that does not verify, is an error (never clear text).
    starttls: bool = False
    # "openldap" (inetOrgPerson, groupOfNames) or "ad" (Active Directory: user, group); what
    # differs between them is in provisioning.directory.dialect.
    kind: str = "openldap"


# The raw attributes of an entry read without them (a brief listing): one shared, read-only.
NO_ATTRIBUTES: Mapping[str, tuple[str, ...]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class CouncillorEntry:
    """A councillor's directory entry as the service sees it (slots: an import lists tens of
    thousands of them)."""

    dn: str
    address: str
    given_name: str
    surname: str
    display_name: str
    active: bool
    external_id: str | None = None
    district: str = ""
    club: str = ""
    role: str = ""
    phone: str | None = None
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: NO_ATTRIBUTES)
    # The name the person signs in with besides the address (uid; sAMAccountName in AD), when
    # it was read.
    login: str = ""


@dataclass(frozen=True)
class GroupEntry:
    """A group (all councillors, a committee, a role) and its member DNs."""

    dn: str
    name: str
    members: frozenset[str]


def person_filter(config: DirectoryConfig, address: str) -> str:
    """LDAP filter matching the person with ``address`` (escaped)."""
    return (
        f"(&(objectClass={escape_filter_chars(config.person_object_class)})"
        f"({config.mail_attribute}={escape_filter_chars(address)}))"
    )


def councillor_dn(config: DirectoryConfig, local_part: str) -> str:
    return dialect_for(config.kind, config).person_dn(local_part, config.councillors_dn)


def staff_dn(config: DirectoryConfig, login: str) -> str:
    return dialect_for(config.kind, config).person_dn(login, config.staff_dn)


def staff_filter(config: DirectoryConfig, address: str, login: str | None) -> str:
    """LDAP filter matching a staff entry by its address, or by its login (uid; sAMAccountName
    in AD) when given."""
    by_mail = f"({config.mail_attribute}={escape_filter_chars(address)})"
    login_attribute = dialect_for(config.kind, config).login_attribute
    which = f"(|{by_mail}({login_attribute}={escape_filter_chars(login)}))" if login else by_mail
    return f"(&(objectClass={escape_filter_chars(config.person_object_class)}){which})"


def first_value(values: Any) -> str:
    """The first of an attribute's values as text ("" when it has none)."""
    if isinstance(values, (list, tuple)):
        return str(values[0]) if values else ""
    return "" if values is None else str(values)
