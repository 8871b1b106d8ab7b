"""A small asyncio LDAPv3 client for bulk adds: simple bind, pipelined AddRequests, unbind.

ldap3 encodes every request through pyasn1 and waits for each answer in a thread; for tens of
thousands of new entries that is most of the import's CPU. This module writes the few LDAP
messages it needs itself (BER, X.690 definite lengths, RFC 4511) and keeps up to ``window``
AddRequests in flight on one connection, matching the answers by messageID.

Only what bulk adds need is here: requests are BindRequest (simple), AddRequest and
UnbindRequest; responses are decoded as far as messageID, protocolOp and the LDAPResult
(resultCode, matchedDN, diagnosticMessage); referrals, SASL credentials, response values and
controls are skipped. Everything else (searches, modifies, escaping) stays with ldap3 in
``provisioning.directory``.

    async with await LdapWire.connect("ldap://127.0.0.1:389", admin_dn, password) as wire:
        results = await wire.add_many(entries, object_classes=["top", "inetOrgPerson"])
    # results[i] is 0 (added) or an LdapResult saying why not
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Collection, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from types import TracebackType
from typing import Final
from urllib.parse import unquote, urlsplit

from provisioning.errors import ProvisioningError

# --- result codes -----------------------------------------------------------------------------

SUCCESS: Final = 0
# Client-side codes (never sent by a server; the numbers of the LDAP C API): the answer is
# missing, so whether the entry was added is unknown until the directory is read again.
SERVER_DOWN: Final = 81
ENCODING_ERROR: Final = 83
TIMEOUT: Final = 85

RESULT_NAMES: Final[Mapping[int, str]] = {
    0: "success",
    1: "operationsError",
    2: "protocolError",
    3: "timeLimitExceeded",
    4: "sizeLimitExceeded",
    5: "compareFalse",
    6: "compareTrue",
    7: "authMethodNotSupported",
    8: "strongerAuthRequired",
    10: "referral",
    11: "adminLimitExceeded",
    12: "unavailableCriticalExtension",
    13: "confidentialityRequired",
    14: "saslBindInProgress",
    16: "noSuchAttribute",
    17: "undefinedAttributeType",
    18: "inappropriateMatching",
    19: "constraintViolation",
    20: "attributeOrValueExists",
    21: "invalidAttributeSyntax",
    32: "noSuchObject",
    33: "aliasProblem",
    34: "invalidDNSyntax",
    36: "aliasDereferencingProblem",
    48: "inappropriateAuthentication",
    49: "invalidCredentials",
    50: "insufficientAccessRights",
    51: "busy",
    52: "unavailable",
    53: "unwillingToPerform",
    54: "loopDetect",
    64: "namingViolation",
    65: "objectClassViolation",
    66: "notAllowedOnNonLeaf",
    67: "notAllowedOnRDN",
    68: "entryAlreadyExists",
    69: "objectClassModsProhibited",
    71: "affectsMultipleDSAs",
    80: "other",
    SERVER_DOWN: "serverDown",
    ENCODING_ERROR: "encodingError",
    TIMEOUT: "timeout",
}

NOTICE_OF_DISCONNECTION: Final = "1.3.6.1.4.1.1466.20036"

# protocolOp tags (APPLICATION n) of the responses this client understands: the ones made of
# an LDAPResult. The client only sends binds and adds, so only 1, 9 and 24 are expected.
BIND_RESPONSE: Final = 1
SEARCH_RESULT_DONE: Final = 5
MODIFY_RESPONSE: Final = 7
ADD_RESPONSE: Final = 9
DELETE_RESPONSE: Final = 11
MODIFY_DN_RESPONSE: Final = 13
COMPARE_RESPONSE: Final = 15
EXTENDED_RESPONSE: Final = 24
_RESULT_OPS: Final = frozenset(
    {
        BIND_RESPONSE,
        SEARCH_RESULT_DONE,
        MODIFY_RESPONSE,
        ADD_RESPONSE,
        DELETE_RESPONSE,
        MODIFY_DN_RESPONSE,
        COMPARE_RESPONSE,
        EXTENDED_RESPONSE,
    }
)

MAX_MESSAGE_ID: Final = 2**31 - 1
# A response to a bind or an add is a few dozen bytes; anything near this is not one.
DEFAULT_MAX_RESPONSE_BYTES: Final = 1 << 20
_READ_SIZE: Final = 1 << 16

# --- errors -----------------------------------------------------------------------------------


class LdapError(ProvisioningError):
    """Base of this module's errors."""


class LdapProtocolError(LdapError, ValueError):
    """Bytes from the server that are not a well-formed LDAPv3 response."""


class LdapConnectionError(LdapError, ConnectionError):
    """The directory cannot be reached, or the connection broke."""


class LdapTimeoutError(LdapConnectionError, TimeoutError):
    """The directory did not answer in time."""


class LdapBindError(LdapError):
    """The directory refused the bind; ``result`` says why (49: wrong DN or password)."""

    def __init__(self, message: str, result: LdapResult) -> None:
        super().__init__(message)
        self.result = result


# --- results and responses --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LdapResult:
    """An LDAPResult: what the directory answered (or a client-side code: 81, 83, 85)."""

    code: int
    matched_dn: str = ""
    message: str = ""

    @property
    def name(self) -> str:
        return RESULT_NAMES.get(self.code, f"result {self.code}")

    def __str__(self) -> str:
        text = f"{self.name} ({self.code})"
        return f"{text}: {self.message}" if self.message else text


@dataclass(frozen=True, slots=True)
class LdapResponse:
    """One decoded LDAPMessage from the server."""

    message_id: int
    op: int  # protocolOp tag number, [APPLICATION op]
    result: LdapResult
    response_name: str | None = None  # ExtendedResponse only

    @property
    def is_notice_of_disconnection(self) -> bool:
        return (
            self.message_id == 0
            and self.op == EXTENDED_RESPONSE
            and self.response_name in (None, NOTICE_OF_DISCONNECTION)
        )


# --- BER encoding (requests) ------------------------------------------------------------------
# Definite lengths, shortest form, as pyasn1 writes them; the tests compare byte for byte.


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    size = (n.bit_length() + 7) // 8
    return bytes((0x80 | size,)) + n.to_bytes(size, "big")


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    return bytes((tag,)) + _length(n) + content


def _integer(value: int, tag: int = 0x02) -> bytes:
    return _tlv(tag, value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True))


def _octets(value: str | bytes | bytearray) -> bytes:
    if isinstance(value, str):
        return _tlv(0x04, value.encode("utf-8"))
    if isinstance(value, (bytes, bytearray)):
        return _tlv(0x04, bytes(value))
    raise TypeError(f"an LDAP value must be str or bytes, not {type(value).__name__}")


def _message(message_id: int, op: bytes) -> bytes:
    if not 0 < message_id <= MAX_MESSAGE_ID:
        raise ValueError(f"messageID {message_id} is outside 1..{MAX_MESSAGE_ID}")
    return _tlv(0x30, _integer(message_id) + op)


def encode_bind_request(message_id: int, dn: str, password: str | bytes) -> bytes:
    """LDAPMessage with a simple BindRequest (LDAPv3)."""
    secret = password.encode("utf-8") if isinstance(password, str) else password
    body = b"\x02\x01\x03" + _octets(dn) + _tlv(0x80, secret)  # version 3, name, simple [0]
    return _message(message_id, _tlv(0x60, body))


def encode_unbind_request(message_id: int) -> bytes:
    """LDAPMessage with an UnbindRequest ([APPLICATION 2] NULL)."""
    return _message(message_id, b"\x42\x00")


_TYPE_CACHE: dict[str, bytes] = {}


def _attribute_type(name: str) -> bytes:
    encoded = _TYPE_CACHE.get(name)
    if encoded is None:
        if not name:
            raise ValueError("an attribute type must not be empty")
        encoded = _octets(name)
        if len(_TYPE_CACHE) < 1024:
            _TYPE_CACHE[name] = encoded
    return encoded


def _attribute(name: str, values: object) -> bytes:
    if isinstance(values, (str, bytes, bytearray)):
        vals = _octets(values)
    elif isinstance(values, (Sequence, AbstractSet)):
        vals = b"".join([_octets(v) for v in values])
    else:
        raise TypeError(
            f"values of {name!r} must be str, bytes or a sequence of them, "
            f"not {type(values).__name__}"
        )
    return _tlv(0x30, _attribute_type(name) + _tlv(0x31, vals))


def encode_add_request(
    message_id: int,
    dn: str,
    attributes: Mapping[str, object],
    object_classes: Sequence[str] = (),
) -> bytes:
    """LDAPMessage with an AddRequest for ``dn``.

    Values are stored literally (str as UTF-8; a str or bytes is one value, a list or tuple of
    them several). ``object_classes`` are merged into an ``objectClass`` attribute the way ldap3
    does it: where ``attributes`` has one, or else last, without repeats.
    """
    parts: list[bytes] = []
    merged = False
    for name, values in attributes.items():
        if object_classes and name.lower() == "objectclass":
            given = values if isinstance(values, (list, tuple)) else [values]
            values = _unique([*object_classes, *given])
            merged = True
        parts.append(_attribute(name, values))
    if object_classes and not merged:
        parts.append(_object_classes(tuple(object_classes)))
    body = _octets(dn) + _tlv(0x30, b"".join(parts))
    return _message(message_id, _tlv(0x68, body))


def _unique(values: Sequence[object]) -> list[object]:
    out: list[object] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


_CLASSES_CACHE: dict[tuple[str, ...], bytes] = {}


def _object_classes(classes: tuple[str, ...]) -> bytes:
    encoded = _CLASSES_CACHE.get(classes)
    if encoded is None:
        encoded = _attribute("objectClass", _unique(classes))
        if len(_CLASSES_CACHE) < 64:
            _CLASSES_CACHE[classes] = encoded
    return encoded


# --- BER decoding (responses) -----------------------------------------------------------------


def _header(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int, int]:
    """Tag, start and end of the contents of the element at ``pos`` (which must end by ``end``)."""
    if pos + 2 > end:
        raise LdapProtocolError(f"{what}: truncated element at byte {pos}")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise LdapProtocolError(f"{what}: multi-byte tag 0x{tag:02x} at byte {pos}")
    first = buf[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise LdapProtocolError(f"{what}: indefinite length at byte {pos - 1} (LDAP forbids it)")
    else:
        size = first & 0x7F
        if size > 8 or first == 0xFF:
            raise LdapProtocolError(f"{what}: length field of {size} bytes at byte {pos - 1}")
        if pos + size > end:
            raise LdapProtocolError(f"{what}: truncated length at byte {pos - 1}")
        length = int.from_bytes(buf[pos : pos + size], "big")
        pos += size
    if pos + length > end:
        raise LdapProtocolError(
            f"{what}: element of {length} bytes at byte {pos} runs past its enclosing element"
        )
    return tag, pos, pos + length


def _int_value(buf: bytes, start: int, end: int, what: str) -> int:
    if start == end:
        raise LdapProtocolError(f"{what}: empty INTEGER")
    if end - start > 8:
        raise LdapProtocolError(f"{what}: INTEGER of {end - start} bytes")
    return int.from_bytes(buf[start:end], "big", signed=True)


def _text(buf: bytes, start: int, end: int) -> str:
    return buf[start:end].decode("utf-8", "replace") if start != end else ""


def decode_message(buf: bytes, start: int = 0, end: int | None = None) -> LdapResponse:
    """Decode one whole LDAPMessage (a response made of an LDAPResult) from ``buf[start:end]``."""
    end = len(buf) if end is None else end
    tag, pos, stop = _header(buf, start, end, "LDAPMessage")
    if tag != 0x30:
        raise LdapProtocolError(f"LDAPMessage: expected SEQUENCE (0x30), got 0x{tag:02x}")
    if stop != end:
        raise LdapProtocolError(f"LDAPMessage: {end - stop} bytes after the message")
    tag, s, e = _header(buf, pos, stop, "messageID")
    if tag != 0x02:
        raise LdapProtocolError(f"messageID: expected INTEGER (0x02), got 0x{tag:02x}")
    message_id = _int_value(buf, s, e, "messageID")
    if not 0 <= message_id <= MAX_MESSAGE_ID:
        raise LdapProtocolError(f"messageID {message_id} is outside 0..{MAX_MESSAGE_ID}")
    tag, pos, op_end = _header(buf, e, stop, "protocolOp")
    op = tag & 0x1F
    if tag & 0xE0 != 0x60 or op not in _RESULT_OPS:
        raise LdapProtocolError(
            f"protocolOp 0x{tag:02x} (message {message_id}) is not a response this client "
            "understands (bind, add, extended)"
        )
    # LDAPResult: resultCode ENUMERATED, matchedDN, diagnosticMessage, then optional parts.
    tag, s, e = _header(buf, pos, op_end, "resultCode")
    if tag != 0x0A:
        raise LdapProtocolError(f"resultCode: expected ENUMERATED (0x0a), got 0x{tag:02x}")
    code = _int_value(buf, s, e, "resultCode")
    if code < 0:
        raise LdapProtocolError(f"resultCode {code} is negative")
    tag, s, e = _header(buf, e, op_end, "matchedDN")
    if tag != 0x04:
        raise LdapProtocolError(f"matchedDN: expected OCTET STRING (0x04), got 0x{tag:02x}")
    matched = _text(buf, s, e)
    tag, s, e = _header(buf, e, op_end, "diagnosticMessage")
    if tag != 0x04:
        raise LdapProtocolError(f"diagnosticMessage: expected OCTET STRING (0x04), got 0x{tag:02x}")
    diagnostic = _text(buf, s, e)
    response_name = None
    pos = e
    while pos < op_end:  # referral [3], serverSaslCreds [7], responseName [10], responseValue [11]
        tag, s, pos = _header(buf, pos, op_end, "response")
        if tag == 0x8A and op == EXTENDED_RESPONSE:
            response_name = _text(buf, s, pos)
    # Controls [0] and any later extension elements are skipped, but must be well formed.
    pos = op_end
    while pos < stop:
        _, _, pos = _header(buf, pos, stop, "controls")
    return LdapResponse(message_id, op, LdapResult(code, matched, diagnostic), response_name)


class ResponseReader:
    """Splits a byte stream into LDAPMessages: feed it whatever each read returned."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self._buf = bytearray()

    @property
    def pending_bytes(self) -> int:
        """Bytes of a message not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[LdapResponse]:
        """The messages completed by ``data`` (none if it ends inside one)."""
        buf = self._buf
        buf += data
        out: list[LdapResponse] = []
        pos, size = 0, len(buf)
        view = bytes(buf) if size else b""
        while size - pos >= 2:
            if view[pos] != 0x30:
                raise LdapProtocolError(
                    f"expected an LDAPMessage (SEQUENCE, 0x30), got 0x{view[pos]:02x}"
                )
            first = view[pos + 1]
            if first < 0x80:
                head, length = 2, first
            elif first == 0x80 or first == 0xFF or first & 0x7F > 8:
                raise LdapProtocolError(f"LDAPMessage: bad length octet 0x{first:02x}")
            else:
                head = 2 + (first & 0x7F)
                if size - pos < head:
                    break
                length = int.from_bytes(view[pos + 2 : pos + head], "big")
            if length > self.max_message_bytes:
                raise LdapProtocolError(
                    f"LDAPMessage of {length:,} bytes is over the limit of "
                    f"{self.max_message_bytes:,} bytes for a response"
                )
            if size - pos < head + length:
                break
            out.append(decode_message(view, pos, pos + head + length))
            pos += head + length
        if pos:
            del buf[:pos]
        return out


# --- the client -------------------------------------------------------------------------------

AddEntry = tuple[str, Mapping[str, str | bytes | Sequence[str | bytes]]]


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
    ) -> LdapWire:
        """Open a connection to ``url`` (ldap:// or ldaps://) and bind as ``bind_dn``.

        ``timeout`` bounds the connection, the bind and every later wait for an answer.
        ldaps:// verifies the server's certificate (``ssl.create_default_context()`` unless
        ``ssl_context`` is given). Raises LdapConnectionError (unreachable, TLS failure),
        LdapTimeoutError, LdapBindError (refused: wrong DN or password, or busy),
        LdapProtocolError (what answered is not an LDAP server) or ValueError (bad URL, or a
        DN without a password).
        """
        host, port, tls = _address(url)
        if bind_dn and not password:
            # RFC 4513 5.1.2: a name with an empty password is an unauthenticated bind that
            # "succeeds" with no rights at all; refuse it here rather than fail every add.
            raise ValueError(f"no password for {bind_dn}: refusing an unauthenticated bind")
        context = (ssl_context or ssl.create_default_context()) if tls else None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, limit=_READ_SIZE
                )
        except TimeoutError as exc:
            raise LdapTimeoutError(f"{url}: no connection within {timeout:g} s") from exc
        except ssl.SSLError as exc:
            raise LdapConnectionError(f"{url}: TLS handshake failed: {exc}") from exc
        except OSError as exc:
            raise LdapConnectionError(f"{url}: cannot connect: {exc}") from exc
        wire = cls(url, reader, writer, timeout)
        try:
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

    def _next_id(self) -> int:
        self._last_id = self._last_id % MAX_MESSAGE_ID + 1
        return self._last_id

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
