"""provisioning.ldapwire's decoding of search results: the fast path for SearchResultEntry
messages must decode exactly what the checked decoder decodes, and leave every malformed
message to it, so that each is refused with the same LdapProtocolError.

``_decode_checked`` is the decoder as it was before the fast path (element by element through
``_header``); it is the reference here."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from types import FrameType

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from provisioning.ldapwire import (
    MAX_MESSAGE_ID,
    PAGED_RESULTS,
    SEARCH_RESULT_DONE,
    SEARCH_RESULT_ENTRY,
    LdapProtocolError,
    LdapResponse,
    LdapResult,
    ResponseReader,
    decode_message,
    paged_cookie,
)
from provisioning.ldapwire.ber import _decode_checked, _fast_entry
from provisioning.ldapwire.protocol import entry_response

Entry = tuple[str, dict[str, list[str]]]


def tlv(tag: int, content: bytes, long_form: int = 0) -> bytes:
    """A BER element; ``long_form`` writes the length in that many octets (AD writes 4), or
    as many as it takes."""
    n = len(content)
    if long_form:
        size = max(long_form, (n.bit_length() + 7) // 8)
        return bytes((tag, 0x80 | size)) + n.to_bytes(size, "big") + content
    if n < 0x80:
        return bytes((tag, n)) + content
    size = (n.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + n.to_bytes(size, "big") + content


def octets(value: str | bytes, long_form: int = 0) -> bytes:
    return tlv(0x04, value.encode() if isinstance(value, str) else value, long_form)


def message(body: bytes, message_id: bytes = b"\x02\x01\x07", controls: bytes = b"") -> bytes:
    return tlv(0x30, message_id + body + controls)


def entry(dn: bytes, attributes: bytes) -> bytes:
    """A SearchResultEntry protocolOp: objectName and the (already encoded) attributes."""
    return tlv(0x64, tlv(0x04, dn) + attributes)


def attribute(name: bytes, *values: bytes) -> bytes:
    return tlv(0x30, tlv(0x04, name) + tlv(0x31, b"".join(tlv(0x04, v) for v in values)))


def outcome(decode: object, data: bytes) -> LdapResponse | str:
    """The response, or the LdapProtocolError's message (anything else fails the test)."""
    assert callable(decode)
    try:
        response = decode(data, 0, len(data))
    except LdapProtocolError as exc:
        return f"error: {exc}"
    assert isinstance(response, LdapResponse)
    return response


def contents(encoded: bytes) -> int:
    """Where the contents of the LDAPMessage SEQUENCE ``encoded`` start."""
    first = encoded[1]
    return 2 if first < 0x80 else 2 + first - 0x80


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail instead of hanging: a loop that stops moving forward is a bug."""

    def expired(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"decoding took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- hand-made entries ------------------------------------------------------------------------

WELL_FORMED = message(
    entry(
        "uid=łucja.żółć,ou=radni,dc=rada,dc=example".encode(),
        tlv(
            0x30,
            attribute(b"mail", b"lucja@rada.example")
            + attribute(b"description", b"aktywna", "komisja budżetowa".encode(), b"")
            + attribute(b"mail", b"druga@rada.example")
            + attribute(b"objectClass"),
        ),
    )
)


def test_a_well_formed_entry_takes_the_fast_path_and_decodes_as_the_checked_decoder() -> None:
    expected = LdapResponse(
        7,
        SEARCH_RESULT_ENTRY,
        LdapResult(0),
        entry=(
            "uid=łucja.żółć,ou=radni,dc=rada,dc=example",
            {
                "mail": ["lucja@rada.example", "druga@rada.example"],
                "description": ["aktywna", "komisja budżetowa", ""],
                "objectClass": [],
            },
        ),
    )
    assert _fast_entry(WELL_FORMED, contents(WELL_FORMED), len(WELL_FORMED)) == expected
    assert _decode_checked(WELL_FORMED, 0, len(WELL_FORMED)) == expected
    assert decode_message(WELL_FORMED) == expected
    assert ResponseReader().feed(WELL_FORMED) == [expected]


def test_entry_response_is_the_dataclass_with_every_field_set() -> None:
    entry_value: Entry = ("uid=a", {"mail": ["a@b"]})
    controls = (("1.2.3", b"v"),)
    made = entry_response(5, entry_value, controls)
    assert made == LdapResponse(5, SEARCH_RESULT_ENTRY, LdapResult(0), None, entry_value, controls)
    assert {f.name: getattr(made, f.name) for f in fields(made)}  # every slot is set
    with pytest.raises(AttributeError):
        made.op = 1  # type: ignore[misc]  # still frozen


def test_text_that_is_not_utf8_is_replaced_as_before() -> None:
    data = message(entry(b"uid=\xff", tlv(0x30, attribute(b"cn", b"a\xc5"))))
    assert _fast_entry(data, contents(data), len(data)) is None  # left to the checked decoder
    got = decode_message(data)
    assert got.entry == ("uid=\ufffd", {"cn": ["a\ufffd"]})


def test_controls_after_an_entry_are_read() -> None:
    control = tlv(0xA0, tlv(0x30, octets("1.2.3") + octets(b"\x01")))
    data = message(entry(b"uid=a", tlv(0x30, attribute(b"cn", b"A"))), controls=control)
    assert decode_message(data).controls == (("1.2.3", b"\x01"),)
    assert _fast_entry(data, contents(data), len(data)) == decode_message(data)


def test_long_form_lengths_as_active_directory_writes_them() -> None:
    attributes = tlv(
        0x30,
        tlv(0x30, octets("mail", 4) + tlv(0x31, octets("a@b", 4), 4), 4)
        + tlv(0x30, octets("cn", 1) + tlv(0x31, octets("A" * 200, 2), 3), 2),
        4,
    )
    data = tlv(0x30, b"\x02\x01\x07" + tlv(0x64, octets("uid=a", 4) + attributes, 4), 4)
    expected = ("uid=a", {"mail": ["a@b"], "cn": ["A" * 200]})
    assert _fast_entry(data, contents(data), len(data)) is not None
    assert decode_message(data).entry == expected
    assert ResponseReader().feed(data)[0].entry == expected


def test_what_the_checked_decoder_ignores_is_ignored() -> None:
    # Bytes after the values in an attribute and after the attributes in the protocolOp.
    attr = tlv(0x30, tlv(0x04, b"cn") + tlv(0x31, tlv(0x04, b"A")) + b"\x05\x00")
    data = message(tlv(0x64, tlv(0x04, b"uid=a") + tlv(0x30, attr) + b"\x01\x01\xff"))
    assert decode_message(data).entry == ("uid=a", {"cn": ["A"]})
    assert _fast_entry(data, contents(data), len(data)) == _decode_checked(data, 0, len(data))


# Each message is well formed except for one element; the error names it.
MALFORMED_ENTRIES: list[tuple[str, bytes, str]] = [
    (
        "attribute not a SEQUENCE",
        message(entry(b"uid=a", tlv(0x30, tlv(0x31, b"")))),
        "attribute: expected SEQUENCE (0x30), got 0x31",
    ),
    (
        "attribute type not an OCTET STRING",
        message(entry(b"uid=a", tlv(0x30, tlv(0x30, tlv(0x02, b"cn") + tlv(0x31, b""))))),
        "attribute type: expected OCTET STRING, got 0x02",
    ),
    (
        "attribute values not a SET",
        message(entry(b"uid=a", tlv(0x30, tlv(0x30, tlv(0x04, b"cn") + tlv(0x30, b""))))),
        "attribute values: expected SET (0x31), got 0x30",
    ),
    (
        "attribute value not an OCTET STRING",
        message(entry(b"uid=a", tlv(0x30, tlv(0x30, tlv(0x04, b"cn") + tlv(0x31, b"\x0c\x01A"))))),
        "attribute value: expected OCTET STRING, got 0x0c",
    ),
    (
        "value running past its SET",
        message(entry(b"uid=a", tlv(0x30, tlv(0x30, tlv(0x04, b"cn") + tlv(0x31, b"\x04\x05ab"))))),
        "attribute value: element of 5 bytes at byte 26 runs past its enclosing element",
    ),
    (
        "SET running past its attribute",
        message(entry(b"uid=a", tlv(0x30, tlv(0x30, tlv(0x04, b"cn") + b"\x31\x03\x04\x01")))),
        "attribute values: element of 3 bytes at byte 24 runs past its enclosing element",
    ),
    (
        "attribute running past the attributes",
        message(entry(b"uid=a", tlv(0x30, b"\x30\x09" + tlv(0x04, b"cn") + tlv(0x31, b"")))),
        "attribute: element of 9 bytes at byte 18 runs past its enclosing element",
    ),
    (
        "attribute type running past its attribute",
        message(entry(b"uid=a", tlv(0x30, tlv(0x30, b"\x04\x09cn")))),
        "attribute type: element of 9 bytes at byte 20 runs past its enclosing element",
    ),
    (
        "objectName running past the protocolOp",
        message(tlv(0x64, b"\x04\x09uid=a" + tlv(0x30, b""))),
        "objectName: element of 9 bytes at byte 9 runs past its enclosing element",
    ),
    (
        "protocolOp running past the message",
        message(b"\x64\x09" + tlv(0x04, b"uid=a")),
        "protocolOp: element of 9 bytes at byte 7 runs past its enclosing element",
    ),
    (
        "value truncated to its tag",
        message(entry(b"uid=a", tlv(0x30, tlv(0x30, tlv(0x04, b"cn") + tlv(0x31, b"\x04"))))),
        "attribute value: truncated element at byte 24",
    ),
    (
        "attribute values missing",
        message(entry(b"uid=a", tlv(0x30, tlv(0x30, tlv(0x04, b"cn"))))),
        "attribute values: truncated element at byte 22",
    ),
    (
        "attributes missing",
        message(tlv(0x64, tlv(0x04, b"uid=a"))),
        "attributes: truncated element at byte 14",
    ),
    (
        "indefinite length of a value",
        message(entry(b"uid=a", tlv(0x30, tlv(0x30, tlv(0x04, b"cn") + tlv(0x31, b"\x04\x80"))))),
        "attribute value: indefinite length at byte 25",
    ),
    (
        "indefinite length of the attributes",
        message(entry(b"uid=a", b"\x30\x80\x00\x00")),
        "attributes: indefinite length",
    ),
    (
        "length of 9 octets",
        message(
            entry(
                b"uid=a", tlv(0x30, tlv(0x30, tlv(0x04, b"cn") + tlv(0x31, b"\x04\x89" + bytes(9))))
            )
        ),
        "attribute value: length field of 9 bytes",
    ),
    (
        "length octet 0xff",
        message(entry(b"uid=a", tlv(0x30, tlv(0x30, b"\x04\xff" + bytes(8))))),
        "attribute type: length field of 127 bytes",
    ),
    (
        "length octets cut short",
        message(
            entry(b"uid=a", tlv(0x30, tlv(0x30, tlv(0x04, b"cn") + tlv(0x31, b"\x04\x82\x00"))))
        ),
        "attribute value: truncated length",
    ),
    (
        "multi-byte tag of a value",
        message(
            entry(b"uid=a", tlv(0x30, tlv(0x30, tlv(0x04, b"cn") + tlv(0x31, b"\x1f\x01\x00"))))
        ),
        "attribute value: multi-byte tag 0x1f",
    ),
    (
        "multi-byte tag of the protocolOp",
        message(b"\x7f\x04\x04\x00\x30\x00"),
        "protocolOp: multi-byte tag 0x7f",
    ),
    (
        "objectName not an OCTET STRING",
        message(tlv(0x64, tlv(0x0C, b"uid=a") + tlv(0x30, b""))),
        "objectName: expected OCTET STRING (0x04), got 0x0c",
    ),
    (
        "messageID negative",
        message(entry(b"uid=a", tlv(0x30, b"")), message_id=b"\x02\x01\x80"),
        "messageID -128 is outside",
    ),
    (
        "messageID over 2**31 - 1",
        message(entry(b"uid=a", tlv(0x30, b"")), message_id=b"\x02\x05\x00\x80\x00\x00\x00"),
        "messageID 2147483648 is outside",
    ),
    (
        "messageID of 9 octets",
        message(entry(b"uid=a", tlv(0x30, b"")), message_id=b"\x02\x09" + bytes(9)),
        "messageID: INTEGER of 9 bytes",
    ),
    (
        "messageID empty",
        message(entry(b"uid=a", tlv(0x30, b"")), message_id=b"\x02\x00"),
        "messageID: empty INTEGER",
    ),
    (
        "control not a SEQUENCE",
        message(
            entry(b"uid=a", tlv(0x30, b"")), controls=tlv(0xA0, tlv(0x04, PAGED_RESULTS.encode()))
        ),
        "control: expected SEQUENCE, got 0x04",
    ),
    (
        "controls running past the message",
        message(entry(b"uid=a", tlv(0x30, b"")), controls=b"\xa0\x05\x30\x00"),
        "controls: element of 5 bytes at byte 18 runs past its enclosing element",
    ),
]


@pytest.mark.parametrize(
    ("data", "error"),
    [case[1:] for case in MALFORMED_ENTRIES],
    ids=[case[0] for case in MALFORMED_ENTRIES],
)
def test_malformed_entries_are_refused_with_a_clear_error(data: bytes, error: str) -> None:
    for decode in (
        lambda: decode_message(data),
        lambda: _decode_checked(data, 0, len(data)),
        lambda: ResponseReader().feed(data),
    ):
        with pytest.raises(LdapProtocolError, match=re.escape(error)):
            decode()


def test_after_an_error_the_reader_keeps_refusing() -> None:
    reader = ResponseReader()
    bad = MALFORMED_ENTRIES[0][1]
    with pytest.raises(LdapProtocolError):
        reader.feed(WELL_FORMED + bad)
    with pytest.raises(LdapProtocolError):
        reader.feed(b"")


def test_a_message_longer_than_a_read_waits_without_rescanning() -> None:
    big = message(entry(b"uid=a", tlv(0x30, attribute(b"jpegPhoto", b"x" * 300_000))))
    reader = ResponseReader()
    got: list[LdapResponse] = []
    for i in range(0, len(big), 1000):
        got += reader.feed(big[i : i + 1000])
        if i + 1000 < len(big):
            assert reader.pending_bytes == i + 1000
    assert [r.entry for r in got] == [("uid=a", {"jpegPhoto": ["x" * 300_000]})]
    assert reader.pending_bytes == 0


# --- generated entries ------------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
# Octets for a length: 0 the shortest form, else that many (as some servers write them).
LENGTH_FORMS = st.sampled_from([0, 0, 0, 1, 2, 4, 8])


@st.composite
def entry_messages(draw: st.DrawFn) -> tuple[bytes, LdapResponse]:
    """A SearchResultEntry message, any lengths in any form, and the response it decodes to."""

    def form() -> int:
        return draw(LENGTH_FORMS)

    message_id = draw(st.integers(0, MAX_MESSAGE_ID))
    id_octets = message_id.to_bytes((message_id.bit_length() + 8) // 8, "big")
    if draw(st.booleans()):  # a leading zero octet is allowed, if unusual
        id_octets = b"\x00" + id_octets
    dn = draw(TEXT)
    attributes: dict[str, list[str]] = {}
    encoded = b""
    for name, values in draw(st.lists(st.tuples(TEXT, st.lists(TEXT, max_size=4)), max_size=5)):
        attributes.setdefault(name, []).extend(values)
        contents = b"".join(octets(v, form()) for v in values)
        trailer = b"\x04\x00" if draw(st.integers(0, 9)) == 0 else b""  # ignored after the SET
        encoded += tlv(0x30, octets(name, form()) + tlv(0x31, contents, form()) + trailer, form())
    op = octets(dn, form()) + tlv(0x30, encoded, form())
    controls: tuple[tuple[str, bytes], ...] = ()
    suffix = b""
    if draw(st.booleans()):
        controls = ((PAGED_RESULTS, draw(st.binary(max_size=20))),)
        control = tlv(0x30, octets(PAGED_RESULTS) + b"\x01\x01\x00" + octets(controls[0][1]))
        suffix = tlv(0xA0, control, form())
    data = tlv(0x30, tlv(0x02, id_octets) + tlv(0x64, op, form()) + suffix, form())
    expected = LdapResponse(
        message_id, SEARCH_RESULT_ENTRY, LdapResult(0), entry=(dn, attributes), controls=controls
    )
    return data, expected


def done_message(message_id: int, cookie: bytes) -> bytes:
    paged = tlv(0x30, b"\x02\x01\x00" + octets(cookie))
    control = tlv(0xA0, tlv(0x30, octets(PAGED_RESULTS) + octets(paged)))
    return message(
        tlv(0x65, b"\x0a\x01\x00\x04\x00\x04\x00"), bytes((2, 1, message_id)), controls=control
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(entry_messages(), min_size=1, max_size=6), st.data())
def test_generated_entries_decode_in_any_reads_as_the_checked_decoder_does(
    messages: list[tuple[bytes, LdapResponse]], data: st.DataObject
) -> None:
    stream = b"".join(m for m, _ in messages) + done_message(9, b"\x01\x02")
    for encoded, expected in messages:
        assert _decode_checked(encoded, 0, len(encoded)) == expected
        assert decode_message(encoded) == expected
    reader = ResponseReader()
    got: list[LdapResponse] = []
    pos = 0
    while pos < len(stream):
        step = data.draw(st.integers(1, max(1, len(stream) // 3)))
        got += reader.feed(stream[pos : pos + step])
        pos += step
    assert got[:-1] == [expected for _, expected in messages]
    assert got[-1].op == SEARCH_RESULT_DONE and paged_cookie(got[-1].controls) == b"\x01\x02"
    assert reader.pending_bytes == 0


@settings(max_examples=200, deadline=None)
@given(entry_messages())
def test_generated_entries_take_the_fast_path(case: tuple[bytes, LdapResponse]) -> None:
    encoded, expected = case
    start = contents(encoded)
    response = _fast_entry(encoded, start, len(encoded))
    if encoded[start + 1] <= 4:
        assert response == expected
    else:  # a messageID of 5 octets (a leading zero before 4) is the checked decoder's
        assert response is None


MUTATIONS = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
)


def mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, where, value in mutations:
        i = where % (len(out) + 1)
        if kind == "set" and i < len(out):
            out[i] = value
        elif kind == "insert":
            out[i:i] = bytes((value,))
        elif kind == "delete" and i < len(out):
            del out[i]
        elif kind == "truncate":
            del out[i:]
    return bytes(out)


@settings(max_examples=400, deadline=None)
@given(entry_messages(), st.lists(MUTATIONS, min_size=1, max_size=3))
@example(
    (WELL_FORMED, decode_message(WELL_FORMED)), [("set", 1, 0x80)]
)  # the message's length made indefinite
def test_damaged_entries_decode_or_fail_exactly_as_with_the_checked_decoder(
    case: tuple[bytes, LdapResponse], mutations: list[tuple[str, int, int]]
) -> None:
    damaged = mutate(case[0], mutations)
    with time_limit(5):
        checked = outcome(_decode_checked, damaged)
        assert outcome(decode_message, damaged) == checked
        try:
            got = ResponseReader().feed(damaged)
        except LdapProtocolError:
            return
    if isinstance(checked, LdapResponse):
        assert got in ([], [checked])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 64))
@example(b"\x30\x05\x02\x01\x01\x64\x00", 1)
@example(b"\x30\x07\x02\x01\x01\x64\x02\x04\x00", 3)
def test_random_bytes_are_decoded_or_refused_never_anything_else(data: bytes, step: int) -> None:
    with time_limit(5):
        reader = ResponseReader()
        try:
            for i in range(0, len(data), step):
                reader.feed(data[i : i + step])
        except LdapProtocolError:
            pass
        checked = outcome(_decode_checked, data)
        assert outcome(decode_message, data) == checked
        # The same bytes behind an entry's header: the fast path's own reads.
        framed = tlv(0x30, b"\x02\x01\x01" + tlv(0x64, data))
        assert outcome(decode_message, framed) == outcome(_decode_checked, framed)


@settings(max_examples=200, deadline=None)
@given(st.lists(entry_messages(), min_size=1, max_size=4), st.integers(0, 10_000))
def test_a_stream_cut_anywhere_gives_the_whole_messages_before_the_cut(
    messages: list[tuple[bytes, LdapResponse]], cut: int
) -> None:
    stream = b"".join(m for m, _ in messages)
    cut %= len(stream) + 1
    reader = ResponseReader()
    got = reader.feed(stream[:cut])
    whole, size = 0, 0
    for encoded, _ in messages:
        if size + len(encoded) > cut:
            break
        size += len(encoded)
        whole += 1
    assert got == [expected for _, expected in messages[:whole]]
    assert reader.pending_bytes == cut - size
