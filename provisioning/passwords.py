"""Password generation and hashing.

New passwords are hashed with Argon2id in the ``{ARGON2}`` form that slapd's ``argon2`` module
verifies on bind (Dovecot checks passwords by binding, so it never sees the hash). Entries still
holding an older ``{SSHA}`` hash keep working until their next reset: slapd verifies both.

One hash costs tens of milliseconds of CPU by design, so async code hashes on ``hashing_pool()``
(``hash_passwords``): argon2-cffi releases the GIL inside the C call, so the pool's threads hash
in parallel while the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import argon2

# No look-alike characters: no 0/O/o, 1/l/I, 5/S, 2/Z, 8/B.
_ALPHABET = "abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXY34679"
MIN_LENGTH = 16

ARGON2_PREFIX = "{ARGON2}"


@dataclass(frozen=True)
class Argon2Params:
    """Argon2id cost. The default is OWASP's minimum for Argon2id (19 MiB, 2 passes, 1 lane):
    about 40 ms of one core here. One lane because slapd verifies inside one worker thread, and
    more lanes shorten the wait without raising what a guess costs an attacker."""

    memory_kib: int = 19456
    time_cost: int = 2
    parallelism: int = 1


DEFAULT_ARGON2 = Argon2Params()


@functools.cache
def _hasher(params: Argon2Params) -> argon2.PasswordHasher:
    return argon2.PasswordHasher(
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=32,
        salt_len=16,
        type=argon2.Type.ID,
    )


# One hashing thread per CPU: more would only queue for the cores (and each running hash holds
# ``memory_kib`` of memory).
HASHING_THREADS = os.cpu_count() or 1
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def hashing_pool() -> ThreadPoolExecutor:
    """The process's hashing threads (``HASHING_THREADS``), made on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(HASHING_THREADS, thread_name_prefix="argon2")
        return _pool


def generate_password(length: int = 20) -> str:
    """A random password of ``length`` (at least 16) characters without look-alikes, with lower
    and upper case letters and digits in it: Active Directory's complexity rule asks for three
    kinds of characters, and a uniform draw misses one now and then (~1 % at 20)."""
    if length < MIN_LENGTH:
        raise ValueError(f"password length {length} is below the minimum of {MIN_LENGTH}")
    while True:
        value = "".join(secrets.choice(_ALPHABET) for _ in range(length))
        if all(any(kind(c) for c in value) for kind in (str.islower, str.isupper, str.isdigit)):
            return value


def hash_password(password: str, params: Argon2Params = DEFAULT_ARGON2) -> str:
    """Argon2id as ``{ARGON2}$argon2id$v=19$m=...,t=...,p=...$salt$hash`` (slapd's argon2).
    Blocks for the whole hash: async code calls ``hash_passwords`` instead."""
    return ARGON2_PREFIX + _hasher(params).hash(password)


async def hash_passwords(
    passwords: Sequence[str], params: Argon2Params = DEFAULT_ARGON2
) -> list[str]:
    """``hash_password`` of each, in order, on ``hashing_pool()``: never on the event loop."""
    loop = asyncio.get_running_loop()
    pool = hashing_pool()
    return list(
        await asyncio.gather(
            *(loop.run_in_executor(pool, hash_password, p, params) for p in passwords)
        )
    )


def hash_passwords_blocking(
    passwords: Sequence[str], params: Argon2Params = DEFAULT_ARGON2
) -> list[str]:
    """The same for synchronous callers (the benchmark's LDIF): parallel, waits for all."""
    return list(hashing_pool().map(functools.partial(hash_password, params=params), passwords))


def ssha_hash(password: str) -> str:
    """Salted SHA-1 in RFC 2307 form. Only for generated high-entropy secrets that a fast hash
    protects well enough (Dovecot's master-user file), and for the old form in tests."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()  # noqa: S324 - {SSHA} scheme
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def verify_password(password: str, hashed: str) -> bool:
    """Check ``password`` against an {ARGON2} (any cost: it is read from the hash) or {SSHA}
    hash (tests)."""
    if hashed.startswith(ARGON2_PREFIX):
        try:
            return _hasher(DEFAULT_ARGON2).verify(hashed[len(ARGON2_PREFIX) :], password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
    if not hashed.startswith("{SSHA}"):
        return False
    raw = base64.b64decode(hashed[6:])
    digest, salt = raw[:20], raw[20:]
    expected = hashlib.sha1(password.encode("utf-8") + salt).digest()  # noqa: S324
    return hmac.compare_digest(digest, expected)
