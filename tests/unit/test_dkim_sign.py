"""DKIM signing: RSA and Ed25519 side by side, checked by dkimpy against keys published in a real
DNS server on loopback; which mail is signed; bodies with parts on disk; key files."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import dns.resolver
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mailsvc.config import DkimSelector, Settings
from mailsvc.errors import ConfigError, MailsvcError
from mailsvc.relay.delivery import body as body_module
from mailsvc.relay.delivery import capture
from mailsvc.relay.delivery.body import PartedBody, encode_part
from mailsvc.relay.delivery.smarthost import SmarthostClient
from mailsvc.relay.dkim import DkimSigner
from mailsvc.relay.dkim.keys import ED25519, RSA, load_keys, read_key, write_new_key
from mailsvc.storage.spool import SUFFIX, spool_dir

from .dkim_verify import Checked, verify_all
from .test_authres import Zone, zone

__all__ = ["zone"]  # a fixture, used by name

DOMAIN = "rada.example"
LETTER = (
    b"From: Rada Miasta <biuro@rada.example>\r\n"
    b"To: Anna <anna@gmina.example>\r\n"
    b"Subject: Sesja XV/2026:\r\n  porz\xc4\x85dek obrad\r\n"
    b"Date: Mon, 02 Mar 2026 10:00:00 +0100\r\n"
    b"Message-ID: <xv-2026@rada.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Received: by mail.rada.example; Mon, 02 Mar 2026 10:00:01 +0100\r\n"
    b"\r\n"
    b"Dzie\xc5\x84 dobry,  \r\n\r\n.kropka na pocz\xc4\x85tku\r\n\tz tabulatorem\r\n\r\n\r\n"
)


@pytest.fixture
def dkim_settings(tmp_path: Path) -> Settings:
    selectors = (
        DkimSelector("rsa1", RSA, str(tmp_path / "keys" / "rsa1.pem")),
        DkimSelector("ed1", ED25519, str(tmp_path / "keys" / "ed1.pem")),
    )
    settings = Settings(domain=DOMAIN, var_dir=tmp_path / "var")
    settings = settings.with_changes(dkim={"selectors": selectors})
    for selector in selectors:
        write_new_key(settings.dkim_key_file(selector), selector.algorithm)
    return settings


@pytest.fixture
def signer(dkim_settings: Settings) -> DkimSigner:
    made = DkimSigner.from_settings(dkim_settings)
    assert made is not None
    return made


@pytest.fixture
async def published(
    zone: tuple[Zone, dns.resolver.Resolver], dkim_settings: Settings
) -> AsyncIterator[dns.resolver.Resolver]:
    """The zone with both selectors' public keys (as `mailsvc dns` makes them)."""
    server, resolver = zone
    for key in await asyncio.to_thread(load_keys, dkim_settings):
        server.txt(f"{key.selector}._domainkey.{DOMAIN}", key.txt())
    yield resolver


async def check(message: bytes, resolver: dns.resolver.Resolver) -> list[Checked]:
    return await asyncio.to_thread(verify_all, message, resolver)


async def test_both_signatures_verify_with_dkimpy(
    signer: DkimSigner, published: dns.resolver.Resolver
) -> None:
    fields = signer.sign(LETTER)
    assert fields.count(b"DKIM-Signature:") == 2
    results = await check(fields + LETTER, published)
    assert [(r.selector, r.algorithm, r.domain, r.ok) for r in results] == [
        ("rsa1", "rsa-sha256", DOMAIN, True),
        ("ed1", "ed25519-sha256", DOMAIN, True),
    ]
    assert b"c=relaxed/relaxed" in fields
    assert b"h=from:from:to:subject:date:message-id:mime-version:content-type;" in fields
    assert b"received" not in fields.lower()


async def test_a_changed_body_or_subject_fails_and_so_does_a_second_from(
    signer: DkimSigner, published: dns.resolver.Resolver
) -> None:
    signed = signer.sign(LETTER) + LETTER
    for tampered in (
        signed.replace(b"kropka", b"Kropka"),
        signed.replace(b"Sesja XV", b"Sesja XX"),
        # Above the original, where a verifier picking fields bottom-up looks only because
        # h= names From twice (dkimpy also adds one more From itself).
        b"From: oszust@rada.example\r\n" + signed,
    ):
        assert [r.ok for r in await check(tampered, published)] == [False, False]
    body_changed = await check(signed.replace(b"kropka", b"Kropka"), published)
    assert all("body hash" in r.why for r in body_changed)


async def test_what_relays_may_change_keeps_the_signatures_valid(
    signer: DkimSigner, published: dns.resolver.Resolver
) -> None:
    signed = signer.sign(LETTER) + LETTER
    refolded = (
        signed.replace(b"Subject: Sesja XV/2026:\r\n  porz", b"Subject:  Sesja XV/2026: porz")
        .replace(b"dobry,  \r\n", b"dobry,\r\n")
        .replace(b"\r\n\r\n\r\n", b"\r\n")  # empty lines at the end
    )
    assert refolded != signed
    assert [r.ok for r in await check(refolded, published)] == [True, True]


@pytest.mark.parametrize(
    ("author", "signed"),
    [
        ("biuro@rada.example", True),
        ("Rada <MAILER-DAEMON@mail.Rada.Example>", True),  # a subdomain, any case
        ("jan@example.org", False),  # a forwarded message: not ours to vouch for
        ("biuro@rada.example, jan@example.org", False),
        ("biuro@notrada.example", False),
        ("", False),
    ],
)
def test_only_mail_from_our_domain_is_signed(signer: DkimSigner, author: str, signed: bool) -> None:
    message = LETTER.replace(b"Rada Miasta <biuro@rada.example>", author.encode())
    assert bool(signer.sign(message)) is signed


def test_a_message_with_two_from_fields_is_not_signed(signer: DkimSigner) -> None:
    assert signer.sign(b"From: a@rada.example\r\n" + LETTER) == b""


def test_no_signer_without_selectors_or_when_disabled(dkim_settings: Settings) -> None:
    assert DkimSigner.from_settings(dkim_settings.with_changes(dkim={"selectors": ()})) is None
    assert DkimSigner.from_settings(dkim_settings.with_changes(dkim={"enabled": False})) is None


async def test_a_distribution_copy_with_parts_on_disk_is_hashed_from_its_files(
    signer: DkimSigner,
    published: dns.resolver.Resolver,
    dkim_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(body_module, "CHUNK", 4096)  # many chunks from a small file
    document = tmp_path / "projekt.pdf"
    document.write_bytes(os.urandom(100_000))
    part = encode_part(
        document,
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n",
        dkim_settings.var_dir,
    )
    head = (
        LETTER.replace(
            b"Content-Type: text/plain; charset=utf-8",
            b'Content-Type: multipart/mixed; boundary="b1"',
        ).split(b"\r\n\r\n")[0]
        + b"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nTekst.\r\n--b1\r\n"
    )
    parted = PartedBody(head, "b1", (body_module.parts_dir(dkim_settings.var_dir) / part,))
    fields = await asyncio.to_thread(signer.sign, parted.text_chunks())
    message = await parted.to_bytes(prefix=fields)
    assert message.startswith(fields + head)
    assert [r.ok for r in await check(message, published)] == [True, True]


async def test_a_spooled_body_is_unstuffed_line_by_line_across_chunks(
    signer: DkimSigner,
    published: dns.resolver.Resolver,
    dkim_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(body_module, "CHUNK", 7)  # cuts fall inside "\r\n..." everywhere
    head, text = LETTER.split(b"\r\n\r\n", 1)
    text = b"".join(f"..{n} a line that starts with a dot\r\n".encode() for n in range(50))
    directory = spool_dir(dkim_settings.var_dir)
    directory.mkdir(parents=True)
    # The wire form: every line starting with a dot gets one more, the first line too.
    (directory / f"s{SUFFIX}").write_bytes(b"." + text.replace(b"\r\n.", b"\r\n.."))
    parted = PartedBody.from_stored(
        head + b"\r\n\r\n", f'{{"spool": "s{SUFFIX}"}}', dkim_settings.var_dir
    )
    whole = await parted.to_bytes()
    assert whole == head + b"\r\n\r\n" + text
    fields = await asyncio.to_thread(signer.sign, parted.text_chunks())
    assert fields == signer.sign(whole, now=int(fields.split(b"t=")[1].split(b";")[0]))
    assert [r.ok for r in await check(fields + whole, published)] == [True, True]


async def test_the_smarthost_client_sends_the_signed_message(
    signer: DkimSigner, published: dns.resolver.Resolver, tmp_path: Path
) -> None:
    sink = capture.CaptureSink(tmp_path / "capture", "smarthost.test")
    client = SmarthostClient(*await sink.start(), helo="mail.rada.example", signer=signer)
    try:
        replies = await client.deliver("bounces@rada.example", ["anna@gmina.example"], LETTER)
    finally:
        await client.close()
        await sink.stop()
    assert replies["anna@gmina.example"].code == 250
    (sent,) = capture.list_captured(tmp_path / "capture")
    assert sent.message.endswith(LETTER)
    assert [r.ok for r in await check(sent.message, published)] == [True, True]


def test_key_files_are_0600_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "dkim-a.pem"
    write_new_key(path, ED25519)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    before = path.read_bytes()
    with pytest.raises(MailsvcError, match="exists already"):
        write_new_key(path, ED25519)
    assert path.read_bytes() == before
    rsa_path = tmp_path / "rsa.pem"
    key = write_new_key(rsa_path, RSA)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048


def test_a_key_of_another_algorithm_or_a_missing_one_is_a_config_error(
    dkim_settings: Settings,
) -> None:
    rsa_file = dkim_settings.dkim_key_file(dkim_settings.dkim.selectors[0])
    with pytest.raises(ConfigError, match="not a key for ed25519-sha256"):
        read_key(rsa_file, ED25519)
    rsa_file.unlink()
    with pytest.raises(ConfigError, match=r"rsa1: .*not found.*dkim keygen --selector rsa1"):
        load_keys(dkim_settings)


def test_the_default_key_file_is_under_var_dir_secrets(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    assert settings.dkim_key_file(DkimSelector("rsa202701")) == (
        tmp_path / "secrets" / "dkim-rsa202701.pem"
    )
