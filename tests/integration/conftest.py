"""Fixtures for the service on the real local stack (slapd + Dovecot from tests/conftest.py)."""

from __future__ import annotations

import asyncio
import atexit
import shutil
import smtplib
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailsvc.app import Parts, Service, open_directory, open_parts, start_service
from mailsvc.config import Settings
from mailsvc.directory.councillors import Councillors, CreatedAccount
from mailsvc.mailbox import read_inbox
from mailsvc.storage.db import private_database_file
from mailsvc.storage.register import os_audit_context
from provisioning.directory import Directory
from tests.conftest import migrated_pg_database, selected_database, upgrade_schema


def service_database_url(tmp_path: Path) -> str:
    """A fresh database for one test's service: SQLite under ``tmp_path``, or a new database on
    the session's PostgreSQL when the suite runs with MAILSVC_TEST_DATABASE=postgresql. Either is
    already at the schema's head, as the first start would leave it: a copy of a template
    migrated once per process is several times faster than migrating each. (The first start on
    an empty database: tests/unit/test_schema.py, test_wheel_install.py, test_init.py.)"""
    if selected_database() == "postgresql":
        return migrated_pg_database()
    database = tmp_path / "mailsvc.db"
    shutil.copyfile(_migrated_sqlite_template(), database)
    private_database_file(str(database))
    return f"sqlite+aiosqlite:///{database}"


_SQLITE_TEMPLATE: dict[str, Path] = {}


def _migrated_sqlite_template() -> Path:
    """A SQLite file at the schema's head, made once per process and removed at its exit."""
    template = _SQLITE_TEMPLATE.get("path")
    if template is None:
        template = Path(tempfile.mkdtemp(prefix="mssq", dir="/tmp")) / "head.db"
        atexit.register(shutil.rmtree, template.parent, True)
        # In a thread of its own: the caller may be a test's coroutine, in a running loop.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, upgrade_schema(f"sqlite+aiosqlite:///{template}")).result()
        # The last connection closed has checkpointed the WAL: the file alone is the database.
        assert not template.with_name(template.name + "-wal").exists()
        _SQLITE_TEMPLATE["path"] = template
    return template


@pytest.fixture
def settings(stack_settings: Settings, local_stack: Any, tmp_path: Path) -> Settings:
    """Per test: its own database, fast retries, any free SMTP port."""
    return stack_settings.with_changes(
        # Cache off: tests change the directory and expect the next RCPT to see it.
        # No SPF/DKIM/DMARC lookups against the machine's resolver: the test that covers them
        # runs its own DNS server.
        smtp={"port": 0, "directory_cache_seconds": 0.0, "authentication_checks": False},
        submission={"port": 0},
        database={"url": service_database_url(tmp_path)},
        delivery={"retry_initial": 0.3, "retry_max_interval": 1.0, "workers": 2},
        # Acknowledgements queue mail of their own; the tests about them turn them on.
        relay={"acknowledge": False},
        web={"port": 0},
        # Distribution jobs: look at the table often; the IMAP check and reminders are run
        # by the tests that cover them.
        distribution={"sync_interval": 0.5, "imap_check_interval": 0.0, "reminders": ""},
    )


async def _wipe_directory(directory: Directory) -> None:
    for entry in await directory.list_councillors():
        await directory.delete(entry.dn)
    for entry in await directory.list_staff():
        await directory.delete(entry.dn)
    for group in await directory.list_groups():
        await directory.delete(group.dn)


@pytest.fixture
async def directory(settings: Settings) -> AsyncIterator[Directory]:
    """The real directory, emptied of councillors and mailboxes before and after each test."""
    d = open_directory(settings)
    await _wipe_directory(d)
    shutil.rmtree(settings.var_dir / "mail" / settings.domain, ignore_errors=True)
    yield d
    await _wipe_directory(d)
    shutil.rmtree(settings.var_dir / "mail" / settings.domain, ignore_errors=True)
    await d.close()


@pytest.fixture
def add_councillor(parts: Parts) -> Callable[[str, str], Any]:
    """Create a mailbox the way `mailsvc councillors add` does, without the welcome message."""
    service = Councillors(parts.settings, parts.directory, parts.register)

    async def add(given: str, surname: str) -> CreatedAccount:
        return await service.add(given, surname, os_audit_context("pytest"))

    return add


@pytest.fixture
async def parts(settings: Settings, directory: Directory) -> AsyncIterator[Parts]:
    """Database, directory, register and queue as the clerk commands open them."""
    async with open_parts(settings) as p:
        yield p


@pytest.fixture
async def service(settings: Settings, directory: Directory) -> AsyncIterator[Service]:
    svc = await start_service(settings)
    yield svc
    await svc.stop()


def make_message(to: str, subject: str, body: str = "Dzień dobry.\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Jan Mieszkaniec <jan@example.org>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


async def smtp_send(
    port: int, recipients: Sequence[str], msg: EmailMessage, host: str = "127.0.0.1"
) -> dict[str, tuple[int, bytes]]:
    """Send with the standard library's real SMTP client (in a thread); returns refusals."""

    def send() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP(host, port, timeout=30) as client:
            client.ehlo("resident.example.org")
            return client.send_message(msg, "jan@example.org", list(recipients))

    return await asyncio.to_thread(send)


async def wait_for_inbox(
    settings: Settings, user: str, password: str, count: int = 1, within: float = 15.0
) -> list[bytes]:
    """Poll the mailbox over IMAP until ``count`` messages are there."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = await read_inbox(settings.stack.host, settings.stack.imap_port, user, password)
        if len(found) >= count or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.1)


async def wait_for_deliveries(
    queue: Any, statuses: set[str], count: int = 1, within: float = 15.0
) -> list[Any]:
    """Poll the queue until ``count`` deliveries are in one of ``statuses``.

    IMAP can show a message a moment before the worker has recorded the LMTP reply.
    """
    deadline = asyncio.get_running_loop().time() + within
    while True:
        rows = await queue.list_deliveries()
        if sum(r.status in statuses for r in rows) >= count:
            return list(rows)
        if asyncio.get_running_loop().time() > deadline:
            return list(rows)
        await asyncio.sleep(0.05)
