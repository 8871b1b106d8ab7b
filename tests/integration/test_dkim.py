"""DKIM on the real service: the keys made by `mailsvc dkim keygen`, the records printed by
`mailsvc dns --json` published in a DNS server on loopback, and every kind of outgoing mail
(acknowledgement, DSN, a councillor's submitted message, a distribution copy to an outside
address) checked by dkimpy against that server, RSA and Ed25519 alike, as a receiver would."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import dns.resolver
import pytest

from mailsvc.app import Service, start_service
from mailsvc.config import DkimSelector, Settings
from mailsvc.errors import ConfigError
from mailsvc.relay.delivery import capture
from provisioning.directory import Directory
from tests.unit.dkim_verify import Checked, verify_all
from tests.unit.test_authres import resolver_at

from .conftest import make_message, smtp_send, wait_for_inbox
from .dns_zone import ResidentDns, resident_dns
from .smtp_sink import Sink, running_sink
from .test_cli import run_cli
from .test_distribution_flow import session_with_pdf
from .test_outbound import as_authenticated
from .test_submission import own_message, submit

__all__ = ["resident_dns"]  # a fixture, used by name

RESIDENT = "jan@example.org"
OUTSIDE = "anna@gmina.example"
MAYOR = "burmistrz@urzad.example"


@dataclass(frozen=True)
class Published:
    selectors: tuple[DkimSelector, ...]
    resolver: dns.resolver.Resolver
    records: list[dict[str, Any]]


@pytest.fixture(scope="module")
def printed(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> tuple[tuple[DkimSelector, ...], list[dict[str, Any]]]:
    """Two keys made by the command and the records `mailsvc dns --json` prints (once for the
    module: making an RSA key takes a while)."""
    keys = tmp_path_factory.mktemp("dkim")
    selectors = (
        DkimSelector("rsa1", "rsa-sha256", str(keys / "rsa1.pem")),
        DkimSelector("ed1", "ed25519-sha256", str(keys / "ed1.pem")),
    )
    env = {
        "MAILSVC_DKIM__SELECTORS": ",".join(
            f"{s.name}:{s.algorithm}:{s.key_file}" for s in selectors
        ),
        "MAILSVC_LANGUAGE": "en",
    }
    domain = stack_settings.domain
    for selector in selectors:
        made = run_cli(stack_settings, "dkim", "keygen", "--selector", selector.name, **env)
        assert made.returncode == 0, made.stderr
        assert f"{selector.name}._domainkey.{domain}. 3600 IN TXT" in made.stdout
    shown = run_cli(stack_settings, "dns", "--json", **env)
    assert shown.returncode == 0, shown.stderr
    return selectors, json.loads(shown.stdout)["records"]


@pytest.fixture
def published(
    printed: tuple[tuple[DkimSelector, ...], list[dict[str, Any]]], resident_dns: ResidentDns
) -> Published:
    """Every printed record served by the loopback DNS server."""
    selectors, records = printed
    for record in records:
        name = record["name"].rstrip(".")
        if record["type"] == "TXT":
            resident_dns.zone.txt(name, record["value"])
        else:
            resident_dns.zone.records.setdefault((name, record["type"]), []).append(record["value"])
    return Published(selectors, resolver_at(resident_dns.port), records)


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    async with running_sink() as s:
        yield s


@pytest.fixture
def dkim_settings(
    settings: Settings, published: Published, resident_dns: ResidentDns, sink: Sink
) -> Settings:
    return settings.with_changes(
        office_address=f"biuro.rady@{settings.domain}",
        dkim={"selectors": published.selectors},
        smarthost={"port": sink.port},
        smtp=resident_dns.smtp_settings(),
        distribution={"copies": MAYOR},
    )


@pytest.fixture
async def signing(dkim_settings: Settings, directory: Directory) -> AsyncIterator[Service]:
    svc = await start_service(dkim_settings, scheduler=False)
    yield svc
    await svc.stop()


async def checked(message: bytes, published: Published) -> list[tuple[str, str, bool]]:
    results: list[Checked] = await asyncio.to_thread(verify_all, message, published.resolver)
    return [(r.selector, r.domain, r.ok) for r in results]


def both_pass(settings: Settings) -> list[tuple[str, str, bool]]:
    return [("rsa1", settings.domain, True), ("ed1", settings.domain, True)]


def test_the_printed_records_say_reject_once_the_keys_exist(
    published: Published, settings: Settings
) -> None:
    by_name = {(r["name"], r["type"]): r["value"] for r in published.records}
    assert by_name[(f"_dmarc.{settings.domain}.", "TXT")].startswith("v=DMARC1; p=reject;")
    assert by_name[(f"{settings.domain}.", "MX")] == f"10 {settings.smtp_hostname}."
    assert by_name[(f"ed1._domainkey.{settings.domain}.", "TXT")].startswith("v=DKIM1; k=ed25519")


async def test_an_acknowledgement_in_the_local_capture_is_signed_by_both_keys(
    dkim_settings: Settings,
    directory: Directory,
    published: Published,
    add_councillor: Callable[..., Any],
) -> None:
    s = dkim_settings.with_changes(relay={"acknowledge": True}, smarthost={"port": 0})
    shutil.rmtree(capture.capture_dir(s.var_dir), ignore_errors=True)
    svc = await start_service(s, scheduler=False)
    try:
        account = await add_councillor("Łukasz", "Żółć")
        letter = make_message(account.address, "Dziura w jezdni")
        assert await smtp_send(svc.smtp_port, [account.address], letter) == {}
        await wait_for_inbox(s, account.address, account.password)
        for _ in range(200):
            found = capture.list_captured(capture.capture_dir(s.var_dir))
            if found:
                break
            await asyncio.sleep(0.05)
    finally:
        await svc.stop()
    (ack,) = found
    assert ack.recipients == (RESIDENT,) and b"Auto-Submitted: auto-replied" in ack.message
    assert await checked(ack.message, published) == both_pass(s)


async def test_a_dsn_to_a_resident_is_signed(
    signing: Service, sink: Sink, dkim_settings: Settings, published: Published
) -> None:
    nobody = f"nikt.taki@{dkim_settings.domain}"  # Dovecot refuses it: a bounce to the resident
    letter = as_authenticated(dkim_settings, RESIDENT, make_message(nobody, "Budżet").as_bytes())
    await signing.queue.enqueue(RESIDENT, [nobody], letter, client="192.0.2.7")
    signing.workers.wake()
    (dsn,) = await sink.handler.wait_for(1)
    assert dsn.mail_from == "" and dsn.rcpt_tos == [RESIDENT]
    assert b"multipart/report" in dsn.data
    assert await checked(dsn.data, published) == both_pass(dkim_settings)


async def test_a_councillors_submitted_message_is_signed_and_a_changed_one_fails(
    signing: Service,
    sink: Sink,
    dkim_settings: Settings,
    published: Published,
    add_councillor: Callable[..., Any],
) -> None:
    author = await add_councillor("Maria", "Wiśniewska")
    msg = own_message(author.address, OUTSIDE, "Odpowiedź w sprawie drogi")
    msg["Message-ID"] = make_msgid(domain="laptop.radny")
    await submit(
        signing.submission_port, author.address, author.password, author.address, [OUTSIDE], msg
    )
    (sent,) = await sink.handler.wait_for(1)
    assert sent.rcpt_tos == [OUTSIDE]
    assert await checked(sent.data, published) == both_pass(dkim_settings)
    tampered = sent.data.replace(b"\r\n\r\n", b"\r\n\r\nX", 1)  # a letter more in the body
    assert tampered != sent.data
    assert await checked(tampered, published) == [
        ("rsa1", dkim_settings.domain, False),
        ("ed1", dkim_settings.domain, False),
    ]


async def test_a_distribution_copy_to_an_outside_address_is_signed_over_its_attachments(
    signing: Service,
    sink: Sink,
    dkim_settings: Settings,
    published: Published,
    add_councillor: Callable[..., Any],
    tmp_path: Path,
) -> None:
    await add_councillor("Anna", "Nowak")
    svc = signing.parts.distributions()
    session, _ = await session_with_pdf(signing.parts, tmp_path)
    dist = await svc.schedule(session.number, actor="pytest")
    assert (await svc.send(dist.id)).queued == 2
    (copy,) = await sink.handler.wait_for(1, within=30)
    assert copy.rcpt_tos == [MAYOR] and b"application/pdf" in copy.data
    assert await checked(copy.data, published) == both_pass(dkim_settings)
    # One character of the PDF's base64 changed: the body hash no longer matches.
    at = copy.data.index(b"JVBER")  # "%PDF" in base64
    tampered = copy.data[:at] + b"X" + copy.data[at + 1 :]
    results = await asyncio.to_thread(verify_all, tampered, published.resolver)
    assert [(r.ok, "body hash" in r.why) for r in results] == [(False, True), (False, True)]


async def test_mail_whose_author_is_not_ours_leaves_unsigned(
    signing: Service, sink: Sink, dkim_settings: Settings
) -> None:
    forwarded = make_message(OUTSIDE, "Przekazane dalej").as_bytes()  # From: jan@example.org
    await signing.queue.enqueue(RESIDENT, [OUTSIDE], forwarded, origin="submission")
    signing.workers.wake()
    (sent,) = await sink.handler.wait_for(1)
    assert sent.rcpt_tos == [OUTSIDE]
    assert b"dkim-signature" not in sent.data.lower()


async def test_a_missing_key_stops_the_start_with_the_command_that_makes_it(
    dkim_settings: Settings, directory: Directory, tmp_path: Path
) -> None:
    missing = DkimSelector("rsa9", "rsa-sha256", str(tmp_path / "nowhere.pem"))
    s = dkim_settings.with_changes(dkim={"selectors": (missing,)})
    with pytest.raises(
        ConfigError, match=r"rsa9: .*not found.*mailsvc dkim keygen --selector rsa9"
    ):
        await start_service(s, scheduler=False)
