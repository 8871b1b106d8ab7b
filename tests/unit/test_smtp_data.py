"""CouncilSMTP.smtp_DATA (chunked) against aiosmtpd's own SMTP.smtp_DATA (line by line).

Both run on the same in-memory transport, fed the same bytes in the same pieces; the replies,
what the handler sees (original_content, content, what is still unread in the stream) and the
reader's buffer at the end must be identical for every input and every way of cutting it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailsvc.relay.smtp.server import ConnectionLimiter, CouncilSMTP


class Reference(CouncilSMTP):
    """CouncilSMTP with aiosmtpd's DATA."""

    smtp_DATA = SMTP.smtp_DATA


class MemoryTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.7", 2525) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[bytes, bytes | str, bytes]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert envelope.original_content is not None and envelope.content is not None
        unread = bytes(server._reader._buffer)  # type: ignore[attr-defined]
        self.seen.append((envelope.original_content, envelope.content, unread))
        return "250 2.0.0 queued"


Config = tuple[int | None, bool, bool]  # data_size_limit, decode_data, enable_SMTPUTF8
Outcome = tuple[bytes, list[tuple[bytes, bytes | str, bytes]], bytes, bool]


async def _settle(proto: SMTP) -> None:
    """Let the protocol task run until it waits for more data (or ends)."""
    task = proto._handler_coroutine
    reader: Any = proto._reader
    for _ in range(200):
        await asyncio.sleep(0)
        if task is None or task.done() or reader._waiter is not None:
            return


async def run(
    cls: type[CouncilSMTP], pieces: list[bytes], config: Config, end: str = ""
) -> Outcome:
    size_limit, decode, utf8 = config
    recorder = Recorder()
    proto = cls(
        recorder,
        limiter=ConnectionLimiter(10, 10),
        max_bad_commands=10_000,
        data_size_limit=size_limit,
        decode_data=decode,
        enable_SMTPUTF8=utf8,
        hostname="mx.test",
        ident="t",
        timeout=60,
    )
    transport = MemoryTransport()
    proto.connection_made(transport)
    await _settle(proto)
    for piece in pieces:
        proto.data_received(piece)
        await _settle(proto)
    if end == "eof":
        proto.eof_received()
        await _settle(proto)
    unread = bytes(proto._reader._buffer)  # type: ignore[attr-defined]
    if transport.out.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n"):
        # Still inside DATA: how much of the body sits in the reader rather than in the
        # reading code is nobody's business (the body ends later or never).
        unread = b"(inside DATA)"
    proto.connection_lost(None)
    await _settle(proto)
    return bytes(transport.out), recorder.seen, unread, transport.closed


async def same(pieces: list[bytes], config: Config, end: str = "") -> Outcome:
    expected = await run(Reference, pieces, config, end)
    got = await run(CouncilSMTP, pieces, config, end)
    assert got == expected, (pieces, config, end)
    return got


HEAD = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n"
AGAIN = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nSubject: spoof\r\n\r\nx\r\n.\r\n"
SMUGGLING = [
    b"\n.\n",
    b"\r.\r",
    b"\r.\n",
    b"\n.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
]
SIZE = 1003

BODIES: list[bytes] = [
    *(b"Subject: a\r\n\r\nhello" + v + AGAIN + b"QUIT\r\n" for v in SMUGGLING),
    *(v.lstrip(b"\r\n") + AGAIN for v in SMUGGLING),
    *(b"x" + v + b"more\r\n.\r\nQUIT\r\n" for v in SMUGGLING),
    b".\r\n",
    b".\r\nQUIT\r\n",
    b"..\r\n.\r\n",
    b"..a\r\n...\r\n.x\r\n. \r\n.\r\nNOOP\r\n",
    b"abc.\r\nQUIT\r\n",
    b"abc.\r\n.\r\n",
    b"abc\r.\r\n.\r\n",
    b"\r\r\n.\r\n",
    b"\r\n\r\n.\r\n",
    b"\r\n.\r\n",
    b"a\x00b\r\n\x00\r\n.\r\n",
    b"\xff\xfe caf\xc3\xa9\r\n.\r\n",
    b"hi\r\n.\r\nNOOP\r\n" + AGAIN + b"QUIT\r\n",
    b"hi\r\n.\r\n",
    b"hi\r\n.",
    b"hi\r\n.\r",
    b"hi",
    *(b"x" * n + b"\r\n.\r\nQUIT\r\n" for n in (997, 998, 999, 1000, 1001, 1002, 1003, 2000, 5000)),
    *(b"ok\r\n" + b"." * n + b"\r\n.\r\n" for n in (999, 1000, 1001, 1002)),
    *(b"y" * n + b".\r\n.\r\n" for n in (998, 999, 1000, 1001, 1002, 1003)),
    *(b"z" * n + b"\r\r\n.\r\n" for n in (998, 999, 1000, 1001, 1002)),
    b"x" * 1500 + b"\r\n.\r\n" + b"y" * 3000 + b"\r\n.\r\n",
    b"x" * 3000 + b".\r\n" * 3 + b"\r\n.\r\n",
    # around the size limit: exactly at it, one over, then a long line, and the reverse
    b"a" * (SIZE - 2) + b"\r\n.\r\n",
    b"a" * (SIZE - 3) + b"\r\n.\r\n",
    b"a" * 500 + b"\r\n" + b"b" * (SIZE - 504) + b"\r\n.\r\n",
    b"a" * 500 + b"\r\n" + b"b" * (SIZE - 503) + b"\r\n.\r\n",
    b"a" * 900 + b"\r\n" + b"b" * 1000 + b"\r\n.\r\n",
    b"a" * 900 + b"\r\n" + b"b" * 2000 + b"\r\n.\r\n",
    b"b" * 2000 + b"\r\n" + b"a" * 900 + b"\r\n.\r\n",
    (b"line of text\r\n" * 200) + b".\r\nQUIT\r\n",
]
CONFIGS: list[Config] = [(None, False, True), (SIZE, False, True), (64, True, False)]


def cuts(stream: bytes, seed: int) -> Iterator[list[bytes]]:
    """The ways a stream is handed over: whole, byte by byte, in two at interesting places."""
    yield [stream]
    if len(stream) <= 1200:
        yield [stream[i : i + 1] for i in range(len(stream))]
    places: set[int] = set()
    for mark in (b".", b"\r", b"\n"):
        start = stream.find(mark)
        while start != -1 and len(places) < 60:
            places.update(range(max(1, start - 2), min(len(stream), start + 3)))
            start = stream.find(mark, start + 1)
    for at in sorted(places):
        yield [stream[:at], stream[at:]]
    rnd = random.Random(seed)
    for _ in range(3):
        pieces, rest = [], stream
        while rest:
            n = rnd.choice((1, 2, 3, 7, 64, 1000, 1004, 4096))
            pieces.append(rest[:n])
            rest = rest[n:]
        yield pieces


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("index", range(len(BODIES)))
async def test_same_as_aiosmtpd_for_tricky_bodies(index: int, config: Config) -> None:
    body = BODIES[index]
    for pieces in cuts(body, index):
        await same([HEAD, *pieces], config)
    await same([HEAD + body], config, end="eof")


async def test_only_crlf_dot_crlf_ends_data() -> None:
    for variant in SMUGGLING:
        stream = b"Subject: a\r\n\r\nhello" + variant + AGAIN + b"QUIT\r\n"
        replies, seen, _, _ = await same([HEAD, stream], (None, False, True))
        # One message, holding the smuggled commands as text; no second MAIL/RCPT/DATA reply.
        assert replies.count(b"250 2.0.0 queued") == 1 and replies.count(b"354 ") == 1
        assert len(seen) == 1 and b"MAIL FROM:<evil@x.test>\r\n" in seen[0][0]
        assert seen[0][0].endswith(b"spoof\r\n\r\nx\r\n") and seen[0][2] == b"QUIT\r\n"


async def test_dot_stuffing_pipelining_and_limits_as_seen_by_the_handler() -> None:
    replies, seen, _, _ = await same([HEAD + b"..\r\n...a\r\n.\r\nQUIT\r\n"], (None, False, True))
    assert seen == [(b".\r\n..a\r\n", b".\r\n..a\r\n", b"QUIT\r\n")]
    assert replies.endswith(b"250 2.0.0 queued\r\n221 Bye\r\n")
    replies, seen, _, _ = await same([HEAD + b"x" * 1000 + b"\r\n.\r\nNOOP\r\n"], (0, False, True))
    assert seen == [] and b"500 5.5.2 Line too long\r\n250 OK\r\n" in replies
    replies, _, _, _ = await same([HEAD + b"x" * 999 + b"\r\n.\r\n"], (1001, False, True))
    assert replies.endswith(b"250 2.0.0 queued\r\n")
    replies, _, _, _ = await same([HEAD + b"x" * 999 + b"\r\n.\r\n"], (1000, False, True))
    assert replies.endswith(b"552 5.3.4 Message too big for this system\r\n")


@pytest.mark.parametrize(
    "commands",
    [
        b"DATA\r\n",
        b"EHLO c.test\r\nDATA\r\n",
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nDATA\r\n",
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA now\r\n",
    ],
)
async def test_checks_before_354_are_the_same(commands: bytes) -> None:
    await same([commands + b"x\r\n.\r\n"], (None, False, True))


async def test_connection_lost_during_data_is_the_same() -> None:
    for body in (b"", b"half a line", b"a line\r\n", b"x" * 3000, b"a\r\n."):
        _, seen, _, closed = await same([HEAD, body], (None, False, True), end="eof")
        assert seen == [] and closed


TOKENS = [
    b"\r\n",
    b"\r\n",
    b"\r",
    b"\n",
    b".",
    b".",
    b"..",
    b"\r\n.\r\n",
    b"\x00",
    b"a",
    b"text ",
    b"QUIT\r\n",
    b"x" * 300,
    b"y" * 997,
    b"z" * 1000,
]


def test_random_streams_are_the_same() -> None:
    async def main() -> None:
        rnd = random.Random(20261126)
        for case in range(400):
            stream = b"".join(rnd.choice(TOKENS) for _ in range(rnd.randint(0, 40)))
            config: Config = (rnd.choice((None, 0, 50, 500, 1500, 4000)), False, True)
            pieces, rest = [], stream
            while rest:
                n = rnd.choice((1, 2, 3, 5, 100, 1001, 1003, 5000))
                pieces.append(rest[:n])
                rest = rest[n:]
            await same([HEAD, *pieces], config, end=rnd.choice(("", "", "eof")))
            await same([HEAD + stream], config)
            assert case >= 0

    asyncio.run(main())
