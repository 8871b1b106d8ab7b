"""Secrets that the embedded default generates once and keeps under var_dir (mode 0600)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mailsvc.config import Settings
from mailsvc.tmpfiles import writer_tmp
from provisioning.passwords import generate_password


def secret_path(settings: Settings, name: str) -> Path:
    return settings.var_dir / "secrets" / name


def load_or_create_secret(
    settings: Settings,
    name: str,
    length: int = 32,
    generate: Callable[[int], str] = generate_password,
) -> str:
    """Return the secret ``name``, creating it atomically on first use."""
    path = secret_path(settings, name)
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = generate(length)
    tmp = writer_tmp(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(value + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # fails if another process won the race: then use theirs
    except FileExistsError:
        tmp.unlink()
        return path.read_text(encoding="ascii").strip()
    tmp.unlink()
    return value


def admin_password(settings: Settings) -> str:
    return settings.directory.admin_password or load_or_create_secret(settings, "ldap-admin")


def reader_password(settings: Settings) -> str:
    return settings.directory.reader_password or load_or_create_secret(settings, "ldap-reader")


def samba_admin_password(settings: Settings) -> str:
    """The Administrator password of the embedded Samba AD DC (stack.directory = "samba")."""
    return settings.directory.admin_password or load_or_create_secret(
        settings, "samba-admin", generate=_complex_password
    )


def _complex_password(length: int) -> str:
    # Active Directory's default policy wants three kinds of characters; our alphabet has
    # three (lower and upper case, digits), and a random draw may miss one (~4 % at 32).
    while True:
        value = generate_password(length)
        if all(any(kind(c) for c in value) for kind in (str.islower, str.isupper, str.isdigit)):
            return value
