"""Read-only access to a mailbox over IMAP, through aioimaplib.

Nothing here sets ``\\Seen``: a folder is opened with SELECT (aioimaplib 2.0 does not enter the
selected state after EXAMINE, so it refuses UID SEARCH and FETCH after it), then messages are only
searched or fetched with FLAGS and ``BODY.PEEK``, which leave flags alone (RFC 3501 6.4.5).
CLOSE, which would expunge, is never sent. SELECT does take ``\\Recent`` from other sessions; no
current mail client relies on it (IMAP4rev2 dropped it).

A feed sits in front of aioimaplib's response parser (:class:`_Feed`) for two things it cannot
do (tests/integration/test_mailbox.py shows both):

* it removes every ``"* "`` from an untagged line, so LIST turns a folder ``"Pilne * sesje"``
  into ``"Pilne sesje"``, which cannot be opened: the raw LIST responses are kept and read here;
* it parses one read with one nested call per line, so an answer of a few thousand lines (a big
  LIST or FETCH) overflows the stack and kills the connection: it is handed a line at a time.

TLS (:class:`ImapServer`): IMAPS from the first byte, or STARTTLS, which aioimaplib 2.0 lists but
does not implement: :meth:`MailboxSession._start_tls` sends it through aioimaplib's protocol and
upgrades the connection with asyncio's ``start_tls``. The certificate is always verified against
the host name. Without TLS, :func:`open_mailbox` connects only to a loopback host: a password
(for the opened check, Dovecot's master password) never crosses a network in clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import aioimaplib

from mailsvc.config import Settings, is_loopback
from mailsvc.errors import ConfigError, MailsvcError, TemporaryFailure

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_LOGOUT_TIMEOUT = 2.0
_UNSELECTABLE = frozenset({"\\NOSELECT", "\\NONEXISTENT"})
_UNSENDABLE = re.compile(r"[\x00\r\n]")  # aioimaplib refuses these in any argument
_STARTED = aioimaplib.STARTED  # the client's state before its connection is made


class MailboxFailure(StrEnum):
    """What went wrong, for code; the values are stable (stored in evidence and logs)."""

    UNREACHABLE = "unreachable"  # no TCP/TLS connection or no IMAP greeting
    TIMEOUT = "timeout"  # the server stopped answering within the timeout
    LOGIN_REFUSED = "login-refused"  # wrong password or login name
    # Dovecot's NO [UNAVAILABLE]: a temporary failure (LDAP down), and also its answer to a
    # master login for a mailbox that does not exist or is disabled.
    LOGIN_UNAVAILABLE = "login-unavailable"
    SERVER_ERROR = "server-error"  # connection broken or answers we cannot use after login
    # No TLS: the certificate is not trusted or not for this host name, the handshake failed,
    # or STARTTLS was not offered, refused or followed by data in clear.
    TLS_FAILED = "tls-failed"
    PLAINTEXT_REFUSED = "plaintext-refused"  # no TLS asked for, to a host that is not loopback


class MailboxError(MailsvcError):
    def __init__(self, failure: MailboxFailure, message: str) -> None:
        super().__init__(message)
        self.failure = failure


class MailboxLoginFailed(MailboxError):
    """The IMAP server answered the login with NO or BAD."""


class MailboxUnavailable(MailboxError, TemporaryFailure):
    """The server could not be reached, stopped answering or broke the conversation."""


class MailboxInsecure(MailboxError):
    """No TLS where it is needed: TLS_FAILED or PLAINTEXT_REFUSED (a matter of configuration,
    or of someone between us and the server, never retried in clear)."""


_SECURITIES = ("none", "starttls", "tls")


@dataclass(frozen=True)
class ImapServer:
    """An IMAP server and how to reach it: ``security`` "tls" (IMAPS, TLS from the first byte),
    "starttls" (STARTTLS before the login) or "none" (only to a loopback host). The certificate
    is verified against ``host`` with the CAs in ``ca_file``, or the system's when empty."""

    host: str
    port: int
    security: str = "none"
    ca_file: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> ImapServer:
        """``clients.imap_*``: the server councillors use, where the service logs in too."""
        host, port, security = settings.client_imap
        return cls(host, port, security, settings.clients.imap_ca_file)

    @property
    def starttls(self) -> bool:
        return self.security == "starttls"

    def ssl_context(self) -> ssl.SSLContext | None:
        """None for "none"; raises ConfigError for an unknown security or an unusable CA file."""
        if self.security not in _SECURITIES:
            raise ConfigError(
                f"IMAP security {self.security!r}: expected 'none', 'starttls' or 'tls'"
            )
        if self.security == "none":
            return None
        try:  # certificate and host name required; TLS 1.2 at least (Python's defaults)
            return ssl.create_default_context(cafile=self.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"clients.imap_ca_file = {self.ca_file!r}: cannot load CA certificates from it"
                f" ({exc})"
            ) from None


@contextlib.asynccontextmanager
async def open_mailbox(
    host: str,
    port: int,
    user: str,
    password: str,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - per step (connect, each answer), not overall
    ssl_context: ssl.SSLContext | None = None,
    starttls: bool = False,
) -> AsyncIterator[MailboxSession]:
    """A logged-in session; logs out and closes the connection on the way out.

    With ``ssl_context``: TLS from the first byte, or after STARTTLS with ``starttls``. Without
    it the host must be loopback (:class:`MailboxInsecure` otherwise, before connecting).
    """
    if ssl_context is None:
        if starttls:
            raise ValueError("STARTTLS needs an ssl_context")
        if not is_loopback(host):
            raise MailboxInsecure(
                MailboxFailure.PLAINTEXT_REFUSED,
                f"IMAP {host}:{port}: a login without TLS is sent only to this machine "
                "(loopback), never in clear over a network; use IMAPS ('tls') or 'starttls'",
            )
    session = MailboxSession(host, port, timeout, ssl_context, starttls=starttls)
    try:
        await session.login(user, password)
        yield session
    finally:
        await session.close()


async def read_inbox(
    host: str,
    port: int,
    user: str,
    password: str,
    *,
    headers_only: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    starttls: bool = False,
) -> list[bytes]:
    """Every message in INBOX (or only its header), oldest first, without marking it read.

    Raises :class:`MailboxLoginFailed` for a refused login, :class:`MailboxInsecure` when TLS
    fails (or is missing to a host that is not loopback) and :class:`MailboxUnavailable` (a
    TemporaryFailure) when the server is down, silent or breaks off.
    """
    async with open_mailbox(
        host, port, user, password, ssl_context=ssl_context, starttls=starttls
    ) as mailbox:
        count = await mailbox.select(b"INBOX")
        if count is None:
            raise MailboxUnavailable(MailboxFailure.SERVER_ERROR, f"IMAP: no INBOX for {user}")
        if not count:
            return []
        part = "BODY.PEEK[HEADER]" if headers_only else "BODY.PEEK[]"
        return [literals[0] for _, literals in await mailbox.fetch("1:*", f"({part})") if literals]


class MailboxSession:
    """aioimaplib's client, each step bounded by the timeout and its failures classified."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        ssl_context: ssl.SSLContext | None,
        *,
        starttls: bool = False,
    ) -> None:
        self._host = host
        self._where = f"IMAP {host}:{port}"
        self._timeout = timeout
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._usable = False  # logged in, and no step has failed since
        self._starttls_context = ssl_context if starttls else None
        self._client = aioimaplib.IMAP4(
            host,
            port,
            timeout=timeout,
            conn_lost_cb=self._on_lost,
            ssl_context=None if starttls else ssl_context,
        )
        # Before the connection exists: every byte read goes through the feed (module docstring).
        # Overrides aioimaplib's protocol.data_received: pinned by tests/unit/test_aiosmtpd_pin.py.
        protocol = self._client.protocol
        self._feed = _Feed(protocol.data_received)
        protocol.data_received = self._feed

    async def login(self, user: str, password: str) -> None:
        try:
            await self._step("the greeting", self._client.wait_hello_from_server())
        except MailboxError as exc:
            if exc.failure is MailboxFailure.TIMEOUT and self._client.get_state() == _STARTED:
                raise self._failed(
                    MailboxFailure.UNREACHABLE, f"did not accept a connection in {self._timeout}s"
                ) from exc
            if exc.failure is MailboxFailure.SERVER_ERROR:
                cause = exc.__cause__ or "closed before the greeting"
                raise self._failed(MailboxFailure.UNREACHABLE, f"unreachable: {cause}") from exc
            raise
        if self._starttls_context is not None:
            await self._start_tls(self._starttls_context)
        if _UNSENDABLE.search(user + password):
            raise MailboxLoginFailed(MailboxFailure.LOGIN_REFUSED, "IMAP login with CR, LF or NUL")
        try:
            answer = await self._step(
                "LOGIN", self._client.login(aioimaplib.quoted(user), password)
            )
        except MailboxError as exc:
            if exc.failure is not MailboxFailure.SERVER_ERROR:
                raise
            # Dovecot's imap-login sometimes hangs up instead of answering NO [UNAVAILABLE]
            # when a master login names a mailbox its userdb does not know.
            raise self._failed(
                MailboxFailure.LOGIN_UNAVAILABLE,
                f"hung up in answer to the login {user}; the server is busy or its directory"
                " is down, or no such mailbox exists",
            ) from exc
        text = _tagged_text(answer)
        if answer.result == "OK":
            self._usable = True
        elif text.startswith("[UNAVAILABLE]"):
            raise MailboxLoginFailed(
                MailboxFailure.LOGIN_UNAVAILABLE,
                f"{self._where} could not log in {user} now ({text}); the server is busy or its"
                " directory is down, or no such mailbox exists",
            )
        else:
            raise MailboxLoginFailed(
                MailboxFailure.LOGIN_REFUSED,
                f"{self._where} refused the login {user} ({text}); check the password (for a"
                " master login, the master user's secret)",
            )

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        """STARTTLS (RFC 3501 6.2.1) through aioimaplib's protocol, then TLS on the connection.

        Anything the server sends after its OK and before the handshake came in clear and could
        have been injected by someone in between: refused, not parsed (the feed holds it).
        """
        protocol = self._client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise self._insecure("does not offer STARTTLS; if it listens for IMAPS use 'tls'")
        tag = protocol.new_tag()
        self._feed.seal_after(tag)
        command = aioimaplib.Command("STARTTLS", tag, loop=protocol.loop)
        answer = await self._step("STARTTLS", protocol.execute(command))
        if answer.result != "OK":
            raise self._insecure(f"refused STARTTLS ({_tagged_text(answer)})")
        injected = "sent data in clear after its STARTTLS answer: refused"
        if self._feed.injected:
            raise self._insecure(injected)
        handshake = asyncio.get_running_loop().start_tls(
            protocol.transport,
            protocol,
            context,
            server_hostname=self._host,
            ssl_handshake_timeout=self._timeout,
        )
        protocol.transport = await self._step("the TLS handshake", handshake)
        if not self._feed.unseal():
            raise self._insecure(injected)
        # What the server said before TLS is not to be trusted (RFC 3501 6.2.1): ask again.
        await self._step("CAPABILITY", protocol.capability())

    async def folders(self) -> list[bytes]:
        """Every selectable folder's name as the server spells it, INBOX first."""
        self._feed.listed.clear()
        self._require_ok("LIST", await self._step("LIST", self._client.list('""', '"*"')))
        names: list[bytes] = []
        for response in self._feed.listed:
            listed = parse_list_response(response)
            if listed is None:
                raise self._failed(MailboxFailure.SERVER_ERROR, f"sent {response[:200]!r}")
            flags, name = listed
            if not flags & _UNSELECTABLE and name not in names:
                names.append(name)
        # INBOX is case-insensitive and first: that is where unread mail usually is.
        return sorted(names, key=lambda n: n.upper() != b"INBOX")

    async def select(self, name: bytes) -> int | None:
        """Open a folder; how many messages it holds, or None if it cannot be opened."""
        text = name.decode("utf-8", "replace")
        if "\ufffd" in text or _UNSENDABLE.search(text):
            # Only a server outside RFC 3501 lists such a name; aioimaplib cannot send it back.
            log.warning("%s: folder %r cannot be opened over IMAP", self._where, name)
            return None
        # A name that is not ASCII goes out as UTF-8 in a quoted string (RFC 6855); aioimaplib
        # sends literals only with APPEND. Servers without UTF8=ACCEPT list modified UTF-7.
        answer = await self._step("SELECT", self._client.select(aioimaplib.quoted(text)))
        if answer.result != "OK":  # deleted or renamed since LIST
            log.debug("%s SELECT %r: %s", self._where, name, _tagged_text(answer))
            return None
        for line in answer.lines:
            exists = re.fullmatch(rb"(\d+) EXISTS", bytes(line), re.IGNORECASE)
            if exists:
                return int(exists[1])
        return 0

    async def uid_search(self, criteria: str) -> list[int]:
        answer = await self._step("UID SEARCH", self._client.uid_search(criteria, charset=None))
        self._require_ok("UID SEARCH", answer)
        return [int(w) for line in answer.lines[:-1] for w in bytes(line).split() if w.isdigit()]

    async def fetch(
        self, message_set: str, items: str, *, by_uid: bool = False
    ) -> list[tuple[bytes, list[bytes]]]:
        """(the response without its literals, its literals) of each message, in server order.

        Unsolicited flag updates for other messages may be among them (no literals then).
        """
        call = (
            self._client.uid("fetch", message_set, items)
            if by_uid
            else self._client.fetch(message_set, items)
        )
        answer = await self._step("FETCH", call)
        self._require_ok("FETCH", answer)
        messages: list[tuple[bytes, list[bytes]]] = []
        for line in answer.lines[:-1]:
            if isinstance(line, bytearray):
                if messages:
                    messages[-1][1].append(bytes(line))
            elif re.match(rb"\d+ FETCH \(", line, re.IGNORECASE) or not messages:
                messages.append((line, []))
            else:  # the rest of a response after a literal
                messages[-1] = (messages[-1][0] + b" " + line, messages[-1][1])
        return messages

    async def close(self) -> None:
        """Log out if the conversation is still sound, then close; never raises."""
        if self._usable:
            with contextlib.suppress(MailboxError):
                await self._step("LOGOUT", self._client.logout(), within=_LOGOUT_TIMEOUT)
        self._usable = False
        transport = self._client.protocol.transport
        if transport is not None:
            transport.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._lost), _LOGOUT_TIMEOUT)

    def _on_lost(self, _exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)

    async def _step(self, what: str, call: Awaitable[_T], within: float | None = None) -> _T:
        """One command (or the greeting): its answer, or MailboxUnavailable."""
        limit = self._timeout if within is None else within
        task = asyncio.ensure_future(call)
        try:
            async with asyncio.timeout(limit):
                await asyncio.wait((task, self._lost), return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                raise self._failed(MailboxFailure.SERVER_ERROR, f"closed the connection ({what})")
            return task.result()
        except (TimeoutError, aioimaplib.CommandTimeout) as exc:
            raise self._failed(
                MailboxFailure.TIMEOUT, f"did not answer {what} within {limit}s"
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            raise self._insecure(
                f"TLS: the certificate did not verify ({exc.verify_message}); it must be valid"
                f" for {self._host} and signed by a trusted CA (the system's, or those of the"
                " CA file configured)"
            ) from exc
        except ssl.SSLError as exc:
            raise self._insecure(f"TLS failed ({what}): {exc.reason or exc}") from exc
        except (OSError, aioimaplib.AioImapException) as exc:
            raise self._failed(MailboxFailure.SERVER_ERROR, f"broke off {what}: {exc!r}") from exc
        finally:
            task.cancel()

    def _failed(self, failure: MailboxFailure, text: str) -> MailboxUnavailable:
        self._usable = False  # the conversation is in an unknown state: no LOGOUT
        if not text.startswith(self._where):
            text = f"{self._where} {text}"
        return MailboxUnavailable(failure, text)

    def _insecure(self, text: str) -> MailboxInsecure:
        self._usable = False  # nothing more is said on this connection, not even LOGOUT
        return MailboxInsecure(MailboxFailure.TLS_FAILED, f"{self._where} {text}")

    def _require_ok(self, what: str, answer: Any) -> None:
        if answer.result != "OK":
            raise self._failed(
                MailboxFailure.SERVER_ERROR, f"{what} failed: {_tagged_text(answer)}"
            )


def _tagged_text(answer: Any) -> str:
    last = answer.lines[-1] if answer.lines else b""
    return bytes(last)[:200].decode("utf-8", "replace")


# -- the raw responses -------------------------------------------------------------------

_LITERAL_AT_END = re.compile(rb"\{(\d+)\}\r\n\Z")


class _Feed:
    """Hands aioimaplib's parser one line or literal at a time; keeps raw LIST responses."""

    def __init__(self, parse: Callable[[bytes], None]) -> None:
        self._parse = parse
        self._pending = bytearray()
        self._literal = 0  # bytes of a literal still to come
        self._after_literal = False  # the next line continues the response before it
        self._response: list[bytes] | None = None  # the LIST response being read
        self.listed: list[bytes] = []  # LIST responses, literals inline
        self._seal_tag: bytes | None = None  # the STARTTLS command's tag, until its answer
        self._sealed = False  # after that answer: nothing more is read until TLS is up
        self._injected = False  # something came while sealed

    def seal_after(self, tag: str) -> None:
        """Read nothing after the tagged answer ``tag`` until :meth:`unseal`."""
        self._seal_tag = tag.encode("ascii") + b" "

    @property
    def injected(self) -> bool:
        return self._injected

    def unseal(self) -> bool:
        """Read again; False if anything came while sealed (it was dropped)."""
        clean = not self._injected and not self._pending
        self._seal_tag, self._sealed, self._injected = None, False, False
        self._pending.clear()
        return clean

    def __call__(self, data: bytes) -> None:
        if self._sealed:
            self._injected = self._injected or bool(data)
            return
        self._pending += data
        while self._pending:
            if self._literal:
                piece = bytes(self._pending[: self._literal])
                self._literal -= len(piece)
                if self._response is not None:
                    self._response.append(piece)
            else:
                end = self._pending.find(b"\r\n")
                if end < 0:
                    return
                piece = bytes(self._pending[: end + 2])
                self._line(piece)
                if self._seal_tag is not None and piece.startswith(self._seal_tag):
                    self._sealed = True
                    self._injected = len(self._pending) > len(piece)
            del self._pending[: len(piece)]
            self._parse(piece)
            if self._sealed:
                return

    def _line(self, line: bytes) -> None:
        if not self._after_literal and line[:7].upper() == b"* LIST ":
            self._response = []
        if self._response is not None:
            self._response.append(line)
        literal = _LITERAL_AT_END.search(line)
        self._literal = int(literal[1]) if literal else 0
        self._after_literal = literal is not None
        if literal is None and self._response is not None:
            self.listed.append(b"".join(self._response))
            self._response = None


_LIST_HEAD = re.compile(rb'\* LIST \(([^)]*)\) (?:NIL|"(?:[^"\\]|\\.)*") ', re.IGNORECASE)
_LITERAL_START = re.compile(rb"\{(\d+)\}\r\n")
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ATOM = re.compile(rb'[^\s()"{]+')


def parse_list_response(response: bytes) -> tuple[frozenset[str], bytes] | None:
    """``* LIST (\\HasNoChildren) "." "Sesje Rady"`` -> (flags in upper case, raw name)."""
    head = _LIST_HEAD.match(response)
    if head is None:
        return None
    flags = frozenset(f.upper() for f in head[1].decode("ascii", "replace").split())
    at = head.end()
    if literal := _LITERAL_START.match(response, at):
        name = response[literal.end() : literal.end() + int(literal[1])]
        return (flags, name) if len(name) == int(literal[1]) else None
    if quoted := _QUOTED.match(response, at):
        return flags, re.sub(rb"\\(.)", rb"\1", quoted[1], flags=re.DOTALL)
    if atom := _ATOM.match(response, at):
        return flags, atom[0]
    return None
