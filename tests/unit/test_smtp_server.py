"""Pure pieces of the SMTP protocol object: reply codes, limiters, the fast per-connection init."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import pytest

from mailsvc.config import load_settings
from mailsvc.relay.smtp.clients import MissCounter, client_key
from mailsvc.relay.smtp.inbound import InboundHandler, header_message_id, message_ids, smtp_factory
from mailsvc.relay.smtp.owndomain import domain_of, from_domains, own_domain
from mailsvc.relay.smtp.server import (
    ConnectionLimiter,
    CouncilSMTP,
    RateLimiter,
    with_enhanced_code,
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("552 Error: Too much mail data", "552 5.3.4 Message too big for this system"),
        ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
        (
            '500 Error: command "FOO" not recognized',
            '500 5.5.1 Error: command "FOO" not recognized',
        ),
        ("550 5.1.1 <x>: no such mailbox here", "550 5.1.1 <x>: no such mailbox here"),
        ("250 HELP", "250 HELP"),
        ("220 mail.example ESMTP", "220 mail.example ESMTP"),
        ("421-4.7.0 first", "421-4.7.0 first"),
    ],
)
def test_error_replies_get_enhanced_codes(line: str, expected: str) -> None:
    assert with_enhanced_code(line) == expected


def test_connection_limiter_counts_per_ip_and_total() -> None:
    limiter = ConnectionLimiter(total_max=3, per_ip_max=2)
    assert limiter.acquire("a") and limiter.acquire("a")
    assert not limiter.acquire("a")
    assert limiter.acquire("b")
    assert not limiter.acquire("c")  # total reached
    limiter.release("a")
    assert limiter.acquire("c")


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_clients_are_counted_by_ipv4_address_or_ipv6_64(ip: str, key: str) -> None:
    assert client_key(ip) == key


def test_one_ipv6_64_is_one_client_for_the_connection_limit() -> None:
    limiter = ConnectionLimiter(total_max=10, per_ip_max=2)
    assert limiter.acquire("2001:db8::1") and limiter.acquire("2001:db8::2")
    assert not limiter.acquire("2001:db8::ffff")  # same /64
    assert limiter.acquire("2001:db8:0:1::1")  # the next /64
    for ip in ("2001:db8::1", "2001:db8::2", "2001:db8:0:1::1"):
        limiter.release(ip)
    assert limiter.total == 0 and not limiter.per_ip


def test_per_client_tables_forget_clients_by_age() -> None:
    rate = RateLimiter(per_minute=5)
    start = rate._swept
    for n in range(1000):  # an address scan: one message from each of 1000 IPv4 addresses
        assert rate.allow(f"198.51.{n // 256}.{n % 256}", now=start + n * 0.01)
    assert len(rate) == 1000
    assert rate.allow("203.0.113.1", now=start + 130.0)  # two windows later: all swept
    assert len(rate) == 1
    misses = MissCounter(window=3600.0)
    assert [misses.miss("2001:db8::1", now=start + n) for n in range(3)] == [1, 2, 3]
    assert misses.miss("2001:db8::99", now=start + 10) == 4  # same /64
    assert misses.miss("2001:db8::1", now=start + 3605) == 2  # older misses forgotten
    assert misses.miss("192.0.2.1", now=start + 7400) == 1 and len(misses) == 1


def test_own_domains_and_the_domains_a_message_claims() -> None:
    own = ("rada.miasto.example", "miasto.example")
    assert own_domain("RADA.miasto.example", own) == "rada.miasto.example"
    assert own_domain("mail.rada.miasto.example", own) == "rada.miasto.example"
    assert own_domain("zlarada.miasto.example", own) == "miasto.example"
    assert own_domain("evilmiasto.example", own) is None and own_domain("", own) is None
    assert domain_of("<Przewodniczacy@Rada.Miasto.Example.>") == "rada.miasto.example"
    assert domain_of("") == domain_of("<>") == ""
    message = (
        b"From: Jan <jan@example.org>,\r\n =?utf-8?q?Prze?= <p@RADA.miasto.example>\r\n"
        b"from: x@example.org\r\nSubject: From: y@z.example\r\n\r\nFrom: body@b.example\r\n"
    )
    assert from_domains(message) == ["example.org", "rada.miasto.example"]


def test_rate_limiter_uses_a_sliding_minute() -> None:
    rate = RateLimiter(per_minute=2)
    assert rate.allow("ip", now=0.0) and rate.allow("ip", now=1.0)
    assert not rate.allow("ip", now=59.0)
    assert rate.allow("other", now=59.0)
    assert rate.allow("ip", now=60.5)


async def test_fast_init_copies_the_state_of_a_full_init() -> None:
    settings = load_settings(env={})
    handler = InboundHandler(settings, None, None)  # type: ignore[arg-type]
    make = smtp_factory(settings, handler)
    first, second = make(), make()  # the first runs aiosmtpd's __init__, the second copies
    slow = CouncilSMTP(
        handler,
        limiter=ConnectionLimiter(1, 1),
        max_bad_commands=10,
        hostname=settings.smtp_hostname,
        data_size_limit=settings.smtp.max_message_size,
        enable_SMTPUTF8=True,
        ident="mailsvc",
        timeout=settings.smtp.timeout,
    )
    assert set(vars(second)) == set(vars(first)) == set(vars(slow))
    for name in ("_smtp_methods", "_auth_methods"):
        assert set(getattr(second, name)) == set(getattr(slow, name))
    for method in second._smtp_methods.values():
        assert isinstance(method, types.MethodType) and method.__self__ is second
    for attr in second._auth_methods.values():
        assert attr.method.__self__ is (second if attr.is_builtin else handler)
    assert second._stream_reader is not first._stream_reader
    assert second.session is None and second.transport is None


def test_the_fast_address_split_answers_exactly_as_aiosmtpds_parser() -> None:
    """CouncilSMTP._getaddr splits plain <local@domain> itself: differential against aiosmtpd's
    RFC 5322 parser over fixed tricky cases and random ones, fast path and fallback alike."""
    import random

    from aiosmtpd.smtp import SMTP as AiosmtpdSMTP

    from mailsvc.relay.smtp import server as server_module

    class Handler:
        pass

    loop = asyncio.new_event_loop()  # aiosmtpd's SMTP wants one; closed below
    try:
        reference = AiosmtpdSMTP(Handler(), loop=loop)
    finally:
        loop.close()
    fast = server_module.CouncilSMTP.__new__(server_module.CouncilSMTP)
    fast.__dict__.update(reference.__dict__)

    def outcome(split: Any, arg: str) -> Any:
        try:
            return split(arg)
        except Exception as exc:  # the parser's own failures must stay the same too
            return type(exc).__name__

    cases = [
        "<a@b.example> SIZE=100",
        "<A+tag@Example.ORG>  BODY=8BITMIME",
        "<a@b.c>\t SIZE=1",
        "<a@b.c> (comment) SIZE=1",
        "<a@b.c> \r\n",
        "<a..b@c.d>",
        "<.a@c.d>",
        "<a@c.d.>",
        '<"quoted"@c.d>',
        "<@route.example:a@b.c>",
        "<a@[192.0.2.1]>",
        "<a%b@c.d>",
        "<a!b@c.d>",
        "<żółć@rada.example>",
        "<a@b.c>>",
        "<a@b.c",
        " <a@b.c>",
    ]
    rng = random.Random(20261126)
    noise = 'ab.@<>()" \t\r\n\\[]:,;-_+=x1\x00ż%!'
    atoms = "ab.-x1"
    for _ in range(8000):
        cases.append("<" + "".join(rng.choice(noise) for _ in range(rng.randint(0, 14))))
        local = "".join(rng.choice(atoms) for _ in range(rng.randint(1, 5)))
        domain = "".join(rng.choice(atoms) for _ in range(rng.randint(1, 6)))
        tail = "".join(rng.choice(noise) for _ in range(rng.randint(0, 5)))
        cases.append(f"<{local}@{domain}>{tail}")
    took_fast = sum(1 for c in cases if server_module._PLAIN_PATH.match(c))
    assert 1000 < took_fast < len(cases) - 1000  # both paths are exercised
    for case in cases:
        assert outcome(fast._getaddr, case) == outcome(reference._getaddr, case), case


async def test_a_multiline_reply_goes_out_in_one_write() -> None:
    """The EHLO reply's continuation lines wait for its last line: one write, one wake-up."""
    from mailsvc.relay.smtp import server as server_module

    written: list[bytes] = []

    class Writer:
        def write(self, data: bytes) -> None:
            written.append(data)

        async def drain(self) -> None:
            return None

    smtp = server_module.CouncilSMTP.__new__(server_module.CouncilSMTP)
    smtp._continued = []
    smtp._bad, smtp._max_bad = 0, 10
    smtp._writer = Writer()
    smtp.enable_SMTPUTF8 = True
    smtp.session = types.SimpleNamespace(peer=("127.0.0.1", 1))
    smtp.transport = None
    for line in ("250-mx.rada.example", "250-SIZE 26214400", "250-8BITMIME", "250 HELP"):
        await smtp.push(line)
    assert written == [b"250-mx.rada.example\r\n250-SIZE 26214400\r\n250-8BITMIME\r\n250 HELP\r\n"]
    await smtp.push("250 2.0.0 OK")
    await smtp.push("214-first\r\n214 last")  # a reply given whole: its last line ends it
    assert written[1:] == [b"250 2.0.0 OK\r\n", b"214-first\r\n214 last\r\n"]


def _message_id_by_parser(content: bytes) -> str | None:
    """What header_message_id answered before: the email package's header parser."""
    import email.policy
    import re
    from email.parser import BytesHeaderParser

    end = re.search(rb"\r?\n\r?\n", content)
    head = content[: end.start()] if end else content
    value = BytesHeaderParser(policy=email.policy.compat32).parsebytes(head).get("Message-ID")
    ids = message_ids(str(value)) if value else []
    return ids[0] if ids else None


def test_the_message_id_is_found_as_the_email_parser_finds_it() -> None:
    import random

    rng = random.Random(4)
    fields = [
        b"From: Jan <jan@example.org>",
        b"Subject: =?utf-8?q?Za=C5=BC=C3=B3=C5=82=C4=87?=",
        b"References: <a@b> <c@d>",
        b"X-Message-ID: <not@this>",
        b"Subject: Message-ID: <nor@this>",
        b"Received: from x\r\n\tby y; Thu, 1 Jan 2026 00:00:00 +0000",
    ]
    ids = [
        b"Message-ID: <1@example.org>",
        b"message-id:<2@example.org>",
        b"MESSAGE-ID:  <3@example.org>",
        b"Message-ID:\r\n <4@example.org>",
        b"Message-ID: <5@example.org> (comment)",
        b"Message-ID: no brackets",
        b"Message-ID: <6@exa mple.org>",
        b"Message-ID:",
    ]
    cases = [b"", b"Message-ID: <7@example.org>", b"\r\nMessage-ID: <8@example.org>\r\n"]
    for _ in range(3000):
        lines = rng.sample(fields, rng.randint(0, len(fields)))
        for _ in range(rng.randint(0, 2)):
            lines.insert(rng.randint(0, len(lines)), rng.choice(ids))
        sep = rng.choice([b"\r\n", b"\n"])
        head = sep.join(line.replace(b"\r\n", sep) for line in lines)
        cases.append(head + sep + sep + b"Message-ID: <body@example.org>\r\n")
    found = 0
    for content in cases:
        expected = _message_id_by_parser(content)
        assert header_message_id(content) == expected, content
        found += expected is not None
    assert found > 1000  # the cases do exercise a found Message-ID


class _Failing:
    """A handler with a bug: RCPT of "bug@…" raises, and so does every DATA."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("bug@"):
            raise RuntimeError("handler bug at RCPT with secret internals")
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raise KeyError("handler bug at DATA")


async def test_an_exception_escaping_a_handler_is_451_and_the_session_goes_on() -> None:
    """aiosmtpd answers a handler's exception with "500 Error: (type) text", a permanent
    refusal that also shows internals; ours is 451 4.3.0, and the transaction starts over."""
    import smtplib

    settings = load_settings(env={})
    loop = asyncio.get_running_loop()
    server = await loop.create_server(smtp_factory(settings, _Failing()), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def converse() -> list[tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.example")
            said = [client.mail("a@example.org")]
            said.append(client.rcpt("bug@rada.example"))
            said.append(client.rcpt("ok@rada.example"))
            said.append(client.data(b"Subject: x\r\n\r\nbody\r\n"))
            # The failed DATA ended the transaction: a new one may begin at once.
            said.append(client.mail("a@example.org"))
            said.append(client.rcpt("ok@rada.example"))
            said.append(client.rset())
            return said

    try:
        said = await asyncio.to_thread(converse)
    finally:
        server.close()
        await server.wait_closed()
    codes = [code for code, _ in said]
    assert codes == [250, 451, 250, 451, 250, 250, 250], said
    assert said[1][1] == said[3][1] == b"4.3.0 Local error, please try again later"
