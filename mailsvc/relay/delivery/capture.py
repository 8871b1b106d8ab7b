"""The local capture: the embedded default's smarthost (``smarthost.port = 0``).

An aiosmtpd server on 127.0.0.1 (an ephemeral port) inside ``mailsvc serve`` that accepts every
message and keeps it as ``<var_dir>/capture/<UTC timestamp>-<id>.eml``. The envelope is written
as a preamble of ``X-Capture-*`` header lines, so the file still opens in any mail program;
the MAIL and RCPT parameters the client gave follow each address as written.
Each file is written under a temporary name, fsync'd, then renamed: a reader never sees half a
message, and 250 is answered only once the file is on disk.

Files are kept for ``smarthost.capture_retention_days`` (0: forever): ``purge`` deletes older
ones by modification time, and the scheduled job ``capture-purge`` runs it.

With ``dsn=True`` the capture also offers DSN (RFC 3461) and takes its parameters, to show what a
DSN-capable smarthost is asked. It never sends a report itself, so ``serve`` does not turn it on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, syntax
from aiosmtpd.smtp import Session as SmtpSession

from mailsvc.relay.smtp import replies

log = logging.getLogger(__name__)

CAPTURE_HOST = "127.0.0.1"
# Larger than any message the relay accepts, so the capture never refuses one for size.
_MAX_SIZE = 64 * 1024 * 1024
H_FROM = "X-Capture-Envelope-From"
H_TO = "X-Capture-Envelope-To"
H_AT = "X-Capture-Date"
# Parameters of RFC 3461 that aiosmtpd does not know; taken off the command when DSN is offered.
_DSN_MAIL = frozenset({"RET", "ENVID"})
_DSN_RCPT = frozenset({"NOTIFY", "ORCPT"})


def capture_dir(var_dir: Path) -> Path:
    return var_dir / "capture"


@dataclass(frozen=True)
class CapturedMessage:
    path: Path
    mail_from: str  # "" for the null sender
    recipients: tuple[str, ...]
    captured_at: str
    message: bytes  # as received, without the preamble
    mail_params: tuple[str, ...] = ()  # MAIL FROM parameters as written ("RET=HDRS")
    rcpt_params: tuple[tuple[str, ...], ...] = ()  # RCPT TO parameters, one tuple per recipient


def _address_line(name: str, address: str, params: Sequence[str]) -> str:
    return " ".join([f"{name}: <{address}>", *params])


def _preamble(
    mail_from: str,
    recipients: list[str],
    at: datetime,
    mail_params: Sequence[str],
    rcpt_params: Sequence[Sequence[str]],
) -> bytes:
    lines = [_address_line(H_FROM, mail_from, mail_params)]
    for i, rcpt in enumerate(recipients):
        lines.append(_address_line(H_TO, rcpt, rcpt_params[i] if i < len(rcpt_params) else ()))
    lines.append(f"{H_AT}: {format_datetime(at)}")
    return "".join(f"{line}\r\n" for line in lines).encode("utf-8")


def _address_and_params(value: str) -> tuple[str, tuple[str, ...]]:
    """``<a@b> X=1 Y=2`` -> ("a@b", ("X=1", "Y=2")); files without parameters read the same."""
    address, sep, params = value.partition("> ")
    if not sep:
        return value.strip("<>"), ()
    return address.lstrip("<"), tuple(params.split())


def store(
    directory: Path,
    mail_from: str,
    recipients: list[str],
    content: bytes,
    *,
    mail_params: Sequence[str] = (),
    rcpt_params: Sequence[Sequence[str]] = (),
) -> Path:
    """Write one message durably; returns its path. Blocking: run it in a thread.

    ``rcpt_params`` holds the parameters of each of ``recipients``, in the same order."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.now(UTC)
    name = f"{now:%Y%m%dT%H%M%S.%f}Z-{secrets.token_hex(4)}.eml"
    final = directory / name
    temporary = directory / f".{name}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(_preamble(mail_from, recipients, now, mail_params, rcpt_params))
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
    mail_params: tuple[str, ...] = ()
    rcpt_params: list[tuple[str, ...]] = []
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
            mail_from, mail_params = _address_and_params(value)
        elif name == H_TO:
            rcpt, params = _address_and_params(value)
            recipients.append(rcpt)
            rcpt_params.append(params)
        else:
            at = value
        offset = end + 2
    return CapturedMessage(
        path, mail_from, tuple(recipients), at, data[offset:], mail_params, tuple(rcpt_params)
    )


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


def _split_params(arg: str | None, taken: frozenset[str]) -> tuple[str | None, tuple[str, ...]]:
    """A MAIL or RCPT argument without the parameters named in ``taken``, and every parameter
    as written (aiosmtpd upper-cases what it keeps, which would change ENVID and ORCPT)."""
    if arg is None:
        return None, ()
    close = arg.find(">")
    if close < 0:  # no angle brackets: a malformed address, left for aiosmtpd to refuse
        return arg, ()
    head, params = arg[: close + 1], tuple(arg[close + 1 :].split())
    kept = [p for p in params if p.partition("=")[0].upper() not in taken]
    return " ".join([head, *kept]), params


class CaptureSMTP(SMTP):
    """aiosmtpd's SMTP that keeps the parameters of MAIL and RCPT for the handler, and takes
    the DSN ones when it offers DSN (aiosmtpd itself refuses them with 555)."""

    def __init__(self, handler: CaptureHandler, hostname: str) -> None:
        super().__init__(
            handler,
            data_size_limit=_MAX_SIZE,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,
            ident="mailsvc capture",
        )
        self.dsn = handler.dsn
        self.mail_params: tuple[str, ...] = ()
        self.rcpt_params: list[tuple[str, ...]] = []

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        arg, params = _split_params(arg, _DSN_MAIL if self.dsn else frozenset())
        had_sender = self.envelope is not None and self.envelope.mail_from is not None
        await super().smtp_MAIL(arg)
        if not had_sender and self.envelope is not None and self.envelope.mail_from is not None:
            self.mail_params, self.rcpt_params = params, []

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        arg, params = _split_params(arg, _DSN_RCPT if self.dsn else frozenset())
        count = len(self.envelope.rcpt_tos) if self.envelope is not None else 0
        await super().smtp_RCPT(arg)
        if self.envelope is not None and len(self.envelope.rcpt_tos) > count:
            self.rcpt_params.append(params)


class CaptureHandler:
    """aiosmtpd handler that accepts every recipient and stores each message as a file;
    ``dsn`` adds DSN to the EHLO reply."""

    def __init__(self, directory: Path, *, dsn: bool = False) -> None:
        self.directory = directory
        self.dsn = dsn

    async def handle_EHLO(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves it to a handler with this hook
        if self.dsn:
            responses.insert(len(responses) - 1, "250-DSN")  # before the last line, "250 HELP"
        return responses

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        content = envelope.original_content
        if content is None:
            content = envelope.content if isinstance(envelope.content, bytes) else b""
        # aiosmtpd reports MAIL FROM:<> as "<>".
        mail_from = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        mail_params: tuple[str, ...] = ()
        rcpt_params: list[tuple[str, ...]] = []
        if isinstance(server, CaptureSMTP):
            mail_params, rcpt_params = server.mail_params, server.rcpt_params
        try:
            path = await asyncio.to_thread(
                store,
                self.directory,
                mail_from,
                list(envelope.rcpt_tos),
                content,
                mail_params=mail_params,
                rcpt_params=rcpt_params,
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

    def __init__(
        self, directory: Path, hostname: str = "capture.invalid", *, dsn: bool = False
    ) -> None:
        self.directory = directory
        self.hostname = hostname
        self.dsn = dsn
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "capture sink not started"
        return CAPTURE_HOST, int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> tuple[str, int]:
        handler = CaptureHandler(self.directory, dsn=self.dsn)

        def protocol() -> SMTP:
            return CaptureSMTP(handler, self.hostname)

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
