"""Fixtures shared by all tests.

Integration tests run against the real local stack (OpenLDAP slapd + Dovecot) that
``mailsvc.stack.LocalStack`` starts from a temporary var_dir on free loopback ports: once per
session (``local_stack``), or privately for tests that stop and start servers
(``new_stack_settings``).
"""

from __future__ import annotations

import os
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
# Which engine the integration tests' service runs on: "sqlite" (the embedded default) or
# "postgresql" (`make test` runs the suite a second time so).
TEST_DATABASE_ENV = "MAILSVC_TEST_DATABASE"


def selected_database() -> str:
    value = os.environ.get(TEST_DATABASE_ENV, "sqlite") or "sqlite"
    if value not in ("sqlite", "postgresql"):
        raise pytest.UsageError(f"{TEST_DATABASE_ENV} must be sqlite or postgresql, not {value!r}")
    return value


def _isolated_settings(*, imaps: bool = False) -> Settings:
    """The embedded default on a fresh short var_dir in /tmp and free ports.

    The environment is ignored on purpose: a developer's MAILSVC_* variables must not point the
    tests at their own directory or ports. ``imaps``: Dovecot listens for IMAPS too (and
    offers STARTTLS), with its self-signed certificate.
    """
    base = load_settings(DEFAULT_CONFIG, env={})
    ldap_port, imap_port, lmtp_port, smtp_port, imaps_port = free_ports(5)
    if selected_database() == "postgresql":
        base = base.with_changes(database={"url": new_pg_database()})
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


def pg_admin_url() -> str:
    """The session's PostgreSQL server: its admin URL (libpq form)."""
    return _PG_ADMIN


def new_pg_database() -> str:
    """A fresh, empty PostgreSQL database on the session's server: its SQLAlchemy URL."""
    import subprocess
    import uuid

    name = "t" + uuid.uuid4().hex[:16]
    admin = pg_admin_url()
    subprocess.run(["psql", "-qX", admin, "-c", f"CREATE DATABASE {name}"], check=True)
    return f"postgresql+asyncpg://postgres@127.0.0.1:55432/{name}"


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The session's PostgreSQL server: its admin URL (libpq form)."""
    return pg_admin_url()


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test: its SQLAlchemy URL (asyncpg)."""
    import subprocess

    url = new_pg_database()
    yield url
    name = url.rsplit("/", 1)[1]
    subprocess.run(
        ["psql", "-qX", pg_server, "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
        check=False,
    )
