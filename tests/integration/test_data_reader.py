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

from mailsvc.relay.smtp.server import ConnectionLimiter, CouncilSMTP

# Not in the PostgreSQL pass (make test-postgresql): the DATA reader over TCP only.
pytestmark = pytest.mark.no_database

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
        # As smtp-source writes: 4 KB at a time (pieces that cannot end the body are buffered
        # without waking the reader).
        [HEAD, *(LINES[i : i + 4096] for i in range(0, 100_000, 4096)), b".\r\nQUIT\r\n"],
        [HEAD, b"ab\r\n.", b"\r", b"\nQUIT\r\n"],  # the end split over three pieces
        [HEAD, b"a.", b"\r\n", b"b\r\n.\r", b"\nQUIT\r\n"],  # "." CRLF not at a line start
    ],
    ids=[
        "stuffed",
        "pipelined",
        "split-crlf",
        "split-dot",
        "bare",
        "long-line",
        "oversize",
        "4k-pieces",
        "split-end",
        "mid-line-dot",
    ],
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


async def test_a_body_in_small_pieces_wakes_the_reader_only_near_its_end() -> None:
    """smtp-source writes a 100 KB message 4 KB at a time: 25 arrivals. Only a piece that may
    end the body (or the reader's limit) wakes the body reader."""
    fed: list[int] = []

    class Counting(CouncilSMTP):
        counting = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            reader: Any = self._reader
            original = reader.feed_data

            def feed(data: bytes) -> None:
                if self.counting:
                    fed.append(len(data))
                original(data)

            reader.feed_data = feed

        async def smtp_DATA(self, arg: str) -> None:
            self.counting = True
            try:
                await super().smtp_DATA(arg)
            finally:
                self.counting = False

    recorder = Recorder()
    server = await asyncio.get_running_loop().create_server(
        lambda: Counting(
            recorder,
            limiter=ConnectionLimiter(10, 10),
            max_bad_commands=10,
            data_size_limit=LIMIT,
            decode_data=False,
            hostname="mx.test",
            timeout=30,
        ),
        "127.0.0.1",
        0,
    )
    try:
        body = (LINES * 2)[:100_000] + b"\r\n"
        pieces = [body[i : i + 4096] for i in range(0, len(body), 4096)]
        replies = await converse(
            server.sockets[0].getsockname()[1], [HEAD, *pieces, b".\r\nQUIT\r\n"]
        )
    finally:
        server.close()
        await server.wait_closed()
    assert replies.endswith(b"250 2.0.0 queued\r\n221 Bye\r\n")
    assert recorder.seen == [(body.replace(b"\r\n..", b"\r\n."), b"QUIT\r\n")]
    assert len(pieces) == 25
    assert 1 <= len(fed) <= 3  # the end, and at most twice for the reader's 64 KB limit
