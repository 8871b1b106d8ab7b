"""`mailsvc backup` while the service runs, then `mailsvc restore` into a wiped var_dir, on a
private stack: councillors log in with their passwords, the receipts and the queue are as they
were, and a message that was waiting for the mailbox store is delivered after the restore."""

from __future__ import annotations

import asyncio
import email
import shutil
import stat
import tarfile
from collections.abc import Callable
from email import policy
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from mailsvc.app import open_parts, start_service
from mailsvc.backup import directory as backup_directory
from mailsvc.cli.main import build_parser
from mailsvc.config import Settings
from mailsvc.directory.councillors import Councillors
from mailsvc.domain.receipt_states import EventKind
from mailsvc.mailbox import read_inbox
from mailsvc.stack import LocalStack, free_ports
from mailsvc.storage.register import os_audit_context
from mailsvc.storage.spool import spool_path
from provisioning.directory import Directory
from provisioning.passwords import ssha_hash
from tests.conftest import new_pg_database
from tests.integration.conftest import (
    _wipe_directory,
    make_message,
    smtp_send,
    wait_for_deliveries,
    wait_for_inbox,
)
from tests.integration.test_distribution_flow import (
    _all_have,
    session_with_pdf,
    subject_count,
    wait_until,
)

pytestmark = pytest.mark.asyncio


def _cli(settings: Settings, *argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    result: int = args.func(settings, args)
    return result


def _members(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


async def _states(settings: Settings, number: str) -> dict[str, EventKind]:
    async with open_parts(settings) as parts:
        matrix = await parts.distributions().matrix(number)
    return {row.address: row.cells[0].state.state for row in matrix.rows}


def _on(database: str, settings: Settings) -> Settings:
    """``database``: "suite", the suite's (SQLite, or with MAILSVC_TEST_DATABASE=postgresql a
    database of the tests' own cluster); "stack", the stack's own PostgreSQL cluster."""
    if database == "stack":
        (pg_port,) = free_ports(1)
        return settings.with_changes(
            stack={"database": "postgresql", "pg_port": pg_port}, database={"url": ""}
        )
    return settings


@pytest.mark.parametrize(
    "database",
    # The stack's cluster is the same in both passes of `make test`: the first runs it.
    ["suite", pytest.param("stack", marks=pytest.mark.no_database)],
)
async def test_backup_while_running_then_restore_into_an_empty_var_dir(
    new_stack_settings: Callable[[], Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    database: str,
) -> None:
    settings = _on(database, new_stack_settings()).with_changes(
        language="en",
        # A body over 1 KiB goes to its own spool file: the queue's files must come back too.
        smtp={"port": 0, "authentication_checks": False, "spool_threshold": 1024},
        submission={"port": 0},
        web={"port": 0},
        delivery={"retry_initial": 0.3, "retry_max_interval": 1.0, "separate_process": False},
        provisioning={"argon2_memory_kib": 1024, "argon2_time_cost": 1},
        relay={"acknowledge": False},
        distribution={"sync_interval": 0.5, "imap_check_interval": 0.0, "reminders": ""},
    )
    stack = LocalStack(settings)
    await asyncio.to_thread(stack.up)
    archive = tmp_path / "backup.tar.gz"
    long_body = "".join(f"Linia {n} pisma mieszkańca o dziurze w jezdni.\n" for n in range(400))

    async with open_parts(settings) as parts:
        accounts = Councillors(settings, parts.directory, parts.register)
        people = [
            await accounts.add(given, surname, os_audit_context("pytest"))
            for given, surname in (("Łukasz", "Żółć"), ("Anna", "Nowak"))
        ]
        session, _ = await session_with_pdf(parts, tmp_path)
        service = await start_service(settings)
        try:
            svc = service.parts.distributions()
            dist = await svc.schedule(session.number, actor="pytest")
            assert await wait_until(lambda: _all_have(svc.store, dist.id, EventKind.DELIVERED, 2))
            recipients = {r.address: r for r in await svc.store.recipients(dist.id)}
            assert await svc.acknowledge(recipients[people[1].address].id, dist.id, "pytest")

            # The mailbox store goes away: the next message waits in the queue (deferred).
            await asyncio.to_thread(stack.stop_service, "dovecot")
            msg = make_message(people[0].address, "Dziura w jezdni", long_body)
            assert await smtp_send(service.smtp_port, [people[0].address], msg) == {}
            rows = await wait_for_deliveries(parts.queue, {"deferred"})
            assert [r.status for r in rows if r.recipient == people[0].address][-1] == "deferred"
            spooled = await parts.queue.spool_files_in_use()
            assert len(spooled) == 1

            # Backed up while the service runs (and keeps retrying that delivery).
            assert (
                await asyncio.to_thread(_cli, settings, "backup", str(archive), "--mailboxes") == 0
            )
        finally:
            await service.stop()

    out = capsys.readouterr().out
    assert f"Backup written: {archive}" in out
    assert "user directory (slapcat):" in out and "queue (large bodies" in out
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    receipts = await _states(settings, session.number)
    assert receipts == {
        people[0].address: EventKind.DELIVERED,
        people[1].address: EventKind.ACKNOWLEDGED,
    }

    kind = make_url(settings.database_url).get_backend_name()
    assert f"database ({kind}" in out
    if database == "stack":
        assert not any(name.startswith("var/postgres/") for name in _members(archive))

    # Disaster: everything under var_dir is gone (and a server's database with it).
    await asyncio.to_thread(stack.down)
    shutil.rmtree(settings.var_dir)
    if settings.database.url.startswith("postgresql"):
        settings = settings.with_changes(database={"url": new_pg_database()})
    assert await asyncio.to_thread(_cli, settings, "restore", str(archive)) == 0
    restored = capsys.readouterr().out
    assert "Restored the backup" in restored
    if database == "stack":  # made anew from the saved secrets, loaded, and stopped again
        assert (settings.var_dir / "postgres" / "initialized").is_file()
        assert not {s.name: s for s in stack.status()}["postgres"].running
    assert spool_path(settings.var_dir, spooled.pop()).is_file()
    await asyncio.to_thread(stack.up)

    # Councillors log in with their own passwords; the distribution is in their mailboxes.
    for person in people:
        inbox = await read_inbox(
            settings.stack.host, settings.stack.imap_port, person.address, person.password
        )
        assert subject_count(inbox, "XV/2026") == 1, person.address
    assert await _states(settings, session.number) == receipts

    # The waiting message is still queued and goes out once the service runs again.
    service = await start_service(settings)
    try:
        inbox = await wait_for_inbox(settings, people[0].address, people[0].password, count=2)
        delivered = [
            email.message_from_bytes(raw, policy=policy.default)
            for raw in inbox
            if b"Dziura w jezdni" in raw
        ]
        assert len(delivered) == 1
        body = delivered[0].get_content()  # type: ignore[attr-defined]
        assert body.replace("\r\n", "\n") == long_body
    finally:
        await service.stop()


async def test_a_system_directory_is_exported_over_ldap_and_added_back_when_empty(
    settings: Settings,
    directory: Directory,
    tmp_path: Path,
) -> None:
    # The session's slapd seen as a directory the service does not run (directory.url set).
    system = settings.with_changes(directory={"url": settings.ldap_url})
    password = "Wiosna-2026-Rada"
    await directory.ensure_base_tree()
    dn = await directory.add_councillor(
        local_part="anna.nowak",
        address=f"anna.nowak@{settings.domain}",
        given_name="Anna",
        surname="Nowak",
        password=password,
        password_hash=ssha_hash(password),  # fast; what is kept is the hash as stored
    )
    await directory.sync_group("radni", [dn], "Wszyscy radni")
    exported = await backup_directory.export(system, tmp_path)
    assert exported.kind == "ldap" and exported.file is not None
    text = exported.file.read_text(encoding="utf-8")
    assert f"dn: {dn}" in text and "userPassword: {" in text  # the hash, not a password
    assert stat.S_IMODE(exported.file.stat().st_mode) == 0o600

    added, note = await backup_directory.readd(system, exported.file)
    assert added == 0 and "already holds entries below" in note  # nothing is overwritten

    await _wipe_directory(directory)
    added, note = await backup_directory.readd(system, exported.file)
    # Everything but the three containers, which the wipe left: the councillor and the group.
    assert note == "" and added == exported.entries - 3 == 2
    assert await directory.check_password(dn, password)
    group = await directory.get_group("radni")
    assert group is not None and group.members == {dn.lower()}
