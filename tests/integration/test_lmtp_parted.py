"""Distribution bodies (a head plus part files) over LMTP, each way the part files can go:
``sendfile`` (asyncio's loop.sendfile, or our os.sendfile on uvloop, the service's loop) and the
copy through Python, against the real Dovecot and a plain LMTP server.

The client runs on a fresh loop of the kind under test in its own thread; the fixtures (directory,
IMAP) stay on the test's loop.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from mailsvc.config import Settings
from mailsvc.distribution.mail import attachment_headers
from mailsvc.errors import TemporaryFailure
from mailsvc.relay.delivery.body import PartedBody, encode_part
from mailsvc.relay.delivery.lmtp import LmtpClient, LmtpUnavailable, encode_data

from .conftest import wait_for_inbox

# Our LMTP client against Dovecot; the database gets the audit rows of the councillors made.
pytestmark = pytest.mark.no_database

RUNNERS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}
WAYS = {
    ("asyncio", True): "loop.sendfile",
    ("uvloop", True): "os.sendfile",
    ("asyncio", False): "copy",
    ("uvloop", False): "copy",
}
MB = 1024 * 1024
BOUNDARY = "=_mailsvc_test"
SENDER = "biuro@rada.miasto.example"
# Lines that need stuffing in the head (the part files never do).
HEAD = (
    "From: Biuro Rady <biuro@rada.miasto.example>\r\n"
    "Subject: Sesja XV/2026\r\n"
    "MIME-Version: 1.0\r\n"
    f'Content-Type: multipart/mixed; boundary="{BOUNDARY}"\r\n'
    "\r\n"
    f"--{BOUNDARY}\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    ".kropka na początku\r\n"
    "..dwie\r\n"
    ".\r\n"
    "koniec\r\n"
    f"--{BOUNDARY}\r\n"
).encode()

both_loops = pytest.mark.parametrize("loop_kind", sorted(RUNNERS))
both_ways = pytest.mark.parametrize("zero_copy", [True, False], ids=["zero-copy", "copy"])


def make_body(var_dir: Path, sizes: list[int], seed: int) -> PartedBody:
    rng = random.Random(seed)
    names = []
    for i, size in enumerate(sizes):
        source = var_dir / f"doc{i}"
        source.write_bytes(rng.randbytes(size))
        headers = attachment_headers(f".dokument-{i}-{'ż' * 40}.pdf", "application/pdf")
        names.append(encode_part(source, headers, var_dir))
    return PartedBody.from_stored(HEAD, PartedBody.to_stored(BOUNDARY, names), var_dir)


@pytest.fixture(scope="module")
def body(tmp_path_factory: pytest.TempPathFactory) -> PartedBody:
    """12 MB (more than the socket buffers hold), a small part and an empty one."""
    return make_body(tmp_path_factory.mktemp("parts"), [12 * MB, 3000, 0], seed=1)


@pytest.fixture(scope="module")
def large_body(tmp_path_factory: pytest.TempPathFactory) -> PartedBody:
    """48 MB: still being sent well after Dovecot has read its first megabytes."""
    return make_body(tmp_path_factory.mktemp("large"), [48 * MB], seed=2)


async def on_loop(loop_kind: str, scenario: Coroutine[Any, Any, Any]) -> Any:
    return await asyncio.to_thread(RUNNERS[loop_kind], scenario)


def below_trace(raw: bytes) -> bytes:
    """The stored message without the trace fields Dovecot put on top."""
    lines = raw.split(b"\r\n")
    i = 0
    while lines[i].lower().startswith((b"return-path:", b"delivered-to:", b"received:")):
        i += 1
        while lines[i][:1] in (b" ", b"\t"):
            i += 1
    return b"\r\n".join(lines[i:])


@both_loops
@both_ways
async def test_dovecot_stores_the_rendered_message_byte_for_byte(
    settings: Settings,
    add_councillor: Callable[..., Any],
    body: PartedBody,
    loop_kind: str,
    zero_copy: bool,
) -> None:
    a = await add_councillor("Anna", f"{loop_kind.capitalize()} {'Zero' if zero_copy else 'Kopia'}")
    b = await add_councillor("Bogdan", "Drugi")

    async def deliver() -> tuple[dict[str, Any], dict[str, int]]:
        client = LmtpClient(*settings.lmtp_address, zero_copy=zero_copy)
        try:
            replies = await client.deliver(SENDER, [a.address, b.address], body)
            return replies, dict(client.part_files_sent)
        finally:
            await client.close()

    replies, ways = await on_loop(loop_kind, deliver())
    assert replies[a.address].ok and replies[b.address].ok
    assert ways == {WAYS[loop_kind, zero_copy]: 3}
    rendered = await body.to_bytes()
    for who in (a, b):
        [stored] = await wait_for_inbox(settings, who.address, who.password)
        assert below_trace(stored) == rendered


@both_loops
@both_ways
async def test_a_plain_server_receives_exactly_the_stuffed_message(
    body: PartedBody, loop_kind: str, zero_copy: bool
) -> None:
    # What goes on the wire must be what stuffing the whole message would give: the head
    # stuffed, the part files (which need none) as they are, the dot line at the end.
    received = bytearray()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 plain LMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"LHLO":
                writer.write(b"250-plain\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                # Stuffing makes CRLF.CRLF the end of the data, never something inside it.
                while not received.endswith(b"\r\n.\r\n") and (chunk := await reader.read(MB)):
                    received.extend(chunk)
                writer.write(b"250 2.0.0 saved\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 2.0.0 ok\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def deliver() -> tuple[dict[str, Any], dict[str, int]]:
        client = LmtpClient("127.0.0.1", port, zero_copy=zero_copy)
        try:
            replies = await client.deliver(SENDER, ["x@rada.miasto.example"], body)
            return replies, dict(client.part_files_sent)
        finally:
            await client.close()

    try:
        replies, ways = await on_loop(loop_kind, deliver())
    finally:
        server.close()
        await server.wait_closed()
    assert replies["x@rada.miasto.example"].ok
    assert ways == {WAYS[loop_kind, zero_copy]: 3}
    assert bytes(received) == encode_data(await body.to_bytes())


def _tcp_connections() -> list[tuple[int, int, int]]:
    """(local port, remote port, socket inode) of every established TCP connection."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01":  # ESTABLISHED
                local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
                found.append((local, remote, int(fields[9])))
    return found


def _socket_inodes(pid: str) -> set[int]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes  # the process has ended
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def dovecot_process_serving_us(lmtp_port: int) -> int:
    """The pid of the Dovecot lmtp process at the other end of this process's connection."""
    ours = _socket_inodes("self")
    [client_port] = [
        local
        for local, remote, inode in _tcp_connections()
        if remote == lmtp_port and inode in ours
    ]
    [server_inode] = [
        inode
        for local, remote, inode in _tcp_connections()
        if local == lmtp_port and remote == client_port
    ]
    [pid] = [p for p in os.listdir("/proc") if p.isdigit() and server_inode in _socket_inodes(p)]
    return int(pid)


def bytes_read(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError(f"no rchar for {pid}")


@both_loops
@both_ways
async def test_dovecot_going_away_mid_transfer_is_a_temporary_failure(
    settings: Settings,
    add_councillor: Callable[..., Any],
    large_body: PartedBody,
    loop_kind: str,
    zero_copy: bool,
) -> None:
    a = await add_councillor("Anna", f"{loop_kind.capitalize()} {'Zero' if zero_copy else 'Kopia'}")
    host, port = settings.lmtp_address

    async def scenario() -> tuple[BaseException | None, float, dict[str, Any]]:
        client = LmtpClient(host, port, zero_copy=zero_copy)
        try:
            await client.connect()
            pid = await asyncio.to_thread(dovecot_process_serving_us, port)
            start = bytes_read(pid)
            delivery = asyncio.create_task(client.deliver(SENDER, [a.address], large_body))
            # Dovecot has read the head and a few megabytes of the 48 MB part: kill it.
            for _ in range(10_000):
                if bytes_read(pid) >= start + 4 * MB or delivery.done():
                    break
                await asyncio.sleep(0.002)
            assert not delivery.done()
            os.kill(pid, signal.SIGKILL)
            killed = asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(delivery, 30)
                failure = None
            except LmtpUnavailable as exc:
                failure = exc
            took = asyncio.get_running_loop().time() - killed
            assert not client.connected
            # The same client carries on, on a new connection to a new Dovecot process.
            again = await client.deliver(SENDER, [a.address], b"Subject: po awarii\r\n\r\nok\r\n")
            return failure, took, again
        finally:
            await client.close()

    failure, took, again = await on_loop(loop_kind, scenario())
    assert isinstance(failure, TemporaryFailure)
    assert took < 5  # noticed at once, not after a timeout
    assert again[a.address].ok
    [stored] = await wait_for_inbox(settings, a.address, a.password)
    assert b"po awarii" in stored  # nothing of the broken transfer was stored
