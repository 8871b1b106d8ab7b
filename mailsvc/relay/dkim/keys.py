"""DKIM key files: made with ``cryptography``, kept as PEM (PKCS#8) readable only by the service.

RSA keys are 2048 bits (RFC 8301's floor is 1024, and 2048 still fits a TXT record in two
strings); Ed25519 keys are RFC 8463's. A key file is written once and never replaced: a new key
is a new selector (README, "DKIM and DNS").
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailsvc.config import DkimSelector, Settings
from mailsvc.errors import ConfigError, MailsvcError

RSA = "rsa-sha256"
ED25519 = "ed25519-sha256"
RSA_BITS = 2048
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class SigningKey:
    selector: str
    algorithm: str
    private: PrivateKey

    def txt(self) -> str:
        """The TXT record at ``<selector>._domainkey.<domain>``."""
        return public_record(self.private)


def public_record(private: PrivateKey) -> str:
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def generate(algorithm: str) -> PrivateKey:
    if algorithm == ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == RSA:
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    raise ValueError(f"unknown DKIM algorithm {algorithm!r}")


def write_new_key(path: Path, algorithm: str) -> PrivateKey:
    """Make a key and write it to ``path`` (0600, its directory 0700); an existing file is an
    error, never overwritten (a published selector must keep its key)."""
    private = generate(algorithm)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise MailsvcError(
            f"{path} exists already: a selector keeps its key; choose a new selector name"
        ) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return private


def read_key(path: Path, algorithm: str) -> PrivateKey:
    """The private key in ``path``; ConfigError if it is missing, unreadable or of another
    algorithm than the selector says."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"DKIM key file {path}: not found") from None
    except OSError as exc:
        raise ConfigError(f"DKIM key file {path}: cannot be read ({exc.strerror})") from None
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"DKIM key file {path}: not an unencrypted PEM key ({exc})") from None
    expected = ed25519.Ed25519PrivateKey if algorithm == ED25519 else rsa.RSAPrivateKey
    if not isinstance(private, expected):
        raise ConfigError(f"DKIM key file {path}: not a key for {algorithm}")
    if isinstance(private, rsa.RSAPrivateKey) and private.key_size < 1024:
        raise ConfigError(f"DKIM key file {path}: RSA keys need 1024 bits or more (RFC 8301)")
    return private


def load_keys(settings: Settings) -> list[SigningKey]:
    """Every configured selector's key (blocking: run it in a thread)."""
    keys = []
    for selector in settings.dkim.selectors:
        path = settings.dkim_key_file(selector)
        try:
            private = read_key(path, selector.algorithm)
        except ConfigError as exc:
            raise ConfigError(
                f"dkim.selectors: {selector.name}: {exc}; make it with "
                f"`mailsvc dkim keygen --selector {selector.name}`"
            ) from None
        keys.append(SigningKey(selector.name, selector.algorithm, private))
    return keys


def existing_key(settings: Settings, selector: DkimSelector) -> PrivateKey | None:
    """The selector's key if its file can be read, else None (for `mailsvc dns`)."""
    try:
        return read_key(settings.dkim_key_file(selector), selector.algorithm)
    except ConfigError:
        return None
