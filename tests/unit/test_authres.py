"""Authentication-Results: SPF, DKIM and DMARC against a real DNS server on loopback.

The server is a few lines of asyncio over dnspython's message parsing, bound to 127.0.0.1:0 in
the test's own loop; pyspf and dkimpy reach it through the resolver passed to ``authenticate``.
No test touches the machine's configured resolver or any network beyond loopback.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import email
import email.policy
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import dkim
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailsvc.relay.smtp import authres
from mailsvc.relay.smtp.authres import (
    AuthResults,
    authenticate,
    authentication_results_header,
    start_spf,
)

AUTHSERV = "mx.rada.example"
RESIDENT_IP = "127.0.0.1"
STRANGER_IP = "192.0.2.7"  # TEST-NET-1: only ever a string here, never contacted


@pytest.fixture
def threaded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions the checks hand to their thread pool, in order."""
    names: list[str] = []
    pool = authres._executor()

    class Counting(concurrent.futures.Executor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            names.append(getattr(fn, "func", fn).__name__)
            return pool.submit(fn, *args, **kwargs)

    monkeypatch.setattr(authres, "_executor", Counting)
    return names


# --- a DNS server on loopback ------------------------------------------------------------------


@dataclass
class Zone(asyncio.DatagramProtocol):
    """Authoritative for whatever is in ``records``; NXDOMAIN for names it does not hold."""

    records: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    queries: list[tuple[str, str]] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    def txt(self, name: str, text: str) -> None:
        chunks = [text[i : i + 200] for i in range(0, len(text), 200)] or [""]
        self.records.setdefault((name.lower(), "TXT"), []).append(
            " ".join(f'"{chunk}"' for chunk in chunks)
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        values = self.records.get((name, rdtype))
        if values:
            response.answer.append(
                dns.rrset.from_text_list(question.name, 60, "IN", rdtype, values)
            )
        elif not any(held == name for held, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


class Blackhole(asyncio.DatagramProtocol):
    """A DNS server that has hung: it reads every query and never answers."""

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        pass


def resolver_at(port: int) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.timeout = 1.0
    resolver.lifetime = 3.0
    return resolver


@pytest.fixture
async def zone() -> AsyncIterator[tuple[Zone, dns.resolver.Resolver]]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(Zone, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        yield server, resolver_at(port)
    finally:
        transport.close()


@pytest.fixture
async def hung_resolver() -> AsyncIterator[dns.resolver.Resolver]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Blackhole, local_addr=("127.0.0.1", 0))
    try:
        yield resolver_at(transport.get_extra_info("sockname")[1])
    finally:
        transport.close()


# --- messages and keys ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    private_pem: bytes
    dns_record: str


@pytest.fixture(scope="module")
def key() -> Key:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Key(pem, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}")


def letter(author: str = "Jan Kowalski <jan.kowalski@example.org>", body: str = "") -> bytes:
    text = (
        f"From: {author}\r\n"
        "To: radny.nowak@rada.example\r\n"
        "Subject: =?utf-8?q?Dziura_w_jezdni_na_ul=2E_D=C5=82ugiej?=\r\n"
        "Date: Mon, 02 Mar 2026 10:00:00 +0100\r\n"
        "Message-ID: <1@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n" + (body or "Szanowny Panie Radny,\r\nproszę o interwencję w sprawie dziury.\r\n")
    )
    return text.encode("utf-8")


def signed(message: bytes, key: Key, domain: str = "example.org", selector: str = "sel") -> bytes:
    header: bytes = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        key.private_pem,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return header + message


async def check(
    resolver: dns.resolver.Resolver,
    message: bytes,
    *,
    client_ip: str = RESIDENT_IP,
    helo: str = "mail.example.org",
    mail_from: str = "jan.kowalski@example.org",
    budget: float = 2.0,
) -> AuthResults:
    return await authenticate(
        authserv_id=AUTHSERV,
        client_ip=client_ip,
        helo=helo,
        mail_from=mail_from,
        message=message,
        budget=budget,
        resolver=resolver,
    )


# --- SPF ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "client_ip", "expected"),
    [
        ("v=spf1 ip4:127.0.0.1 -all", RESIDENT_IP, "pass"),
        ("v=spf1 ip4:127.0.0.1 -all", STRANGER_IP, "fail"),
        ("v=spf1 ip4:127.0.0.1 ~all", STRANGER_IP, "softfail"),
        ("v=spf1 ip4:127.0.0.1 ?all", STRANGER_IP, "neutral"),
        ("v=spf1 ip4:127.0.0.1 moo -all", RESIDENT_IP, "permerror"),
        ("v=spf1 a:mail.example.org -all", RESIDENT_IP, "pass"),
        ("v=spf1 mx -all", RESIDENT_IP, "pass"),
        (None, RESIDENT_IP, "none"),
    ],
)
async def test_spf_result_for_the_envelope_sender(
    zone: tuple[Zone, dns.resolver.Resolver], record: str | None, client_ip: str, expected: str
) -> None:
    server, resolver = zone
    server.records[("mail.example.org", "A")] = ["127.0.0.1"]
    server.records[("example.org", "MX")] = ["10 mail.example.org."]
    if record is not None:
        server.txt("example.org", record)
    results = await check(resolver, letter(), client_ip=client_ip)
    assert results.spf == expected
    assert f"spf={expected} smtp.mailfrom=jan.kowalski@example.org;" in results.header_value


async def test_spf_begun_at_mail_from_is_the_one_reported(
    zone: tuple[Zone, dns.resolver.Resolver],
) -> None:
    server, resolver = zone
    server.txt("example.org", "v=spf1 ip4:127.0.0.1 -all")
    early = start_spf(
        authserv_id=AUTHSERV,
        client_ip=RESIDENT_IP,
        helo="mail.example.org",
        mail_from="jan.kowalski@example.org",
        resolver=resolver,
    )
    assert early.task is not None
    await asyncio.wait_for(early.task, 5)  # done while the data would still be arriving
    asked = len(server.queries)
    server.records.clear()  # a second lookup now would find no record ("none")
    results = await authenticate(
        authserv_id=AUTHSERV,
        client_ip=RESIDENT_IP,
        helo="mail.example.org",
        mail_from="jan.kowalski@example.org",
        message=letter(),
        resolver=resolver,
        early_spf=early,
    )
    assert results.spf == "pass"
    assert not any(q[0] == "example.org" for q in server.queries[asked:])
    # Begun for another envelope: not used, the check runs for this one.
    other = await authenticate(
        authserv_id=AUTHSERV,
        client_ip=RESIDENT_IP,
        helo="mail.example.org",
        mail_from="someone@example.org",
        message=letter(),
        resolver=resolver,
        early_spf=early,
    )
    assert other.spf == "none"


async def test_spf_is_evaluated_at_once_when_its_records_are_cached(
    zone: tuple[Zone, dns.resolver.Resolver], threaded: list[str]
) -> None:
    server, resolver = zone
    resolver.cache = dns.resolver.LRUCache(100)
    # An include and an "a" mechanism: several lookups, all of which must come from the cache.
    server.txt("example.org", "v=spf1 include:_spf.example.net a:mx.example.org -all")
    server.txt("_spf.example.net", "v=spf1 ip4:127.0.0.1 -all")

    def begin(mail_from: str) -> authres.EarlySpf:
        return start_spf(
            authserv_id=AUTHSERV,
            client_ip=RESIDENT_IP,
            helo="mail.example.org",
            mail_from=mail_from,
            resolver=resolver,
        )

    first = begin("jan.kowalski@example.org")
    assert first.task is not None and not first.task.done()  # cold cache: asked in a thread
    assert await asyncio.wait_for(first.task, 5) == "pass"
    assert threaded == ["_check_spf"]
    asked = len(server.queries)
    second = begin("anna.nowak@example.org")
    assert second.task is not None and second.task.done()  # every record cached: no wait
    assert second.task.result() == "pass"
    assert threaded == ["_check_spf"] and len(server.queries) == asked
    # A record the cache does not hold yet (another domain): back to the thread, same answer.
    server.txt("example.com", "v=spf1 -all")
    third = begin("someone@example.com")
    assert third.task is not None
    assert await asyncio.wait_for(third.task, 5) == "fail"
    assert threaded == ["_check_spf", "_check_spf"]


async def test_spf_checks_helo_when_the_sender_is_null(
    zone: tuple[Zone, dns.resolver.Resolver],
) -> None:
    server, resolver = zone
    server.txt("mail.example.org", "v=spf1 ip4:127.0.0.1 -all")
    server.txt("example.org", "v=spf1 -all")  # must not be the one consulted
    results = await check(resolver, letter(), mail_from="")
    assert results.spf == "pass"
    assert "spf=pass smtp.helo=mail.example.org;" in results.header_value


async def test_spf_ipv4_mapped_client_address_counts_as_ipv4(
    zone: tuple[Zone, dns.resolver.Resolver],
) -> None:
    server, resolver = zone
    server.txt("example.org", "v=spf1 ip4:127.0.0.1 -all")
    results = await check(resolver, letter(), client_ip="::ffff:127.0.0.1")
    assert results.spf == "pass"


async def test_concurrent_checks_each_use_their_own_client_address(
    zone: tuple[Zone, dns.resolver.Resolver],
) -> None:
    server, resolver = zone
    server.txt("example.org", "v=spf1 ip4:127.0.0.1 -all")
    addresses = [RESIDENT_IP, STRANGER_IP] * 6
    results = await asyncio.gather(
        *(check(resolver, letter(), client_ip=address) for address in addresses)
    )
    assert [r.spf for r in results] == ["pass", "fail"] * 6


# --- DKIM --------------------------------------------------------------------------------------


async def test_dkim_pass_reports_domain_and_selector(
    zone: tuple[Zone, dns.resolver.Resolver], key: Key
) -> None:
    server, resolver = zone
    server.txt("sel._domainkey.example.org", key.dns_record)
    results = await check(resolver, signed(letter(), key))
    assert results.dkim == "pass"
    assert "dkim=pass header.d=example.org header.s=sel header.b=" in results.header_value


async def test_dkim_fails_when_the_body_was_altered(
    zone: tuple[Zone, dns.resolver.Resolver], key: Key
) -> None:
    server, resolver = zone
    server.txt("sel._domainkey.example.org", key.dns_record)
    message = signed(letter(), key).replace(b"dziury.", b"dziury. PS. Kup bitcoiny.")
    results = await check(resolver, message)
    assert results.dkim == "fail"
    assert "dkim=fail header.d=example.org header.s=sel" in results.header_value


async def test_dkim_fails_when_a_signed_header_was_altered(
    zone: tuple[Zone, dns.resolver.Resolver], key: Key
) -> None:
    server, resolver = zone
    server.txt("sel._domainkey.example.org", key.dns_record)
    message = signed(letter(), key).replace(b"radny.nowak@", b"radny.kowal@")
    results = await check(resolver, message)
    assert results.dkim == "fail"


async def test_dkim_none_without_a_signature(zone: tuple[Zone, dns.resolver.Resolver]) -> None:
    _server, resolver = zone
    results = await check(resolver, letter())
    assert results.dkim == "none"
    assert "; dkim=none;" in results.header_value


async def test_dkim_permerror_when_the_key_is_not_published(
    zone: tuple[Zone, dns.resolver.Resolver], key: Key
) -> None:
    _server, resolver = zone
    results = await check(resolver, signed(letter(), key))
    assert results.dkim == "permerror"


async def test_dkim_passes_when_any_of_several_signatures_verifies(
    zone: tuple[Zone, dns.resolver.Resolver], key: Key
) -> None:
    server, resolver = zone
    server.txt("sel._domainkey.example.org", key.dns_record)
    # Outer signature by a list service whose key is not published; inner one by the author.
    message = signed(signed(letter(), key), key, domain="lists.example.net", selector="k1")
    results = await check(resolver, message)
    assert results.dkim == "pass"
    assert "dkim=permerror header.d=lists.example.net header.s=k1" in results.header_value
    assert "dkim=pass header.d=example.org header.s=sel" in results.header_value


# --- DMARC -------------------------------------------------------------------------------------


async def test_dmarc_passes_on_aligned_dkim_even_when_spf_fails(
    zone: tuple[Zone, dns.resolver.Resolver], key: Key
) -> None:
    server, resolver = zone
    server.txt("example.org", "v=spf1 -all")
    server.txt("sel._domainkey.example.org", key.dns_record)
    server.txt("_dmarc.example.org", "v=DMARC1; p=reject")
    results = await check(resolver, signed(letter(), key))
    assert (results.spf, results.dkim, results.dmarc) == ("fail", "pass", "pass")
    assert results.header_value.endswith("dmarc=pass (p=reject) header.from=example.org")


async def test_a_cached_dmarc_policy_is_read_from_the_cache_alike(
    zone: tuple[Zone, dns.resolver.Resolver], threaded: list[str]
) -> None:
    server, resolver = zone
    resolver.cache = dns.resolver.LRUCache(100)
    server.txt("example.org", "v=spf1 -all")
    server.txt("_dmarc.example.org", "v=DMARC1; p=reject")
    first = await check(resolver, letter())
    assert threaded.count("_fetch_dmarc") == 1  # not in the cache yet: asked in a thread
    second = await check(resolver, letter())
    assert threaded.count("_fetch_dmarc") == 1  # from the cache, no thread
    assert first.dmarc == second.dmarc == "fail"
    assert first.header_value == second.header_value
    asked = [q for q in server.queries if q[0].startswith("_dmarc.")]
    assert len(asked) == 1  # the second message's policy came from the cache
    # Absent names are cached too (NXDOMAIN): a sender without DMARC is answered from memory.
    other = await check(resolver, letter().replace(b"example.org", b"example.net"))
    again = await check(resolver, letter().replace(b"example.org", b"example.net"))
    assert other.dmarc == again.dmarc == "none"
    assert len([q for q in server.queries if q[0] == "_dmarc.example.net"]) == 1


async def test_dmarc_passes_on_relaxed_spf_alignment(
    zone: tuple[Zone, dns.resolver.Resolver],
) -> None:
    server, resolver = zone
    server.txt("bounces.example.org", "v=spf1 ip4:127.0.0.1 -all")
    server.txt("_dmarc.example.org", "v=DMARC1; p=quarantine")
    results = await check(resolver, letter(), mail_from="b-123@bounces.example.org")
    assert (results.spf, results.dmarc) == ("pass", "pass")


async def test_dmarc_strict_spf_alignment_needs_the_exact_domain(
    zone: tuple[Zone, dns.resolver.Resolver],
) -> None:
    server, resolver = zone
    server.txt("bounces.example.org", "v=spf1 ip4:127.0.0.1 -all")
    server.txt("_dmarc.example.org", "v=DMARC1; p=reject; aspf=s")
    results = await check(resolver, letter(), mail_from="b-123@bounces.example.org")
    assert (results.spf, results.dmarc) == ("pass", "fail")


async def test_dmarc_fails_when_neither_spf_nor_dkim_is_aligned(
    zone: tuple[Zone, dns.resolver.Resolver], key: Key
) -> None:
    server, resolver = zone
    server.txt("example.net", "v=spf1 ip4:127.0.0.1 -all")
    server.txt("sel._domainkey.example.net", key.dns_record)
    server.txt("_dmarc.example.org", "v=DMARC1; p=reject")
    # Both pass, but for example.net, while the letter claims to be from example.org.
    message = signed(letter(), key, domain="example.net")
    results = await check(resolver, message, mail_from="spoofer@example.net")
    assert (results.spf, results.dkim, results.dmarc) == ("pass", "pass", "fail")
    assert "dmarc=fail (p=reject) header.from=example.org" in results.header_value


async def test_dmarc_none_without_a_record(zone: tuple[Zone, dns.resolver.Resolver]) -> None:
    server, resolver = zone
    server.txt("example.org", "v=spf1 ip4:127.0.0.1 -all")
    results = await check(resolver, letter())
    assert (results.spf, results.dmarc) == ("pass", "none")
    assert results.header_value.endswith("dmarc=none header.from=example.org")


async def test_dmarc_subdomain_uses_the_organisations_record_and_its_sp(
    zone: tuple[Zone, dns.resolver.Resolver],
) -> None:
    server, resolver = zone
    server.txt("_dmarc.example.org", "v=DMARC1; p=reject; sp=quarantine")
    results = await check(resolver, letter(author="news@biuletyn.example.org"), mail_from="")
    assert results.dmarc == "fail"
    assert "dmarc=fail (p=quarantine) header.from=biuletyn.example.org" in results.header_value
    assert ("_dmarc.biuletyn.example.org", "TXT") in server.queries


async def test_dmarc_permerror_when_from_names_several_domains(
    zone: tuple[Zone, dns.resolver.Resolver],
) -> None:
    _server, resolver = zone
    results = await check(resolver, letter(author="a@example.org, b@example.net"))
    assert results.dmarc == "permerror"


@pytest.mark.parametrize(
    ("from_domain", "tags", "spf_domain", "dkim_domains", "expected"),
    [
        ("example.org", {"p": "reject"}, "mail.example.org", [], "pass"),
        ("example.org", {"p": "reject", "aspf": "s"}, "mail.example.org", [], "fail"),
        ("example.org", {"p": "reject"}, "", ["news.example.org"], "pass"),
        ("example.org", {"p": "reject", "adkim": "s"}, "", ["news.example.org"], "fail"),
        # Polish cities are public suffixes: the city hall and the library are two
        # organisations, which a last-two-labels guess would wrongly align.
        ("um.krakow.pl", {"p": "reject"}, "biblioteka.krakow.pl", [], "fail"),
        ("um.krakow.pl", {"p": "reject"}, "poczta.um.krakow.pl", [], "pass"),
    ],
)
def test_dmarc_alignment_rules(
    from_domain: str,
    tags: dict[str, str],
    spf_domain: str,
    dkim_domains: list[str],
    expected: str,
) -> None:
    found = authres._DmarcLookup(authres._DmarcRecord(tags, at_org_domain=False))
    result, policy = authres._evaluate_dmarc(
        from_domain,
        found,
        spf_result="pass" if spf_domain else "none",
        spf_domain=spf_domain,
        dkim_domains=dkim_domains,
        dkim_result="pass" if dkim_domains else "none",
    )
    assert (result, policy) == (expected, "reject")


# --- DNS that does not answer --------------------------------------------------------------------


async def test_hung_dns_gives_temperror_within_the_budget(
    hung_resolver: dns.resolver.Resolver, key: Key
) -> None:
    started = time.monotonic()
    results = await check(hung_resolver, signed(letter(), key), budget=0.5)
    elapsed = time.monotonic() - started
    assert (results.spf, results.dkim, results.dmarc) == ("temperror",) * 3
    assert 0.4 <= elapsed < 0.5 + 0.2


async def test_after_repeated_timeouts_the_resolver_is_not_asked_for_a_while(
    hung_resolver: dns.resolver.Resolver, key: Key
) -> None:
    await check(hung_resolver, signed(letter(), key), budget=0.3)
    # The lookups cut off at the deadline end in their threads a little later (dnspython
    # overshoots a lifetime by up to ~0.1 s, more on a busy machine); only then are their
    # timeouts counted.
    await asyncio.sleep(1.0)
    started = time.monotonic()
    results = await check(hung_resolver, signed(letter(), key), budget=2.0)
    assert time.monotonic() - started < 0.2
    assert (results.spf, results.dkim, results.dmarc) == ("temperror",) * 3


@pytest.fixture
def closed_port() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()  # nothing listens there now; the kernel's "port unreachable" is not seen
    yield port


async def test_no_dns_server_at_all_gives_temperror_within_the_budget(
    closed_port: int, key: Key
) -> None:
    started = time.monotonic()
    results = await check(resolver_at(closed_port), signed(letter(), key), budget=0.5)
    assert (results.spf, results.dkim, results.dmarc) == ("temperror",) * 3
    assert time.monotonic() - started < 0.5 + 0.2


async def test_zero_budget_answers_at_once(zone: tuple[Zone, dns.resolver.Resolver]) -> None:
    server, resolver = zone
    server.txt("example.org", "v=spf1 ip4:127.0.0.1 -all")
    started = time.monotonic()
    results = await check(resolver, letter(), budget=0.0)
    assert time.monotonic() - started < 0.1
    assert results.spf == "temperror"


# --- never in the way ----------------------------------------------------------------------------


async def test_an_internal_error_degrades_to_temperror_instead_of_raising(
    zone: tuple[Zone, dns.resolver.Resolver], monkeypatch: pytest.MonkeyPatch
) -> None:
    _server, resolver = zone

    def broken(*args: object) -> str:
        raise RuntimeError("bug")

    monkeypatch.setattr(authres, "_from_domain", broken)
    results = await check(resolver, letter())
    assert (results.spf, results.dkim, results.dmarc) == ("temperror",) * 3
    assert results.header_value.startswith(f"{AUTHSERV}; spf=temperror")


@pytest.mark.parametrize(
    ("message", "client_ip", "mail_from"),
    [
        (b"", RESIDENT_IP, "jan@example.org"),
        (b"\x00\xff\xfe garbage \r\n\r\n\x00", RESIDENT_IP, "jan@example.org"),
        (b"DKIM-Signature: v=1; a=rsa-sha256; d=\r\nFrom: <@>\r\n\r\nx", RESIDENT_IP, "@"),
        (b"From: a@example.org\r\n\r\nx", "unix:/run/mailsvc.sock", "<>"),
        (b"From: =?utf-8?q?=0D=0A?= <a@xn--zca.example>\r\n\r\n", "::1", "a@[127.0.0.1]"),
    ],
)
async def test_malformed_input_never_raises(
    zone: tuple[Zone, dns.resolver.Resolver], message: bytes, client_ip: str, mail_from: str
) -> None:
    _server, resolver = zone
    results = await check(resolver, message, client_ip=client_ip, mail_from=mail_from)
    for result in (results.spf, results.dkim, results.dmarc):
        assert result in {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"}
    assert_well_formed(authentication_results_header(results))


# --- the header ----------------------------------------------------------------------------------


def assert_well_formed(header: bytes) -> None:
    assert header.startswith(b"Authentication-Results: ")
    assert header.endswith(b"\r\n")
    lines = header[:-2].split(b"\r\n")
    for line in lines:
        assert len(line) <= 998
        assert all(0x20 <= byte < 0x7F or byte == 0x09 for byte in line), line
        assert b"\r" not in line and b"\n" not in line
    for line in lines[1:]:
        assert line.startswith(b"\t")  # a continuation, never a header of its own
    parsed = email.message_from_bytes(header + b"\r\nbody\r\n", policy=email.policy.compat32)
    assert list(parsed.keys()) == ["Authentication-Results"]


async def test_client_text_cannot_inject_headers(
    zone: tuple[Zone, dns.resolver.Resolver],
) -> None:
    _server, resolver = zone
    results = await check(
        resolver,
        letter(author="=?utf-8?q?x=0D=0AX-Injected:_1?= <jan@example.org>"),
        helo='evil.example\r\nX-Injected: yes\x00\x1b[31m"\\',
        mail_from="",
    )
    header = authentication_results_header(results)
    assert_well_formed(header)
    assert b"\nX-Injected" not in header
    assert b'smtp.helo="evil.example??X-Injected: yes??[31m\\"\\\\"' in header

    results = await check(resolver, letter(), mail_from="a\r\nX-Injected: 1@example.org")
    header = authentication_results_header(results)
    assert_well_formed(header)
    assert b"smtp.mailfrom=example.org;" in header


async def test_header_is_folded_below_998_and_mostly_78_columns(
    zone: tuple[Zone, dns.resolver.Resolver], key: Key
) -> None:
    _server, resolver = zone
    long_domain = ".".join(["a" * 60] * 3) + ".example.org"
    message = letter(author=f"x@{long_domain}")
    for n in range(7):
        message = signed(message, key, domain=long_domain, selector=f"selector{n}" * 5)
    results = await check(resolver, message, helo="h" * 3000, mail_from="")
    header = authentication_results_header(results)
    assert_well_formed(header)
    lines = header[:-2].split(b"\r\n")
    assert len(lines) > 7
    for line in lines:
        # A line runs past 78 only when it holds a single word that cannot be split.
        assert len(line) <= 78 or b" " not in line.strip(), line
    unfolded = header[len(b"Authentication-Results: ") : -2].replace(b"\r\n\t", b" ")
    assert unfolded.decode("ascii") == results.header_value
    assert results.header_value.count("dkim=") == authres.MAX_DKIM_SIGNATURES


def test_header_layout() -> None:
    results = AuthResults(
        spf="pass",
        dkim="none",
        dmarc="none",
        header_value=f"{AUTHSERV}; spf=pass smtp.mailfrom=a@example.org; dkim=none; "
        "dmarc=none header.from=example.org",
    )
    assert authentication_results_header(results) == (
        b"Authentication-Results: mx.rada.example;\r\n"
        b"\tspf=pass smtp.mailfrom=a@example.org;\r\n"
        b"\tdkim=none;\r\n"
        b"\tdmarc=none header.from=example.org\r\n"
    )


# --- forged results in the incoming header (RFC 8601 section 5) --------------------------------

OURS = b"Authentication-Results: mx.rada.example; dkim=pass header.d=rada.example\r\n"
THEIRS = b"Authentication-Results: mx.gmina.example; spf=pass smtp.mailfrom=a@example.org\r\n"
HEAD = b"From: jan@example.org\r\nTo: rada@rada.example\r\nSubject: Dziura\r\n"
BODY = b"\r\nDzie\xc5\x84 dobry.\r\n"


@pytest.mark.parametrize(
    ("forged", "why"),
    [
        (OURS, "plain"),
        (b"authentication-results: MX.Rada.Example; dkim=pass\r\n", "name and id in other case"),
        (b"Authentication-Results : mx.rada.example; dkim=pass\r\n", "space before the colon"),
        (b"Authentication-Results:mx.rada.example;dkim=pass\r\n", "no spaces at all"),
        (
            b"Authentication-Results: mx.rada.example;\r\n\tdkim=pass header.d=rada.example;\r\n"
            b"  dmarc=pass header.from=rada.example\r\n",
            "folded",
        ),
        (b"Authentication-Results:\r\n mx.rada.example; dkim=pass\r\n", "folded before the id"),
        (b"Authentication-Results: (trust me) mx.rada.example 1; dkim=pass\r\n", "comment"),
        (b'Authentication-Results: "mx.rada.example"; dkim=pass\r\n', "quoted"),
        (b"Authentication-Results: mx.rada.example.; dkim=pass\r\n", "trailing dot"),
        (b"Authentication-Results: mx.rada.example; none\r\n", "no result"),
    ],
)
def test_results_claiming_our_authserv_id_are_removed(forged: bytes, why: str) -> None:
    message = forged + HEAD + forged + BODY
    assert authres.remove_forged_results(message, AUTHSERV) == HEAD + BODY, why


def test_results_of_other_authserv_ids_stay_byte_for_byte() -> None:
    lookalikes = (
        b"Authentication-Results: mx.rada.example.evil.example; dkim=pass\r\n"
        b"Authentication-Results: (mx.rada.example) gmina.example; dkim=pass\r\n"
        b"X-Authentication-Results: mx.rada.example; dkim=pass\r\n"
        b"Authentication-Results-Original: mx.rada.example; dkim=pass\r\n"
    )
    message = THEIRS + HEAD + lookalikes + BODY
    assert authres.remove_forged_results(message, AUTHSERV) is message
    mixed = THEIRS + OURS + HEAD + BODY
    assert authres.remove_forged_results(mixed, AUTHSERV) == THEIRS + HEAD + BODY


def test_the_body_is_never_touched() -> None:
    body = b"\r\n" + OURS + b"Authentication-Results: mx.rada.example;\r\n\tdkim=pass\r\n"
    assert authres.remove_forged_results(HEAD + body, AUTHSERV) == HEAD + body
    assert authres.remove_forged_results(OURS + HEAD + body, AUTHSERV) == HEAD + body
    # Bare LF line ends (normalised only on the way to Dovecot) end the header the same way.
    lf = OURS.replace(b"\r\n", b"\n") + b"Subject: x\n\n" + OURS.replace(b"\r\n", b"\n")
    assert authres.remove_forged_results(lf, AUTHSERV) == b"Subject: x\n\n" + OURS.replace(
        b"\r\n", b"\n"
    )


@pytest.mark.parametrize(
    "message",
    [b"", b"\r\n" + OURS, b"\n" + OURS, b"\r\n\r\n" + OURS, b"no header at all"],
    ids=["empty", "crlf-then-body", "lf-then-body", "two-blank-lines", "one-line"],
)
def test_a_message_without_a_header_block_is_returned_as_is(message: bytes) -> None:
    assert authres.remove_forged_results(message, AUTHSERV) is message


def test_a_message_that_is_all_header_loses_only_the_forged_field() -> None:
    assert authres.remove_forged_results(HEAD + OURS, AUTHSERV) == HEAD
    assert authres.remove_forged_results(HEAD + OURS.rstrip(b"\r\n"), AUTHSERV) == HEAD


def test_an_empty_authserv_id_setting_means_localhost_as_in_our_header() -> None:
    forged = b"Authentication-Results: LOCALHOST; dkim=pass\r\n"
    assert authres.remove_forged_results(forged + HEAD + BODY, "") == HEAD + BODY
    assert authres._authserv("") == "localhost"


def test_messages_without_results_are_not_copied() -> None:
    message = HEAD + BODY + b"x" * 1_000_000
    assert authres.remove_forged_results(message, AUTHSERV) is message
