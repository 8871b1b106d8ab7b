"""The IMAP "opened" check: which distribution messages has a councillor read?

A scheduled job logs in to each councillor's mailbox as Dovecot's master user and looks for each
distribution message (found by its Message-ID, in whatever folder the councillor moved it to) and
its ``\\Seen`` flag, without ever setting that flag itself: folders are opened with EXAMINE
(read-only) and only FLAGS and ``BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]`` are fetched.

The conversation is spoken here over asyncio streams rather than through aioimaplib, whose 2.0
client cannot do this job safely: EXAMINE does not move it to the selected state (so UID SEARCH
and UID FETCH are refused after it, and ``mailsvc.mailbox`` has to SELECT), and it strips every
``"* "`` from untagged lines, which corrupts folder names such as ``"Pilne * sesje"``. The subset
needed (LOGIN, LIST, EXAMINE, UID SEARCH, UID FETCH, LOGOUT; literals both ways) is small.

Public API: :func:`check_seen`, :func:`check_many`, :class:`SeenResult`, :class:`SeenCheckFailure`,
and the modified UTF-7 codec for folder names (:func:`encode_mailbox_name`,
:func:`decode_mailbox_name`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import ssl
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

log = logging.getLogger(__name__)

# Message-IDs asked for in one UID SEARCH (an OR chain); keeps command lines far below Dovecot's
# 64 KiB imap_max_line_length.
_SEARCH_BATCH = 50
# No literal we ask for (a Message-ID header, a folder name) is anywhere near this; a server that
# announces more is not talking about what we asked.
_MAX_LITERAL = 1 << 20
_LOGOUT_TIMEOUT = 2.0
_SEEN = "\\SEEN"
_UNSELECTABLE = frozenset({"\\NOSELECT", "\\NONEXISTENT"})


class SeenCheckFailure(StrEnum):
    """Why a mailbox could not be checked; stable values for logs and stored evidence."""

    UNREACHABLE = "unreachable"  # no TCP/TLS connection or no IMAP greeting
    TIMEOUT = "timeout"  # the server stopped answering within the timeout
    LOGIN_REFUSED = "login-refused"  # wrong master secret or login name (fix the configuration)
    # Dovecot's NO [UNAVAILABLE]: a temporary failure (LDAP down) — and also its answer to a
    # master login for a mailbox that does not exist or is disabled.
    LOGIN_UNAVAILABLE = "login-unavailable"
    SERVER_ERROR = "server-error"  # connection broken or answers we cannot use after login
    NO_CREDENTIALS = "no-credentials"  # check_many: the credentials callable failed


@dataclass(frozen=True)
class SeenResult:
    """What one mailbox says about the message-ids asked for.

    Every valid id asked for is in exactly one of ``seen``, ``unseen`` and ``missing`` — unless
    ``error`` is set, when all three are empty because nothing is known. Ids that could not be
    sent to the server safely (CR, LF, quotes, non-ASCII, no angle brackets) are in ``rejected``.
    """

    mailbox: str  # the councillor's address
    seen: dict[str, str]  # message-id (with <>) -> folder where found with \Seen
    unseen: frozenset[str]  # found, but in no folder with \Seen
    missing: frozenset[str]  # not found in any folder (deleted or never delivered)
    error: str | None = None  # what went wrong, for people; ``failure`` says it for code
    failure: SeenCheckFailure | None = None
    rejected: frozenset[str] = field(default_factory=frozenset)


async def check_seen(
    host: str,
    port: int,
    login: str,
    password: str,
    mailbox: str,
    message_ids: Collection[str],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - per step (connect, each answer), not overall
    ssl_context: ssl.SSLContext | None = None,
) -> SeenResult:
    """Look for each message-id in every selectable folder of one mailbox, INBOX first.

    ``login``/``password`` are usually Dovecot master credentials (``<mailbox>*master``). Never
    raises for the mailbox's own trouble: an unreachable server, a refused login or a broken
    conversation is reported in ``error``/``failure``. ``timeout`` bounds the connection and each
    command's whole answer. A copy found with ``\\Seen`` in any folder wins over an unseen copy
    elsewhere, so the search stops early only once every id has been found seen.
    """
    wanted, rejected = _split_valid_ids(message_ids)
    if not wanted:
        return SeenResult(mailbox, {}, frozenset(), frozenset(), rejected=rejected)
    try:
        conn = await _Connection.open(host, port, timeout, ssl_context)
    except _CheckFailed as exc:
        return _failed(mailbox, exc, rejected)
    try:
        await conn.login(login, password)
        seen, unseen = await _search_mailbox(conn, wanted)
    except _CheckFailed as exc:
        return _failed(mailbox, exc, rejected)
    finally:
        await conn.logout()
    return SeenResult(
        mailbox,
        seen,
        frozenset(unseen - seen.keys()),
        frozenset(wanted - seen.keys() - unseen),
        rejected=rejected,
    )


async def check_many(
    targets: Mapping[str, Collection[str]],
    credentials: Callable[[str], tuple[str, str]],
    host: str,
    port: int,
    *,
    concurrency: int = 4,
    timeout: float = 10.0,  # noqa: ASYNC109 - passed on to check_seen
    ssl_context: ssl.SSLContext | None = None,
) -> list[SeenResult]:
    """Check several mailboxes, at most ``concurrency`` connections at a time.

    ``targets`` maps a councillor's address to the message-ids sent to them; ``credentials``
    gives the IMAP login and password for an address (e.g. ``mailsvc.stack.master_credentials``
    bound to the settings). Results come back in the order of ``targets``; one mailbox's trouble
    is reported in its own result and never stops the others.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    gate = asyncio.Semaphore(concurrency)

    async def one(mailbox: str, ids: Collection[str]) -> SeenResult:
        try:
            login, password = credentials(mailbox)
        except Exception as exc:  # any lookup failure belongs to this mailbox only
            failure = _CheckFailed(
                SeenCheckFailure.NO_CREDENTIALS, f"no IMAP credentials for {mailbox}: {exc!r}"
            )
            return _failed(mailbox, failure, frozenset())
        async with gate:
            return await check_seen(
                host, port, login, password, mailbox, ids, timeout=timeout, ssl_context=ssl_context
            )

    return list(await asyncio.gather(*(one(m, ids) for m, ids in targets.items())))


# -- folder names: modified UTF-7 (RFC 3501 section 5.1.3) -----------------------------------

_MUTF7_SHIFTED = re.compile(rb"&([A-Za-z0-9+,]*)-")
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]+")


def encode_mailbox_name(name: str) -> bytes:
    """``"Sesje Rady.Wrzesień"`` -> ``b"Sesje Rady.Wrzesie&AUQ-"``: what IMAP commands carry."""

    def shift(run: re.Match[str]) -> str:
        packed = base64.b64encode(run.group().encode("utf-16-be")).rstrip(b"=")
        return "&" + packed.replace(b"/", b",").decode("ascii") + "-"

    return _NOT_PRINTABLE_ASCII.sub(shift, name.replace("&", "&-")).encode("ascii")


def decode_mailbox_name(raw: bytes) -> str:
    """The folder name for people; raises ValueError for bytes that are not modified UTF-7."""
    parts = _MUTF7_SHIFTED.split(raw)
    text: list[str] = []
    for i, part in enumerate(parts):
        if i % 2 == 0:  # plain text between shifted runs
            if b"&" in part or not all(0x20 <= b <= 0x7E for b in part):
                raise ValueError(f"not modified UTF-7: {raw!r}")
            text.append(part.decode("ascii"))
        elif not part:
            text.append("&")
        else:
            packed = part.replace(b",", b"/")
            try:
                utf16 = base64.b64decode(packed + b"=" * (-len(packed) % 4), validate=True)
                text.append(utf16.decode("utf-16-be"))
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise ValueError(f"not modified UTF-7: {raw!r}") from exc
    return "".join(text)


def _folder_display_name(raw: bytes) -> str:
    if not raw.isascii():  # a server with UTF8=ACCEPT on sends UTF-8 names as they are
        return raw.decode("utf-8", "replace")
    try:
        return decode_mailbox_name(raw)
    except ValueError:
        return raw.decode("ascii")


# -- message-ids ---------------------------------------------------------------------------

# What may travel inside an IMAP quoted string without doubt: printable ASCII except the quote
# (a backslash is escaped). CR/LF would end the command line and let the rest run as a command.
_SAFE_ID = re.compile(r"<[\x20-\x21\x23-\x7e]+>")


def _split_valid_ids(message_ids: Collection[str]) -> tuple[frozenset[str], frozenset[str]]:
    valid = {m for m in message_ids if _SAFE_ID.fullmatch(m)}
    return frozenset(valid), frozenset(set(message_ids) - valid)


def _quoted(value: bytes) -> bytes:
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _header_message_ids(header: bytes) -> set[str]:
    """The Message-ID values in a fetched ``HEADER.FIELDS (MESSAGE-ID)`` block, unfolded."""
    unfolded = re.sub(rb"\r?\n[ \t]+", b" ", header)
    ids: set[str] = set()
    for line in re.split(rb"\r?\n", unfolded):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"message-id":
            text = value.decode("utf-8", "replace").strip()
            bracketed = re.search(r"<[^<>]*>", text)
            ids.add(bracketed.group() if bracketed else text)
    return ids


# -- searching one mailbox -----------------------------------------------------------------


async def _search_mailbox(
    conn: _Connection, wanted: frozenset[str]
) -> tuple[dict[str, str], set[str]]:
    """Walk the folders, INBOX first; returns (id -> folder where seen, ids found unseen)."""
    seen: dict[str, str] = {}
    unseen: set[str] = set()
    for raw_name in await conn.list_folders():
        pending = sorted(wanted - seen.keys())
        if not pending:
            break
        if not await conn.examine(raw_name):
            continue
        folder = _folder_display_name(raw_name)
        for batch in _batches(pending, _SEARCH_BATCH):
            uids = await conn.uid_search_message_ids(batch)
            if not uids:
                continue
            for flags, ids in await conn.uid_fetch_flags_and_ids(uids):
                for message_id in ids & wanted:
                    if _SEEN in flags:
                        seen.setdefault(message_id, folder)
                    else:
                        unseen.add(message_id)
    return seen, unseen


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _failed(mailbox: str, exc: _CheckFailed, rejected: frozenset[str]) -> SeenResult:
    log.info("IMAP seen check of %s failed: %s", mailbox, exc.message)
    return SeenResult(
        mailbox,
        {},
        frozenset(),
        frozenset(),
        error=exc.message,
        failure=exc.failure,
        rejected=rejected,
    )


# -- the IMAP conversation -----------------------------------------------------------------


class _CheckFailed(Exception):
    def __init__(self, failure: SeenCheckFailure, message: str) -> None:
        super().__init__(message)
        self.failure, self.message = failure, message


@dataclass(frozen=True)
class _Literal:
    """A command argument sent as an IMAP literal (bytes a quoted string cannot carry)."""

    data: bytes


def _astring(value: bytes) -> bytes | _Literal:
    if all(0x20 <= b <= 0x7E for b in value):
        return _quoted(value)
    return _Literal(value)


@dataclass
class _Answer:
    status: str  # OK, NO or BAD
    text: bytes  # the tagged line after the status, response code included
    untagged: list[bytes]  # raw untagged responses (without "* "), literals inlined


_LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}\r\n\Z")
_RESPONSE_CODE = re.compile(rb"\A\[([A-Z-]+)")
_CAPABILITY_CODE = re.compile(rb"\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)


class _Connection:
    """One IMAP client connection, one command at a time."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str, timeout: float
    ) -> None:
        self._reader, self._writer, self._where, self._timeout = reader, writer, where, timeout
        self._tag = 0
        self._literal_plus = False
        self._logged_in = False

    @classmethod
    async def open(
        cls, host: str, port: int, step_timeout: float, ssl_context: ssl.SSLContext | None
    ) -> _Connection:
        where = f"IMAP {host}:{port}"
        try:
            async with asyncio.timeout(step_timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=ssl_context, limit=_MAX_LITERAL
                )
        except TimeoutError as exc:
            raise _CheckFailed(
                SeenCheckFailure.UNREACHABLE,
                f"{where} did not accept a connection in {step_timeout}s",
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise _CheckFailed(SeenCheckFailure.UNREACHABLE, f"{where} unreachable: {exc}") from exc
        conn = cls(reader, writer, where, step_timeout)
        try:
            async with asyncio.timeout(step_timeout):
                greeting = await conn._read_response()
            if not greeting.startswith(b"* OK"):
                raise _CheckFailed(
                    SeenCheckFailure.UNREACHABLE, f"{where} greeted with {_show(greeting)}"
                )
        except TimeoutError as exc:
            await conn.logout()
            raise _CheckFailed(
                SeenCheckFailure.TIMEOUT, f"{where} sent no greeting in {step_timeout}s"
            ) from exc
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            await conn.logout()
            raise _CheckFailed(
                SeenCheckFailure.UNREACHABLE, f"{where} closed before greeting: {exc!r}"
            ) from exc
        except _CheckFailed:
            await conn.logout()
            raise
        conn._note_capabilities(greeting)
        return conn

    async def login(self, user: str, password: str) -> None:
        try:
            answer = await self._command(
                b"LOGIN ", _astring(user.encode("utf-8")), b" ", _astring(password.encode("utf-8"))
            )
        except _CheckFailed as exc:
            if exc.failure is not SeenCheckFailure.SERVER_ERROR:
                raise
            # Dovecot's imap-login sometimes hangs up instead of answering NO [UNAVAILABLE]
            # when a master login names a mailbox its userdb does not know.
            raise _CheckFailed(
                SeenCheckFailure.LOGIN_UNAVAILABLE,
                f"{self._where} hung up in answer to the login {user}; the server is busy or"
                " its directory is down, or no such mailbox exists",
            ) from exc
        if answer.status == "OK":
            self._logged_in = True
            self._note_capabilities(answer.text)
            return
        code = _RESPONSE_CODE.match(answer.text)
        if code and code.group(1) == b"UNAVAILABLE":
            raise _CheckFailed(
                SeenCheckFailure.LOGIN_UNAVAILABLE,
                f"{self._where} could not log in {user} now ({_show(answer.text)}); the server"
                " is busy or its directory is down, or no such mailbox exists",
            )
        raise _CheckFailed(
            SeenCheckFailure.LOGIN_REFUSED,
            f"{self._where} refused the login {user} ({_show(answer.text)}); check the master"
            " user's secret",
        )

    async def list_folders(self) -> list[bytes]:
        """Every selectable folder's name as the server spells it, INBOX first."""
        answer = await self._command(b'LIST "" "*"')
        if answer.status != "OK":
            raise _CheckFailed(
                SeenCheckFailure.SERVER_ERROR, f"{self._where} LIST failed: {_show(answer.text)}"
            )
        names: list[bytes] = []
        for response in answer.untagged:
            if response[:5].upper() != b"LIST ":
                continue
            listed = _parse_list_response(response)
            if listed is None:
                raise _CheckFailed(
                    SeenCheckFailure.SERVER_ERROR, f"{self._where} sent {_show(response)}"
                )
            flags, name = listed
            if not flags & _UNSELECTABLE and name not in names:
                names.append(name)
        # INBOX is case-insensitive and first: that is where unread distributions usually are.
        return sorted(names, key=lambda n: n.upper() != b"INBOX")

    async def examine(self, raw_name: bytes) -> bool:
        """Open a folder read-only; False when it is gone or empty (nothing to look for)."""
        answer = await self._command(b"EXAMINE ", _astring(raw_name))
        if answer.status != "OK":
            # Deleted or renamed since LIST: whatever was in it is not there any more.
            log.debug("%s EXAMINE %r: %s", self._where, raw_name, _show(answer.text))
            return False
        return any(re.fullmatch(rb"[1-9]\d* EXISTS", r, re.IGNORECASE) for r in answer.untagged)

    async def uid_search_message_ids(self, message_ids: Sequence[str]) -> list[int]:
        keys = [b"HEADER Message-ID " + _quoted(m.encode("ascii")) for m in message_ids]
        criteria = b"OR " * (len(keys) - 1) + b" ".join(keys)
        answer = await self._command(b"UID SEARCH ", criteria)
        self._require_ok(answer, "UID SEARCH")
        uids: list[int] = []
        for response in answer.untagged:
            words = response.split()
            if words and words[0].upper() == b"SEARCH":
                uids.extend(int(w) for w in words[1:] if w.isdigit())
        return uids

    async def uid_fetch_flags_and_ids(self, uids: Iterable[int]) -> list[tuple[set[str], set[str]]]:
        """(flags in upper case, Message-IDs in the header) of each message asked for."""
        uid_set = ",".join(str(u) for u in sorted(set(uids))).encode("ascii")
        answer = await self._command(
            b"UID FETCH ", uid_set, b" (UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
        )
        self._require_ok(answer, "UID FETCH")
        found: list[tuple[set[str], set[str]]] = []
        for response in answer.untagged:
            parsed = _parse_fetch_response(response)
            if parsed is not None:  # unsolicited flag updates carry no header: not ours
                found.append(parsed)
        return found

    async def logout(self) -> None:
        """Say goodbye if the conversation is still sound, then close; never raises."""
        if self._logged_in and not self._writer.is_closing():
            with contextlib.suppress(_CheckFailed):
                await self._command(b"LOGOUT", within=min(self._timeout, _LOGOUT_TIMEOUT))
        self._close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            async with asyncio.timeout(_LOGOUT_TIMEOUT):
                await self._writer.wait_closed()

    def _close(self) -> None:
        self._logged_in = False
        self._writer.close()

    def _require_ok(self, answer: _Answer, what: str) -> None:
        if answer.status != "OK":
            raise _CheckFailed(
                SeenCheckFailure.SERVER_ERROR, f"{self._where} {what} failed: {_show(answer.text)}"
            )

    def _note_capabilities(self, line: bytes) -> None:
        found = _CAPABILITY_CODE.search(line)
        if found:
            self._literal_plus = b"LITERAL+" in found.group(1).upper().split()

    async def _command(self, *parts: bytes | _Literal, within: float | None = None) -> _Answer:
        """Send one command and read up to its tagged answer, all within the timeout."""
        limit = self._timeout if within is None else within
        self._tag += 1
        tag = b"c%d" % self._tag
        try:
            async with asyncio.timeout(limit):
                return await self._exchange(tag, parts)
        except TimeoutError as exc:
            self._close()
            raise _CheckFailed(
                SeenCheckFailure.TIMEOUT, f"{self._where} did not answer within {limit}s"
            ) from exc
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self._close()
            raise _CheckFailed(
                SeenCheckFailure.SERVER_ERROR, f"{self._where} broke the connection: {exc!r}"
            ) from exc
        except _CheckFailed:
            self._close()
            raise

    async def _exchange(self, tag: bytes, parts: Sequence[bytes | _Literal]) -> _Answer:
        untagged: list[bytes] = []
        pending = tag + b" "
        for part in parts:
            if not isinstance(part, _Literal):
                pending += part
                continue
            if self._literal_plus:
                pending += b"{%d+}\r\n" % len(part.data) + part.data
                continue
            # A synchronizing literal: the server must say "+" before the bytes follow.
            self._writer.write(pending + b"{%d}\r\n" % len(part.data))
            await self._writer.drain()
            refused = await self._read_until(tag, untagged, continuation=True)
            if refused is not None:
                return refused
            pending = part.data
        self._writer.write(pending + b"\r\n")
        await self._writer.drain()
        answer = await self._read_until(tag, untagged, continuation=False)
        assert answer is not None
        return answer

    async def _read_until(
        self, tag: bytes, untagged: list[bytes], *, continuation: bool
    ) -> _Answer | None:
        """Collect untagged responses up to the tagged answer (or a "+" when one is awaited)."""
        while True:
            response = await self._read_response()
            if response.startswith(b"* "):
                untagged.append(response[2:])
            elif response.startswith(b"+"):
                if continuation:
                    return None
            elif response.startswith(tag + b" "):
                status, _, text = response[len(tag) + 1 :].partition(b" ")
                return _Answer(status.decode("ascii", "replace").upper(), text, untagged)
            else:
                raise _CheckFailed(
                    SeenCheckFailure.SERVER_ERROR, f"{self._where} sent {_show(response)}"
                )

    async def _read_response(self) -> bytes:
        """One response: a line plus the literals it announces, inlined, without the final CRLF."""
        chunks: list[bytes] = []
        while True:
            line = await self._reader.readuntil(b"\r\n")
            chunks.append(line)
            literal = _LITERAL_AT_END.search(line)
            if literal is None:
                return b"".join(chunks)[:-2]
            size = int(literal.group(1))
            if size > _MAX_LITERAL:
                raise asyncio.LimitOverrunError(f"a {size}-byte literal", size)
            chunks.append(await self._reader.readexactly(size))


def _show(line: bytes) -> str:
    return repr(line[:200].decode("utf-8", "replace"))


# -- response parsing ----------------------------------------------------------------------

# A parsed IMAP value: an atom (str), a string — quoted or literal — (bytes), or a list.
_Value = str | bytes | list["_Value"]

_ATOM_END = frozenset(b" ()\r\n")
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n")


def _parse_values(data: bytes) -> list[_Value]:
    """Tokenise a response (literals inlined as ``{n}\\r\\n`` + n bytes) into nested values."""
    stack: list[list[_Value]] = [[]]
    i = 0
    while i < len(data):
        c = data[i]
        if c == 0x20:  # space
            i += 1
        elif c == 0x28:  # (
            stack.append([])
            i += 1
        elif c == 0x29:  # )
            if len(stack) == 1:
                raise ValueError("unbalanced parenthesis")
            inner = stack.pop()
            stack[-1].append(inner)
            i += 1
        elif c == 0x22:  # "
            value, i = _parse_quoted(data, i + 1)
            stack[-1].append(value)
        elif c == 0x7B and (literal := _LITERAL.match(data, i)):
            start = literal.end()
            end = start + int(literal.group(1))
            if end > len(data):
                raise ValueError("literal runs past the response")
            stack[-1].append(data[start:end])
            i = end
        else:
            start = i
            while i < len(data) and data[i] not in _ATOM_END:
                if data[i] == 0x5B:  # [ : a section such as BODY[HEADER.FIELDS (MESSAGE-ID)]
                    close = data.find(b"]", i)
                    if close < 0:
                        raise ValueError("unclosed section")
                    i = close
                i += 1
            stack[-1].append(data[start:i].decode("utf-8", "replace"))
    if len(stack) != 1:
        raise ValueError("unbalanced parenthesis")
    return stack[0]


def _parse_quoted(data: bytes, i: int) -> tuple[bytes, int]:
    out = bytearray()
    while i < len(data):
        c = data[i]
        if c == 0x5C and i + 1 < len(data):  # backslash escapes the next byte
            out.append(data[i + 1])
            i += 2
        elif c == 0x22:
            return bytes(out), i + 1
        else:
            out.append(c)
            i += 1
    raise ValueError("unterminated quoted string")


def _as_bytes(value: _Value) -> bytes | None:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str) and value.upper() != "NIL":
        return value.encode("utf-8")
    return None


def _parse_list_response(response: bytes) -> tuple[frozenset[str], bytes] | None:
    """``LIST (\\HasNoChildren) "." "Sesje Rady"`` -> (flags in upper case, raw name)."""
    try:
        values = _parse_values(response)
    except ValueError:
        return None
    if len(values) != 4 or not isinstance(values[1], list):
        return None
    flags = frozenset(f.upper() for f in values[1] if isinstance(f, str))
    name = _as_bytes(values[3])
    return (flags, name) if name is not None else None


def _parse_fetch_response(response: bytes) -> tuple[set[str], set[str]] | None:
    """``12 FETCH (UID 7 FLAGS (\\Seen) BODY[HEADER.FIELDS (MESSAGE-ID)] {n}...)``."""
    try:
        values = _parse_values(response)
    except ValueError:
        return None
    if len(values) != 3 or str(values[1]).upper() != "FETCH" or not isinstance(values[2], list):
        return None
    items = values[2]
    flags: set[str] | None = None
    header: bytes | None = None
    for key, value in zip(items[::2], items[1::2], strict=False):
        if not isinstance(key, str):
            continue
        name = key.upper()
        if name == "FLAGS" and isinstance(value, list):
            flags = {f.upper() for f in value if isinstance(f, str)}
        elif name.startswith("BODY[HEADER.FIELDS"):
            header = _as_bytes(value)
    if flags is None or header is None:
        return None
    return flags, _header_message_ids(header)
