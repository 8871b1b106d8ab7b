"""The local capture: the embedded default's smarthost (``smarthost.port = 0``).

An aiosmtpd server on 127.0.0.1 (an ephemeral port) inside ``mailsvc serve`` that accepts every
message and keeps it as ``<var_dir>/capture/<UTC timestamp>-<id>.eml``. The envelope is written
as a preamble of ``X-Capture-*`` header lines, so the file still opens in any mail program.
Each file is written under a temporary name, fsync'd, then renamed: a reader never sees half a
message, and 250 is answered only once the file is on disk.

Files are kept for ``smarthost.capture_retention_days`` (0: forever): ``purge`` deletes older
ones by modification time, and the scheduled job ``capture-purge`` runs it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession

from mailsvc.relay.smtp import replies

log = logging.getLogger(__name__)

CAPTURE_HOST = "127.0.0.1"
# Larger than any message the relay accepts, so the capture never refuses one for size.
_MAX_SIZE = 64 * 1024 * 1024
H_FROM = "X-Capture-Envelope-From"
H_TO = "X-Capture-Envelope-To"
H_AT = "X-Capture-Date"


def capture_dir(var_dir: Path) -> Path:
    return var_dir / "capture"


@dataclass(frozen=True)
class CapturedMessage:
    path: Path
    mail_from: str  # "" for the null sender
    recipients: tuple[str, ...]
    captured_at: str
    message: bytes  # as received, without the preamble


def _preamble(mail_from: str, recipients: list[str], at: datetime) -> bytes:
    lines = [f"{H_FROM}: <{mail_from}>"]
    lines += [f"{H_TO}: <{rcpt}>" for rcpt in recipients]
    lines.append(f"{H_AT}: {format_datetime(at)}")
    return "".join(f"{line}\r\n" for line in lines).encode("utf-8")


def store(directory: Path, mail_from: str, recipients: list[str], content: bytes) -> Path:
    """Write one message durably; returns its path. Blocking: run it in a thread."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.now(UTC)
    name = f"{now:%Y%m%dT%H%M%S.%f}Z-{secrets.token_hex(4)}.eml"
    final = directory / name
    temporary = directory / f".{name}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(_preamble(mail_from, recipients, now))
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)
    return final


def read(path: Path) -> CapturedMessage:
    """A captured file: its envelope from the preamble and the message after it."""
    data = path.read_bytes()
    mail_from, recipients, at = "", [], ""
    offset = 0
    while True:
        end = data.find(b"\r\n", offset)
        if end < 0:
            break
        line = data[offset:end].decode("utf-8", "replace")
        name, sep, value = line.partition(": ")
        if not sep or name not in (H_FROM, H_TO, H_AT):
            break
        if name == H_FROM:
            mail_from = value.strip("<>")
        elif name == H_TO:
            recipients.append(value.strip("<>"))
        else:
            at = value
        offset = end + 2
    return CapturedMessage(path, mail_from, tuple(recipients), at, data[offset:])


def list_captured(directory: Path) -> list[CapturedMessage]:
    """Every captured message, oldest first (the names sort by time)."""
    if not directory.is_dir():
        return []
    return [read(p) for p in sorted(directory.glob("*.eml"))]


def _is_capture_file(name: str) -> bool:
    # A temporary file left by an interrupted store is as old as its mtime says, so it goes too.
    return name.endswith(".eml") or (name.startswith(".") and name.endswith(".eml.tmp"))


def purge(directory: Path, retention_days: int, *, now: float | None = None) -> int:
    """Delete captured files last modified more than ``retention_days`` ago; returns how many.

    0 days keeps everything. Other files in the directory are left alone. Blocking: run it in a
    thread.
    """
    if retention_days <= 0:
        return 0
    cutoff = (time.time() if now is None else now) - retention_days * 86400
    removed = 0
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return 0  # nothing captured yet
    with entries:
        for entry in entries:
            if not _is_capture_file(entry.name):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:
                continue  # removed meanwhile (e.g. by hand)
            except OSError as exc:
                # One file we may not delete must not keep the others forever.
                log.warning("capture: could not delete %s: %s", entry.path, exc)
                continue
            removed += 1
    return removed


class CaptureHandler:
    """aiosmtpd handler that accepts every recipient and stores each message as a file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        content = envelope.original_content
        if content is None:
            content = envelope.content if isinstance(envelope.content, bytes) else b""
        # aiosmtpd reports MAIL FROM:<> as "<>".
        mail_from = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        try:
            path = await asyncio.to_thread(
                store, self.directory, mail_from, list(envelope.rcpt_tos), content
            )
        except OSError as exc:
            log.error("capture: could not store a message in %s: %s", self.directory, exc)
            return replies.S451_NOT_STORED
        log.info(
            "captured %s from=<%s> to=%s",
            path.name,
            mail_from,
            ",".join(f"<{r}>" for r in envelope.rcpt_tos),
        )
        return replies.S250_CAPTURED.format(name=path.name)


class CaptureSink:
    """The capture server; ``start`` returns the port it listens on."""

    def __init__(self, directory: Path, hostname: str = "capture.invalid") -> None:
        self.directory = directory
        self.hostname = hostname
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "capture sink not started"
        return CAPTURE_HOST, int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> tuple[str, int]:
        handler = CaptureHandler(self.directory)

        def protocol() -> SMTP:
            return SMTP(
                handler,
                data_size_limit=_MAX_SIZE,
                enable_SMTPUTF8=True,
                decode_data=False,
                hostname=self.hostname,
                ident="mailsvc capture",
            )

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, host=CAPTURE_HOST, port=0)
        log.info("local capture on %s:%d stores mail in %s", *self.address, self.directory)
        return self.address

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()


@asynccontextmanager
async def running_capture(directory: Path, hostname: str) -> AsyncIterator[tuple[str, int]]:
    """A capture sink for the duration of a block (commands that deliver outside serve)."""
    sink = CaptureSink(directory, hostname)
    address = await sink.start()
    try:
        yield address
    finally:
        await sink.stop()
