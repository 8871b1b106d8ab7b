"""A real SMTP server (aiosmtpd) in the test's own loop on port 0 that can be told to fail."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword
from aiosmtpd.smtp import Session as SmtpSession


def null_path(mail_from: str | None) -> str:
    """aiosmtpd reports MAIL FROM:<> as "<>"; the null sender is "" everywhere here."""
    return "" if mail_from in (None, "<>") else mail_from


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]


@dataclass
class SinkHandler:
    """Accepts everything unless told otherwise.

    ``rcpt_replies`` answers RCPT for an address (e.g. "550 5.1.1 no such user");
    ``data_replies`` answers the next DATA commands, one each (e.g. "451 4.3.0 later");
    ``data_reply_always`` answers every DATA.
    """

    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: list[str] = field(default_factory=list)
    data_reply_always: str | None = None
    messages: list[Received] = field(default_factory=list)
    transactions: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        self.transactions += 1
        if self.data_reply_always is not None:
            return self.data_reply_always
        if self.data_replies:
            return self.data_replies.pop(0)
        content = envelope.original_content or b""
        self.messages.append(
            Received(
                null_path(envelope.mail_from),
                list(envelope.rcpt_tos),
                content,
                list(envelope.mail_options),
            )
        )
        self.arrived.set()
        return "250 2.0.0 OK: sunk"

    async def wait_for(self, count: int = 1, within: float = 15.0) -> list[Received]:
        """Wait until ``count`` messages have arrived (returns what is there at the deadline)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while len(self.messages) < count:
                    self.arrived.clear()
                    await self.arrived.wait()
        return list(self.messages)


@dataclass
class Sink:
    handler: SinkHandler
    server: asyncio.Server

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])


def _authenticator(
    username: str, password: str
) -> Callable[[SMTP, SmtpSession, Envelope, str, Any], AuthResult]:
    def check(
        server: SMTP, session: SmtpSession, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == username.encode()
            and data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False)

    return check


@asynccontextmanager
async def running_sink(
    *,
    starttls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
    credentials: tuple[str, str] | None = None,
) -> AsyncIterator[Sink]:
    """A sink on 127.0.0.1:0; optionally STARTTLS or implicit TLS, and AUTH required."""
    handler = SinkHandler()
    auth: dict[str, Any] = {}
    if credentials is not None:
        auth = {
            "authenticator": _authenticator(*credentials),
            "auth_required": True,
            "auth_require_tls": True,
        }

    def protocol() -> SMTP:
        return SMTP(
            handler,
            decode_data=False,
            enable_SMTPUTF8=True,
            hostname="sink.test",
            tls_context=starttls,
            require_starttls=starttls is not None,
            **auth,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, host="127.0.0.1", port=0, ssl=implicit_tls)
    try:
        yield Sink(handler, server)
    finally:
        server.close()
        await server.wait_closed()
