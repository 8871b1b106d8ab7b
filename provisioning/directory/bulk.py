"""Bulk work through ``ldapwire``: many additions at once (many requests in flight on one
connection), each answer turned into the adapter's terms (the DN, DirectoryError or
DirectoryUnavailable), and the brief listing of every councillor an import plans with."""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from provisioning.directory.entries import (
    ALREADY_EXISTS,
    NO_SUCH_OBJECT,
    TEMPORARY_RESULTS,
    CouncillorEntry,
    DirectoryConfig,
    GroupEntry,
    bind_refusal_hint,
)
from provisioning.errors import DirectoryError, DirectoryUnavailable
from provisioning.ldapwire import (
    SERVER_DOWN,
    TIMEOUT,
    LdapBindError,
    LdapConnectionError,
    LdapProtocolError,
    LdapResult,
    LdapSearchError,
    LdapWire,
)
from provisioning.ldapwire.ber import BASE_OBJECT, SINGLE_LEVEL, WHOLE_SUBTREE

_T = TypeVar("_T")


def _connect(c: DirectoryConfig, ssl_context: ssl.SSLContext) -> Coroutine[Any, Any, LdapWire]:
    """A bound ldapwire connection as the adapter's account, with the adapter's TLS."""
    return LdapWire.connect(
        c.url, c.bind_dn, c.bind_password, c.timeout, ssl_context=ssl_context, starttls=c.starttls
    )


async def add_entries(
    config: DirectoryConfig,
    ssl_context: ssl.SSLContext,
    items: Sequence[tuple[str, Mapping[str, Any]]],
    object_classes: Sequence[str],
    window: int = 64,
) -> list[str | Exception]:
    """One result per item, in order: its DN if added, else the error for that entry;
    ``window`` requests in flight at most.

    After a temporary failure no further entries are sent (they get that failure too).
    """
    c = config
    try:
        async with await _connect(c, ssl_context) as wire:
            answers = await wire.add_many(
                items,
                object_classes=object_classes,
                stop_on=TEMPORARY_RESULTS,
                window=window,
            )
    except LdapBindError as exc:
        if exc.result.code in TEMPORARY_RESULTS:
            busy = DirectoryUnavailable(f"directory {c.url} busy: {exc.result}")
            return [busy] * len(items)
        raise DirectoryError(
            f"directory {c.url} refused the bind as {c.bind_dn}: {exc.result.name}; "
            f"{bind_refusal_hint(exc.result.code)}"
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
                DirectoryUnavailable(f"directory unreachable: could not add {dn}: {answer.message}")
            )
        elif answer.code in TEMPORARY_RESULTS:
            out.append(DirectoryUnavailable(f"directory could not add {dn}: {answer}"))
        elif answer.code == ALREADY_EXISTS:
            out.append(DirectoryError(f"{dn} already exists"))
        else:
            out.append(DirectoryError(f"directory refused to add {dn}: {answer}"))
    return out


async def list_brief(
    config: DirectoryConfig,
    ssl_context: ssl.SSLContext,
    status_attributes: Sequence[str],
    is_active: Callable[[Mapping[str, Any]], bool],
    page_size: int = 2000,
) -> list[CouncillorEntry]:
    """Every councillor entry with its address, DN and status only (as ``list_councillors``
    gives them with ``brief``), read and decoded without ldap3: at tens of thousands of
    entries ldap3's decoding is most of a no-change import. ``is_active`` (the dialect's)
    reads the ``status_attributes``, named as asked whatever case the directory answers in."""
    c = config
    asked = [c.mail_attribute, *status_attributes]
    spelling = {name.lower(): name for name in asked}

    async def search(wire: LdapWire) -> list[tuple[str, dict[str, list[str]]]]:
        return await wire.search(
            c.councillors_dn,
            WHOLE_SUBTREE,
            ("objectClass", c.person_object_class),
            asked,
            page_size=page_size,
        )

    found = await _read(c, ssl_context, search, f"list {c.councillors_dn}")
    out = []
    as_asked = frozenset(asked)
    for dn, attributes in found:
        values = (
            attributes  # slapd names attributes as asked: no renaming needed
            if attributes.keys() <= as_asked
            else {spelling.get(name.lower(), name): v for name, v in attributes.items()}
        )
        addresses = values.get(c.mail_attribute) or [""]
        out.append(
            CouncillorEntry(
                dn=dn,
                address=addresses[0].lower(),
                given_name="",
                surname="",
                display_name="",
                active=is_active(values),
            )
        )
    return out


async def _read(
    c: DirectoryConfig,
    ssl_context: ssl.SSLContext,
    work: Callable[[LdapWire], Coroutine[Any, Any, _T]],
    what: str,
) -> _T:
    """``work`` on a connection bound as the adapter's account, its failures in the adapter's
    terms: DirectoryUnavailable when the directory is busy or unreachable, else
    DirectoryError naming ``what`` was refused."""
    try:
        async with await _connect(c, ssl_context) as wire:
            return await work(wire)
    except LdapBindError as exc:
        if exc.result.code in TEMPORARY_RESULTS:
            raise DirectoryUnavailable(f"directory {c.url} busy: {exc.result}") from exc
        raise DirectoryError(
            f"directory {c.url} refused the bind as {c.bind_dn}: {exc.result.name}; "
            f"{bind_refusal_hint(exc.result.code)}"
        ) from exc
    except LdapSearchError as exc:
        if exc.result.code in TEMPORARY_RESULTS:
            raise DirectoryUnavailable(f"directory could not {what}: {exc.result}") from exc
        raise DirectoryError(f"directory refused to {what}: {exc.result}") from exc
    except (LdapConnectionError, LdapProtocolError) as exc:
        raise DirectoryUnavailable(f"directory unreachable: {exc}") from exc
    except ValueError as exc:  # the URL or the credentials in the configuration
        raise DirectoryError(f"cannot connect to the directory: {exc}") from exc


# "member;range=0-1499": Active Directory hands out at most MaxValRange (1,500) values of a
# multi-valued attribute per answer and names the slice it sent; "*" ends the last slice.
_RANGE = re.compile(r"^(?P<name>[^;]+);range=(?P<low>\d+)-(?P<high>\d+|\*)$", re.IGNORECASE)


# One group is one answer: the council-wide group of 50,000 members is about 3.3 MB. 32 MiB holds
# half a million members and still bounds what one answer may make this process hold.
GROUP_MAX_BYTES = 32 << 20


async def list_groups(
    config: DirectoryConfig,
    ssl_context: ssl.SSLContext,
    page_size: int = 500,
    slice_size: int | None = None,
) -> list[GroupEntry]:
    """Every group right under the groups' container with all its members (lowercased DNs),
    read without ldap3: the council-wide group of a large roster has tens of thousands of
    members, which ldap3 decodes in about a second. A member list handed out in slices
    (Active Directory's ranged retrieval: past MaxValRange values it sends a slice unasked)
    is read to its end. ``slice_size`` asks for slices of that size from the start (tests
    use it: Samba slices only when asked)."""
    c = config
    member = c.member_attribute
    asked = member if slice_size is None else f"{member};range=0-{slice_size - 1}"

    async def read(wire: LdapWire) -> list[GroupEntry]:
        wire.max_response_bytes = GROUP_MAX_BYTES
        try:
            found = await wire.search(
                c.groups_dn,
                SINGLE_LEVEL,
                ("objectClass", c.group_object_class),
                ["cn", asked],
                page_size=page_size,
            )
        except LdapSearchError as exc:
            if exc.result.code == NO_SUCH_OBJECT:  # no container yet: no groups yet
                return []
            raise
        out = []
        for dn, attributes in found:
            cn = next((v for a, v in attributes.items() if a.lower() == "cn"), [])
            name = cn[0] if cn else ""
            members: list[str] = []
            next_low = _take_members(attributes, member, members)
            while next_low is not None:
                next_low = await _next_slice(wire, c, dn, members, next_low, slice_size)
            out.append(GroupEntry(dn, name, frozenset(map(str.lower, members))))
        return out

    return await _read(c, ssl_context, read, f"list the groups in {c.groups_dn}")


async def _next_slice(
    wire: LdapWire,
    c: DirectoryConfig,
    dn: str,
    members: list[str],
    low: int,
    slice_size: int | None,
) -> int | None:
    """Appends the next slice of ``dn``'s members, from ``low`` on, to ``members``; the low
    end of the slice after it, or None when this was the last one."""
    high = "*" if slice_size is None else str(low + slice_size - 1)
    asked = f"{c.member_attribute};range={low}-{high}"
    found = await wire.search(dn, BASE_OBJECT, ("objectClass", c.group_object_class), [asked])
    before, next_low = len(members), None
    for _, attributes in found:
        next_low = _take_members(attributes, c.member_attribute, members)
    if next_low is not None and len(members) == before:
        # A directory that keeps answering empty slices would keep this loop going forever.
        raise LdapProtocolError(f"{dn}: an empty slice of {c.member_attribute} before its end")
    return next_low


def _take_members(attributes: Mapping[str, list[str]], member: str, into: list[str]) -> int | None:
    """Appends the values of ``member`` in ``attributes`` (whole, or a slice named
    "member;range=low-high") to ``into``; the low end of the next slice, or None when there
    is none."""
    next_low = None
    for attribute, values in attributes.items():
        if attribute.lower() == member.lower():
            into.extend(values)
        elif (ranged := _RANGE.match(attribute)) and ranged["name"].lower() == member.lower():
            into.extend(values)
            if ranged["high"] != "*":
                next_low = int(ranged["high"]) + 1
    return next_low
