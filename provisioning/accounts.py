"""Creating councillor accounts: address, password, directory entry."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from provisioning.directory import Directory
from provisioning.naming import choose_local_part
from provisioning.passwords import generate_password, hash_password


@dataclass(frozen=True)
class NewAccount:
    address: str
    password: str = field(repr=False)
    dn: str


async def taken_local_parts(directory: Directory, domain: str) -> set[str]:
    """Local parts in ``domain`` held by any entry, active or not (never reassigned)."""
    suffix = "@" + domain.lower()
    return {
        e.address[: -len(suffix)]
        for e in await directory.list_councillors()
        if e.address.endswith(suffix)
    }


async def create_councillor(
    directory: Directory,
    domain: str,
    given_names: str,
    surname: str,
    *,
    taken: set[str] | None = None,
    extra_reserved: Collection[str] = (),
    extra: Mapping[str, str | Sequence[str]] | None = None,
) -> NewAccount:
    """Derive the address, generate a password, create the entry (password stored hashed).

    ``taken`` is updated with the new local part so bulk callers can pass one set along.
    """
    if taken is None:
        taken = await taken_local_parts(directory, domain)
    local = choose_local_part(
        given_names, surname, taken.__contains__, extra_reserved=extra_reserved
    )
    address = f"{local}@{domain.lower()}"
    password = generate_password()
    given = " ".join(given_names.split())
    dn = await directory.add_councillor(
        local_part=local,
        address=address,
        given_name=given,
        surname=" ".join(surname.split()),
        password_hash=hash_password(password),
        extra=extra,
    )
    taken.add(local)
    return NewAccount(address=address, password=password, dn=dn)
