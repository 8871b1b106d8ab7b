"""The SMTP protocol object: aiosmtpd's SMTP with connection limits, bad-command limits, an
absolute session time and enhanced status codes on every error reply aiosmtpd writes itself."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import re
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AnyStr

from aiosmtpd.smtp import MISSING, SMTP

from mailsvc.relay.counters import SMTP_REFUSALS, SMTP_SESSIONS, Counters
from mailsvc.relay.smtp import replies
from mailsvc.relay.smtp.clients import RateLimiter, client_key
from mailsvc.relay.smtp.replies import with_enhanced_code
from mailsvc.storage.spool import SpooledBody, SpoolWriter

__all__ = [
    "AdvertisesExtensions",
    "ConnectionLimiter",
    "CouncilSMTP",
    "RateLimiter",
    "with_enhanced_code",
]

log = logging.getLogger(__name__)


@dataclass
class ConnectionLimiter:
    """Counts open connections in total and per client (an IPv6 /64 counts as one client,
    ``clients.client_key``); shared by all SMTP objects of a listening socket."""

    total_max: int
    per_ip_max: int
    total: int = 0
    per_ip: collections.Counter[str] = field(default_factory=collections.Counter)

    def acquire(self, ip: str) -> bool:
        key = client_key(ip)
        if self.total >= self.total_max or self.per_ip[key] >= self.per_ip_max:
            return False
        self.total += 1
        self.per_ip[key] += 1
        return True

    def release(self, ip: str) -> None:
        key = client_key(ip)
        self.total -= 1
        self.per_ip[key] -= 1
        if self.per_ip[key] <= 0:  # a client without connections leaves no entry
            del self.per_ip[key]


class AdvertisesExtensions:
    """Handler mixin: EHLO also offers PIPELINING and ENHANCEDSTATUSCODES.

    aiosmtpd reads commands one by one from the stream, so pipelining is safe to offer.
    """

    # Relies on aiosmtpd SMTP.smtp_EHLO's reply list: pinned by tests/unit/test_aiosmtpd_pin.py.
    async def handle_EHLO(
        self,
        server: SMTP,
        session: Any,
        envelope: Any,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]


_CRLF = b"\r\n"
_DOT_CRLF = b".\r\n"
_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
_TOO_MUCH = "552 Error: Too much mail data"
_HEADER_TOO_BIG = "552 5.3.4 Error: message header too large"
# A header is kept in memory whole; a longer one refuses the message (RFC 5322 sets no limit;
# Postfix cuts at 100 KB and treats the rest as body).
_HEADER_LIMIT = 1024 * 1024


@dataclass
class _BodyScan:
    """Checks a DATA body handed over in chunks against aiosmtpd's per-line rules.

    Lines are the pieces between CRLFs. In stream order, a line whose text (without CRLF) is
    longer than ``overrun`` (the StreamReader limit) makes the body too long before it is
    counted; otherwise its length with CRLF is added to ``size``, which may make the body too
    big, and only then a line longer than ``line_limit`` with CRLF makes it too long. The first
    of these decides the reply; from then on the body is discarded.
    """

    size_limit: int | None
    overrun: int
    line_limit: int
    # Past this many bytes the body goes to a file in ``spool_dir`` (None: kept in memory).
    spool_at: int | None = None
    spool_dir: Path | None = None
    parts: list[bytes] = field(default_factory=list)
    held: int = 0  # bytes in ``parts``
    size: int = 0
    carry: bytes = b""  # the unterminated last line so far
    error: str = ""  # _TOO_LONG / _TOO_MUCH / _HEADER_TOO_BIG once decided
    spool: SpoolWriter | None = None

    def feed(self, chunk: bytes) -> None:
        if self.error or not chunk:
            return
        data = self.carry + chunk if self.carry else chunk
        lines = data.split(_CRLF)
        carry = lines.pop()
        complete = len(data) - len(carry)
        longest = max(map(len, lines), default=0)
        limit = self.size_limit
        if (
            longest > self.overrun
            or longest + 2 > self.line_limit
            or (limit and self.size + complete > limit)
        ):
            self._line_by_line(lines)
        else:
            self.size += complete
        if not self.error and len(carry) - carry.endswith(b"\r") > self.overrun:
            self.error = _TOO_LONG  # the next line is already longer than the reader allows
        if self.error:
            self.drop()
        elif self.spool is not None:
            # Only complete lines go to the file; the unterminated rest waits in ``carry``.
            self.spool.write_lines(data if carry == b"" else data[:complete], len(lines))
            self.carry = carry
        else:
            self.carry = carry
            self._keep(chunk)

    def _keep(self, chunk: bytes) -> None:
        self.parts.append(chunk)
        self.held += len(chunk)
        if self.spool_at is not None and self.held > self.spool_at:
            self._start_spool()

    def _start_spool(self) -> None:
        """Past ``spool_at`` bytes: the header stays here, the rest goes to a spool file."""
        data = b"".join(self.parts)
        if data.startswith(_CRLF):
            end = 2  # no header at all
        else:
            found = data.find(_CRLF + _CRLF)
            if found < 0:
                if len(data) > _HEADER_LIMIT:
                    self.error = _HEADER_TOO_BIG
                    self.drop()
                else:
                    self.parts = [data]  # the header goes on: look again with more of it
                return
            end = found + 4
        assert self.spool_dir is not None
        self.spool = SpoolWriter(self.spool_dir)
        self.parts = [data[:end]]
        # The header ends with a complete line, so end <= the start of the unterminated rest.
        self.spool.write_lines(data[end : len(data) - len(self.carry)])

    def drop(self) -> None:
        """Discard what was received (over a limit, or the session ended mid-body)."""
        self.parts.clear()
        self.carry = b""
        if self.spool is not None:
            self.spool.discard()
            self.spool = None

    def _line_by_line(self, lines: list[bytes]) -> None:
        limit = self.size_limit
        for length in map(len, lines):
            if length > self.overrun:
                self.error = _TOO_LONG
                return
            self.size += length + 2
            if limit and self.size > limit:
                self.error = _TOO_MUCH
                return
            if length + 2 > self.line_limit:
                self.error = _TOO_LONG
                return

    def body(self) -> bytes:
        """The received body without dot-stuffing (RFC 5321 4.5.2); only its header when the
        rest went to ``spool``."""
        raw = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.parts.clear()
        if raw.startswith(b"."):
            raw = raw[1:]
        return raw.replace(b"\r\n.", _CRLF)


# Relies on asyncio StreamReaderProtocol.__init__: pinned by tests/unit/test_aiosmtpd_pin.py.
@functools.cache
def _protocol_attributes() -> frozenset[str]:
    """Attributes asyncio's StreamReaderProtocol sets itself (never copied between objects)."""
    loop = asyncio.new_event_loop()
    try:
        probe = asyncio.StreamReaderProtocol(
            asyncio.StreamReader(loop=loop), lambda r, w: None, loop=loop
        )
        return frozenset(vars(probe))
    finally:
        loop.close()


# <dot-atom@domain>: atext without the characters the parser treats specially, dots only between
# atoms; a domain of letters, digits, hyphens and inner dots.
_PLAIN_PATH = re.compile(
    r"<((?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)>"
)


# aiosmtpd's reply before it closes on unrecognised commands (its SMTP._handle_client).
_BOGUS_GOODBYE = "502 5.5.1 Too many unrecognized commands"
# In reply text: controls but TAB (CRLF only between the lines of a reply), and surrogates.
_UNSAFE_IN_REPLY = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]|\r(?!\n)|(?<!\r)\n")

# How much of a message body may wait in the reader's buffer before the body reader is woken
# (unless a piece may end the body); memory per connection stays bounded by it.
_QUIET_BUFFER = 256 * 1024


class CouncilSMTP(SMTP):
    """One SMTP connection. Errors beyond ``max_bad_commands`` (with the recipients a handler
    refused, ``count_refusal``) close it, and so does ``session_max_seconds`` after it opened,
    whatever it is doing: both with a 421."""

    # Overrides aiosmtpd SMTP.__init__ and copies its state: tests/unit/test_aiosmtpd_pin.py.
    def __init__(
        self,
        handler: Any,
        *,
        limiter: ConnectionLimiter,
        max_bad_commands: int,
        prototype: dict[str, Any] | None = None,
        session_max_seconds: float | None = None,
        spool_dir: Path | None = None,
        spool_threshold: int | None = None,
        counters: Counters | None = None,
        server_name: str = "inbound",
        **kwargs: Any,
    ) -> None:
        # aiosmtpd's __init__ inspects the handler and this object (inspect.getmembers, dir)
        # on every connection, about 0.3 ms each time. With a ``prototype`` dict (one per
        # listening socket) the first connection runs it and records the resulting state; later
        # connections copy that state and rebind the methods to themselves.
        if prototype:
            self._init_from(prototype)
        else:
            super().__init__(handler, **kwargs)
            if prototype is not None:
                prototype.update(
                    (k, v) for k, v in vars(self).items() if k not in _protocol_attributes()
                )
        self._limiter = limiter
        self._max_bad = max_bad_commands
        self._bad = 0
        self._continued: list[str] = []
        self._counted_ip: str | None = None
        self._refused = False
        self._in_body = False  # between the 354 and the end of the body
        self._session_max = session_max_seconds
        self._session_timer: asyncio.TimerHandle | None = None
        self._cut = False  # a closing 421 was sent
        # Bodies longer than spool_threshold go to their own file in spool_dir while they
        # arrive (the handler then finds ``envelope.spooled``); None keeps them in memory.
        self._spool_dir = spool_dir
        self._spool_at = spool_threshold if spool_dir is not None else None
        # Sessions and refusals for /metrics, under this listening socket's name.
        self._counters = counters
        self._server_name = server_name

    def _count_refusal(self, reason: str) -> None:
        if self._counters is not None:
            self._counters.inc(SMTP_REFUSALS, self._server_name, reason)

    def count_refusal(self) -> None:
        """A handler refused a command (a recipient): it counts as a bad command, so that
        guessing addresses one RCPT after another is cut off like any other error run."""
        self._bad += 1

    @property
    def connections(self) -> int:
        """Connections open now on this listening socket, this one included."""
        return self._limiter.total

    # Overrides aiosmtpd SMTP._getaddr: pinned by tests/unit/test_aiosmtpd_pin.py.
    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The address of a MAIL or RCPT argument, and the rest (its parameters).

        The common case — ``<local@domain>`` with a dot-atom local part and a plain domain —
        is split here at C speed; everything else (quoted local parts, source routes, comments,
        IP literals, non-ASCII, syntax errors) goes to aiosmtpd's RFC 5322 parser. The fast
        path gives exactly what that parser gives for the inputs it takes (a differential test
        holds it to that).
        """
        m = _PLAIN_PATH.match(arg)
        if m is None:
            return super()._getaddr(arg)
        rest = arg[m.end() :]
        if "(" in rest or "\r" in rest or "\n" in rest:  # comments, folding: its business
            return super()._getaddr(arg)
        rest = rest.lstrip(" \t")  # as the parser, which takes the whitespace after ">"
        address = m[1]
        if self.local_part_limit and address.rindex("@") > self.local_part_limit:
            return None, None
        return address, rest

    # Stands in for aiosmtpd SMTP.__init__: pinned by tests/unit/test_aiosmtpd_pin.py.
    def _init_from(self, prototype: dict[str, Any]) -> None:
        loop = prototype["loop"]
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(loop=loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected,
            loop=loop,
        )
        self.__dict__.update(prototype)
        self._smtp_methods = {
            name: types.MethodType(method.__func__, self)
            for name, method in prototype["_smtp_methods"].items()
        }
        self._auth_methods = {
            name: type(attr)(types.MethodType(attr.method.__func__, self), True)
            if attr.is_builtin
            else attr
            for name, attr in prototype["_auth_methods"].items()
        }

    # Overrides aiosmtpd SMTP.connection_made: pinned by tests/unit/test_aiosmtpd_pin.py.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None and self._counted_ip is None and not self._refused:
            peer = transport.get_extra_info("peername")
            ip = peer[0] if isinstance(peer, tuple) else str(peer)
            if not self._limiter.acquire(ip):
                self._refused = True
                log.warning("refused connection from %s: too many connections", ip)
                self._count_refusal("too_many_connections")
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(replies.S421_TOO_MANY_CONNECTIONS.encode() + b"\r\n")
                transport.close()
                return
            self._counted_ip = ip
            if self._counters is not None:
                self._counters.inc(SMTP_SESSIONS, self._server_name)
            if self._session_max is not None:
                self._session_timer = asyncio.get_running_loop().call_later(
                    self._session_max, self._session_over
                )
        super().connection_made(transport)
        if self._original_transport is None and self.session is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                # Implicit TLS (submission.tls_port): the handshake came before the first
                # byte, so the session is TLS as after STARTTLS (Received says which cipher).
                self.session.ssl = {
                    "ssl_object": ssl_object,
                    "cipher": transport.get_extra_info("cipher"),
                    "peercert": transport.get_extra_info("peercert"),
                }

    def _session_over(self) -> None:
        """The session's time is up: 421 and close, in the middle of anything."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._cut:
            return
        self._cut = True
        log.warning("closing the connection from %s: session time limit", self._counted_ip)
        self._count_refusal("session_time_limit")
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(replies.S421_SESSION_TOO_LONG.encode() + b"\r\n")
        transport.close()

    # Overrides aiosmtpd SMTP.connection_lost: pinned by tests/unit/test_aiosmtpd_pin.py.
    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self._counted_ip is not None:
            self._limiter.release(self._counted_ip)
            self._counted_ip = None
        if self._session_timer is not None:
            self._session_timer.cancel()
            self._session_timer = None
        super().connection_lost(error)

    # Overrides aiosmtpd SMTP.eof_received: pinned by tests/unit/test_aiosmtpd_pin.py.
    def eof_received(self) -> bool | None:
        if self._refused:
            return None
        return super().eof_received()

    # Overrides asyncio StreamReaderProtocol.data_received and writes StreamReader internals:
    # pinned by tests/unit/test_aiosmtpd_pin.py.
    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        reader: Any = self._reader if self._in_body else None
        if (
            reader is not None
            and not reader._eof
            and len(reader._buffer) + len(data) <= _QUIET_BUFFER
            and _DOT_CRLF not in bytes(reader._buffer[-2:]) + data[:2]
            and _DOT_CRLF not in data
        ):
            # Inside a message body, a piece that cannot end it (no "." CRLF) is added without
            # waking the body reader, up to _QUIET_BUFFER: a client that writes 4 KB at a time
            # no longer costs a wake-up, a read and a scan per piece (25 for 100 KB). The reader
            # wakes with the piece that may end the body, or when that much is waiting, and
            # reads it as before: the same bytes, read the same way.
            reader._buffer.extend(data)
            return
        super().data_received(data)

    # Overrides aiosmtpd SMTP.push: pinned by tests/unit/test_aiosmtpd_pin.py.
    async def push(self, status: AnyStr) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else str(status)
        # Replies may echo the client's bytes (aiosmtpd's 'command "X" not recognized', VRFY's
        # argument): a control character would break the reply line, and an undecodable byte
        # (a surrogate) made aiosmtpd's push raise UnicodeEncodeError (a 500 with a traceback).
        text = _UNSAFE_IN_REPLY.sub("?", with_enhanced_code(text))
        if text.startswith(_BOGUS_GOODBYE) and not self._cut:
            # aiosmtpd closes after five unrecognised commands with this 502; RFC 5321 3.8
            # closes a connection only after a 221 or a 421, as ours does after bad commands.
            text, self._cut = replies.S421_TOO_MANY_ERRORS, True
        if text[text.rfind("\n") + 1 :][3:4] == "-":
            # A continuation line ("250-SIZE …"): the reply goes out in one write with its last
            # line (the EHLO reply was eight writes, eight wake-ups of the client).
            self._continued.append(text)
            return
        if self._continued:
            text = "\r\n".join([*self._continued, text])
            self._continued = []
        await super().push(text)
        if text[:1] in ("4", "5"):
            self._count_refusal(replies.refusal_reason(text) or "other_permanent")
            if text[:3] in ("500", "501", "502", "503", "504"):
                self._bad += 1
        if self._bad >= self._max_bad and self.transport is not None and not self._cut:
            self._cut = True
            self._count_refusal("too_many_errors")
            await super().push(replies.S421_TOO_MANY_ERRORS)
            self.transport.close()

    # Overrides aiosmtpd SMTP.smtp_DATA: pinned by tests/unit/test_aiosmtpd_pin.py.
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, reading the body in chunks instead of line by line.

        The same replies, content and left-over stream for every input: only CRLF "." CRLF (or
        "." CRLF as the very first line) ends the body; bytes after it stay in the reader.
        """
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._in_body = True
        try:
            scan = await self._read_body()
        finally:
            self._in_body = False
        if scan.error:
            await self.push(scan.error)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        spooled: SpooledBody | None = None
        if scan.spool is not None:
            writer, scan.spool = scan.spool, None
            try:
                spooled = await asyncio.to_thread(writer.finish)
            except BaseException as exc:
                writer.discard()
                if not isinstance(exc, OSError):
                    raise
                log.error("DATA: the body could not be written to the spool: %s", exc)
                await self.push(replies.S451_STORAGE)
                self._set_post_data_state()  # type: ignore[no-untyped-call]
                return
        try:
            await self._hand_over(scan, spooled)
        finally:
            # The handler takes the file (``spooled.taken``) once a queued message names it.
            if spooled is not None and not getattr(spooled, "taken", False):
                spooled.discard()

    async def _hand_over(self, scan: _BodyScan, spooled: SpooledBody | None) -> None:
        """The rest of aiosmtpd's DATA: the handler's hook and its reply."""
        assert self.envelope is not None
        original_content = scan.body()
        content: str | bytes = original_content
        if self._decode_data:
            if self.enable_SMTPUTF8:
                content = original_content.decode("utf-8", errors="surrogateescape")
            else:
                try:
                    content = original_content.decode("ascii", errors="strict")
                except UnicodeDecodeError:
                    await self.push("500 Error: strict ASCII mode")
                    return
        self.envelope.content = content
        self.envelope.original_content = original_content
        self.envelope.spooled = spooled  # type: ignore[attr-defined]
        try:
            status = await self._call_data_hook()
        finally:
            # Over even when the hook raised (handle_exception answers 451 then): the client's
            # retry starts again from MAIL, not into a half-finished transaction.
            self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def _call_data_hook(self) -> Any:
        assert self.envelope is not None
        status: Any = MISSING
        if "DATA" in self._handle_hooks:
            status = await self._call_handler_hook("DATA")
        elif hasattr(self.event_handler, "process_message"):
            warnings.warn(
                "Use handler.handle_DATA() instead of .process_message()",
                DeprecationWarning,
                stacklevel=1,
            )
            assert self.session is not None
            status = self.event_handler.process_message(
                self.session.peer,
                self.envelope.mail_from,
                self.envelope.rcpt_tos,
                self.envelope.content,
            )
            if asyncio.iscoroutine(status):
                status = await status
            if status is None:
                status = MISSING
        return status

    # Overrides aiosmtpd SMTP.handle_exception: pinned by tests/unit/test_aiosmtpd_pin.py.
    async def handle_exception(self, error: Exception) -> str:
        """An exception escaping a command (a handler's bug, a failure nobody foresaw): aiosmtpd
        would answer "500 Error: (its type) its text", a permanent refusal that also shows the
        client our internals. Nothing says the client was wrong, so 451 (try again later)."""
        if hasattr(self.event_handler, "handle_exception"):
            return str(await self.event_handler.handle_exception(error))
        peer = self.session.peer if self.session is not None else None
        log.error("%r SMTP session exception", peer, exc_info=error)
        return replies.S451_LOCAL_ERROR

    # Replaces the reading in aiosmtpd SMTP.smtp_DATA, on asyncio StreamReader internals:
    # pinned by tests/unit/test_aiosmtpd_pin.py.
    async def _read_body(self) -> _BodyScan:
        """Read up to and including the end-of-data line; discard what is over the limits.

        ``readuntil(b".\\r\\n")`` returns everything up to the next "." CRLF, or raises when
        the reader's limit is passed first: then all but the last two bytes (which may start a
        "." CRLF) are taken. A "." CRLF ends the body only if the body so far is empty or ends
        with CRLF; the reader keeps whatever follows.
        """
        reader = self._reader
        overrun = int(getattr(reader, "_limit", self.line_length_limit))
        scan = _BodyScan(
            self.data_size_limit,
            overrun,
            self.line_length_limit,
            spool_at=self._spool_at,
            spool_dir=self._spool_dir,
        )
        try:
            return await self._read_into(scan)
        except BaseException:
            scan.drop()  # cut off (session time, connection lost): no file stays behind
            raise

    async def _read_into(self, scan: _BodyScan) -> _BodyScan:
        reader = self._reader
        tail = _CRLF  # the body's last two bytes; its start counts as a line start
        while self.transport is not None:
            try:
                try:
                    chunk = await reader.readuntil(_DOT_CRLF)
                except asyncio.LimitOverrunError as error:
                    chunk = await reader.read(error.consumed)
                    scan.feed(chunk)
                    tail = (tail + chunk[-2:])[-2:]
                    continue
            except asyncio.CancelledError:
                log.info("Connection lost during DATA")
                self._writer.close()
                raise
            before = chunk[:-3]
            if (tail + before[-2:])[-2:] == _CRLF:
                scan.feed(before)
                return scan
            scan.feed(chunk)
            tail = _CRLF
        # Not reached in practice: connection_lost() cancels this coroutine before it resumes.
        # aiosmtpd would hand over the complete lines read so far.
        if scan.carry:
            scan.parts = [b"".join(scan.parts)[: -len(scan.carry)]]
        return scan
