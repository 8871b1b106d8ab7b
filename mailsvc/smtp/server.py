"""The SMTP protocol object: aiosmtpd's SMTP with connection limits, bad-command limits and
enhanced status codes on every error reply aiosmtpd writes itself."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import re
import time
import types
from dataclasses import dataclass, field
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP

from mailsvc.smtp import replies

log = logging.getLogger(__name__)

_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}\b")

# aiosmtpd's own error texts → our replies (matched on the start of the line).
_REWRITES: tuple[tuple[str, str], ...] = (
    ("552 Error: Too much mail data", replies.S552_TOO_BIG),
    ("552 Error: message size exceeds", replies.S552_TOO_BIG),
    ("500 Line too long", "500 5.5.2 Line too long"),
    ("500 Command line too long", "500 5.5.2 Command line too long"),
    ("500 Error: bad syntax", "500 5.5.2 Syntax error"),
    ("500 Error: strict ASCII mode", "500 5.5.2 Syntax error: non-ASCII data"),
    ("530 Must issue a STARTTLS command first", "530 5.7.0 Must issue a STARTTLS command first"),
    ("554 Command refused due to lack of security", "554 5.7.0 TLS handshake failed"),
)
# Default enhanced code per reply code (RFC 3463) when aiosmtpd sends none.
_DEFAULT_ENHANCED = {
    "421": "4.3.0",
    "451": "4.3.0",
    "454": "4.7.0",
    "500": "5.5.1",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
}


def with_enhanced_code(line: str) -> str:
    """Give an error reply line an enhanced status code (RFC 2034) if it has none."""
    if line[:1] not in ("4", "5") or _HAS_ENHANCED.match(line):
        return line
    for prefix, replacement in _REWRITES:
        if line.startswith(prefix):
            return replacement
    code, sep, text = line[:3], line[3:4], line[4:]
    enhanced = _DEFAULT_ENHANCED.get(code, f"{code[0]}.0.0")
    return f"{code}{sep or ' '}{enhanced} {text}"


@dataclass
class ConnectionLimiter:
    """Counts open connections in total and per client IP; shared by all SMTP objects."""

    total_max: int
    per_ip_max: int
    total: int = 0
    per_ip: collections.Counter[str] = field(default_factory=collections.Counter)

    def acquire(self, ip: str) -> bool:
        if self.total >= self.total_max or self.per_ip[ip] >= self.per_ip_max:
            return False
        self.total += 1
        self.per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self.total -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]


@dataclass
class RateLimiter:
    """Messages per client IP in a sliding minute."""

    per_minute: int
    window: float = 60.0
    _events: dict[str, collections.deque[float]] = field(default_factory=dict)

    def allow(self, ip: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        events = self._events.setdefault(ip, collections.deque())
        while events and now - events[0] > self.window:
            events.popleft()
        if len(events) >= self.per_minute:
            return False
        events.append(now)
        if len(self._events) > 10000:  # forget idle clients
            for key in [k for k, v in self._events.items() if not v]:
                del self._events[key]
        return True


class AdvertisesExtensions:
    """Handler mixin: EHLO also offers PIPELINING and ENHANCEDSTATUSCODES.

    aiosmtpd reads commands one by one from the stream, so pipelining is safe to offer.
    """

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


class CouncilSMTP(SMTP):
    """One SMTP connection. Errors beyond ``max_bad_commands`` close it."""

    def __init__(
        self,
        handler: Any,
        *,
        limiter: ConnectionLimiter,
        max_bad_commands: int,
        prototype: dict[str, Any] | None = None,
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
        self._counted_ip: str | None = None
        self._refused = False

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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None and self._counted_ip is None and not self._refused:
            peer = transport.get_extra_info("peername")
            ip = peer[0] if isinstance(peer, tuple) else str(peer)
            if not self._limiter.acquire(ip):
                self._refused = True
                log.warning("refused connection from %s: too many connections", ip)
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(replies.S421_TOO_MANY_CONNECTIONS.encode() + b"\r\n")
                transport.close()
                return
            self._counted_ip = ip
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self._counted_ip is not None:
            self._limiter.release(self._counted_ip)
            self._counted_ip = None
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._refused:
            return None
        return super().eof_received()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)

    async def push(self, status: AnyStr) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else str(status)
        text = with_enhanced_code(text)
        await super().push(text)
        if text[:3] in ("500", "501", "502", "503", "504"):
            self._bad += 1
            if self._bad >= self._max_bad and self.transport is not None:
                await super().push(replies.S421_TOO_MANY_ERRORS)
                self.transport.close()
