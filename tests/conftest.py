"""Fixtures shared by all tests.

Integration tests run against the real local stack (OpenLDAP slapd + Dovecot) that
``mailsvc.stack.LocalStack`` starts from a temporary var_dir on free loopback ports: once per
session (``local_stack``), or privately for tests that stop and start servers
(``new_stack_settings``).
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailsvc.config import DEFAULT_CONFIG, Settings, load_settings
from mailsvc.stack import LocalStack, free_ports

with warnings.catch_warnings():
    # pyasn1 0.6 deprecates names that ldap3 2.9 still imports. Import it once here, quietly,
    # so that `filterwarnings = error` does not fail whichever test happens to import it first.
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3  # noqa: F401

LOOPBACK = "127.0.0.1"


def _isolated_settings(*, imaps: bool = False) -> Settings:
    """The embedded default on a fresh short var_dir in /tmp and free ports.

    The environment is ignored on purpose: a developer's MAILSVC_* variables must not point the
    tests at their own directory or ports. ``imaps``: Dovecot listens for IMAPS too (and
    offers STARTTLS), with its self-signed certificate.
    """
    base = load_settings(DEFAULT_CONFIG, env={})
    ldap_port, imap_port, lmtp_port, smtp_port, imaps_port = free_ports(5)
    return base.with_changes(
        var_dir=Path(tempfile.mkdtemp(prefix="ms", dir="/tmp")),
        stack={
            "host": LOOPBACK,
            "ldap_port": ldap_port,
            "imap_port": imap_port,
            "imaps_port": imaps_port if imaps else 0,
            "lmtp_port": lmtp_port,
        },
        smtp={"host": LOOPBACK, "port": smtp_port},
    )


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """Settings of the session's local stack (IMAPS on, for the TLS tests); its var_dir is
    removed at the end."""
    settings = _isolated_settings(imaps=True)
    yield settings
    shutil.rmtree(settings.var_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def local_stack(stack_settings: Settings) -> Iterator[LocalStack]:
    """slapd and Dovecot running for the whole session (started once, stopped at the end)."""
    stack = LocalStack(stack_settings)
    stack.up()
    yield stack
    stack.down()


@pytest.fixture
def new_stack_settings() -> Iterator[Callable[[], Settings]]:
    """Make settings for a private stack; whatever runs from them is stopped and removed after."""
    made: list[Settings] = []

    def make() -> Settings:
        settings = _isolated_settings()
        made.append(settings)
        return settings

    yield make
    for settings in made:
        try:
            LocalStack(settings).down()
        finally:
            shutil.rmtree(settings.var_dir, ignore_errors=True)


# -- PostgreSQL ----------------------------------------------------------------------------
# Interim: a developer's PostgreSQL on 127.0.0.1:55432 (user postgres, trust). Replaced by a
# private cluster under the session's var_dir (mailsvc.stack) with the same fixture names.
_PG_ADMIN = "postgresql://postgres@127.0.0.1:55432/postgres"


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The session's PostgreSQL server: its admin URL (libpq form)."""
    return _PG_ADMIN


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test: its SQLAlchemy URL (asyncpg)."""
    import subprocess
    import uuid

    name = "t" + uuid.uuid4().hex[:16]
    subprocess.run(["psql", "-qX", pg_server, "-c", f"CREATE DATABASE {name}"], check=True)
    yield f"postgresql+asyncpg://postgres@127.0.0.1:55432/{name}"
    subprocess.run(
        ["psql", "-qX", pg_server, "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
        check=False,
    )
