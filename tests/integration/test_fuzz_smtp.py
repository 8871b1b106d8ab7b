"""Fuzzing the inbound SMTP door on the wire (issue #13): the real service on the real stack,
random command lines, random bytes and pipelined garbage over raw sockets.

Every line gets a well-formed reply (a code, then printable text) until the server says 221 or
421 and closes; no reply is aiosmtpd's "500 Error: (SomeException) …" for an exception a
handler let escape, nothing is logged as an error, the event loop reports no lost exception,
and a fresh connection is served normally afterwards. A line of megabytes is refused with a
bounded buffer.

Hypothesis runs in a worker thread with blocking sockets; the service runs on the test's loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailsvc.app import Service

# Enough to walk every command and its odd arguments, and to stay near half a minute.
FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
_REPLY_LINE = re.compile(rb"[2-5][0-9][0-9](?:[ -][^\x00-\x08\x0a-\x1f\x7f]*)?")
# aiosmtpd's reply when a handler lets an exception escape: "500 Error: (KeyError) 'x'".
_ESCAPED = re.compile(rb"^[45]\d\d(?: \d\.\d\.\d)? Error: \(\w+\)")


class Wire:
    """A blocking SMTP client that sends exactly the bytes it is given."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.buffer = b""
        self.seen: list[bytes] = []  # every reply line, for the checks

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:  # the server closed first (after a 421): its replies are still read
            return False

    def _line(self) -> bytes | None:
        while b"\r\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                assert not self.buffer, f"unterminated reply {self.buffer!r}"
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        assert _REPLY_LINE.fullmatch(line), f"malformed reply line {line!r}"
        assert not _ESCAPED.match(line), f"an exception escaped: {line!r}"
        self.seen.append(line)
        return line

    def reply(self) -> bytes | None:
        """The last line of the next reply (its code decides), None when the server closed."""
        while True:
            line = self._line()
            if line is None or line[3:4] != b"-":
                return line

    def closed(self) -> bool:
        return self._line() is None


def ending_ok(code: bytes) -> bool:
    return code[:3] in (b"221", b"421")


# --- What is sent ---------------------------------------------------------------------------

VERBS = [b"EHLO", b"HELO", b"MAIL FROM:", b"RCPT TO:", b"DATA", b"RSET", b"NOOP", b"VRFY",
         b"EXPN", b"HELP", b"QUIT", b"STARTTLS", b"AUTH", b"BDAT", b"XCLIENT", b"mail from:",
         b"rcpt to:"]  # fmt: skip
PIECES = [b"<>", b"<a@example.org>", b"<bounces+abc@rada.miasto.example>", b"<@x,@y:a@b.c>",
          b"<a\x00b@example.org>", b'<"a b"@example.org>', b"<\xc5\x82@rada.miasto.example>",
          b" SIZE=99999999999", b" BODY=8BITMIME", b" SMTPUTF8", b" PLAIN AGVt", b"=", b"\t",
          b"\xff\xfe", b"\r", b"client.example.org", b"[127.0.0.1]", b"<" * 40, b" " * 30,
          b"x" * 600, b"<postmaster>", b"(comment)"]  # fmt: skip
ARGUMENT = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=20)), max_size=5).map(
    b"".join
)
COMMAND = st.one_of(
    st.builds(lambda verb, arg: verb + arg, st.sampled_from(VERBS), ARGUMENT),
    st.builds(lambda verb, arg: verb + b" " + arg, st.sampled_from(VERBS), ARGUMENT),
    st.binary(max_size=60),
    st.binary(min_size=1000, max_size=3000),  # over the 1001-byte line limit
).map(lambda line: line.replace(b"\n", b" "))
ENDING = st.sampled_from([b"\r\n", b"\r\n", b"\n"])


@pytest.fixture
async def fuzzing(
    service: Service, add_councillor: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> AsyncIterator[tuple[int, str]]:
    """The service's SMTP port and a councillor's address; after the test, the checks that
    nothing went wrong inside the server."""
    account = await add_councillor("Fuzz", "Odporny")
    lost: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: lost.append(context))
    caplog.set_level(logging.WARNING)
    try:
        yield service.smtp_port, account.address
    finally:
        loop.set_exception_handler(None)
    assert lost == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [r.getMessage() for r in errors]


def still_serving(port: int) -> None:
    with Wire(port) as wire:
        assert (wire.reply() or b"")[:4] == b"220 "
        assert wire.send(b"EHLO check.example.org\r\n")
        assert (wire.reply() or b"")[:4] == b"250 "
        assert wire.send(b"QUIT\r\n") and (wire.reply() or b"")[:3] == b"221"


async def test_every_line_gets_a_reply(fuzzing: tuple[int, str]) -> None:
    port, councillor = fuzzing
    # A valid start as often as not, so that random lines also meet MAIL, RCPT and DATA states.
    valid = [b"EHLO client.example.org", b"MAIL FROM:<a@example.org>", b"RCPT TO:<%b>", b"DATA"]
    valid[2] %= councillor.encode()
    prelude = st.integers(0, 4).map(lambda n: valid[:n])
    lines = st.builds(
        lambda start, rest: start + rest,
        prelude,
        st.lists(st.one_of(COMMAND, st.sampled_from(valid)), max_size=12),
    )

    @FUZZ
    @given(lines=lines, endings=st.lists(ENDING, min_size=1))
    # Echoed in a reply: an undecodable byte made aiosmtpd's push raise UnicodeEncodeError (a
    # "500 Error: (UnicodeEncodeError)"), a NUL broke the reply line; aiosmtpd closed after five
    # unrecognised commands with a 502 instead of a 421.
    @example(lines=[b"VRFY [127.0.0.1]\x80"], endings=[b"\r\n"])
    @example(lines=[b"EHLO\x00"], endings=[b"\r\n"])
    @example(lines=[b"EHLO<>"] * 6, endings=[b"\r\n"])
    def session(lines: list[bytes], endings: list[bytes]) -> None:
        with Wire(port) as wire:
            assert (wire.reply() or b"")[:4] == b"220 "
            code = None
            for index, line in enumerate(lines):
                if not wire.send(line + endings[index % len(endings)]):
                    code = wire.reply()  # closed after a 421 not read yet
                    break
                code = wire.reply()
                assert code is not None, f"no reply to {line!r}: {wire.seen}"
                if ending_ok(code):
                    break
                if code[:3] == b"354":  # the rest is the body
                    wire.send(b"\r\n".join(lines[index + 1 :]) + b"\r\n.\r\n")
                    code = wire.reply()
                    assert code is not None and code[:1] in b"245", wire.seen
                    break
            if code is None or not ending_ok(code):
                wire.send(b"QUIT\r\n")
                code = wire.reply()
            while code is not None and not ending_ok(code):  # (a 421 may follow a 5xx)
                code = wire.reply()
            assert code is not None and ending_ok(code), wire.seen
            assert wire.closed()
        still_serving(port)

    await asyncio.to_thread(session)


async def test_pipelined_garbage_gets_replies_and_an_end(fuzzing: tuple[int, str]) -> None:
    port, _councillor = fuzzing

    @FUZZ
    @given(
        chunks=st.lists(
            st.one_of(
                st.binary(max_size=200),
                st.lists(COMMAND, max_size=6).map(lambda ls: b"\r\n".join(ls) + b"\r\n"),
            ),
            max_size=8,
        )
    )
    def session(chunks: list[bytes]) -> None:
        with Wire(port) as wire:
            assert (wire.reply() or b"")[:4] == b"220 "
            # Whatever state the garbage left (even a DATA body): end it, then QUIT.
            wire.send(b"".join(chunks) + b"\r\n\r\n.\r\nRSET\r\nQUIT\r\n")
            code = wire.reply()
            while code is not None and not ending_ok(code):
                code = wire.reply()
            assert code is not None and ending_ok(code), wire.seen
            assert wire.closed()
        still_serving(port)

    await asyncio.to_thread(session)


async def test_a_ten_megabyte_line_is_refused_with_bounded_memory(
    fuzzing: tuple[int, str],
) -> None:
    port, councillor = fuzzing
    piece = b"x" * 65536

    def session(in_data: bool) -> tuple[bytes | None, int]:
        with Wire(port) as wire:
            assert (wire.reply() or b"")[:4] == b"220 "
            if in_data:
                for line in (b"EHLO c.example", b"MAIL FROM:<a@example.org>",
                             b"RCPT TO:<" + councillor.encode() + b">", b"DATA"):  # fmt: skip
                    wire.send(line + b"\r\n")
                    assert (wire.reply() or b"")[:1] in b"23"
            tracemalloc.start()
            try:
                for _ in range(160):  # 10 MiB without a line end
                    assert wire.send(piece)
                wire.send(b"\r\n.\r\n" if in_data else b"\r\n")
                code = wire.reply()
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert wire.send(b"NOOP\r\n") and (wire.reply() or b"")[:3] == b"250"
            return code, peak

    for in_data in (False, True):
        code, peak = await asyncio.to_thread(session, in_data)
        assert code is not None and code.startswith(b"500 5.5.2 ") and b"too long" in code
        assert peak < 4 * 1024 * 1024  # the server holds a reader's limit, not the line
    await asyncio.to_thread(still_serving, port)


async def test_a_from_field_too_odd_to_read_gets_a_plain_answer(
    fuzzing: tuple[int, str],
) -> None:
    # The own-domain check parsed From with the email package: RecursionError (a "500 Error:
    # (RecursionError)" and a traceback) for nested comments or groups, seconds on the event
    # loop for megabytes of addresses.
    port, councillor = fuzzing

    def session(prefix: bytes) -> tuple[bytes | None, float]:
        with Wire(port) as wire:
            wire.reply()
            for line in (b"EHLO c.example", b"MAIL FROM:<a@example.org>",
                         b"RCPT TO:<" + councillor.encode() + b">", b"DATA"):  # fmt: skip
                wire.send(line + b"\r\n")
                assert (wire.reply() or b"")[:1] in b"23"
            folded = b"\r\n ".join(prefix[i : i + 900] for i in range(0, len(prefix), 900))
            wire.send(b"From: " + folded + b" <boss@rada.miasto.example>\r\n\r\nx\r\n")
            started = time.monotonic()
            wire.send(b".\r\n")
            return wire.reply(), time.monotonic() - started

    own = b"550 5.7.1 From: rada.miasto.example"
    # 0.9 MB of addresses: a header the server still holds whole (the body beyond 256 KiB would
    # be spooled); 1.8 MB: past the header limit (1 MiB), refused as too large before parsing.
    cases = (
        (b"(" * 2000, own),
        (b"a:" * 2000, own),
        (b"<a@b>," * 150_000, own),
        (b"<a@b>," * 300_000, b"552 5.3.4 Error: message header too large"),
    )
    for prefix, expected in cases:
        code, waited = await asyncio.to_thread(session, prefix)
        assert code is not None and code.startswith(expected), (prefix[:10], code)
        assert waited < 1.5, prefix[:10]  # (the event loop of every connection waits for it)
