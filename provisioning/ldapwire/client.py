"""The connection: StartTLS if asked, simple bind, up to ``window`` AddRequests in flight
matched by messageID, unbind; every way a connection fails turned into a result per entry."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Collection, Mapping, Sequence
from types import TracebackType
from typing import Final
from urllib.parse import unquote, urlsplit

from provisioning.ldapwire.ber import (
    ResponseReader,
    encode_add_request,
    encode_bind_request,
    encode_extended_request,
    encode_search_request,
    encode_unbind_request,
    paged_cookie,
)
from provisioning.ldapwire.protocol import (
    ADD_RESPONSE,
    BIND_RESPONSE,
    ENCODING_ERROR,
    EXTENDED_RESPONSE,
    MAX_MESSAGE_ID,
    SEARCH_RESULT_DONE,
    SEARCH_RESULT_ENTRY,
    SEARCH_RESULT_REFERENCE,
    SERVER_DOWN,
    START_TLS,
    SUCCESS,
    TIMEOUT,
    LdapBindError,
    LdapConnectionError,
    LdapProtocolError,
    LdapResponse,
    LdapResult,
    LdapSearchError,
    LdapTimeoutError,
)

_READ_SIZE: Final = 1 << 16


# --- the client -------------------------------------------------------------------------------

AddEntry = tuple[str, Mapping[str, str | bytes | Sequence[str | bytes]]]
FoundEntry = tuple[str, dict[str, list[str]]]  # DN, attribute type → values (UTF-8 text)


def _address(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ldap", "ldaps"):
        raise ValueError(f"{url!r}: expected ldap://host:port or ldaps://host:port")
    host = unquote(parts.hostname or "") or "localhost"
    try:
        port = parts.port or (636 if scheme == "ldaps" else 389)
    except ValueError as exc:
        raise ValueError(f"{url!r}: bad port") from exc
    return host, port, scheme == "ldaps"


class LdapWire:
    """One LDAPv3 connection, bound, that adds entries with many requests in flight.

    Made by :meth:`connect`; an async context manager that unbinds and closes on exit. Not for
    use by several tasks at once: ``add_many`` owns the connection while it runs.
    """

    def __init__(
        self,
        url: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        timeout: float,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._reader = reader
        self._writer = writer
        self._responses = ResponseReader()
        self._last_id = 0
        self._broken: LdapConnectionError | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        bind_dn: str,
        password: str,
        timeout: float = 5.0,  # noqa: ASYNC109 - per step (connect, each answer), not overall
        *,
        ssl_context: ssl.SSLContext | None = None,
        starttls: bool = False,
    ) -> LdapWire:
        """Open a connection to ``url`` (ldap:// or ldaps://) and bind as ``bind_dn``.

        ``timeout`` bounds the connection, StartTLS, the bind and every later wait for an
        answer. ldaps://, and ldap:// with ``starttls``, verify the server's certificate and
        host name (``ssl.create_default_context()`` unless ``ssl_context`` is given); with
        ``starttls`` nothing else is sent until TLS is up, and a directory that refuses it is
        an error, never a bind in clear text. Raises LdapConnectionError (unreachable, StartTLS
        refused, TLS failure), LdapTimeoutError, LdapBindError (refused: wrong DN or password,
        or busy), LdapProtocolError (what answered is not an LDAP server) or ValueError (bad
        URL, StartTLS on ldaps://, or a DN without a password).
        """
        host, port, tls = _address(url)
        if tls and starttls:
            raise ValueError(f"{url}: StartTLS is for ldap://; ldaps:// is TLS already")
        if bind_dn and not password:
            # RFC 4513 5.1.2: a name with an empty password is an unauthenticated bind that
            # "succeeds" with no rights at all; refuse it here rather than fail every add.
            raise ValueError(f"no password for {bind_dn}: refusing an unauthenticated bind")
        context = (ssl_context or ssl.create_default_context()) if tls or starttls else None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=None if starttls else context, limit=_READ_SIZE
                )
        except TimeoutError as exc:
            raise LdapTimeoutError(f"{url}: no connection within {timeout:g} s") from exc
        except ssl.SSLError as exc:
            raise LdapConnectionError(f"{url}: TLS handshake failed: {exc}") from exc
        except OSError as exc:
            raise LdapConnectionError(f"{url}: cannot connect: {exc}") from exc
        wire = cls(url, reader, writer, timeout)
        try:
            if starttls and context is not None:
                await wire._start_tls(context, host)
            await wire._bind(bind_dn, password)
        except BaseException:
            wire._abort()
            raise
        return wire

    async def __aenter__(self) -> LdapWire:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._broken is not None

    @property
    def max_response_bytes(self) -> int:
        """The largest single answer accepted (DEFAULT_MAX_RESPONSE_BYTES unless raised for
        an entry known to be large, such as a group of tens of thousands of members)."""
        return self._responses.max_message_bytes

    @max_response_bytes.setter
    def max_response_bytes(self, limit: int) -> None:
        self._responses.max_message_bytes = limit

    def _next_id(self) -> int:
        self._last_id = self._last_id % MAX_MESSAGE_ID + 1
        return self._last_id

    async def _start_tls(self, context: ssl.SSLContext, host: str) -> None:
        """StartTLS (RFC 4511 4.14, RFC 4513 3): ask, and on success do the handshake on this
        connection. Anything but success is an error: the caller never binds in clear text."""
        message_id = self._next_id()
        self._writer.write(encode_extended_request(message_id, START_TLS))
        responses = await self._receive()
        response = responses[0]
        if (
            len(responses) > 1
            or self._responses.pending_bytes
            or response.message_id != message_id
            or response.op != EXTENDED_RESPONSE
        ):
            # Bytes after the answer would be read as if they had come over TLS.
            raise LdapProtocolError(
                f"{self.url}: expected only the StartTLS response, got protocolOp "
                f"{response.op} for message {response.message_id}"
            )
        if response.result.code != SUCCESS:
            raise LdapConnectionError(
                f"{self.url} refused StartTLS: {response.result}; the directory offers no TLS "
                "on this port (use ldaps://, or enable TLS on the directory)"
            )
        try:
            async with asyncio.timeout(self.timeout):
                await self._writer.start_tls(context, server_hostname=host)
        except TimeoutError as exc:
            raise LdapTimeoutError(
                f"{self.url}: no TLS handshake after StartTLS within {self.timeout:g} s"
            ) from exc
        except ssl.SSLError as exc:
            raise LdapConnectionError(f"{self.url}: TLS handshake failed: {exc}") from exc
        except OSError as exc:
            raise LdapConnectionError(f"{self.url}: connection lost in StartTLS: {exc}") from exc

    async def _bind(self, dn: str, password: str) -> None:
        message_id = self._next_id()
        self._writer.write(encode_bind_request(message_id, dn, password))
        responses = await self._receive()
        response = responses[0]
        if len(responses) > 1 or response.message_id != message_id or response.op != BIND_RESPONSE:
            raise LdapProtocolError(
                f"{self.url}: expected the bind response, got protocolOp {response.op} for "
                f"message {response.message_id}"
            )
        if response.result.code != SUCCESS:
            raise LdapBindError(
                f"{self.url} refused the bind as {dn}: {response.result}", response.result
            )

    async def _receive(self) -> list[LdapResponse]:
        """The next responses (at least one), waiting at most ``timeout`` for them.

        A notice of disconnection (or the connection closing) marks the wire broken; the
        responses read with it are still returned, and the next call raises.
        """
        if self._broken is not None:
            raise self._broken
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    data = await self._reader.read(_READ_SIZE)
            except TimeoutError as exc:
                raise LdapTimeoutError(f"{self.url}: no answer within {self.timeout:g} s") from exc
            except OSError as exc:
                raise LdapConnectionError(f"{self.url}: connection lost: {exc}") from exc
            if not data:
                raise LdapConnectionError(f"{self.url}: the directory closed the connection")
            out = []
            for response in self._responses.feed(data):
                if response.message_id != 0:
                    out.append(response)
                elif response.is_notice_of_disconnection:
                    self._broken = LdapConnectionError(
                        f"{self.url}: the directory is closing the connection "
                        f"(notice of disconnection: {response.result})"
                    )
                else:
                    raise LdapProtocolError(
                        f"{self.url}: unsolicited message (protocolOp {response.op}, "
                        f"{response.response_name or 'no name'})"
                    )
            if out:
                return out
            if self._broken is not None:
                raise self._broken

    async def add_many(
        self,
        entries: Sequence[AddEntry],
        *,
        object_classes: Sequence[str],
        window: int = 64,
        stop_on: Collection[int] = (),
    ) -> list[int | LdapResult]:
        """Add ``entries`` (DN, attributes) with up to ``window`` requests in flight.

        One result per entry, in order: ``0`` if it was added, else an LdapResult with the
        directory's code and diagnostic, or a client-side one: 83 (the entry cannot be
        encoded; the others are still sent), 81 (the connection broke or the directory sent a
        notice of disconnection before this entry's answer) or 85 (no answer within the
        timeout; the connection is then closed). With 81 and 85 the entry may or may not exist:
        read the directory again or add it again and treat "already exists" as done.

        Once an answer's code is in ``stop_on`` no further requests are sent; the entries not
        sent get a result with that code ("not sent: ..."); those already in flight keep their
        own answers.
        """
        if window < 1:
            raise ValueError("window must be at least 1")
        if self._broken is not None:
            raise self._broken
        count = len(entries)
        results: list[int | LdapResult | None] = [None] * count
        in_flight: dict[int, int] = {}  # messageID -> index
        classes = tuple(object_classes)
        writer = self._writer
        # Top the window up only when half of it is answered: fewer, larger writes.
        low = window // 2
        sent = 0
        stopped: LdapResult | None = None
        lost: LdapResult | None = None
        try:
            while True:
                if self._broken is not None:  # a notice of disconnection came with answers
                    raise self._broken
                if stopped is None and sent < count and len(in_flight) <= low:
                    batch = []
                    while sent < count and len(in_flight) < window:
                        dn, attributes = entries[sent]
                        message_id = self._next_id()
                        try:
                            batch.append(encode_add_request(message_id, dn, attributes, classes))
                        except (TypeError, ValueError) as exc:
                            results[sent] = LdapResult(ENCODING_ERROR, "", f"not sent: {exc}")
                        else:
                            in_flight[message_id] = sent
                        sent += 1
                    if batch:
                        writer.write(b"".join(batch))
                        async with asyncio.timeout(self.timeout):
                            await writer.drain()
                if not in_flight:
                    break
                for response in await self._receive():
                    index = in_flight.pop(response.message_id, None)
                    if index is None or response.op != ADD_RESPONSE:
                        raise LdapProtocolError(
                            f"{self.url}: unexpected answer (protocolOp {response.op}) for "
                            f"message {response.message_id}"
                        )
                    result = response.result
                    if result.code == SUCCESS:
                        results[index] = SUCCESS
                        continue
                    results[index] = result
                    if stopped is None and result.code in stop_on:
                        stopped = LdapResult(
                            result.code, "", f"not sent: an earlier entry got {result}"
                        )
        except (OSError, TimeoutError, LdapProtocolError) as exc:
            error = self._lost(exc)
            code = TIMEOUT if isinstance(error, TimeoutError) else SERVER_DOWN
            lost = LdapResult(code, "", str(error))
            self._abort(error)
        except BaseException:  # cancelled: the connection's state is unknown
            self._abort()
            raise
        default = lost or stopped or LdapResult(SERVER_DOWN, "", "no answer")
        return [default if r is None else r for r in results]

    async def search(
        self,
        base: str,
        scope: int,
        equal: tuple[str, str],
        attributes: Sequence[str],
        *,
        page_size: int = 2000,
    ) -> list[FoundEntry]:
        """Every entry under ``base`` (``scope``: ``ber.WHOLE_SUBTREE`` etc.) whose attribute
        ``equal[0]`` has the value ``equal[1]``, with ``attributes``; asked for a page of
        ``page_size`` at a time (paged results control), each page decoded as it arrives.

        LdapSearchError when the directory answers with an error (its code in ``result``);
        LdapConnectionError (the connection is then closed) when it breaks or stays silent.
        """
        if self._broken is not None:
            raise self._broken
        found: list[FoundEntry] = []
        cookie = b""
        try:
            while True:
                message_id = self._next_id()
                self._writer.write(
                    encode_search_request(
                        message_id,
                        base,
                        scope,
                        equal,
                        attributes,
                        page_size=page_size,
                        cookie=cookie,
                    )
                )
                async with asyncio.timeout(self.timeout):
                    await self._writer.drain()
                done: LdapResponse | None = None
                while done is None:
                    for response in await self._receive():
                        if response.message_id != message_id:
                            raise LdapProtocolError(
                                f"{self.url}: answer for message {response.message_id} while "
                                f"searching with message {message_id}"
                            )
                        if response.op == SEARCH_RESULT_ENTRY and response.entry is not None:
                            found.append(response.entry)
                        elif response.op == SEARCH_RESULT_DONE:
                            done = response
                        elif response.op != SEARCH_RESULT_REFERENCE:
                            raise LdapProtocolError(
                                f"{self.url}: unexpected answer (protocolOp {response.op}) "
                                f"to a search"
                            )
                if done.result.code != SUCCESS:
                    break
                cookie = paged_cookie(done.controls)
                if not cookie:
                    return found
        except (OSError, TimeoutError, LdapProtocolError) as exc:
            error = self._lost(exc)
            self._abort(error)
            raise error from exc
        except BaseException:  # cancelled: the connection's state is unknown
            self._abort()
            raise
        raise LdapSearchError(f"{self.url}: search of {base} failed: {done.result}", done.result)

    def _lost(self, exc: BaseException) -> LdapConnectionError:
        if isinstance(exc, LdapConnectionError):
            return exc
        if isinstance(exc, TimeoutError):  # from asyncio.timeout around drain()
            return LdapTimeoutError(f"{self.url}: could not send within {self.timeout:g} s")
        if isinstance(exc, LdapProtocolError):
            return LdapConnectionError(f"{self.url}: dropped after a malformed answer: {exc}")
        return LdapConnectionError(f"{self.url}: connection lost: {exc}")

    def _abort(self, error: LdapConnectionError | None = None) -> None:
        """Drop the connection at once (no unbind): its state is not to be trusted."""
        if self._broken is None:
            self._broken = error or LdapConnectionError(f"{self.url}: connection closed")
        self._writer.transport.abort()

    async def close(self) -> None:
        """Unbind and close (quietly: a broken connection is just dropped)."""
        if self._broken is not None:
            self._writer.transport.abort()
            return
        self._broken = LdapConnectionError(f"{self.url}: connection closed")
        try:
            self._writer.write(encode_unbind_request(self._next_id()))
            self._writer.close()
            async with asyncio.timeout(self.timeout):
                await self._writer.wait_closed()
        except (OSError, TimeoutError):
            self._writer.transport.abort()
