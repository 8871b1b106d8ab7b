"""The directory adapter: the code that speaks LDAP (with ``ldapwire`` for bulk additions).

ldap3 is blocking, so every operation runs in a worker thread on a pooled connection and the
public API is ``async``. Every filter value and DN component is escaped here. "Not found" (``None``)
is kept strictly apart from "directory unreachable" (:class:`DirectoryUnavailable`).
"""

from __future__ import annotations

import asyncio
import math
import queue
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ldap3
from ldap3.core import exceptions as ldap_exc
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from provisioning.errors import DirectoryError, DirectoryUnavailable
from provisioning.ldapwire import (
    SERVER_DOWN,
    TIMEOUT,
    LdapBindError,
    LdapConnectionError,
    LdapProtocolError,
    LdapResult,
    LdapWire,
)

T = TypeVar("T")

# Result codes that mean "try again later", not "no".
_TEMPORARY_RESULTS = {
    3,  # timeLimitExceeded
    51,  # busy
    52,  # unavailable
    80,  # other (slapd uses it for transient backend trouble)
}
_NO_SUCH_OBJECT = 32
_ALREADY_EXISTS = 68


@dataclass(frozen=True)
class DirectoryConfig:
    """What the directory adapter needs; built by the service from its settings."""

    url: str
    base_dn: str
    bind_dn: str
    bind_password: str = field(repr=False)
    councillors_dn: str
    groups_dn: str
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
    # PEM bundle verifying an ldaps:// server's certificate; empty: the system's CAs.
    ca_file: str = ""


class _VerifiedTls(ldap3.Tls):  # type: ignore[misc]
    """ldap3's TLS settings, verifying through a standard ``SSLContext``: certificate chain and
    host name during the handshake. (ldap3 checks host names with ``ssl.match_hostname``,
    deprecated since Python 3.7 and removed in 3.12.)"""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self.context = context

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self.context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=connection.server.host,
        )


@dataclass(frozen=True)
class CouncillorEntry:
    """A councillor's directory entry as the service sees it."""

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
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


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
    return f"uid={escape_rdn(local_part)},{config.councillors_dn}"


def _first(values: Any) -> str:
    if isinstance(values, (list, tuple)):
        return str(values[0]) if values else ""
    return "" if values is None else str(values)


def _close_quietly(conn: ldap3.Connection) -> None:
    """Close a connection whose socket may be half-open or gone, without raising."""
    try:
        conn.unbind()
    except Exception:  # noqa: S110 - nothing more to do with a dead socket
        pass
    sock = getattr(conn, "socket", None)
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


class Directory:
    """Async facade over a small pool of ldap3 connections running in threads."""

    def __init__(self, config: DirectoryConfig) -> None:
        self.config = config
        self._pool: queue.LifoQueue[ldap3.Connection | None] = queue.LifoQueue()
        for _ in range(config.pool_size):
            self._pool.put(None)  # connections are opened lazily

    # -- connection handling -------------------------------------------------------------

    def server(self) -> ldap3.Server:
        """The directory server as ldap3 sees it. ldaps:// always verifies the certificate and
        the host name (ldap3 alone would accept any certificate), against ``ca_file`` when it
        is set."""
        return ldap3.Server(
            self.config.url,
            connect_timeout=self.config.timeout,
            get_info=ldap3.NONE,
            tls=_VerifiedTls(self.ssl_context()),
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The same verification for bulk additions (``ldapwire``)."""
        return ssl.create_default_context(cafile=self.config.ca_file or None)

    def _connect(self) -> ldap3.Connection:
        server = self.server()
        conn = ldap3.Connection(
            server,
            user=self.config.bind_dn,
            password=self.config.bind_password,
            receive_timeout=max(1, math.ceil(self.config.timeout)),  # ldap3 packs it as an int
            raise_exceptions=False,
            auto_referrals=False,
        )
        try:
            ok = conn.bind()
        except ldap_exc.LDAPException as exc:
            _close_quietly(conn)
            raise DirectoryUnavailable(f"directory {self.config.url} unreachable: {exc}") from exc
        if not ok:
            _close_quietly(conn)
            code = conn.result.get("result")
            if code in _TEMPORARY_RESULTS:
                raise DirectoryUnavailable(f"directory {self.config.url} busy: {conn.result}")
            raise DirectoryError(
                f"directory {self.config.url} refused the bind as {self.config.bind_dn}: "
                f"{conn.result.get('description')}; check the directory credentials"
            )
        return conn

    def _discard(self, conn: ldap3.Connection | None) -> None:
        if conn is not None:
            _close_quietly(conn)
        self._pool.put(None)

    def _call(self, fn: Callable[[ldap3.Connection], T]) -> T:
        # A pooled connection may have gone stale (server restarted): on a communication error
        # with a reused connection, try once more on a fresh one before calling it unavailable.
        for attempt in (1, 2):
            conn = self._pool.get()
            reused = conn is not None
            try:
                if conn is None:
                    conn = self._connect()
                result = fn(conn)
            except (
                ldap_exc.LDAPCommunicationError,
                ldap_exc.LDAPResponseTimeoutError,
                OSError,
            ) as exc:
                self._discard(conn)
                if (
                    reused
                    and attempt == 1
                    and not isinstance(exc, ldap_exc.LDAPResponseTimeoutError)
                ):
                    continue
                raise DirectoryUnavailable(
                    f"directory {self.config.url} unreachable: {exc}"
                ) from exc
            except DirectoryUnavailable:
                self._discard(conn)
                raise
            except BaseException:
                self._pool.put(conn)
                raise
            self._pool.put(conn)
            return result
        raise AssertionError("unreachable")

    async def _run(self, fn: Callable[[ldap3.Connection], T]) -> T:
        return await asyncio.to_thread(self._call, fn)

    def _check(self, conn: ldap3.Connection, ok: bool, what: str) -> None:
        if ok:
            return
        code = conn.result.get("result")
        if code in _TEMPORARY_RESULTS or code is None:
            raise DirectoryUnavailable(
                f"directory could not {what}: {conn.result.get('description')}"
            )
        raise DirectoryError(
            f"directory refused to {what}: {conn.result.get('description')} "
            f"({conn.result.get('message') or 'no detail'})"
        )

    async def close(self) -> None:
        def close_all() -> None:
            while True:
                try:
                    conn = self._pool.get_nowait()
                except queue.Empty:
                    return
                if conn is not None:
                    conn.unbind()

        await asyncio.to_thread(close_all)

    # -- reads ---------------------------------------------------------------------------

    def person_attributes(self) -> list[str]:
        """The attributes a CouncillorEntry is made of (never the password hash)."""
        c = self.config
        return [
            c.mail_attribute,
            "givenName",
            "sn",
            "cn",
            "displayName",
            c.status_attribute,
            c.external_id_attribute,
            c.district_attribute,
            c.club_attribute,
            c.role_attribute,
            c.phone_attribute,
        ]

    def _entry(self, raw: Mapping[str, Any], *, keep_raw: bool = True) -> CouncillorEntry:
        attrs = raw["attributes"]
        status_values = [str(v) for v in attrs.get(self.config.status_attribute, [])]
        c = self.config
        return CouncillorEntry(
            external_id=_first(attrs.get(c.external_id_attribute)) or None,
            district=_first(attrs.get(c.district_attribute)),
            club=_first(attrs.get(c.club_attribute)),
            role=_first(attrs.get(c.role_attribute)),
            phone=_first(attrs.get(c.phone_attribute)) or None,
            dn=raw["dn"],
            address=_first(attrs.get(self.config.mail_attribute)).lower(),
            given_name=_first(attrs.get("givenName")),
            surname=_first(attrs.get("sn")),
            display_name=_first(attrs.get("displayName")) or _first(attrs.get("cn")),
            active=self.config.disabled_value not in status_values,
            attributes={
                k: tuple(str(x) for x in v) if isinstance(v, list) else (str(v),)
                for k, v in attrs.items()
            }
            if keep_raw
            else {},
        )

    async def ping(self) -> None:
        """Raise DirectoryUnavailable unless the directory answers a base search."""

        def op(conn: ldap3.Connection) -> None:
            ok = conn.search(self.config.base_dn, "(objectClass=*)", ldap3.BASE, attributes=["1.1"])
            self._check(conn, ok, f"read {self.config.base_dn}")

        await self._run(op)

    async def find_by_address(self, address: str) -> CouncillorEntry | None:
        """The councillor entry holding ``address`` (active or not), or None if there is none."""

        def op(conn: ldap3.Connection) -> CouncillorEntry | None:
            ok = conn.search(
                self.config.councillors_dn,
                person_filter(self.config, address),
                ldap3.SUBTREE,
                attributes=[ldap3.ALL_ATTRIBUTES],
                size_limit=2,
            )
            if not ok and conn.result.get("result") == _NO_SUCH_OBJECT:
                raise DirectoryError(
                    f"{self.config.councillors_dn} does not exist; run `mailsvc stack up` "
                    "or create the base tree"
                )
            if not ok and conn.result.get("result") != 0:
                self._check(conn, ok, f"look up {address}")
            entries = [r for r in conn.response or [] if r.get("type") == "searchResEntry"]
            if not entries:
                return None
            if len(entries) > 1:
                raise DirectoryError(f"{address} is held by more than one directory entry")
            return self._entry(entries[0])

        return await self._run(op)

    async def list_councillors(
        self, page_size: int = 2000, *, brief: bool = False
    ) -> list[CouncillorEntry]:
        """Every councillor entry (paged search). ``brief``: address, DN and status only."""
        c = self.config
        wanted = [c.mail_attribute, c.status_attribute] if brief else self.person_attributes()

        def op(conn: ldap3.Connection) -> list[CouncillorEntry]:
            out: list[CouncillorEntry] = []
            cookie: bytes | None = None
            filt = f"(objectClass={escape_filter_chars(self.config.person_object_class)})"
            while True:
                ok = conn.search(
                    self.config.councillors_dn,
                    filt,
                    ldap3.SUBTREE,
                    attributes=wanted,
                    paged_size=page_size,
                    paged_cookie=cookie,
                )
                self._check(conn, ok or conn.result.get("result") == 0, "list councillors")
                out.extend(
                    self._entry(r, keep_raw=False)
                    for r in conn.response or []
                    if r.get("type") == "searchResEntry"
                )
                controls = conn.result.get("controls") or {}
                cookie = controls.get("1.2.840.113556.1.4.319", {}).get("value", {}).get("cookie")
                if not cookie:
                    return out

        return await self._run(op)

    # -- writes --------------------------------------------------------------------------

    async def ensure_base_tree(self) -> None:
        """Create the councillors and groups containers if they are missing (idempotent)."""

        def op(conn: ldap3.Connection) -> None:
            for dn in (self.config.councillors_dn, self.config.groups_dn):
                value = dn.split(",", 1)[0].split("=", 1)[1]
                ok = conn.add(dn, ["top", "organizationalUnit"], {"ou": value})
                if not ok and conn.result.get("result") != _ALREADY_EXISTS:
                    self._check(conn, ok, f"create {dn}")

        await self._run(op)

    def councillor_request(
        self,
        *,
        local_part: str,
        address: str,
        given_name: str,
        surname: str,
        password_hash: str,
        extra: Mapping[str, str | Sequence[str]] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """DN and attributes of a new councillor entry. Values are stored literally."""
        attributes: dict[str, Any] = {
            "uid": local_part,
            "cn": f"{given_name} {surname}",
            "sn": surname,
            "givenName": given_name,
            "displayName": f"{given_name} {surname}",
            self.config.mail_attribute: address,
            "userPassword": password_hash,
            self.config.status_attribute: self.config.active_value,
        }
        for key, value in (extra or {}).items():
            if value:  # empty means "no value": LDAP has no empty attributes
                attributes[key] = value
        return councillor_dn(self.config, local_part), attributes

    def _person_classes(self) -> list[str]:
        return ["top", "person", "organizationalPerson", self.config.person_object_class]

    async def add_councillor(self, **fields: Any) -> str:
        """Create one councillor entry (see ``councillor_request``); returns its DN."""
        (result,) = await self.add_many([self.councillor_request(**fields)])
        if isinstance(result, Exception):
            raise result
        return result

    async def add_many(
        self,
        items: Sequence[tuple[str, Mapping[str, Any]]],
        object_classes: Sequence[str] | None = None,
    ) -> list[str | Exception]:
        """Add several prepared entries (from ``councillor_request``) on one connection, with
        many requests in flight (``ldapwire``); each result is the DN or the error for that entry
        (entries are independent). After a temporary failure no further entries are sent.
        """
        if not items:
            return []
        c = self.config
        try:
            async with await LdapWire.connect(
                c.url, c.bind_dn, c.bind_password, c.timeout, ssl_context=self.ssl_context()
            ) as wire:
                answers = await wire.add_many(
                    items,
                    object_classes=object_classes or self._person_classes(),
                    stop_on=_TEMPORARY_RESULTS,
                )
        except LdapBindError as exc:
            if exc.result.code in _TEMPORARY_RESULTS:
                busy = DirectoryUnavailable(f"directory {c.url} busy: {exc.result}")
                return [busy] * len(items)
            raise DirectoryError(
                f"directory {c.url} refused the bind as {c.bind_dn}: {exc.result.name}; "
                "check the directory credentials"
            ) from exc
        except (LdapConnectionError, LdapProtocolError) as exc:
            down = DirectoryUnavailable(f"directory unreachable: {exc}")
            return [down] * len(items)
        except ValueError as exc:  # the URL or the credentials in the configuration
            raise DirectoryError(f"cannot connect to the directory: {exc}") from exc
        out: list[str | Exception] = []
        for (dn, _), answer in zip(items, answers, strict=True):
            if not isinstance(answer, LdapResult):
                out.append(dn)
            elif answer.code in (SERVER_DOWN, TIMEOUT):
                out.append(
                    DirectoryUnavailable(
                        f"directory unreachable: could not add {dn}: {answer.message}"
                    )
                )
            elif answer.code in _TEMPORARY_RESULTS:
                out.append(DirectoryUnavailable(f"directory could not add {dn}: {answer}"))
            elif answer.code == _ALREADY_EXISTS:
                out.append(DirectoryError(f"{dn} already exists"))
            else:
                out.append(DirectoryError(f"directory refused to add {dn}: {answer}"))
        return out

    async def modify(self, dn: str, changes: Mapping[str, Sequence[str] | None]) -> None:
        """Replace attributes of ``dn`` (None or empty deletes the attribute)."""
        ops = {
            key: [(ldap3.MODIFY_REPLACE, list(value) if value else [])]
            for key, value in changes.items()
        }

        def op(conn: ldap3.Connection) -> None:
            self._check(conn, conn.modify(dn, ops), f"modify {dn}")

        await self._run(op)

    async def set_password(self, dn: str, password_hash: str) -> None:
        await self.modify(dn, {"userPassword": [password_hash]})

    async def set_active(self, dn: str, active: bool) -> None:
        value = self.config.active_value if active else self.config.disabled_value
        await self.modify(dn, {self.config.status_attribute: [value]})

    async def delete(self, dn: str) -> None:
        def op(conn: ldap3.Connection) -> None:
            ok = conn.delete(dn)
            if not ok and conn.result.get("result") == _NO_SUCH_OBJECT:
                return
            self._check(conn, ok, f"delete {dn}")

        await self._run(op)

    def roster_attributes(
        self,
        *,
        external_id: str | None,
        district: str,
        club: str,
        role: str,
        phone: str | None,
    ) -> dict[str, list[str]]:
        """Roster fields as directory attributes (an empty list removes the attribute)."""
        c = self.config
        pairs = (
            (c.external_id_attribute, external_id),
            (c.district_attribute, district),
            (c.club_attribute, club),
            (c.role_attribute, role),
            (c.phone_attribute, phone),
        )
        return {attr: [value] if value else [] for attr, value in pairs}

    # -- groups --------------------------------------------------------------------------

    def group_dn(self, name: str) -> str:
        return f"cn={escape_rdn(name)},{self.config.groups_dn}"

    async def get_group(self, name: str) -> GroupEntry | None:
        """The group called ``name`` (e.g. "rada", "komisja-budzetowa"), or None."""
        dn = self.group_dn(name)

        def op(conn: ldap3.Connection) -> GroupEntry | None:
            ok = conn.search(
                dn,
                f"(objectClass={escape_filter_chars(self.config.group_object_class)})",
                ldap3.BASE,
                attributes=[self.config.member_attribute],
            )
            if not ok and conn.result.get("result") == _NO_SUCH_OBJECT:
                return None
            self._check(conn, ok or conn.result.get("result") == 0, f"read group {name}")
            entries = [r for r in conn.response or [] if r.get("type") == "searchResEntry"]
            if not entries:
                return None
            members = entries[0]["attributes"].get(self.config.member_attribute, [])
            return GroupEntry(dn, name, frozenset(str(m).lower() for m in members))

        return await self._run(op)

    async def sync_group(self, name: str, member_dns: Iterable[str], description: str) -> bool:
        """Make group ``name`` have exactly ``member_dns``; True if anything changed.

        groupOfNames needs at least one member, so an empty group holds the groups container
        itself as a placeholder (never a person, so it expands to nobody).
        """
        wanted = sorted({dn.lower() for dn in member_dns}) or [self.config.groups_dn.lower()]
        current = await self.get_group(name)
        dn = self.group_dn(name)
        if current is None:
            # Through the pipelined client: a council-wide group can hold tens of thousands of
            # member values, which ldap3's encoder takes seconds to write.
            attributes = {
                "cn": name,
                "description": description,
                self.config.member_attribute: wanted,
            }
            (result,) = await self.add_many(
                [(dn, attributes)], ["top", self.config.group_object_class]
            )
            if isinstance(result, Exception):
                raise result
            return True
        if set(wanted) == set(current.members):
            return False
        await self.modify(dn, {self.config.member_attribute: wanted})
        return True

    async def list_groups(self) -> list[GroupEntry]:
        def op(conn: ldap3.Connection) -> list[GroupEntry]:
            ok = conn.search(
                self.config.groups_dn,
                f"(objectClass={escape_filter_chars(self.config.group_object_class)})",
                ldap3.LEVEL,
                attributes=["cn", self.config.member_attribute],
            )
            self._check(conn, ok or conn.result.get("result") == 0, "list groups")
            out = []
            for r in conn.response or []:
                if r.get("type") != "searchResEntry":
                    continue
                members = r["attributes"].get(self.config.member_attribute, [])
                out.append(
                    GroupEntry(
                        r["dn"],
                        _first(r["attributes"].get("cn")),
                        frozenset(str(m).lower() for m in members),
                    )
                )
            return out

        return await self._run(op)

    async def expand_group(self, name: str) -> list[CouncillorEntry] | None:
        """Active members of group ``name`` now (None if there is no such group)."""
        group = await self.get_group(name)
        if group is None:
            return None
        people = await self.list_councillors()
        return sorted(
            (p for p in people if p.active and p.dn.lower() in group.members),
            key=lambda p: p.address,
        )

    async def authenticate(self, address: str, password: str) -> CouncillorEntry | None:
        """The active councillor whose address and password these are, or None.

        The password is checked by the directory itself (a simple bind as the entry), so it is
        verified by the same scheme Dovecot relies on. An empty password never binds (RFC 4513
        would make it an unauthenticated bind that "succeeds").
        """
        if not password:
            return None
        entry = await self.find_by_address(address)
        if entry is None or not entry.active:
            return None

        def bind() -> bool:
            server = self.server()
            conn = ldap3.Connection(
                server,
                user=entry.dn,
                password=password,
                receive_timeout=max(1, math.ceil(self.config.timeout)),
                raise_exceptions=False,
            )
            try:
                ok = bool(conn.bind())
                code = conn.result.get("result") if conn.result else None
            except ldap_exc.LDAPException as exc:
                raise DirectoryUnavailable(
                    f"directory {self.config.url} unreachable: {exc}"
                ) from exc
            finally:
                _close_quietly(conn)
            if not ok and code in _TEMPORARY_RESULTS:
                raise DirectoryUnavailable(f"directory {self.config.url} busy")
            return ok

        return entry if await asyncio.to_thread(bind) else None
