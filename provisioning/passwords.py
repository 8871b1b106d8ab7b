"""Password generation and hashing.

New passwords are hashed with Argon2id in the ``{ARGON2}`` form that slapd's ``argon2`` module
verifies on bind (Dovecot checks passwords by binding, so it never sees the hash). Entries still
holding an older ``{SSHA}`` hash keep working until their next reset: slapd verifies both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import argon2

# No look-alike characters: no 0/O/o, 1/l/I, 5/S, 2/Z, 8/B.
_ALPHABET = "abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXY34679"
MIN_LENGTH = 16

ARGON2_PREFIX = "{ARGON2}"
# 32 MiB, 2 passes, 1 lane: about 60-100 ms per check on the 2-core development machine.
# One lane because slapd verifies inside one of its worker threads.
ARGON2_MEMORY_KIB = 32 * 1024
ARGON2_TIME_COST = 2
ARGON2_PARALLELISM = 1
_HASHER = argon2.PasswordHasher(
    time_cost=ARGON2_TIME_COST,
    memory_cost=ARGON2_MEMORY_KIB,
    parallelism=ARGON2_PARALLELISM,
    hash_len=32,
    salt_len=16,
    type=argon2.Type.ID,
)


def generate_password(length: int = 20) -> str:
    """A random password of ``length`` (at least 16) characters without look-alikes."""
    if length < MIN_LENGTH:
        raise ValueError(f"password length {length} is below the minimum of {MIN_LENGTH}")
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def hash_password(password: str) -> str:
    """Argon2id as ``{ARGON2}$argon2id$v=19$m=...,t=...,p=...$salt$hash`` (slapd's argon2)."""
    return ARGON2_PREFIX + _HASHER.hash(password)


def ssha_hash(password: str) -> str:
    """Salted SHA-1 in RFC 2307 form. Only for generated high-entropy secrets that a fast hash
    protects well enough (Dovecot's master-user file), and for the old form in tests."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()  # noqa: S324 - {SSHA} scheme
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def verify_password(password: str, hashed: str) -> bool:
    """Check ``password`` against an {ARGON2} or {SSHA} hash (tests, web login fallback)."""
    if hashed.startswith(ARGON2_PREFIX):
        try:
            return _HASHER.verify(hashed[len(ARGON2_PREFIX) :], password)
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            return False
    if not hashed.startswith("{SSHA}"):
        return False
    raw = base64.b64decode(hashed[6:])
    digest, salt = raw[:20], raw[20:]
    expected = hashlib.sha1(password.encode("utf-8") + salt).digest()  # noqa: S324
    return hmac.compare_digest(digest, expected)
