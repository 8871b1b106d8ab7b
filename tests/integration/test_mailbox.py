"""Read-only mailbox access (mailsvc.mailbox, `mailsvc mailbox`) against the real Dovecot, and
what aioimaplib 2.0 cannot do on its own, which is why mailsvc.mailbox puts a feed before it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aioimaplib
import pytest

from mailsvc.config import Settings
from mailsvc.directory.councillors import CreatedAccount
from mailsvc.mailbox import MailboxFailure, MailboxUnavailable, open_mailbox, read_inbox
from mailsvc.stack import free_ports

from .test_cli import run_cli
from .test_imapcheck import as_councillor, deliver, flags_seen_by_councillor, ok, scripted_server

# Dovecot over IMAP only; run against Samba's AD DC too (make test-samba).
pytestmark = [pytest.mark.integration, pytest.mark.no_database, pytest.mark.directory]


async def test_mailbox_command_lists_without_marking_anything_read(
    settings: Settings, add_councillor: Callable[[str, str], Any]
) -> None:
    account: CreatedAccount = await add_councillor("Łukasz", "Żółć")
    ids = ["<cli-1@rada.miasto.example>", "<cli-2@rada.miasto.example>"]
    await deliver(settings, account, *ids)

    proc = await asyncio.to_thread(
        run_cli, settings, "mailbox", "--user", account.address, "--password", account.password
    )
    assert proc.returncode == 0, proc.stderr
    assert "Zawiadomienie o sesji nr 1" in proc.stdout
    assert "Zawiadomienie o sesji nr 2" in proc.stdout
    # Whole messages too (BODY.PEEK[]), as the tests' own mailbox reader does.
    bodies = await read_inbox(
        settings.stack.host, settings.stack.imap_port, account.address, account.password
    )
    assert [ids[n].encode() in body for n, body in enumerate(bodies)] == [True, True]

    for mid in ids:
        flags = await flags_seen_by_councillor(settings, account, mid)
        assert b"FLAGS (" in flags and b"\\Seen" not in flags


async def test_mailbox_command_with_dovecot_down_fails_cleanly(settings: Settings) -> None:
    (closed,) = free_ports(1)
    proc = await asyncio.to_thread(
        run_cli,
        settings,
        "mailbox",
        "--user",
        "x@y",
        "--password",
        "p",
        MAILSVC_STACK__IMAP_PORT=str(closed),
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"mailsvc: IMAP 127.0.0.1:{closed} unreachable")
    assert "Traceback" not in proc.stderr


async def test_a_server_that_hangs_up_mid_conversation_fails_at_once_not_after_the_timeout() -> (
    None
):
    async def hang_up_at_select(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK ready\r\n")
        while line := await reader.readline():
            tag, verb = line.split()[:2]
            if verb.upper() == b"SELECT":
                return  # the scripted server closes the connection
            caps = b"* CAPABILITY IMAP4rev1\r\n" if verb.upper() == b"CAPABILITY" else b""
            writer.write(caps + tag + b" OK done\r\n")

    async with scripted_server(hang_up_at_select) as port:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(MailboxUnavailable) as info:
            await read_inbox("127.0.0.1", port, "u", "p")
        assert loop.time() - started < 2  # the timeout is 10 s
    assert info.value.failure is MailboxFailure.SERVER_ERROR


# -- what aioimaplib cannot do -------------------------------------------------------------


async def test_aioimaplib_mangles_a_listed_folder_name_with_star_space(
    settings: Settings, add_councillor: Callable[[str, str], Any]
) -> None:
    account: CreatedAccount = await add_councillor("Anna", "Wiśniewska")
    async with as_councillor(settings, account) as client:
        ok(await client.create('"Pilne * sesje"'))
        listed = ok(await client.list('""', '"*"')).lines
    # aioimaplib drops every "* " of an untagged line: a name that does not exist.
    assert b'(\\HasNoChildren) "." "Pilne sesje"' in listed
    assert not any(b"Pilne * sesje" in line for line in listed)

    async with open_mailbox(
        settings.stack.host, settings.stack.imap_port, account.address, account.password
    ) as mailbox:
        assert await mailbox.folders() == [b"INBOX", b"Pilne * sesje"]
        assert await mailbox.select(b"Pilne * sesje") == 0


async def test_aioimaplib_refuses_uid_commands_after_examine(
    settings: Settings, add_councillor: Callable[[str, str], Any]
) -> None:
    account: CreatedAccount = await add_councillor("Jan", "Kowalski")
    client = aioimaplib.IMAP4(settings.stack.host, settings.stack.imap_port, timeout=10)
    await client.wait_hello_from_server()
    try:
        ok(await client.login(account.address, account.password))
        ok(await client.examine("INBOX"))  # Dovecot opened it read-only ...
        with pytest.raises(aioimaplib.Abort, match="illegal in state AUTH"):
            await client.uid_search("ALL", charset=None)  # ... aioimaplib does not know
    finally:
        await client.logout()


async def test_aioimaplib_loses_the_connection_on_thousands_of_lines_in_one_read() -> None:
    names = [b"f%04d" % n for n in range(5000)]

    async def long_list(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK ready\r\n")
        while line := await reader.readline():  # reset by aioimaplib: see below
            tag, verb = line.split()[:2]
            if verb.upper() == b"CAPABILITY":
                writer.write(b"* CAPABILITY IMAP4rev1\r\n")
            elif verb.upper() == b"LIST":  # one write, one read: about 100 KB
                writer.write(b"".join(b'* LIST () "." %s\r\n' % n for n in names))
            writer.write(tag + b" OK done\r\n")
            if verb.upper() == b"LOGOUT":
                return

    async with scripted_server(long_list) as port:
        client = aioimaplib.IMAP4("127.0.0.1", port, timeout=1)
        await client.wait_hello_from_server()
        ok(await client.login("u", "p"))
        # Its parser recurses once per line: RecursionError, and the connection is dropped.
        with pytest.raises(TimeoutError):
            await client.list('""', '"*"')
        client.protocol.transport.close()

        async with open_mailbox("127.0.0.1", port, "u", "p", timeout=5) as mailbox:
            assert sorted(await mailbox.folders()) == names
