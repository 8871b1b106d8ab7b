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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import StrEnum
from typing import Any, TypeVar

import aioimaplib

from mailsvc.errors import MailsvcError, TemporaryFailure

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


class MailboxError(MailsvcError):
    def __init__(self, failure: MailboxFailure, message: str) -> None:
        super().__init__(message)
        self.failure = failure


class MailboxLoginFailed(MailboxError):
    """The IMAP server answered the login with NO or BAD."""


class MailboxUnavailable(MailboxError, TemporaryFailure):
    """The server could not be reached, stopped answering or broke the conversation."""


@contextlib.asynccontextmanager
async def open_mailbox(
    host: str,
    port: int,
    user: str,
    password: str,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - per step (connect, each answer), not overall
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[MailboxSession]:
    """A logged-in session; logs out and closes the connection on the way out."""
    session = MailboxSession(host, port, timeout, ssl_context)
    try:
        await session.login(user, password)
        yield session
    finally:
        await session.close()


async def read_inbox(
    host: str, port: int, user: str, password: str, *, headers_only: bool = False
) -> list[bytes]:
    """Every message in INBOX (or only its header), oldest first, without marking it read.

    Raises :class:`MailboxLoginFailed` for a refused login and :class:`MailboxUnavailable` (a
    TemporaryFailure) when the server is down, silent or breaks off.
    """
    async with open_mailbox(host, port, user, password) as mailbox:
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
        self, host: str, port: int, timeout: float, ssl_context: ssl.SSLContext | None
    ) -> None:
        self._where = f"IMAP {host}:{port}"
        self._timeout = timeout
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._usable = False  # logged in, and no step has failed since
        self._client = aioimaplib.IMAP4(
            host, port, timeout=timeout, conn_lost_cb=self._on_lost, ssl_context=ssl_context
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
        except (OSError, aioimaplib.AioImapException) as exc:
            raise self._failed(MailboxFailure.SERVER_ERROR, f"broke off {what}: {exc!r}") from exc
        finally:
            task.cancel()

    def _failed(self, failure: MailboxFailure, text: str) -> MailboxUnavailable:
        self._usable = False  # the conversation is in an unknown state: no LOGOUT
        if not text.startswith(self._where):
            text = f"{self._where} {text}"
        return MailboxUnavailable(failure, text)

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

    def __call__(self, data: bytes) -> None:
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
            del self._pending[: len(piece)]
            self._parse(piece)

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
