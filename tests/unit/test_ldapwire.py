"""provisioning.ldapwire: requests byte for byte as ldap3/pyasn1 encode them, responses decoded
from hand-made bytes, and the pipelined client against a small scripted server on port 0."""

from __future__ import annotations

import asyncio
import ssl
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # pyasn1 0.6 names ldap3 2.9 uses
    import ldap3
    from ldap3.operation.add import add_operation
    from ldap3.operation.bind import bind_operation
    from ldap3.operation.extended import extended_operation
    from ldap3.operation.search import search_operation
    from ldap3.protocol.convert import build_controls_list
    from ldap3.protocol.rfc2696 import paged_search_control
    from ldap3.protocol.rfc4511 import LDAPMessage, MessageID, ProtocolOp, UnbindRequest
    from pyasn1.codec.ber import decoder, encoder

from provisioning.ldapwire import (
    ADD_RESPONSE,
    BIND_RESPONSE,
    ENCODING_ERROR,
    EXTENDED_RESPONSE,
    MAX_MESSAGE_ID,
    NOTICE_OF_DISCONNECTION,
    PAGED_RESULTS,
    SEARCH_RESULT_DONE,
    SEARCH_RESULT_ENTRY,
    SEARCH_RESULT_REFERENCE,
    SERVER_DOWN,
    START_TLS,
    TIMEOUT,
    LdapBindError,
    LdapConnectionError,
    LdapProtocolError,
    LdapResponse,
    LdapResult,
    LdapWire,
    ResponseReader,
    decode_message,
    encode_add_request,
    encode_bind_request,
    encode_extended_request,
    encode_search_request,
    encode_unbind_request,
    paged_cookie,
)
from provisioning.ldapwire.ber import BASE_OBJECT, WHOLE_SUBTREE

CLASSES = ["top", "person", "organizationalPerson", "inetOrgPerson"]
SPECIAL = 'KWW "Niezależni" (lista 5) * a\\b, c+d <e> f=g; h'


def pyasn1_message(message_id: int, op: str, request: Any) -> bytes:
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    message["protocolOp"] = ProtocolOp().setComponentByName(op, request)
    return bytes(encoder.encode(message))


def ldap3_add(
    message_id: int, dn: str, attributes: dict[str, Any], classes: Sequence[str]
) -> bytes:
    """The AddRequest ldap3's Connection.add sends: objectClass merged in, last if new."""
    merged = dict(attributes)
    key = next((k for k in merged if k.lower() == "objectclass"), "objectClass")
    given = merged.get(key, [])
    given = [given] if isinstance(given, str) else list(given)
    merged[key] = list(dict.fromkeys([*classes, *given]))
    request = add_operation(dn, merged, True, None, None, False)
    return pyasn1_message(message_id, "addRequest", request)


# --- requests ---------------------------------------------------------------------------------

MEMBERS = [f"uid=r{i},ou=radni,dc=rada,dc=pl" for i in range(3000)]
ADD_CASES: list[tuple[str, int, str, dict[str, Any], list[str]]] = [
    ("one value each", 1, "uid=jan,ou=radni,dc=rada,dc=pl", {"uid": "jan", "sn": "Nowak"}, CLASSES),
    (
        "diacritics and special characters",
        127,
        "uid=lukasz.zolc,ou=radni,dc=rada,dc=pl",
        {"cn": "Łukasz Żółć", "o": SPECIAL, "l": "Okręg *)(uid=*"},
        CLASSES,
    ),
    (
        "multi-valued",
        128,
        "uid=a,ou=radni,dc=rada,dc=pl",
        {"mail": ["a@rada.pl", "b@rada.pl"], "title": ("radna", "przewodnicząca")},
        CLASSES,
    ),
    ("value of 127 bytes", 255, "uid=b,ou=x", {"description": "x" * 127}, ["top"]),
    ("value of 128 bytes", 256, "uid=b,ou=x", {"description": "x" * 128}, ["top"]),
    ("value of 300 bytes", 65535, "uid=b,ou=x", {"description": "ż" * 150}, ["top"]),
    ("value of 70,000 bytes", 65536, "uid=b,ou=x", {"description": "y" * 70_000}, ["top"]),
    ("a member list", 2**24, "cn=rada,ou=grupy", {"member": MEMBERS}, ["groupOfNames"]),
    ("largest messageID", MAX_MESSAGE_ID, "uid=c,ou=x", {"sn": "C"}, ["top"]),
    (
        "objectClass given too",
        7,
        "uid=d,ou=x",
        {"objectClass": ["inetOrgPerson", "posixAccount"], "sn": "D"},
        CLASSES,
    ),
    ("no object classes", 8, "uid=e,ou=x", {"objectClass": "top", "sn": "E"}, []),
    ("an empty value", 9, "uid=f,ou=x", {"description": ""}, ["top"]),
]


@pytest.mark.parametrize(
    ("message_id", "dn", "attributes", "classes"),
    [case[1:] for case in ADD_CASES],
    ids=[case[0] for case in ADD_CASES],
)
def test_add_request_is_byte_for_byte_what_ldap3_sends(
    message_id: int, dn: str, attributes: dict[str, Any], classes: list[str]
) -> None:
    ours = encode_add_request(message_id, dn, attributes, classes)
    assert ours == ldap3_add(message_id, dn, attributes, classes)


def test_add_request_takes_bytes_values_literally() -> None:
    value = b"{SSHA}\x00\xff binary"
    ours = encode_add_request(3, "uid=g,ou=x", {"userPassword": value}, ["top"])
    assert ours == ldap3_add(3, "uid=g,ou=x", {"userPassword": value}, ["top"])  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("message_id", "dn", "password"),
    [
        (1, "cn=admin,dc=rada,dc=pl", "sekret"),
        (2, "cn=Zażółć Gęślą,dc=rada,dc=pl", "hasło " * 40),
        (300, "cn=admin", "p" * 70_000),
    ],
)
def test_bind_request_is_byte_for_byte_what_ldap3_sends(
    message_id: int, dn: str, password: str
) -> None:
    request = bind_operation(3, ldap3.SIMPLE, dn, password)
    expected = pyasn1_message(message_id, "bindRequest", request)
    assert encode_bind_request(message_id, dn, password) == expected


@pytest.mark.parametrize("message_id", [1, 2, 128, MAX_MESSAGE_ID])
def test_starttls_request_is_byte_for_byte_what_ldap3_sends(message_id: int) -> None:
    expected = pyasn1_message(message_id, "extendedReq", extended_operation(START_TLS))
    assert encode_extended_request(message_id, START_TLS) == expected


def test_extended_request_value_is_byte_for_byte_what_ldap3_sends() -> None:
    value = b"\x04\x03abc"
    expected = pyasn1_message(7, "extendedReq", extended_operation("1.2.3.4", value))
    assert encode_extended_request(7, "1.2.3.4", value) == expected


SEARCH_CASES: list[tuple[str, int, str, int, tuple[str, str], list[str], int | None, bytes]] = [
    ("subtree, first page", 2, "ou=radni,dc=rada,dc=pl", WHOLE_SUBTREE,
     ("objectClass", "inetOrgPerson"), ["mail", "employeeType"], 2000, b""),
    ("next page", 300, "ou=radni,dc=rada,dc=pl", WHOLE_SUBTREE,
     ("objectClass", "inetOrgPerson"), ["mail"], 7, b"\x00\x01cookie\xff" * 20),
    ("base object, not paged", 5, "cn=Zażółć,ou=grupy,dc=rada,dc=pl", BASE_OBJECT,
     ("objectClass", "groupOfNames"), ["member"], None, b""),
    ("special characters taken literally", MAX_MESSAGE_ID, "ou=x", WHOLE_SUBTREE,
     ("l", SPECIAL), ["cn", "sn"], 100_000, b""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("message_id", "base", "scope", "equal", "attributes", "page_size", "cookie"),
    [case[1:] for case in SEARCH_CASES],
    ids=[case[0] for case in SEARCH_CASES],
)
def test_search_request_is_byte_for_byte_what_ldap3_sends(
    message_id: int,
    base: str,
    scope: int,
    equal: tuple[str, str],
    attributes: list[str],
    page_size: int | None,
    cookie: bytes,
) -> None:
    escaped = ldap3.utils.conv.escape_filter_chars(equal[1])
    request = search_operation(
        base, f"({equal[0]}={escaped})", scope, ldap3.DEREF_ALWAYS, attributes,
        0, 0, False, False, True,
    )  # fmt: skip
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    message["protocolOp"] = ProtocolOp().setComponentByName("searchRequest", request)
    if page_size is not None:
        control = paged_search_control(False, page_size, cookie or None)
        message["controls"] = build_controls_list([control])
    ours = encode_search_request(
        message_id, base, scope, equal, attributes, page_size=page_size, cookie=cookie
    )
    assert ours == bytes(encoder.encode(message))


def test_search_answers_decode_to_entries_and_the_next_page_cookie() -> None:
    entry = tlv(
        0x64,
        tlv(0x04, "uid=łucja,ou=radni".encode())
        + tlv(
            0x30,
            tlv(0x30, tlv(0x04, b"mail") + tlv(0x31, tlv(0x04, b"lucja@rada.pl")))
            + tlv(0x30, tlv(0x04, b"title") + tlv(0x31, tlv(0x04, b"radna") + tlv(0x04, b"")))
            + tlv(0x30, tlv(0x04, b"description") + tlv(0x31, b"")),
        ),
    )
    reference = tlv(0x73, tlv(0x04, b"ldap://elsewhere/ou=x"))
    cookie = b"\x01\x02\x03"
    paged = tlv(0x30, b"\x02\x01\x00" + tlv(0x04, cookie))
    controls = tlv(0xA0, tlv(0x30, tlv(0x04, PAGED_RESULTS.encode()) + tlv(0x04, paged)))
    stream = (
        tlv(0x30, b"\x02\x01\x04" + entry)
        + tlv(0x30, b"\x02\x01\x04" + reference)
        + response(4, SEARCH_RESULT_DONE, 0, controls=controls)
    )
    found, ref, done = ResponseReader().feed(stream)
    assert found == LdapResponse(
        4,
        SEARCH_RESULT_ENTRY,
        LdapResult(0),
        entry=(
            "uid=łucja,ou=radni",
            {"mail": ["lucja@rada.pl"], "title": ["radna", ""], "description": []},
        ),
    )
    assert ref.op == SEARCH_RESULT_REFERENCE and ref.entry is None
    assert done.op == SEARCH_RESULT_DONE and paged_cookie(done.controls) == cookie
    assert paged_cookie(()) == b"" and paged_cookie((("1.2.3", b"x"),)) == b""


@pytest.mark.parametrize("message_id", [1, 2, 128, MAX_MESSAGE_ID])
def test_unbind_request_is_byte_for_byte_what_ldap3_sends(message_id: int) -> None:
    expected = pyasn1_message(message_id, "unbindRequest", UnbindRequest())
    assert encode_unbind_request(message_id) == expected


def test_add_request_decodes_with_pyasn1_to_the_same_entry() -> None:
    encoded = encode_add_request(42, "uid=h,ou=x", {"o": SPECIAL, "mail": ["a", "b"]}, ["top"])
    message, rest = decoder.decode(encoded, asn1Spec=LDAPMessage())
    assert rest == b""
    add = message["protocolOp"]["addRequest"]
    assert int(message["messageID"]) == 42 and str(add["entry"]) == "uid=h,ou=x"
    got = {str(a["type"]): [bytes(v).decode() for v in a["vals"]] for a in add["attributes"]}
    assert got == {"o": [SPECIAL], "mail": ["a", "b"], "objectClass": ["top"]}


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"sn": 5}, "must be str, bytes or a sequence"),
        ({"sn": ["a", 5]}, "must be str or bytes, not int"),
        ({"": "x"}, "attribute type must not be empty"),
    ],
)
def test_values_that_cannot_be_encoded_are_refused(
    attributes: dict[str, Any], message: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        encode_add_request(1, "uid=x", attributes, ["top"])


@pytest.mark.parametrize("message_id", [0, -1, MAX_MESSAGE_ID + 1])
def test_message_ids_outside_the_protocol_range_are_refused(message_id: int) -> None:
    with pytest.raises(ValueError, match="messageID"):
        encode_unbind_request(message_id)


# --- responses --------------------------------------------------------------------------------


def tlv(tag: int, content: bytes, *, long_form: int = 0) -> bytes:
    """A test-side BER element; ``long_form`` forces that many length octets (as AD sends)."""
    n = len(content)
    if long_form:
        return bytes((tag, 0x80 | long_form)) + n.to_bytes(long_form, "big") + content
    if n < 0x80:
        return bytes((tag, n)) + content
    size = (n.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + n.to_bytes(size, "big") + content


def response(
    message_id: int,
    op: int,
    code: int,
    matched: bytes = b"",
    diagnostic: bytes = b"",
    *,
    extra: bytes = b"",
    controls: bytes = b"",
    long_form: int = 0,
) -> bytes:
    result = b"\x0a" + bytes((1, code)) + tlv(0x04, matched) + tlv(0x04, diagnostic) + extra
    message_id_octets = message_id.to_bytes((message_id.bit_length() + 8) // 8, "big")
    body = tlv(0x02, message_id_octets) + tlv(0x60 | op, result)
    return tlv(0x30, body + controls, long_form=long_form)


NOTICE = response(
    0,
    EXTENDED_RESPONSE,
    52,
    diagnostic=b"server shutting down",
    extra=tlv(0x8A, NOTICE_OF_DISCONNECTION.encode()),
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            bytes.fromhex("300c02010569070a010004000400"),
            LdapResponse(5, ADD_RESPONSE, LdapResult(0)),
        ),
        (
            bytes.fromhex("300c02010161070a013104000400"),
            LdapResponse(1, BIND_RESPONSE, LdapResult(49)),
        ),
        (
            response(300, ADD_RESPONSE, 68, diagnostic="Wpis już istnieje".encode()),
            LdapResponse(300, ADD_RESPONSE, LdapResult(68, "", "Wpis już istnieje")),
        ),
        (
            response(7, ADD_RESPONSE, 32, matched=b"ou=radni,dc=rada,dc=pl"),
            LdapResponse(7, ADD_RESPONSE, LdapResult(32, "ou=radni,dc=rada,dc=pl", "")),
        ),
        (
            response(MAX_MESSAGE_ID, ADD_RESPONSE, 0, long_form=4),
            LdapResponse(MAX_MESSAGE_ID, ADD_RESPONSE, LdapResult(0)),
        ),
        (
            response(8, ADD_RESPONSE, 65, diagnostic=b"d" * 300),
            LdapResponse(8, ADD_RESPONSE, LdapResult(65, "", "d" * 300)),
        ),
        (
            response(9, ADD_RESPONSE, 10, extra=tlv(0xA3, tlv(0x04, b"ldap://other/"))),
            LdapResponse(9, ADD_RESPONSE, LdapResult(10)),
        ),
        (
            response(
                10,
                ADD_RESPONSE,
                0,
                controls=tlv(0xA0, tlv(0x30, tlv(0x04, b"1.2.3") + tlv(0x04, b"v"))),
            ),
            LdapResponse(10, ADD_RESPONSE, LdapResult(0), controls=(("1.2.3", b"v"),)),
        ),
        (
            response(1, BIND_RESPONSE, 14, extra=tlv(0x87, b"sasl")),
            LdapResponse(1, BIND_RESPONSE, LdapResult(14)),
        ),
        (
            NOTICE,
            LdapResponse(
                0,
                EXTENDED_RESPONSE,
                LdapResult(52, "", "server shutting down"),
                NOTICE_OF_DISCONNECTION,
            ),
        ),
        (
            response(11, ADD_RESPONSE, 80, diagnostic=b"\xff\xfe not utf-8"),
            LdapResponse(11, ADD_RESPONSE, LdapResult(80, "", "\ufffd\ufffd not utf-8")),
        ),
    ],
    ids=[
        "add success",
        "bind invalidCredentials",
        "already exists, UTF-8 diagnostic",
        "matchedDN",
        "4-byte lengths",
        "long diagnostic",
        "referral skipped",
        "controls read",
        "serverSaslCreds skipped",
        "notice of disconnection",
        "diagnostic not UTF-8",
    ],
)
def test_responses_decode(data: bytes, expected: LdapResponse) -> None:
    assert decode_message(data) == expected
    assert ResponseReader().feed(data) == [expected]


def test_notice_of_disconnection_is_recognised() -> None:
    assert decode_message(NOTICE).is_notice_of_disconnection
    assert not decode_message(response(3, ADD_RESPONSE, 52)).is_notice_of_disconnection


def test_responses_split_across_reads_and_several_in_one_read() -> None:
    stream = b"".join(
        [
            response(1, ADD_RESPONSE, 0),
            response(2, ADD_RESPONSE, 68, diagnostic=b"Already exists"),
            response(3, ADD_RESPONSE, 0, diagnostic=b"z" * 200, long_form=3),
            NOTICE,
        ]
    )
    whole = ResponseReader().feed(stream)
    assert [r.message_id for r in whole] == [1, 2, 3, 0]
    for step in (1, 2, 3, 7, 64):
        reader = ResponseReader()
        got: list[LdapResponse] = []
        for i in range(0, len(stream), step):
            got += reader.feed(stream[i : i + step])
        assert got == whole, step
        assert reader.pending_bytes == 0
    reader = ResponseReader()
    assert reader.feed(stream[:-1]) == whole[:3]
    assert reader.pending_bytes == len(NOTICE) - 1
    assert reader.feed(stream[-1:]) == whole[3:]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x31\x03\x02\x01\x01", "expected an LDAPMessage"),
        (b"\x30\x80\x02\x01\x01\x00\x00", "bad length octet 0x80"),
        (b"\x30\x89" + b"\x00" * 9, "bad length octet 0x89"),
        (b"\x30\xff", "bad length octet 0xff"),
        (b"\x30\x03\x04\x01\x01", "messageID: expected INTEGER"),
        (b"\x30\x03\x02\x00\x00", "empty INTEGER"),
        (b"\x30\x05\x02\x01\xff\x69\x00", "outside 0.."),
        (b"\x30\x05\x02\x01\x01\x69\x05", "runs past its enclosing element"),
        (b"\x30\x05\x02\x01\x01\x69\x00", "resultCode: truncated element"),
        (b"\x30\x06\x02\x01\x01\x1f\x81\x00", "multi-byte tag"),
        (bytes.fromhex("300c02010177070a010004000400"), "not a response this client"),
        (
            tlv(0x30, b"\x02\x01\x01" + tlv(0x64, tlv(0x02, b"\x01") + tlv(0x30, b""))),
            "objectName: expected OCTET STRING",
        ),
        (
            tlv(0x30, b"\x02\x01\x01" + tlv(0x64, tlv(0x04, b"uid=a") + tlv(0x31, b""))),
            "attributes: expected SEQUENCE",
        ),
        (bytes.fromhex("300c020101690704010004000400"), "resultCode: expected ENUMERATED"),
        (bytes.fromhex("300c02010169070a010002000400"), "matchedDN: expected OCTET STRING"),
        (bytes.fromhex("300c02010169070a010004000200"), "diagnosticMessage: expected"),
        (bytes.fromhex("300c02010169070a01ff04000400"), "resultCode -1 is negative"),
        (bytes.fromhex("300d02010169070a01000400040030"), "controls: truncated"),
    ],
)
def test_malformed_responses_are_refused_with_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(LdapProtocolError, match=message):
        ResponseReader().feed(data)


def test_oversized_response_is_refused_before_it_is_read() -> None:
    reader = ResponseReader(max_message_bytes=1000)
    with pytest.raises(LdapProtocolError, match="over the limit of 1,000 bytes"):
        reader.feed(b"\x30\x84\x7f\xff\xff\xff")
    assert ResponseReader().feed(b"\x30\x84\x00\x10") == []  # incomplete, not malformed


def test_result_text_names_the_code() -> None:
    assert str(LdapResult(68, "", "Already exists")) == "entryAlreadyExists (68): Already exists"
    assert str(LdapResult(50)) == "insufficientAccessRights (50)"
    assert LdapResult(4711).name == "result 4711"


# --- the client against a scripted server ------------------------------------------------------


@dataclass
class FakeDirectory:
    """Answers binds (password "good") and adds; ``script`` decides each add's fate."""

    script: Callable[[int, str], Awaitable[bytes | None] | bytes | None] | None = None
    answer_in_reverse: bool = False
    split_answers: bool = False
    requests: list[tuple[int, str]] = field(default_factory=list)
    max_in_flight: int = 0
    unbinds: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    # StartTLS: the context to upgrade with (None: refused as unsupported) or a result code.
    starttls: ssl.SSLContext | None = None
    starttls_code: int = 0
    # What arrived, in order, and whether over TLS: ("starttls", False), ("bind", True), ...
    events: list[tuple[str, bool]] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        buf = b""
        held: list[bytes] = []
        try:
            while data := await reader.read(65536):
                buf += data
                while buf:
                    try:
                        message, rest = decoder.decode(buf, asn1Spec=LDAPMessage())
                    except Exception:  # incomplete: wait for more
                        break
                    buf = bytes(rest)
                    answer = await self.handle(message, writer)
                    if answer == b"close":
                        writer.transport.abort()
                        return
                    if answer is not None and answer[:1] == b"T":  # StartTLS accepted
                        writer.write(answer[1:])
                        await writer.drain()
                        if self.starttls is not None:
                            await writer.start_tls(self.starttls)
                        continue
                    if answer is not None:
                        held.append(answer)
                self.max_in_flight = max(self.max_in_flight, len(held))
                if self.answer_in_reverse:
                    held.reverse()
                out = b"".join(held)
                held.clear()
                if self.split_answers:
                    for i in range(len(out)):
                        writer.write(out[i : i + 1])
                        await writer.drain()
                        await asyncio.sleep(0)
                else:
                    writer.write(out)
                    await writer.drain()
        except (OSError, asyncio.CancelledError):  # ConnectionError, a failed TLS handshake
            pass
        finally:
            writer.transport.abort()

    async def handle(self, message: Any, writer: asyncio.StreamWriter) -> bytes | None:
        message_id = int(message["messageID"])
        op = message["protocolOp"]
        name = op.getName()
        over_tls = writer.get_extra_info("ssl_object") is not None
        self.events.append((name, over_tls))
        if name == "extendedReq":
            assert str(op[name]["requestName"]) == START_TLS
            code = self.starttls_code if self.starttls is not None else 2  # protocolError
            answer = response(message_id, EXTENDED_RESPONSE, code, extra=tlv(0x8A, b""))
            return b"T" + answer if code == 0 else answer
        if name == "bindRequest":
            ok = bytes(op[name]["authentication"]["simple"]) == b"good"
            return response(message_id, BIND_RESPONSE, 0 if ok else 49)
        if name == "unbindRequest":
            self.unbinds += 1
            return None
        dn = str(op[name]["entry"])
        self.requests.append((message_id, dn))
        if self.script is not None:
            answer = self.script(len(self.requests) - 1, dn)
            if asyncio.iscoroutine(answer):
                answer = await answer
            return answer  # type: ignore[return-value]
        return response(message_id, ADD_RESPONSE, 0)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeDirectory, str]]:
    directory = FakeDirectory()
    server = await asyncio.start_server(directory.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield directory, f"ldap://127.0.0.1:{port}"
    for writer in directory.writers:
        writer.transport.abort()
    server.close()
    await server.wait_closed()


def entries(count: int) -> list[tuple[str, dict[str, str | list[str]]]]:
    return [
        (f"uid=r{i},ou=radni", {"uid": f"r{i}", "sn": "Nowak", "mail": ["a", "b"]})
        for i in range(count)
    ]


async def test_adds_are_pipelined_within_the_window_and_matched_by_message_id(
    fake: tuple[FakeDirectory, str],
) -> None:
    server, url = fake
    server.answer_in_reverse = True

    def script(index: int, dn: str) -> bytes:
        message_id = server.requests[index][0]
        return response(message_id, ADD_RESPONSE, 68 if index % 3 == 0 else 0)

    server.script = script
    async with await LdapWire.connect(url, "cn=admin", "good", 5) as wire:
        results = await wire.add_many(entries(200), object_classes=CLASSES, window=16)
    assert [r.code if isinstance(r, LdapResult) else r for r in results] == [
        68 if i % 3 == 0 else 0 for i in range(200)
    ]
    assert [dn for _, dn in server.requests] == [dn for dn, _ in entries(200)]
    assert 1 < server.max_in_flight <= 16
    await asyncio.sleep(0.05)
    assert server.unbinds == 1


async def test_answers_arriving_one_byte_at_a_time_are_read(
    fake: tuple[FakeDirectory, str],
) -> None:
    server, url = fake
    server.split_answers = True
    async with await LdapWire.connect(url, "cn=admin", "good", 5) as wire:
        assert await wire.add_many(entries(20), object_classes=CLASSES, window=8) == [0] * 20


async def test_a_wrong_password_is_a_bind_error_naming_the_cause(
    fake: tuple[FakeDirectory, str],
) -> None:
    _, url = fake
    with pytest.raises(
        LdapBindError, match=r"refused the bind as cn=admin: invalidCredentials"
    ) as info:
        await LdapWire.connect(url, "cn=admin", "bad", 5)
    assert info.value.result.code == 49


async def test_an_empty_password_is_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match="unauthenticated bind"):
        await LdapWire.connect("ldap://127.0.0.1:1", "cn=admin", "", 5)


@pytest.mark.parametrize("url", ["ldapi:///run/slapd.sock", "http://x", "ldap://h:notaport"])
async def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"ldap://host:port|bad port"):
        await LdapWire.connect(url, "cn=admin", "good", 5)


async def test_nobody_listening_is_a_connection_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(LdapConnectionError, match="cannot connect"):
        await LdapWire.connect(f"ldap://127.0.0.1:{port}", "cn=admin", "good", 5)


async def test_notice_of_disconnection_mid_way_reports_the_rest_as_lost(
    fake: tuple[FakeDirectory, str],
) -> None:
    server, url = fake

    def script(index: int, dn: str) -> bytes | None:
        message_id = server.requests[index][0]
        if index < 10:
            return response(message_id, ADD_RESPONSE, 0)
        if index == 10:
            return NOTICE
        return None

    server.script = script
    async with await LdapWire.connect(url, "cn=admin", "good", 5) as wire:
        results = await wire.add_many(entries(50), object_classes=CLASSES, window=4)
        assert wire.closed
    assert results[:10] == [0] * 10
    for lost in results[10:]:
        assert isinstance(lost, LdapResult) and lost.code == SERVER_DOWN
        assert "notice of disconnection: unavailable (52): server shutting down" in lost.message


async def test_connection_dropped_mid_way_reports_the_rest_as_lost(
    fake: tuple[FakeDirectory, str],
) -> None:
    server, url = fake

    def script(index: int, dn: str) -> bytes:
        message_id = server.requests[index][0]
        return b"close" if index == 25 else response(message_id, ADD_RESPONSE, 0)

    server.script = script
    async with await LdapWire.connect(url, "cn=admin", "good", 5) as wire:
        results = await wire.add_many(entries(60), object_classes=CLASSES, window=8)
        with pytest.raises(LdapConnectionError):
            await wire.add_many(entries(1), object_classes=CLASSES)
    done = [r for r in results if r == 0]
    lost = [r for r in results if isinstance(r, LdapResult)]
    assert len(done) + len(lost) == 60 and 18 <= len(done) <= 25
    assert results[: len(done)] == done  # answered in order, so the lost ones are the tail
    assert all(r.code == SERVER_DOWN and r.message.startswith(url) for r in lost)


async def test_no_answer_within_the_timeout_reports_the_rest_as_timed_out(
    fake: tuple[FakeDirectory, str],
) -> None:
    server, url = fake

    def script(index: int, dn: str) -> bytes | None:
        return response(server.requests[index][0], ADD_RESPONSE, 0) if index < 5 else None

    server.script = script
    async with await LdapWire.connect(url, "cn=admin", "good", 0.3) as wire:
        started = asyncio.get_running_loop().time()
        results = await wire.add_many(entries(20), object_classes=CLASSES, window=4)
        assert asyncio.get_running_loop().time() - started < 2
    assert results[:5] == [0] * 5
    assert all(isinstance(r, LdapResult) and r.code == TIMEOUT for r in results[5:])
    assert "no answer within 0.3 s" in str(results[5])


async def test_after_a_stop_code_nothing_more_is_sent(fake: tuple[FakeDirectory, str]) -> None:
    server, url = fake

    def script(index: int, dn: str) -> bytes:
        return response(server.requests[index][0], ADD_RESPONSE, 51 if index == 3 else 0)

    server.script = script
    async with await LdapWire.connect(url, "cn=admin", "good", 5) as wire:
        results = await wire.add_many(
            entries(100), object_classes=CLASSES, window=2, stop_on={51, 52}
        )
    assert results[:3] == [0, 0, 0] and results[3] == LdapResult(51)
    sent = len(server.requests)
    assert sent < 10
    assert all(r == 0 for r in results[4:sent])  # in flight when busy came: own answers
    assert all(isinstance(r, LdapResult) and r.code == 51 for r in results[sent:])
    assert "not sent: an earlier entry got busy (51)" in str(results[-1])


async def test_an_entry_that_cannot_be_encoded_fails_alone(
    fake: tuple[FakeDirectory, str],
) -> None:
    _, url = fake
    batch: list[Any] = entries(5)
    batch[2] = ("uid=bad,ou=radni", {"sn": 12})
    async with await LdapWire.connect(url, "cn=admin", "good", 5) as wire:
        results = await wire.add_many(batch, object_classes=CLASSES)
    assert results[:2] == [0, 0] and results[3:] == [0, 0]
    assert isinstance(results[2], LdapResult) and results[2].code == ENCODING_ERROR
