"""send_file over real loopback connections, on asyncio's own loop and on uvloop (the service's).

Each scenario runs whole (server and client) on a fresh loop of the kind under test; the server
is a plain asyncio server that keeps every byte it receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import uvloop

from mailsvc.relay.delivery.sendfile import send_file
from mailsvc.relay.smtp.tls import ensure_self_signed

RUNNERS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}
ZERO_COPY_WAY = {"asyncio": "loop.sendfile", "uvloop": "os.sendfile"}
MB = 1024 * 1024


@pytest.fixture(params=sorted(RUNNERS))
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 MB: more than the loopback socket's buffers hold, so the sender has to wait for room."""
    path = tmp_path_factory.mktemp("sendfile") / "part"
    path.write_bytes(random.Random(7).randbytes(12 * MB))
    return path


class Sink:
    """A server that keeps what it receives; it can reset the connection after ``stop_after``
    bytes, or never read at all."""

    def __init__(self, *, stop_after: int | None = None, never_read: bool = False) -> None:
        self.received = bytearray()
        self.closed = asyncio.Event()
        self.stop_after = stop_after
        self.never_read = never_read

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.never_read:
                await asyncio.sleep(3600)
            while chunk := await reader.read(256 * 1024):
                self.received += chunk
                if self.stop_after is not None and len(self.received) >= self.stop_after:
                    writer.transport.abort()  # unread data waiting: the peer gets a reset
                    return
        finally:
            writer.close()
            self.closed.set()


@contextlib.asynccontextmanager
async def connected(
    sink: Sink, tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None
) -> AsyncIterator[asyncio.StreamWriter]:
    server = await asyncio.start_server(sink.session, "127.0.0.1", 0, ssl=tls[0] if tls else None)
    port = server.sockets[0].getsockname()[1]
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=tls[1] if tls else None, server_hostname="sink.test" if tls else None
    )
    try:
        yield writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        server.close()
        await server.wait_closed()


def contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = ensure_self_signed(tmp_path, "sink.test")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    return server_ctx, client_ctx


async def send_between(
    writer: asyncio.StreamWriter, fh: BinaryIO, before: bytes, *, zero_copy: bool = True
) -> str:
    """``before`` written without waiting (still in the transport's buffer), then the file,
    then a trailer: the order on the wire must be kept."""
    writer.write(before)
    way = await send_file(writer, fh, stall_limit=10, zero_copy=zero_copy)
    writer.write(b"TRAILER")
    await writer.drain()
    return way


def test_a_file_goes_zero_copy_and_arrives_whole_and_in_order(
    loop_kind: str, big_file: Path
) -> None:
    data = big_file.read_bytes()
    before = b"HEAD\r\n" + b"h" * (3 * MB)  # more than the transport writes at once

    async def scenario() -> None:
        sink = Sink()
        async with connected(sink) as writer:
            with big_file.open("rb") as fh:
                fh.seek(100)  # the rest of the file, from where it stands
                way = await send_between(writer, fh, before)
                assert fh.tell() == len(data)
        await asyncio.wait_for(sink.closed.wait(), 10)
        assert way == ZERO_COPY_WAY[loop_kind]
        assert bytes(sink.received) == before + data[100:] + b"TRAILER"

    RUNNERS[loop_kind](scenario())


@pytest.mark.parametrize("tls", [False, True], ids=["plain-copy", "tls"])
def test_tls_or_zero_copy_off_copies_the_same_bytes(
    loop_kind: str, big_file: Path, tmp_path: Path, tls: bool
) -> None:
    data = big_file.read_bytes()

    async def scenario() -> None:
        sink = Sink()
        async with connected(sink, contexts(tmp_path) if tls else None) as writer:
            with big_file.open("rb") as fh:
                # Over TLS the kernel cannot send the file: it is copied even when asked not to.
                way = await send_between(writer, fh, b"HEAD\r\n", zero_copy=tls)
        await asyncio.wait_for(sink.closed.wait(), 10)
        assert way == "copy"
        assert bytes(sink.received) == b"HEAD\r\n" + data + b"TRAILER"

    RUNNERS[loop_kind](scenario())


@pytest.mark.parametrize("zero_copy", [True, False], ids=["zero-copy", "copy"])
def test_a_peer_that_goes_away_mid_file_is_a_connection_error(
    loop_kind: str, big_file: Path, zero_copy: bool
) -> None:
    size = big_file.stat().st_size

    async def scenario() -> None:
        sink = Sink(stop_after=2 * MB)
        async with connected(sink) as writer:
            with big_file.open("rb") as fh:
                with pytest.raises(OSError):
                    await send_file(writer, fh, stall_limit=10, zero_copy=zero_copy)
                assert 0 < fh.tell() < size
            # A connection the transport knows to be gone: nothing is attempted (uvloop's
            # transport would raise RuntimeError on a write, asyncio's would drop it).
            writer.close()
            with big_file.open("rb") as fh:
                with pytest.raises(ConnectionResetError):
                    await send_file(writer, fh, stall_limit=10, zero_copy=zero_copy)
                assert fh.tell() == 0

    RUNNERS[loop_kind](scenario())


def test_a_peer_that_stops_reading_times_out_on_uvloop(big_file: Path) -> None:
    # asyncio's own loop.sendfile waits as drain does (without limit); our os.sendfile way, the
    # one the service's loop takes, gives up after stall_limit seconds without progress.
    size = big_file.stat().st_size

    async def scenario() -> None:
        sink = Sink(never_read=True)
        async with connected(sink) as writer:
            started = time.monotonic()
            with big_file.open("rb") as fh:
                with pytest.raises(TimeoutError, match="no data for"):
                    await send_file(writer, fh, stall_limit=0.5)
                assert 0 < fh.tell() < size
            assert 0.5 <= time.monotonic() - started < 5

    uvloop.run(scenario())


def test_the_duplicate_descriptor_is_closed_and_the_loop_left_clean(big_file: Path) -> None:
    size = big_file.stat().st_size

    async def scenario() -> None:
        sink = Sink()
        async with connected(sink) as writer:
            before = set(os.listdir("/proc/self/fd"))
            for _ in range(3):
                with big_file.open("rb") as fh:
                    assert await send_file(writer, fh, stall_limit=10) == "os.sendfile"
            assert set(os.listdir("/proc/self/fd")) == before
            await writer.drain()
        await asyncio.wait_for(sink.closed.wait(), 10)
        assert len(sink.received) == 3 * size

    uvloop.run(scenario())
