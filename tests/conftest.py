"""Fixtures shared by all tests.

Integration tests run against the real local stack (OpenLDAP slapd + Dovecot) that
``mailsvc.stack.LocalStack`` starts from a temporary var_dir on free loopback ports: once per
session (``local_stack``), or privately for tests that stop and start servers
(``new_stack_settings``).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import random
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailsvc.config import DEFAULT_CONFIG, Settings, load_settings
from mailsvc.stack import LocalStack, free_ports
from mailsvc.stack.postgres import PostgresCluster

with warnings.catch_warnings():
    # pyasn1 0.6 deprecates names that ldap3 2.9 still imports. Import it once here, quietly,
    # so that `filterwarnings = error` does not fail whichever test happens to import it first.
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3  # noqa: F401

LOOPBACK = "127.0.0.1"
# Which engine the integration tests' service runs on: "sqlite" (the embedded default) or
# "postgresql" (`make test` runs the suite a second time so).
TEST_DATABASE_ENV = "MAILSVC_TEST_DATABASE"


def _selected(variable: str, choices: tuple[str, ...]) -> str:
    """The value of ``variable``, one of ``choices`` (the first when unset)."""
    value = os.environ.get(variable, "") or choices[0]
    if value not in choices:
        raise pytest.UsageError(f"{variable} must be {' or '.join(choices)}, not {value!r}")
    return value


def selected_database() -> str:
    return _selected(TEST_DATABASE_ENV, ("sqlite", "postgresql"))


# Which directory server the integration tests' stack runs: "openldap" (slapd, the embedded
# default) or "samba" (Samba's AD DC, the service in directory.kind = "ad"; `make test` runs the
# tests marked `directory` a third time so).
TEST_DIRECTORY_ENV = "MAILSVC_TEST_DIRECTORY"


def selected_directory() -> str:
    return _selected(TEST_DIRECTORY_ENV, ("openldap", "samba"))


def free_samba_host() -> str:
    """A loopback address on which all of Samba's fixed ports are free (random, so that two
    test processes, or two runs on one machine, do not meet)."""
    from mailsvc.stack import samba
    from mailsvc.stack.supervise import port_in_use

    for _ in range(50):
        host = f"127.{random.randint(64, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        if not any(port_in_use(host, port) for _, port in samba.PORTS):
            return host
    raise AssertionError(f"ports {samba.PORTS} are taken on every loopback address tried")


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
    samba = {}
    if selected_directory() == "samba":
        samba = {"directory": "samba", "samba_host": free_samba_host()}
    return base.with_changes(
        var_dir=Path(tempfile.mkdtemp(prefix="ms", dir="/tmp")),
        stack={
            **samba,
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
# One private cluster per test process (each xdist worker has its own), started by the stack's
# own code (mailsvc.stack.postgres) on the first use into a temporary var_dir, without fsync
# (durable=False), and stopped at the end of the session. Tests connect as its superuser.
_PG_CLUSTER: dict[str, Settings] = {}
_PG_TEMPLATE: dict[str, str] = {}


def _pg_settings() -> Settings:
    """Settings of this process's cluster, started on the first call."""
    settings = _PG_CLUSTER.get("settings")
    if settings is not None:
        return settings
    (port,) = free_ports(1)
    base = load_settings(DEFAULT_CONFIG, env={})
    settings = base.with_changes(
        var_dir=Path(tempfile.mkdtemp(prefix="mspg", dir="/tmp")),
        stack={"host": LOOPBACK, "pg_port": port, "database": "postgresql"},
    )
    try:
        LocalStack(settings, durable=False).start_service("postgres")
    except BaseException:
        shutil.rmtree(settings.var_dir, ignore_errors=True)
        raise
    _PG_CLUSTER["settings"] = settings
    atexit.register(_stop_pg_cluster)  # also when the session ends without its finaliser
    return settings


def _stop_pg_cluster() -> None:
    settings = _PG_CLUSTER.pop("settings", None)
    _PG_TEMPLATE.clear()
    if settings is None:
        return
    try:
        LocalStack(settings, durable=False).stop_service("postgres")
    finally:
        shutil.rmtree(settings.var_dir, ignore_errors=True)


def _pg_cluster() -> PostgresCluster:
    settings = _pg_settings()
    return LocalStack(settings, durable=False).postgres


def pg_admin_url() -> str:
    """This process's PostgreSQL server: its superuser's URL (libpq form, password included)."""
    return _pg_cluster().url("postgres")


def _sqlalchemy_url(database: str) -> str:
    return "postgresql+asyncpg" + _pg_cluster().url(database).removeprefix("postgresql")


def new_pg_database(template: str | None = None) -> str:
    """A fresh PostgreSQL database on this process's server: its SQLAlchemy URL (asyncpg).
    Empty, or a copy of the database ``template`` (which nobody may be connected to)."""
    name = "t" + uuid.uuid4().hex[:16]
    copy = f" TEMPLATE {template}" if template else ""
    _pg_cluster().psql(f"CREATE DATABASE {name}{copy};\n")
    return _sqlalchemy_url(name)


def migrated_pg_database() -> str:
    """A fresh database already at the schema's head revision, as the service's first start
    would leave it (a copy of a template migrated once per process): its SQLAlchemy URL."""
    template = _PG_TEMPLATE.get("name")
    if template is None:
        url = new_pg_database()
        asyncio.run(upgrade_schema(url))
        template = url.rsplit("/", 1)[1]
        _PG_TEMPLATE["name"] = template
    return new_pg_database(template)


async def upgrade_schema(url: str) -> None:
    """Migrate the database at ``url`` to the schema's head."""
    from mailsvc.storage import schema
    from mailsvc.storage.db import create_engine

    engine = create_engine(url)
    try:
        await schema.upgrade(engine)
    finally:
        await engine.dispose()


def drop_pg_database(url: str) -> None:
    """Drop a database new_pg_database() made, disconnecting whoever is still on it."""
    name = url.rsplit("/", 1)[1]
    _pg_cluster().psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);\n")


@pytest.fixture(scope="session", autouse=True)
def _pg_cluster_stopped() -> Iterator[None]:
    """Stops this process's cluster at the end of the session, if a test started it."""
    yield
    _stop_pg_cluster()


@pytest.fixture(scope="session")
def pg_server() -> str:
    """This process's PostgreSQL server: its superuser's URL (libpq form)."""
    return pg_admin_url()


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test: its SQLAlchemy URL (asyncpg)."""
    url = new_pg_database()
    yield url
    drop_pg_database(url)
