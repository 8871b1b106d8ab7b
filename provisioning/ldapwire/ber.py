"""BER for the few LDAP messages the bulk-add client needs: requests encoded as pyasn1 would,
responses decoded as far as their LDAPResult (X.690 definite lengths)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Final

from provisioning.ldapwire.protocol import (
    ADD_RESPONSE,
    BIND_RESPONSE,
    COMPARE_RESPONSE,
    DEFAULT_MAX_RESPONSE_BYTES,
    DELETE_RESPONSE,
    EXTENDED_RESPONSE,
    MAX_MESSAGE_ID,
    MODIFY_DN_RESPONSE,
    MODIFY_RESPONSE,
    PAGED_RESULTS,
    SEARCH_RESULT_DONE,
    SEARCH_RESULT_ENTRY,
    SEARCH_RESULT_REFERENCE,
    LdapProtocolError,
    LdapResponse,
    LdapResult,
    entry_response,
)

# The responses made of an LDAPResult: the only ones ``decode_message`` accepts.
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


def _checked_id(message_id: int) -> int:
    if not 0 < message_id <= MAX_MESSAGE_ID:
        raise ValueError(f"messageID {message_id} is outside 1..{MAX_MESSAGE_ID}")
    return message_id


def _message(message_id: int, op: bytes) -> bytes:
    return _tlv(0x30, _integer(_checked_id(message_id)) + op)


def encode_bind_request(message_id: int, dn: str, password: str | bytes) -> bytes:
    """LDAPMessage with a simple BindRequest (LDAPv3)."""
    secret = password.encode("utf-8") if isinstance(password, str) else password
    body = b"\x02\x01\x03" + _octets(dn) + _tlv(0x80, secret)  # version 3, name, simple [0]
    return _message(message_id, _tlv(0x60, body))


def encode_extended_request(message_id: int, name: str, value: bytes | None = None) -> bytes:
    """LDAPMessage with an ExtendedRequest (such as StartTLS: ``START_TLS`` and no value)."""
    body = _tlv(0x80, name.encode("ascii"))  # requestName [0] LDAPOID
    if value is not None:
        body += _tlv(0x81, value)  # requestValue [1]
    return _message(message_id, _tlv(0x77, body))


def encode_unbind_request(message_id: int) -> bytes:
    """LDAPMessage with an UnbindRequest ([APPLICATION 2] NULL)."""
    return _message(message_id, b"\x42\x00")


# SearchRequest scopes and the alias dereferencing ldap3 asks for by default (derefAlways).
BASE_OBJECT: Final = 0
SINGLE_LEVEL: Final = 1
WHOLE_SUBTREE: Final = 2
_DEREF_ALWAYS: Final = 3


def encode_search_request(
    message_id: int,
    base: str,
    scope: int,
    equal: tuple[str, str],
    attributes: Sequence[str],
    *,
    page_size: int | None = None,
    cookie: bytes = b"",
) -> bytes:
    """LDAPMessage with a SearchRequest for the entries under ``base`` whose attribute
    ``equal[0]`` has the value ``equal[1]`` (an equalityMatch filter; the value is literal, no
    escaping is needed or done), asking for ``attributes``; with ``page_size``, the paged
    results control (not critical) with ``cookie`` (empty for the first page)."""
    if scope not in (BASE_OBJECT, SINGLE_LEVEL, WHOLE_SUBTREE):
        raise ValueError(f"unknown search scope {scope}")
    body = (
        _octets(base)
        + bytes((0x0A, 1, scope, 0x0A, 1, _DEREF_ALWAYS))
        + b"\x02\x01\x00\x02\x01\x00\x01\x01\x00"  # no size or time limit, typesOnly FALSE
        + _tlv(0xA3, _attribute_type(equal[0]) + _octets(equal[1]))  # equalityMatch [3]
        + _tlv(0x30, b"".join([_attribute_type(name) for name in attributes]))
    )
    message = _integer(_checked_id(message_id)) + _tlv(0x63, body)
    if page_size is not None:
        value = _tlv(0x30, _integer(page_size) + _octets(cookie))
        control = _tlv(0x30, _octets(PAGED_RESULTS) + _octets(value))
        message += _tlv(0xA0, control)  # controls [0]
    return _tlv(0x30, message)


def paged_cookie(controls: Sequence[tuple[str, bytes]]) -> bytes:
    """The cookie of the paged results control among a SearchResultDone's ``controls``
    (empty: that was the last page, or the directory does not page)."""
    for oid, value in controls:
        if oid != PAGED_RESULTS:
            continue
        tag, pos, end = _header(value, 0, len(value), "paged results")
        if tag != 0x30:
            raise LdapProtocolError(f"paged results: expected SEQUENCE, got 0x{tag:02x}")
        tag, s, e = _header(value, pos, end, "paged results size")
        if tag != 0x02:
            raise LdapProtocolError(f"paged results size: expected INTEGER, got 0x{tag:02x}")
        tag, s, e = _header(value, e, end, "paged results cookie")
        if tag != 0x04:
            raise LdapProtocolError(f"paged results cookie: expected OCTET STRING, got 0x{tag:02x}")
        return value[s:e]
    return b""


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
    if end - start >= 2 and buf[start] == 0x30:
        first = buf[start + 1]
        head = 2 if first < 0x80 else 2 + first - 0x80
        if (first < 0x80 or 0x80 < first <= 0x88) and end - start >= head:
            length = first if first < 0x80 else int.from_bytes(buf[start + 2 : start + head], "big")
            if start + head + length == end:
                response = _fast_entry(buf, start + head, end)
                if response is not None:
                    return response
    return _decode_checked(buf, start, end)


# --- the fast path: a well-formed SearchResultEntry -------------------------------------------
# A listing is tens of thousands of SearchResultEntry messages of some 15 small elements each;
# reading every element through _header (a call, a tuple, a label for the error) is most of
# the time it takes. _fast_entry reads such a message with each element's header inline. It
# accepts only what _decode_checked accepts, and returns the same response; on anything else
# (another protocolOp, an unexpected tag, an element running past its enclosing one, a bad
# length octet) it returns None, and _decode_checked reads the message again from the start,
# either decoding it or raising the LdapProtocolError that says what is wrong where.
#
# To keep the inline reads short, an element's two header octets are read before checking
# that they lie inside the enclosing element, and the elements of a SEQUENCE OF are checked
# against its end once, after the last one: an element that starts at or after the enclosing
# end, or runs past it, moves the position past that end, and what was read from there on is
# thrown away. Such a read may land past the end of ``buf``: the IndexError gives up too.


class _NotFast(Exception):
    """The fast path gives up: _decode_checked decides."""


def _long_length(buf: bytes, pos: int, first: int, limit: int) -> tuple[int, int]:
    """The length in ``first & 0x7f`` octets at ``pos`` (X.690 long form, 1 to 8 octets as
    _header allows) and the position after them; these octets must end by ``limit``."""
    size = first - 0x80
    if not 0 < size <= 8 or pos + size > limit:
        raise _NotFast
    return int.from_bytes(buf[pos : pos + size], "big"), pos + size


def _fast_entry(buf: bytes, pos: int, end: int) -> LdapResponse | None:
    """The SearchResultEntry whose LDAPMessage SEQUENCE has its contents at ``buf[pos:end]``,
    or None: not one, or not well formed (see above), or with text that is not UTF-8 (the
    checked path replaces what is not; strict decoding, without arguments, is faster)."""
    try:
        # messageID: an INTEGER of 1 to 4 octets, the first below 0x80: within 0..MAX_MESSAGE_ID.
        n = buf[pos + 1]
        if buf[pos] != 0x02 or not 0 < n <= 4 or buf[pos + 2] & 0x80:
            return None
        s = pos + 2
        pos = s + n
        message_id = buf[s] if n == 1 else int.from_bytes(buf[s:pos], "big")
        # protocolOp [APPLICATION 4]
        if buf[pos] != 0x64:
            return None
        n = buf[pos + 1]
        pos += 2
        if n == 0x81:  # most entries are 128 to 255 bytes long
            n = buf[pos]
            pos += 1
        elif n & 0x80:
            n, pos = _long_length(buf, pos, n, end)
        op_end = pos + n
        if op_end > end:
            return None
        # objectName
        if buf[pos] != 0x04:
            return None
        n = buf[pos + 1]
        pos += 2
        if n & 0x80:
            n, pos = _long_length(buf, pos, n, op_end)
        e = pos + n
        if e > op_end:
            return None
        dn = buf[pos:e].decode()
        # attributes: SEQUENCE OF SEQUENCE {type, SET OF value}. As in _search_entry, anything
        # after the attributes in the protocolOp, or after the values in an attribute, is ignored.
        if buf[e] != 0x30:
            return None
        n = buf[e + 1]
        pos = e + 2
        if n & 0x80:
            n, pos = _long_length(buf, pos, n, op_end)
        stop = pos + n
        if stop > op_end:
            return None
        attributes: dict[str, list[str]] = {}
        while pos < stop:
            n = buf[pos + 1]
            if buf[pos] != 0x30:
                return None
            pos += 2
            if n & 0x80:
                n, pos = _long_length(buf, pos, n, stop)
            attribute_end = pos + n
            # type: its end is checked with the values' below (it precedes them)
            n = buf[pos + 1]
            if buf[pos] != 0x04:
                return None
            if n & 0x80:
                n, s = _long_length(buf, pos + 2, n, attribute_end)
            else:
                s = pos + 2
            pos = s + n
            if buf[pos] != 0x31:
                return None
            name = buf[s:pos].decode()
            n = buf[pos + 1]
            pos += 2
            if n & 0x80:
                n, pos = _long_length(buf, pos, n, attribute_end)
            values_end = pos + n
            if values_end > attribute_end:
                return None
            values = attributes.setdefault(name, [])
            while pos < values_end:
                n = buf[pos + 1]
                if buf[pos] != 0x04:
                    return None
                if n & 0x80:
                    n, s = _long_length(buf, pos + 2, n, values_end)
                else:
                    s = pos + 2
                pos = s + n
                values.append(buf[s:pos].decode())
            if pos != values_end:
                return None
            pos = attribute_end
        if pos != stop:
            return None
        return entry_response(
            message_id, (dn, attributes), _controls(buf, op_end, end) if op_end != end else ()
        )
    except (IndexError, _NotFast, UnicodeDecodeError):
        return None


# --- the checked path: every response, every error --------------------------------------------


def _decode_checked(buf: bytes, start: int, end: int) -> LdapResponse:
    """Decode the LDAPMessage filling ``buf[start:end]`` element by element through _header,
    raising LdapProtocolError with what is wrong where."""
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
    if tag == 0x64:  # SearchResultEntry
        entry = _search_entry(buf, pos, op_end)
        return LdapResponse(
            message_id,
            SEARCH_RESULT_ENTRY,
            _FOUND,
            entry=entry,
            controls=_controls(buf, op_end, stop),
        )
    if tag == 0x73:  # SearchResultReference: a referral elsewhere, not followed
        return LdapResponse(
            message_id, SEARCH_RESULT_REFERENCE, _FOUND, controls=_controls(buf, op_end, stop)
        )
    if tag & 0xE0 != 0x60 or op not in _RESULT_OPS:
        raise LdapProtocolError(
            f"protocolOp 0x{tag:02x} (message {message_id}) is not a response this client "
            "understands (bind, search, add, extended)"
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
    return LdapResponse(
        message_id,
        op,
        LdapResult(code, matched, diagnostic),
        response_name,
        controls=_controls(buf, op_end, stop),
    )


_FOUND: Final = LdapResult(0)


def _controls(buf: bytes, pos: int, stop: int) -> tuple[tuple[str, bytes], ...]:
    """The controls [0] of a message as (controlType, controlValue); later extension
    elements are skipped, but must be well formed."""
    out: list[tuple[str, bytes]] = []
    while pos < stop:
        tag, s, pos = _header(buf, pos, stop, "controls")
        if tag != 0xA0:
            continue
        while s < pos:
            tag, c, s = _header(buf, s, pos, "control")
            if tag != 0x30:
                raise LdapProtocolError(f"control: expected SEQUENCE, got 0x{tag:02x}")
            tag, t, e = _header(buf, c, s, "controlType")
            if tag != 0x04:
                raise LdapProtocolError(f"controlType: expected OCTET STRING, got 0x{tag:02x}")
            oid, value = _text(buf, t, e), b""
            while e < s:  # criticality BOOLEAN DEFAULT FALSE, controlValue OCTET STRING
                tag, t, e = _header(buf, e, s, "control")
                if tag == 0x04:
                    value = bytes(buf[t:e])
            out.append((oid, value))
    return tuple(out)


def _search_entry(buf: bytes, pos: int, end: int) -> tuple[str, dict[str, list[str]]]:
    """objectName and PartialAttributeList of a SearchResultEntry (values as UTF-8 text)."""
    tag, s, e = _header(buf, pos, end, "objectName")
    if tag != 0x04:
        raise LdapProtocolError(f"objectName: expected OCTET STRING (0x04), got 0x{tag:02x}")
    dn = _text(buf, s, e)
    tag, pos, stop = _header(buf, e, end, "attributes")
    if tag != 0x30:
        raise LdapProtocolError(f"attributes: expected SEQUENCE (0x30), got 0x{tag:02x}")
    attributes: dict[str, list[str]] = {}
    while pos < stop:
        tag, s, pos = _header(buf, pos, stop, "attribute")
        if tag != 0x30:
            raise LdapProtocolError(f"attribute: expected SEQUENCE (0x30), got 0x{tag:02x}")
        tag, t, e = _header(buf, s, pos, "attribute type")
        if tag != 0x04:
            raise LdapProtocolError(f"attribute type: expected OCTET STRING, got 0x{tag:02x}")
        name = _text(buf, t, e)
        tag, v, e = _header(buf, e, pos, "attribute values")
        if tag != 0x31:
            raise LdapProtocolError(f"attribute values: expected SET (0x31), got 0x{tag:02x}")
        values = attributes.setdefault(name, [])
        while v < e:
            tag, t, v = _header(buf, v, e, "attribute value")
            if tag != 0x04:
                raise LdapProtocolError(f"attribute value: expected OCTET STRING, got 0x{tag:02x}")
            values.append(_text(buf, t, v))
    return dn, attributes


class ResponseReader:
    """Splits a byte stream into LDAPMessages: feed it whatever each read returned.

    After an LdapProtocolError the stream is out of step: the reader keeps the bytes and the
    next feed raises again; the connection must be dropped."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self._buf = bytearray()
        # How many pending bytes complete the next message (0: its length is not read yet).
        # Until then a read is only appended: a message longer than a read is not copied
        # and scanned again on every read, which would be quadratic in its size.
        self._need = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes of a message not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[LdapResponse]:
        """The messages completed by ``data`` (none if it ends inside one)."""
        buf = self._buf
        buf += data
        size = len(buf)
        if size < self._need:
            return []
        # One copy per read that completes a message: slices of bytes (the values) are what
        # the decoders take, and the bytearray is trimmed below.
        view = bytes(buf)
        out: list[LdapResponse] = []
        limit = self.max_message_bytes
        pos = need = 0
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
            if length > limit:
                raise LdapProtocolError(
                    f"LDAPMessage of {length:,} bytes is over the limit of "
                    f"{limit:,} bytes for a response"
                )
            end = pos + head + length
            if end > size:
                need = end - pos
                break
            # The SEQUENCE's header is checked above as _decode_checked checks it.
            response = _fast_entry(view, pos + head, end)
            out.append(_decode_checked(view, pos, end) if response is None else response)
            pos = end
        if pos:
            del buf[:pos]
        self._need = need
        return out
