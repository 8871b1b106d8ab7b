"""Bulk work through ``ldapwire``: many additions at once (many requests in flight on one
connection), each answer turned into the adapter's terms (the DN, DirectoryError or
DirectoryUnavailable), and the brief listing of every councillor an import plans with."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from provisioning.directory.entries import (
    ALREADY_EXISTS,
    TEMPORARY_RESULTS,
    CouncillorEntry,
    DirectoryConfig,
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
from provisioning.ldapwire.ber import WHOLE_SUBTREE


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
    try:
        async with await _connect(c, ssl_context) as wire:
            found = await wire.search(
                c.councillors_dn,
                WHOLE_SUBTREE,
                ("objectClass", c.person_object_class),
                asked,
                page_size=page_size,
            )
    except LdapBindError as exc:
        if exc.result.code in TEMPORARY_RESULTS:
            raise DirectoryUnavailable(f"directory {c.url} busy: {exc.result}") from exc
        raise DirectoryError(
            f"directory {c.url} refused the bind as {c.bind_dn}: {exc.result.name}; "
            f"{bind_refusal_hint(exc.result.code)}"
        ) from exc
    except LdapSearchError as exc:
        if exc.result.code in TEMPORARY_RESULTS:
            raise DirectoryUnavailable(
                f"directory could not list {c.councillors_dn}: {exc.result}"
            ) from exc
        raise DirectoryError(f"directory refused to list {c.councillors_dn}: {exc.result}") from exc
    except (LdapConnectionError, LdapProtocolError) as exc:
        raise DirectoryUnavailable(f"directory unreachable: {exc}") from exc
    except ValueError as exc:  # the URL or the credentials in the configuration
        raise DirectoryError(f"cannot connect to the directory: {exc}") from exc
    out = []
    for dn, attributes in found:
        values = {spelling.get(name.lower(), name): v for name, v in attributes.items()}
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
