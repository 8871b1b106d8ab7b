"""The LMTP client against the real Dovecot (pipelined) and a server without PIPELINING."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from mailsvc.config import Settings
from mailsvc.relay.delivery.lmtp import LmtpClient

from .conftest import wait_for_inbox

# Our LMTP client against Dovecot; the database gets the audit rows of the councillors made.
pytestmark = pytest.mark.no_database

BODY = b"From: jan@example.org\r\nSubject: lmtp\r\n\r\n.dot first\r\nline\r\n"


async def test_pipelined_transaction_gives_each_recipient_its_own_reply(
    settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    a = await add_councillor("Anna", "Pierwsza")
    b = await add_councillor("Bartosz", "Drugi")
    nobody = f"nikt@{settings.domain}"
    client = LmtpClient(*settings.lmtp_address)
    try:
        await client.connect()
        assert "PIPELINING" in client.extensions  # Dovecot offers it, as RFC 2033 requires
        replies = await client.deliver("jan@example.org", [a.address, nobody, b.address], BODY)
        assert replies[a.address].ok and replies[b.address].ok
        assert replies[nobody].code == 550
        # Nobody known: no data is sent, and the connection stays usable.
        refused = await client.deliver("jan@example.org", [nobody], BODY)
        assert refused[nobody].code == 550
        again = await client.deliver("jan@example.org", [a.address], BODY)
        assert again[a.address].ok
    finally:
        await client.close()
    inbox_a = await wait_for_inbox(settings, a.address, a.password, count=2)
    assert len(inbox_a) == 2 and all(b"..dot first" not in m for m in inbox_a)
    assert all(b".dot first" in m for m in inbox_a)
    assert len(await wait_for_inbox(settings, b.address, b.password)) == 1


@asynccontextmanager
async def plain_lmtp(seen: list[str]) -> AsyncIterator[int]:
    """An LMTP server without PIPELINING: one command, one reply; rejects x@… recipients."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 test LMTP\r\n")
        accepted = 0
        while line := await reader.readline():
            command = line.decode().rstrip("\r\n")
            seen.append(command)
            verb = command.split(" ", 1)[0].upper()
            if verb == "LHLO":
                writer.write(b"250-test\r\n250 8BITMIME\r\n")
            elif verb == "RCPT":
                ok = "<x@" not in command
                accepted += ok
                writer.write(b"250 2.1.5 ok\r\n" if ok else b"550 5.1.1 no such user\r\n")
            elif verb == "DATA":
                writer.write(b"354 go ahead\r\n")
                while (await reader.readline()) != b".\r\n":
                    pass
                writer.write(b"250 2.0.0 saved\r\n" * accepted)
                accepted = 0
            elif verb == "QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                accepted = 0 if verb == "RSET" else accepted
                writer.write(b"250 2.0.0 ok\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_server_without_pipelining_gets_one_command_at_a_time() -> None:
    seen: list[str] = []
    async with plain_lmtp(seen) as port:
        client = LmtpClient("127.0.0.1", port)
        try:
            replies = await client.deliver("a@example.org", ["r@x.example", "x@y.example"], BODY)
        finally:
            await client.close()
    assert replies["r@x.example"].ok and replies["x@y.example"].code == 550
    verbs = [c.split(" ", 1)[0] for c in seen]
    assert verbs[:5] == ["LHLO", "MAIL", "RCPT", "RCPT", "DATA"]
