"""Delivery in a second process, so that acceptance and delivery use two cores.

One Python process runs on one core at a time. ``serve`` accepts mail (SMTP sessions, directory
lookups, the queue's enqueue) in its own process and, with ``delivery.separate_process`` (the
default), runs the delivery workers in a child process of its own: the two coordinate only
through the queue in the database (claims are transactions), exactly as the workers of one
process do among themselves.

The parent talks to the child over the child's stdin:

- first the settings and the smarthost override, as one length-prefixed pickle (a pipe between
  the two processes; never written to disk or logged);
- then one byte per queued message, to wake the workers at once rather than at their next poll;
- end of file (the parent stopped, or died — even by SIGKILL the kernel closes the pipe) tells
  the child to stop: claims not yet attempted are given back, and an attempt in flight at that
  moment is retried by whoever runs next (at-least-once, as after a crash).

A child that dies on its own (a crash, the OOM killer) is started again, after a pause that grows
from 1 to 30 seconds while it keeps dying; meanwhile mail waits in the queue.

The child answers one line on stdout when its workers run (after claims left in flight by a
crash have been released), so the parent accepts mail only once delivery is ready. After it,
each delivery outcome it counts goes up the same pipe as one JSON line (name, labels, count),
into the parent's ``Counters``: one ``/metrics`` shows both processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import signal
import struct
import sys
import time
from typing import Any

from mailsvc import logs
from mailsvc.config import Settings
from mailsvc.relay.counters import LABELS, Counters

log = logging.getLogger(__name__)

_READY = b"delivery ready\n"
_HEADER = struct.Struct("!I")
# How long a graceful stop may take before the child is killed (its claims are then released
# at the next start).
_STOP_TIMEOUT = 30.0
_START_TIMEOUT = 60.0
# A child that died is started again after a pause growing from the first to the last of these
# (seconds); the pause starts over once a child has run this long.
_RESTART_FIRST = 1.0
_RESTART_MAX = 30.0
_RESTART_RESET = 60.0


class DeliveryProcess:
    """The parent's handle on the delivery child: start, wake, stop."""

    def __init__(
        self,
        settings: Settings,
        *,
        smarthost: tuple[str, int] | None = None,
        counters: Counters | None = None,
    ) -> None:
        self.settings = settings
        self.smarthost = smarthost
        # Where the child's counts go (None: read and dropped).
        self.counters = counters
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._counts: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start the child and wait until its workers run; then keep it running: a child that
        dies (a crash, the OOM killer) is started again after a pause that grows from 1 to 30
        seconds while it keeps dying. Mail meanwhile waits in the queue."""
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="delivery-supervisor")

    async def _spawn(self) -> None:
        payload = pickle.dumps(
            (self.settings, self.smarthost, logging.getLogger().getEffectiveLevel())
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailsvc.relay.delivery.process",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # The child's log lines go where ours go.
            stderr=None,
            # Ctrl-C in a terminal reaches the whole process group: the child must wait for
            # the parent's orderly stop instead.
            start_new_session=True,
        )
        self._proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(_HEADER.pack(len(payload)) + payload)
        await proc.stdin.drain()
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), _START_TIMEOUT)
        except TimeoutError:
            line = b""
        if line != _READY:
            await self._kill()
            raise RuntimeError("the delivery process did not start (see its log above)")
        self._counts = asyncio.create_task(self._read_counts(proc.stdout), name="delivery-counts")
        log.info("delivery workers running in process %d", proc.pid)

    async def _read_counts(self, stdout: asyncio.StreamReader) -> None:
        """The child's counts, until its stdout closes (it stopped or died)."""
        while line := await stdout.readline():
            try:
                name, labels, by = json.loads(line)
                if name not in LABELS or not isinstance(by, int):
                    raise ValueError(name)
                if self.counters is not None:
                    self.counters.inc(name, *map(str, labels), by=by)
            except (ValueError, TypeError):
                log.warning("delivery process: unreadable count %r", line[:200])

    async def _supervise(self) -> None:
        pause = _RESTART_FIRST
        while not self._stopping:
            proc = self._proc
            started = time.monotonic()
            if proc is not None:
                status = await proc.wait()
                if self._stopping:
                    return
                log.error(
                    "the delivery process %d exited (status %s): mail waits in the queue; "
                    "starting it again in %.0f s",
                    proc.pid,
                    status,
                    pause,
                )
            if time.monotonic() - started > _RESTART_RESET:
                pause = _RESTART_FIRST  # it ran well for a while: not a crash loop
            await asyncio.sleep(pause)
            pause = min(pause * 2, _RESTART_MAX)
            if self._stopping:
                return
            try:
                await self._spawn()
            except Exception:
                log.exception("the delivery process could not be started")
                self._proc = None

    def wake(self) -> None:
        """A message was queued: tell the child (one byte; never blocks the caller)."""
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            proc.stdin.write(b"w")

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT)
        except TimeoutError:
            log.error("the delivery process did not stop in %.0f s: killed", _STOP_TIMEOUT)
            await self._kill()
        self._proc = None
        if self._counts is not None:  # ends at the child's end of file
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._counts, 5.0)
            self._counts = None

    async def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()


# --- the child ------------------------------------------------------------------------------


def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError("the parent closed the pipe before sending the settings")
        data += chunk
    return data


async def _child(settings: Settings, smarthost: tuple[str, int] | None) -> None:
    # Only what delivery needs (not the web pages, the scheduler, the directory): a quick
    # start. The parent has created the schema already.
    from mailsvc.node import node_id
    from mailsvc.relay.delivery.worker import DeliveryWorkers
    from mailsvc.storage.db import create_engine
    from mailsvc.storage.queue import MailQueue
    from mailsvc.storage.shared_files import SharedFiles

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # the parent decides
    engine = create_engine(settings.database_url)
    queue = MailQueue(
        engine,
        local_domains=(settings.domain,),
        node=node_id(settings) if engine.dialect.name == "postgresql" else None,
        lease_seconds=settings.cluster.lease_seconds,
    )
    counts: list[bytes] = []  # until the pipe to the parent is open: only before the start
    pipe: asyncio.WriteTransport | None = None

    def forward(name: str, labels: tuple[str, ...], by: int) -> None:
        line = json.dumps([name, labels, by]).encode() + b"\n"
        if pipe is None:
            counts.append(line)
        else:
            pipe.write(line)  # buffered by the transport: never blocks a worker

    shared = SharedFiles(engine, settings.var_dir, node_id(settings))
    workers = DeliveryWorkers(
        queue, settings, smarthost=smarthost, counters=Counters(forward), shared=shared
    )
    try:
        await workers.start()
        # The pipe from the parent: wake-ups, then end of file.
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0)
        )
        os.write(1, _READY)
        pipe, _ = await loop.connect_write_pipe(
            asyncio.BaseProtocol, os.fdopen(1, "wb", buffering=0)
        )
        pipe.write(b"".join(counts))

        async def listen() -> None:
            while chunk := await reader.read(4096):
                del chunk
                workers.wake()
            stop.set()

        listener = asyncio.create_task(listen())
        await stop.wait()
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
    finally:
        await workers.stop()
        await queue.close()
        await engine.dispose()
        if pipe is not None:
            pipe.close()


def main() -> None:
    size = _HEADER.unpack(_read_exactly(0, _HEADER.size))[0]
    # Written by our parent into a pipe only the two processes hold: trusted input.
    loaded: Any = pickle.loads(_read_exactly(0, size))  # noqa: S301
    settings, smarthost, level = loaded
    logs.configure(settings.logging.format, level, process="delivery")
    from mailsvc import eventloop

    eventloop.run(_child(settings, smarthost))


if __name__ == "__main__":
    main()
