"""Writing a file into an asyncio stream without copying it through Python: ``os.sendfile``.

A distribution sends the same part files (27 MB a message) to every councillor. Read into
Python and written into the transport, each byte is copied twice in user space; handed to the
kernel with ``sendfile`` it goes from the page cache to the socket (docs/benchmarks.md: half the
delivery's CPU per message). The first way the connection allows is taken:

1. ``loop.sendfile``: asyncio's own loop on a plain socket (flushing the transport first and
   waiting for room itself);
2. uvloop, the service's loop, does not implement ``loop.sendfile`` (NotImplementedError): on a
   plain TCP socket we flush the transport and call ``os.sendfile`` ourselves, on a duplicate of
   the socket's descriptor. uvloop refuses to watch a descriptor that its transport owns, and the
   duplicate stays a valid descriptor of this socket even if the transport closes meanwhile (a
   closed number could be reused by another file at once);
3. anything else (TLS, where the kernel cannot encrypt, or a transport without a socket): the
   file is read a chunk at a time in a thread and written, as before.

Every way continues from the file's position and leaves it after the bytes sent, so a way that
gives up before sending anything hands over to the next one cleanly.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import stat
from typing import BinaryIO, Literal

CHUNK = 1024 * 1024
# os.sendfile's count per call, as asyncio's own implementation limits it.
_MAX_COUNT = 2**30

Way = Literal["loop.sendfile", "os.sendfile", "copy"]


async def send_file(
    writer: asyncio.StreamWriter, fh: BinaryIO, *, stall_limit: float, zero_copy: bool = True
) -> Way:
    """Write the rest of ``fh`` (a regular file opened for binary reading) into ``writer``.

    Returns the way it went. ``stall_limit``: the longest wait for the peer to take more data on
    the ``os.sendfile`` way (``TimeoutError`` after it); the other two wait as ``drain`` does.
    ``zero_copy=False`` always copies. Connection errors are raised as ``OSError``.
    """
    transport = writer.transport
    _check_open(writer)
    if zero_copy and transport.get_extra_info("ssl_object") is None:
        loop = asyncio.get_running_loop()
        try:
            await loop.sendfile(transport, fh, fh.tell(), fallback=False)
            return "loop.sendfile"
        except NotImplementedError:  # uvloop
            if await _os_sendfile(writer, fh, stall_limit):
                return "os.sendfile"
        except asyncio.SendfileNotAvailableError:
            # Nothing was sent: a file sendfile cannot read, or a first send that failed (a
            # connection already dead fails again, as a connection error, in the copy).
            pass
    await copy_file(writer, fh)
    return "copy"


async def copy_file(writer: asyncio.StreamWriter, fh: BinaryIO) -> None:
    """The rest of ``fh`` read in 1 MiB chunks in a thread and written into ``writer``."""
    while block := await asyncio.to_thread(fh.read, CHUNK):
        _check_open(writer)
        writer.write(block)
        await writer.drain()


def _check_open(writer: asyncio.StreamWriter) -> None:
    """A closed transport as a connection error: loop.sendfile and uvloop's write would raise
    RuntimeError, asyncio's write would drop the data in silence."""
    if writer.transport.is_closing():
        raise ConnectionResetError("the connection is closed")


async def _os_sendfile(writer: asyncio.StreamWriter, fh: BinaryIO, stall_limit: float) -> bool:
    """``os.sendfile`` into the transport's socket; False (nothing sent) when the transport has
    no stream socket or ``fh`` is not a regular file."""
    sock = writer.transport.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_STREAM:
        return False
    try:
        source = fh.fileno()
    except (AttributeError, io.UnsupportedOperation):
        return False
    status = os.fstat(source)
    if not stat.S_ISREG(status.st_mode):
        return False
    await _flush(writer)
    loop = asyncio.get_running_loop()
    fd = os.dup(sock.fileno())
    offset, end = fh.tell(), status.st_size
    # The descriptor is watched for the whole file, not added and removed at each wait: a
    # 27 MB part takes dozens of waits, and each registration is a system call and a trip
    # through the loop's selector bookkeeping.
    waiter = _Waiter(loop)
    loop.add_writer(fd, waiter.wake)
    try:
        while offset < end:
            try:
                sent = os.sendfile(fd, source, offset, min(end - offset, _MAX_COUNT))
            except BlockingIOError:
                await waiter.wait(stall_limit)
                continue
            if sent == 0:
                break  # the file is shorter than it was: nothing more to send
            offset += sent
    finally:
        loop.remove_writer(fd)
        os.close(fd)
        fh.seek(offset)
    return True


async def _flush(writer: asyncio.StreamWriter) -> None:
    """Wait until the transport has handed everything written so far to the kernel: our own
    writes to the socket must come after it."""
    transport = writer.transport
    if not transport.get_write_buffer_size():
        return
    low, high = transport.get_write_buffer_limits()
    transport.set_write_buffer_limits(high=0)  # drain now waits for an empty buffer
    try:
        await writer.drain()
    finally:
        transport.set_write_buffer_limits(high=high, low=low)


class _Waiter:
    """Waits for the socket to take data again (or to have failed: the next send says how),
    for at most a stall limit."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ready: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(None)

    def _stalled(self, limit: float) -> None:
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(TimeoutError(f"the peer took no data for {limit:g} s"))

    async def wait(self, limit: float) -> None:
        self.ready = self.loop.create_future()
        timer = self.loop.call_later(limit, self._stalled, limit)
        try:
            await self.ready
        finally:
            timer.cancel()
            self.ready = None
