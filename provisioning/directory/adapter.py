"""The directory adapter: the code that speaks LDAP for the service (reads, writes, groups,
passwords), on the connections of ``pool``, with ``bulk`` for additions."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ldap3
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn

from provisioning.directory.bulk import add_entries, list_brief, list_groups
from provisioning.directory.dialect import dialect_for
from provisioning.directory.entries import (
    ALREADY_EXISTS,
    NO_ATTRIBUTES,
    NO_SUCH_OBJECT,
    CouncillorEntry,
    DirectoryConfig,
    GroupEntry,
    councillor_dn,
    first_value,
    person_filter,
    staff_dn,
    staff_filter,
)
from provisioning.directory.pool import ConnectionPool, check_result
from provisioning.errors import DirectoryError

SIZE_LIMIT_EXCEEDED = 4


class Directory:
    """Async facade over a small pool of ldap3 connections running in threads."""

    def __init__(self, config: DirectoryConfig) -> None:
        self.config = config
        # What differs between OpenLDAP and Active Directory (config.kind).
        self.dialect = dialect_for(config.kind, config)
        self._ldap = ConnectionPool(config)

    # -- connection handling -------------------------------------------------------------

    def server(self) -> ldap3.Server:
        """The directory server as ldap3 sees it (see ``ConnectionPool.server``)."""
        return self._ldap.server()

    def ssl_context(self) -> ssl.SSLContext:
        """The same verification for bulk additions (``ldapwire``)."""
        return self._ldap.ssl_context()

    async def close(self) -> None:
        await self._ldap.close()

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
            *self.dialect.status_attributes(),
            c.external_id_attribute,
            c.district_attribute,
            c.club_attribute,
            c.role_attribute,
            c.phone_attribute,
        ]

    def _entry(self, raw: Mapping[str, Any], *, keep_raw: bool = True) -> CouncillorEntry:
        attrs = raw["attributes"]
        c = self.config
        return CouncillorEntry(
            external_id=first_value(attrs.get(c.external_id_attribute)) or None,
            district=first_value(attrs.get(c.district_attribute)),
            club=first_value(attrs.get(c.club_attribute)),
            role=first_value(attrs.get(c.role_attribute)),
            phone=first_value(attrs.get(c.phone_attribute)) or None,
            dn=raw["dn"],
            address=first_value(attrs.get(self.config.mail_attribute)).lower(),
            given_name=first_value(attrs.get("givenName")),
            surname=first_value(attrs.get("sn")),
            display_name=first_value(attrs.get("displayName")) or first_value(attrs.get("cn")),
            active=self.dialect.is_active(attrs),
            login=first_value(attrs.get(self.dialect.login_attribute)),
            attributes={
                k: tuple(str(x) for x in v) if isinstance(v, list) else (str(v),)
                for k, v in attrs.items()
            }
            if keep_raw
            else NO_ATTRIBUTES,
        )

    async def ping(self) -> None:
        """Raise DirectoryUnavailable unless the directory answers a base search."""

        def op(conn: ldap3.Connection) -> None:
            ok = conn.search(self.config.base_dn, "(objectClass=*)", ldap3.BASE, attributes=["1.1"])
            check_result(conn, ok, f"read {self.config.base_dn}")

        await self._ldap.run(op)

    async def find_by_address(self, address: str) -> CouncillorEntry | None:
        """The councillor entry holding ``address`` (active or not), or None if there is none.

        Reads the person attributes plus uid and objectClass, never the password hash."""
        wanted = [*self.person_attributes(), self.dialect.login_attribute, "objectClass"]
        return await self._find(address, wanted, keep_raw=True)

    async def find_recipient(self, address: str) -> CouncillorEntry | None:
        """Like ``find_by_address`` with only what a RCPT check needs (address and status)."""
        wanted = [self.config.mail_attribute, *self.dialect.status_attributes()]
        return await self._find(address, wanted, keep_raw=False)

    async def find_staff(self, address: str, login: str | None = None) -> CouncillorEntry | None:
        """The staff entry (a clerk of the web panel, under ``staff_dn``) holding ``address``, or
        whose login (uid) is ``login``; None if there is none or the subtree does not exist."""
        wanted = [*self.person_attributes(), self.dialect.login_attribute]
        base, filt = self.config.staff_dn, staff_filter(self.config, address, login)
        return await self._find(address, wanted, keep_raw=True, base=base, filt=filt)

    async def _find(
        self,
        address: str,
        wanted: list[str],
        *,
        keep_raw: bool,
        base: str | None = None,
        filt: str | None = None,
    ) -> CouncillorEntry | None:
        """The one entry under ``base`` (the councillors by default) matching ``filt`` (the
        person with ``address`` by default). Only the councillors' subtree must exist."""
        councillors = base is None
        search_base = self.config.councillors_dn if base is None else base

        def op(conn: ldap3.Connection) -> CouncillorEntry | None:
            ok = conn.search(
                search_base,
                filt or person_filter(self.config, address),
                ldap3.SUBTREE,
                attributes=wanted,
                size_limit=2,
            )
            if not ok and conn.result.get("result") == NO_SUCH_OBJECT:
                if not councillors:
                    return None
                raise DirectoryError(
                    f"{search_base} does not exist; run `mailsvc stack up` or create the base tree"
                )
            if not ok and conn.result.get("result") != 0:
                check_result(conn, ok, f"look up {address}")
            entries = [r for r in conn.response or [] if r.get("type") == "searchResEntry"]
            if not entries:
                return None
            if len(entries) > 1:
                raise DirectoryError(f"{address} is held by more than one directory entry")
            return self._entry(entries[0], keep_raw=keep_raw)

        return await self._ldap.run(op)

    async def list_councillors(
        self, page_size: int = 2000, *, brief: bool = False
    ) -> list[CouncillorEntry]:
        """Every councillor entry (paged search). ``brief``: address, DN and status only."""
        if brief:
            status, active = self.dialect.status_attributes(), self.dialect.is_active
            return await list_brief(self.config, self.ssl_context(), status, active, page_size)
        c = self.config
        status = self.dialect.status_attributes()
        wanted = [c.mail_attribute, *status] if brief else self.person_attributes()
        return await self._list(c.councillors_dn, wanted, page_size, keep_raw=False)

    async def list_staff(self) -> list[CouncillorEntry]:
        """Every entry of the staff subtree, with its login (none when the subtree does not
        exist yet)."""
        wanted = [*self.person_attributes(), self.dialect.login_attribute]
        return await self._list(self.config.staff_dn, wanted, 2000, keep_raw=True, missing_ok=True)

    async def _list(
        self,
        base: str,
        wanted: list[str],
        page_size: int,
        *,
        keep_raw: bool,
        missing_ok: bool = False,
    ) -> list[CouncillorEntry]:
        def op(conn: ldap3.Connection) -> list[CouncillorEntry]:
            out: list[CouncillorEntry] = []
            cookie: bytes | None = None
            filt = f"(objectClass={escape_filter_chars(self.config.person_object_class)})"
            while True:
                ok = conn.search(
                    base,
                    filt,
                    ldap3.SUBTREE,
                    attributes=wanted,
                    paged_size=page_size,
                    paged_cookie=cookie,
                )
                if missing_ok and not ok and conn.result.get("result") == NO_SUCH_OBJECT:
                    return out
                check_result(conn, ok or conn.result.get("result") == 0, f"list {base}")
                out.extend(
                    self._entry(r, keep_raw=keep_raw)
                    for r in conn.response or []
                    if r.get("type") == "searchResEntry"
                )
                controls = conn.result.get("controls") or {}
                cookie = controls.get("1.2.840.113556.1.4.319", {}).get("value", {}).get("cookie")
                if not cookie:
                    return out

        return await self._ldap.run(op)

    async def taken_logins(self) -> set[str]:
        """Active Directory: every account name (sAMAccountName, lower case) in the domain,
        which a new person's must differ from; OpenLDAP: empty (the login is the local part,
        unique as the entry's RDN)."""
        if self.dialect.kind != "ad":
            return set()
        attribute = self.dialect.login_attribute

        def op(conn: ldap3.Connection) -> set[str]:
            out: set[str] = set()
            cookie: bytes | None = None
            while True:
                ok = conn.search(
                    self.config.base_dn,
                    f"({attribute}=*)",
                    ldap3.SUBTREE,
                    attributes=[attribute],
                    paged_size=1000,
                    paged_cookie=cookie,
                )
                check_result(conn, ok or conn.result.get("result") == 0, "list account names")
                out.update(
                    first_value(r["attributes"].get(attribute)).lower()
                    for r in conn.response or []
                    if r.get("type") == "searchResEntry"
                )
                controls = conn.result.get("controls") or {}
                cookie = controls.get("1.2.840.113556.1.4.319", {}).get("value", {}).get("cookie")
                if not cookie:
                    out.discard("")
                    return out

        return await self._ldap.run(op)

    async def export_subtree(self, base: str) -> list[tuple[str, dict[str, list[bytes]]]]:
        """Every entry of the subtree at ``base`` with its user attributes as stored (raw
        values, the password hash among them where the bind may read it), parents before
        children; empty when ``base`` does not exist. For backups."""

        def op(conn: ldap3.Connection) -> list[tuple[str, dict[str, list[bytes]]]]:
            out: list[tuple[str, dict[str, list[bytes]]]] = []
            cookie: bytes | None = None
            while True:
                ok = conn.search(
                    base,
                    "(objectClass=*)",
                    ldap3.SUBTREE,
                    attributes=[ldap3.ALL_ATTRIBUTES],
                    paged_size=1000,
                    paged_cookie=cookie,
                )
                if not ok and conn.result.get("result") == NO_SUCH_OBJECT:
                    return out
                check_result(conn, ok or conn.result.get("result") == 0, f"export {base}")
                out.extend(
                    (r["dn"], {k: list(v) for k, v in r["raw_attributes"].items()})
                    for r in conn.response or []
                    if r.get("type") == "searchResEntry"
                )
                controls = conn.result.get("controls") or {}
                cookie = controls.get("1.2.840.113556.1.4.319", {}).get("value", {}).get("cookie")
                if not cookie:
                    # Shorter DNs first: a parent is added back before its children.
                    return sorted(out, key=lambda e: len(parse_dn(e[0])))

        return await self._ldap.run(op)

    async def missing_rights(self) -> list[str]:
        """Active Directory: what the service's account may not do that the service needs, one
        line each (empty when nothing is missing), read from AD's constructed attributes:
        ``allowedChildClassesEffective`` of each container (create the people and groups) and
        ``allowedAttributesEffective`` of an entry in it (write what the service writes).
        OpenLDAP grants by slapd.conf's ACLs, which no attribute shows: empty."""
        if self.dialect.kind != "ad":
            return []
        c = self.config
        people_writes = {
            c.mail_attribute,
            "displayName",
            "givenName",
            "sn",
            "userAccountControl",
            c.external_id_attribute,
            c.district_attribute,
            c.club_attribute,
            c.role_attribute,
            c.phone_attribute,
        }
        wanted = (
            (c.councillors_dn, c.person_object_class, people_writes),
            (c.staff_dn, c.person_object_class, people_writes),
            (c.groups_dn, c.group_object_class, {c.member_attribute, "description"}),
        )

        def effective(conn: ldap3.Connection, dn: str, attribute: str) -> set[str] | None:
            ok = conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=[attribute])
            if not ok and conn.result.get("result") == NO_SUCH_OBJECT:
                return None
            check_result(conn, ok, f"read {attribute} of {dn}")
            values = conn.response[0]["attributes"].get(attribute) if conn.response else []
            return {str(v).lower() for v in values or []}

        def op(conn: ldap3.Connection) -> list[str]:
            missing: list[str] = []
            for dn, object_class, writes in wanted:
                classes = effective(conn, dn, "allowedChildClassesEffective")
                if classes is None:
                    missing.append(f"{dn} does not exist (or this account cannot see it)")
                    continue
                if object_class.lower() not in classes:
                    missing.append(f"cannot create {object_class} objects in {dn}")
                ok = conn.search(
                    dn,
                    f"(objectClass={escape_filter_chars(object_class)})",
                    ldap3.LEVEL,
                    attributes=["allowedAttributesEffective"],
                    size_limit=1,
                )
                if not ok and conn.result.get("result") not in (0, SIZE_LIMIT_EXCEEDED):
                    check_result(conn, ok, f"list {dn}")
                entries = [r for r in conn.response or [] if r.get("type") == "searchResEntry"]
                if not entries:
                    continue  # nothing there yet to try the attribute rights on
                values = entries[0]["attributes"].get("allowedAttributesEffective") or []
                allowed = {str(v).lower() for v in values}
                lacking = sorted(a for a in writes if a.lower() not in allowed)
                if lacking:
                    missing.append(
                        f"cannot write {', '.join(lacking)} of the {object_class} objects in {dn}"
                    )
            return missing

        return await self._ldap.run(op)

    # -- writes --------------------------------------------------------------------------

    async def ensure_base_tree(self) -> None:
        """Create the councillors, groups and staff containers if they are missing
        (idempotent)."""
        c = self.config

        def op(conn: ldap3.Connection) -> None:
            for dn in (c.councillors_dn, c.groups_dn, c.staff_dn):
                self._ensure_unit(conn, dn)

        await self._ldap.run(op)

    async def ensure_staff_tree(self) -> None:
        """Create the staff container if it is missing (a directory made before it existed)."""
        await self._ldap.run(lambda conn: self._ensure_unit(conn, self.config.staff_dn))

    @staticmethod
    def _ensure_unit(conn: ldap3.Connection, dn: str) -> None:
        # Looked up first: a directory may let the service read a container it may not add.
        ok = conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["1.1"])
        if ok:
            return
        if conn.result.get("result") != NO_SUCH_OBJECT:
            check_result(conn, ok, f"read {dn}")
        value = dn.split(",", 1)[0].split("=", 1)[1]
        ok = conn.add(dn, ["top", "organizationalUnit"], {"ou": value})
        if not ok and conn.result.get("result") != ALREADY_EXISTS:
            check_result(conn, ok, f"create {dn}")

    def councillor_request(
        self,
        *,
        local_part: str,
        address: str,
        given_name: str,
        surname: str,
        password: str,
        password_hash: str | None = None,
        extra: Mapping[str, str | Sequence[str]] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """DN and attributes of a new councillor entry. Values are stored literally.

        ``password_hash``: the hash the entry stores (OpenLDAP: see ``dialect.stores_hashes``);
        Active Directory is given ``password`` itself and hashes it."""
        attributes: dict[str, Any] = {
            **self.dialect.person_attributes(
                login=self.dialect.login_for(local_part),
                address=address,
                password=password,
                password_hash=password_hash,
            ),
            "sn": surname,
            "givenName": given_name,
            "displayName": f"{given_name} {surname}",
            self.config.mail_attribute: address,
        }
        if self.dialect.kind != "ad":  # AD's cn is the RDN's value (the local part)
            attributes["cn"] = f"{given_name} {surname}"
        for key, value in (extra or {}).items():
            if value:  # empty means "no value": LDAP has no empty attributes
                attributes[key] = value
        return councillor_dn(self.config, local_part), attributes

    def staff_request(
        self,
        *,
        login: str,
        display_name: str,
        password: str,
        password_hash: str | None = None,
        email: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """DN and attributes of a new staff entry (a clerk) in the staff subtree. The surname
        (which the person class requires) is the last word of the name."""
        words = display_name.split()
        attributes: dict[str, Any] = {
            **self.dialect.person_attributes(
                login=login, address=email, password=password, password_hash=password_hash
            ),
            "sn": words[-1] if words else login,
            "displayName": display_name,
        }
        if self.dialect.kind != "ad":
            attributes["cn"] = display_name
        if len(words) > 1:
            attributes["givenName"] = " ".join(words[:-1])
        if email:
            attributes[self.config.mail_attribute] = email
        return staff_dn(self.config, login), attributes

    def _person_classes(self) -> list[str]:
        return self.dialect.person_classes()

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
        return await add_entries(
            self.config,
            self.ssl_context(),
            items,
            object_classes or self._person_classes(),
            self.dialect.add_window,
        )

    async def modify(self, dn: str, changes: Mapping[str, Sequence[str] | None]) -> None:
        """Replace attributes of ``dn`` (None or empty deletes the attribute)."""
        ops = {
            key: [(ldap3.MODIFY_REPLACE, list(value) if value else [])]
            for key, value in changes.items()
        }

        def op(conn: ldap3.Connection) -> None:
            check_result(conn, conn.modify(dn, ops), f"modify {dn}")

        await self._ldap.run(op)

    @property
    def stores_hashes(self) -> bool:
        """Whether new passwords reach the directory as hashes the service made (OpenLDAP), or
        in clear over TLS for the directory to hash (Active Directory)."""
        return self.dialect.stores_hashes

    async def set_password(self, dn: str, password: str, password_hash: str | None) -> None:
        """Give ``dn`` a new password (``password_hash`` where ``stores_hashes``)."""
        await self.modify(dn, self.dialect.password_change(password, password_hash))

    async def set_active(self, dn: str, active: bool) -> None:
        await self.modify(dn, self.dialect.status_change(active))

    def status_change(self, active: bool) -> dict[str, list[Any]]:
        """The attribute changes that enable or disable an account (for a larger modify)."""
        return self.dialect.status_change(active)

    async def delete(self, dn: str) -> None:
        def op(conn: ldap3.Connection) -> None:
            ok = conn.delete(dn)
            if not ok and conn.result.get("result") == NO_SUCH_OBJECT:
                return
            check_result(conn, ok, f"delete {dn}")

        await self._ldap.run(op)

    def name_changes(self, given_name: str, surname: str) -> dict[str, list[str]]:
        """The attributes that change with a person's name. AD's cn is the entry's RDN (the
        local part), which a modify may not touch."""
        full = f"{given_name} {surname}"
        changes = {"displayName": [full], "givenName": [given_name], "sn": [surname]}
        if self.dialect.kind != "ad":
            changes["cn"] = [full]
        return changes

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
        prefix = "CN" if self.dialect.kind == "ad" else "cn"
        return f"{prefix}={escape_rdn(name)},{self.config.groups_dn}"

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
            if not ok and conn.result.get("result") == NO_SUCH_OBJECT:
                return None
            check_result(conn, ok or conn.result.get("result") == 0, f"read group {name}")
            entries = [r for r in conn.response or [] if r.get("type") == "searchResEntry"]
            if not entries:
                return None
            members = entries[0]["attributes"].get(self.config.member_attribute, [])
            return GroupEntry(dn, name, frozenset(str(m).lower() for m in members))

        return await self._ldap.run(op)

    async def sync_group(self, name: str, member_dns: Iterable[str], description: str) -> bool:
        """Make group ``name`` have exactly ``member_dns``; True if anything changed.

        groupOfNames needs at least one member, so an empty group holds the groups container
        itself as a placeholder (never a person, so it expands to nobody); an AD group may be
        empty.
        """
        return await self._sync_group(name, member_dns, description, await self.get_group(name))

    async def sync_groups(self, wanted: Mapping[str, tuple[Iterable[str], str]]) -> int:
        """``sync_group`` for each name → (member DNs, description), with one read of every
        group; how many groups changed."""
        current = {group.dn.lower(): group for group in await self.list_groups()}
        changed = 0
        for name, (members, description) in wanted.items():
            found = current.get(self.group_dn(name).lower())
            changed += await self._sync_group(name, members, description, found)
        return changed

    async def _sync_group(
        self,
        name: str,
        member_dns: Iterable[str],
        description: str,
        current: GroupEntry | None,
    ) -> bool:
        wanted = set(map(str.lower, member_dns)) or set(self._placeholder())
        dn = self.group_dn(name)
        if current is None:
            # Through the pipelined client: a council-wide group can hold tens of thousands of
            # member values, which ldap3's encoder takes seconds to write.
            members = sorted(wanted)
            attributes: dict[str, Any] = {
                **self.dialect.group_attributes(name),
                "description": description,
            }
            batch = self.dialect.member_batch or len(members)
            if members:
                attributes[self.config.member_attribute] = members[:batch]
            (result,) = await self.add_many([(dn, attributes)], self.dialect.group_classes())
            if isinstance(result, Exception):
                raise result
            await self._change_members(dn, members[batch:], [])
            return True
        added, removed = sorted(wanted - current.members), sorted(current.members - wanted)
        if not added and not removed:
            return False
        await self._change_members(dn, added, removed)
        return True

    async def _change_members(self, dn: str, added: list[str], removed: list[str]) -> None:
        """Add, then remove, members of group ``dn``: only what differs is sent, in requests
        of the dialect's ``member_batch`` values (Active Directory: no single request makes
        the domain controller work on tens of thousands of values; Samba took longer than the
        5 s ``directory.timeout`` to add a group of 50,000 members in one). Adding first keeps
        a groupOfNames from ever being empty."""
        for op, values in ((ldap3.MODIFY_ADD, added), (ldap3.MODIFY_DELETE, removed)):
            size = self.dialect.member_batch or max(len(values), 1)
            for start in range(0, len(values), size):
                await self._modify_members(dn, [(op, values[start : start + size])])

    async def add_member(self, name: str, dn: str, description: str) -> bool:
        """Put ``dn`` into group ``name`` (made if missing); False if it was there already.

        One modify adds the value, so members added meanwhile by others are kept; the empty
        group's placeholder (see ``sync_group``) goes in the same modify."""
        group = await self.get_group(name)
        if group is None:
            return await self.sync_group(name, [dn], description)
        if dn.lower() in group.members:
            return False
        changes: list[tuple[Any, list[str]]] = [(ldap3.MODIFY_ADD, [dn])]
        if self.dialect.needs_placeholder and self.config.groups_dn.lower() in group.members:
            changes.append((ldap3.MODIFY_DELETE, [self.config.groups_dn]))
        await self._modify_members(group.dn, changes)
        return True

    async def remove_member(self, name: str, dn: str) -> bool:
        """Take ``dn`` out of group ``name``; False if it was not a member (or no such group).
        The last member is replaced by the placeholder (groupOfNames needs one member)."""
        group = await self.get_group(name)
        if group is None or dn.lower() not in group.members:
            return False
        changes: list[tuple[Any, list[str]]] = [(ldap3.MODIFY_DELETE, [dn])]
        if self.dialect.needs_placeholder and group.members == {dn.lower()}:
            changes.append((ldap3.MODIFY_ADD, [self.config.groups_dn]))
        await self._modify_members(group.dn, changes)
        return True

    def _placeholder(self) -> list[str]:
        return [self.config.groups_dn.lower()] if self.dialect.needs_placeholder else []

    async def _modify_members(self, group_dn: str, changes: list[tuple[Any, list[str]]]) -> None:
        ops = {self.config.member_attribute: changes}

        def op(conn: ldap3.Connection) -> None:
            check_result(conn, conn.modify(group_dn, ops), f"modify {group_dn}")

        await self._ldap.run(op)

    async def list_groups(self) -> list[GroupEntry]:
        """Every group in the groups' container with its members (lowercased DNs)."""
        return await list_groups(self.config, self.ssl_context())

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
        entry = await self.find_by_address(address) if password else None
        if entry is None or not entry.active:
            return None
        return entry if await self.check_password(entry.dn, password) else None

    async def check_password(self, dn: str, password: str) -> bool:
        """Whether ``dn`` binds with ``password`` (checked by the directory; an empty password
        never binds)."""
        if not password:
            return False
        return await asyncio.to_thread(self._ldap.bind_as, dn, password)
