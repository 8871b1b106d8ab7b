"""The chunked DATA reader over real loopback TCP, next to aiosmtpd's own reader.

Two servers run in the test's loop: CouncilSMTP as shipped, and CouncilSMTP with aiosmtpd's
``SMTP.smtp_DATA``. Each client stream goes to both, written in pieces with pauses so that the
server's reads end at chosen places; replies and what the handler sees must be identical.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailsvc.smtp.server import ConnectionLimiter, CouncilSMTP

LIMIT = 200_000


class Reference(CouncilSMTP):
    smtp_DATA = SMTP.smtp_DATA


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert envelope.original_content is not None
        unread = bytes(server._reader._buffer)  # type: ignore[attr-defined]
        self.seen.append((envelope.original_content, unread))
        return "250 2.0.0 queued"


Pair = dict[str, tuple[int, Recorder]]


@pytest.fixture
async def servers() -> AsyncIterator[Pair]:
    loop = asyncio.get_running_loop()
    pair: Pair = {}
    started = []
    for name, cls in (("aiosmtpd", Reference), ("mailsvc", CouncilSMTP)):
        recorder = Recorder()

        def make(cls: type[CouncilSMTP] = cls, recorder: Recorder = recorder) -> SMTP:
            return cls(
                recorder,
                limiter=ConnectionLimiter(100, 100),
                max_bad_commands=1000,
                data_size_limit=LIMIT,
                enable_SMTPUTF8=True,
                decode_data=False,
                hostname="mx.test",
                ident="t",
                timeout=30,
            )

        server = await loop.create_server(make, "127.0.0.1", 0)
        started.append(server)
        pair[name] = (server.sockets[0].getsockname()[1], recorder)
    yield pair
    for server in started:
        server.close()
        await server.wait_closed()


async def converse(port: int, pieces: list[bytes]) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.005)  # a separate read on the server
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()


async def both(servers: Pair, pieces: list[bytes]) -> tuple[bytes, list[Any]]:
    results = []
    for port, recorder in servers.values():
        recorder.seen.clear()
        replies = await converse(port, pieces)
        results.append((replies, list(recorder.seen)))
    assert results[0] == results[1]
    return results[1]


HEAD = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n"
LINES = b"".join(
    b"%05d plain text line, then a stuffed one\r\n..%05d\r\n" % (i, i) for i in range(1500)
)


@pytest.mark.parametrize(
    "pieces",
    [
        [HEAD, LINES, b".\r\nQUIT\r\n"],
        [HEAD + LINES + b".\r\nNOOP\r\n" + HEAD[13:] + b"second\r\n.\r\nQUIT\r\n"],
        [HEAD, b"a\r", b"\n", b".", b"\r", b"\nQUIT\r\n"],
        [HEAD, b"a\r\n.", b"\r\n", b"QUIT\r\n"],
        [HEAD, b"a\n.\nb\r.\rc\r\n.\nd\n.\r\ne\r.\r\n", b"f\r\n\x00.\r\n", b"\r\n.\r\nQUIT\r\n"],
        [HEAD, b"x" * 5000, b"\r\n.\r\nQUIT\r\n"],
        [HEAD, LINES * 3, b".\r\nNOOP\r\nQUIT\r\n"],  # over the size limit: 552 5.3.4
    ],
    ids=["stuffed", "pipelined", "split-crlf", "split-dot", "bare", "long-line", "oversize"],
)
async def test_same_replies_and_content_over_tcp(servers: Pair, pieces: list[bytes]) -> None:
    replies, seen = await both(servers, pieces)
    assert replies.startswith(b"220 ") and replies.endswith(b"221 Bye\r\n")
    if len(b"".join(pieces)) > LIMIT:
        assert b"552 5.3.4 " in replies and seen == []
    elif b"x" * 5000 in pieces:
        assert b"500 5.5.2 Line too long\r\n" in replies and seen == []
    else:
        assert seen and b"250 2.0.0 queued\r\n" in replies


async def test_a_100_kb_message_in_one_write(servers: Pair) -> None:
    body = LINES[:100_000] + b"\r\n"
    replies, seen = await both(servers, [HEAD + body + b".\r\nQUIT\r\n"])
    assert seen == [(body.replace(b"\r\n..", b"\r\n."), b"QUIT\r\n")]
    assert replies.endswith(b"250 2.0.0 queued\r\n221 Bye\r\n")
