"""Password generation and hashing in a scheme both slapd and Dovecot verify ({SSHA})."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# No look-alike characters: no 0/O/o, 1/l/I, 5/S, 2/Z, 8/B.
_ALPHABET = "abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXY34679"
MIN_LENGTH = 16


def generate_password(length: int = 20) -> str:
    """A random password of ``length`` (at least 16) characters without look-alikes."""
    if length < MIN_LENGTH:
        raise ValueError(f"password length {length} is below the minimum of {MIN_LENGTH}")
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def hash_password(password: str) -> str:
    """Salted SHA-1 in RFC 2307 form, understood by slapd (simple bind) and Dovecot."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()  # noqa: S324 - {SSHA} scheme
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def verify_password(password: str, hashed: str) -> bool:
    """Check ``password`` against an {SSHA} hash (used by tests and the web login fallback)."""
    if not hashed.startswith("{SSHA}"):
        return False
    raw = base64.b64decode(hashed[6:])
    digest, salt = raw[:20], raw[20:]
    expected = hashlib.sha1(password.encode("utf-8") + salt).digest()  # noqa: S324
    return hmac.compare_digest(digest, expected)
