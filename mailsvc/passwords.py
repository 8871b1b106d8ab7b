"""New password hashes with the configured Argon2id cost (``[provisioning]``), off the event loop.

Every caller in the service and the commands goes through here, so the cost set in the
configuration is the one used everywhere and no hash runs on the event loop's thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mailsvc.config import Settings
from provisioning.passwords import Argon2Params, hash_password, hash_passwords

if TYPE_CHECKING:  # ldap3 is slow to import, and the stack's start-up imports this module
    from provisioning.directory import Directory


def argon2_params(settings: Settings) -> Argon2Params:
    p = settings.provisioning
    return Argon2Params(p.argon2_memory_kib, p.argon2_time_cost, p.argon2_parallelism)


async def hash_new_passwords(settings: Settings, passwords: Sequence[str]) -> list[str]:
    """Hashes of ``passwords``, in order, computed in parallel on the hashing threads."""
    return await hash_passwords(passwords, argon2_params(settings))


async def hash_new_password(settings: Settings, password: str) -> str:
    (hashed,) = await hash_new_passwords(settings, [password])
    return hashed


def hash_new_password_blocking(settings: Settings, password: str) -> str:
    """For synchronous code with no event loop (the embedded stack's start-up)."""
    return hash_password(password, argon2_params(settings))


async def hashes_for(
    settings: Settings, directory: Directory, passwords: Sequence[str]
) -> list[str | None]:
    """What ``directory`` is given beside each new password: its hash where the service hashes
    (OpenLDAP), nothing where the directory hashes it itself (Active Directory)."""
    if not directory.stores_hashes:
        return [None] * len(passwords)
    return list(await hash_new_passwords(settings, passwords))


async def set_new_password(
    settings: Settings, directory: Directory, dn: str, password: str
) -> None:
    """Give ``dn`` the new ``password`` (hashed first where the directory stores hashes)."""
    (hashed,) = await hashes_for(settings, directory, [password])
    await directory.set_password(dn, password, hashed)
