"""Mail programs setting themselves up, against the whole running service (slapd, Dovecot, the
web app on its port): Thunderbird's autoconfig, Outlook's POX autodiscover, the Apple profile,
and the credentials letter that points to them."""

from __future__ import annotations

import asyncio
import plistlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

import httpx
import pytest

from mailsvc.app import Parts, Service
from mailsvc.config import Settings
from mailsvc.directory.councillors import CreatedAccount
from provisioning.directory import Directory

from .test_web_clerk import signed_in

SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}"
OUTLOOK = "{" + SCHEMA + "}"
SERVER_FIELDS = ("hostname", "port", "socketType", "username", "authentication")
# What Outlook 2016+ sends with its POX request.
OUTLOOK_HEADERS = {
    "content-type": "text/xml",
    "user-agent": "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Production-shaped client settings: IMAPS 993, submission 587 STARTTLS and 465."""
    host = f"poczta.{settings.domain}"
    return settings.with_changes(
        clients={
            "imap_host": host,
            "imap_port": 993,
            "imap_security": "tls",
            "smtp_host": host,
            "smtp_port": 587,
            "smtp_security": "starttls",
            "smtps_port": 465,
        }
    )


@pytest.fixture
async def web(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{service.web_port}", timeout=60.0
    ) as client:
        yield client


def parse(document: bytes) -> ET.Element:
    return ET.fromstring(document)  # noqa: S314 (the service's answer, not a request)


def outlook_request(address: str, schema: str = SCHEMA) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\r\n'
        f'<Autodiscover xmlns="{REQUEST_NS}">\r\n'
        f"  <Request>\r\n    <EMailAddress>{address}</EMailAddress>\r\n"
        f"    <AcceptableResponseSchema>{schema}</AcceptableResponseSchema>\r\n"
        "  </Request>\r\n</Autodiscover>\r\n"
    )


def protocols(document: bytes) -> dict[str, dict[str, str | None]]:
    account = parse(document).find(f"{OUTLOOK}Response/{OUTLOOK}Account")
    assert account is not None, document.decode()
    return {
        p.findtext(f"{OUTLOOK}Type", ""): {c.tag.removeprefix(OUTLOOK): c.text for c in p}
        for p in account.findall(f"{OUTLOOK}Protocol")
    }


def error_code(document: bytes) -> str | None:
    return parse(document).findtext(
        f"{RESPONSE_NS}Response/{RESPONSE_NS}Error/{RESPONSE_NS}ErrorCode"
    )


@pytest.mark.no_database  # made from settings alone
async def test_thunderbird_finds_imap_and_submission_on_both_paths(
    web: httpx.AsyncClient, settings: Settings
) -> None:
    host = f"poczta.{settings.domain}"
    for path in ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"):
        for query in ({}, {"emailaddress": f"jan.kowalski@{settings.domain}"}):
            answer = await web.get(path, params=query)
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"] == "application/xml"
            root = parse(answer.content)
            assert root.tag == "clientConfig" and root.get("version") == "1.1"
            provider = root.find("emailProvider")
            assert provider is not None and provider.findtext("domain") == settings.domain
            found = [
                (s.tag, s.get("type"), *(s.findtext(field) for field in SERVER_FIELDS))
                for s in provider
                if s.tag in ("incomingServer", "outgoingServer")
            ]
            login = ("%EMAILADDRESS%", "password-cleartext")
            assert found == [
                ("incomingServer", "imap", host, "993", "SSL", *login),
                ("outgoingServer", "smtp", host, "587", "STARTTLS", *login),
                ("outgoingServer", "smtp", host, "465", "SSL", *login),
            ]


@pytest.mark.no_database  # made from settings alone
async def test_thunderbird_gets_nothing_for_another_domain_and_garbage_is_never_echoed(
    web: httpx.AsyncClient,
) -> None:
    path = "/.well-known/autoconfig/mail/config-v1.1.xml"
    foreign = await web.get(path, params={"emailaddress": "jan@example.org"})
    assert foreign.status_code == 404 and "poczta." not in foreign.text
    garbage = '"><script>alert(1)</script><x a="'
    answer = await web.get(path, params={"emailaddress": garbage})
    assert answer.status_code == 200
    assert "script" not in answer.text and "%EMAILADDRESS%" in answer.text
    parse(answer.content)


@pytest.mark.no_database  # made from settings alone
async def test_outlook_gets_imap_and_smtp_for_a_council_address(
    web: httpx.AsyncClient, settings: Settings
) -> None:
    host = f"poczta.{settings.domain}"
    address = f"jan.kowalski@{settings.domain}"
    for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
        answer = await web.post(
            path, content=outlook_request(address.upper()), headers=OUTLOOK_HEADERS
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/xml"
        found = protocols(answer.content)
        assert set(found) == {"IMAP", "SMTP"}
        imap, smtp = found["IMAP"], found["SMTP"]
        assert (imap["Server"], imap["Port"], imap["SSL"]) == (host, "993", "on")
        assert (smtp["Server"], smtp["Port"], smtp["Encryption"]) == (host, "587", "TLS")
        assert imap["LoginName"] == smtp["LoginName"] == address
        assert smtp["AuthRequired"] == "on"
    probe = await web.get("/autodiscover/autodiscover.xml")
    assert probe.status_code == 200 and error_code(probe.content) == "600"


@pytest.mark.no_database  # made from settings alone
async def test_outlook_gets_no_settings_for_another_domain_or_schema(
    web: httpx.AsyncClient, settings: Settings
) -> None:
    for address in ("jan@example.org", f"jan@sub.{settings.domain}", "<b>not an address</b>"):
        answer = await web.post(
            "/autodiscover/autodiscover.xml",
            content=outlook_request(address.replace("<", "&lt;").replace(">", "&gt;")),
            headers=OUTLOOK_HEADERS,
        )
        assert answer.status_code == 200 and error_code(answer.content) == "500"
        assert b"Protocol" not in answer.content and b"poczta." not in answer.content
    activesync = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
    answer = await web.post(
        "/autodiscover/autodiscover.xml",
        content=outlook_request(f"jan@{settings.domain}", activesync),
        headers=OUTLOOK_HEADERS,
    )
    assert error_code(answer.content) == "601" and b"poczta." not in answer.content


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP port that records every connection: an external entity must never reach it."""
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(1024))
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.no_database  # made from settings alone
async def test_xml_bombs_and_external_entities_get_400_without_expansion(
    web: httpx.AsyncClient, settings: Settings, listener: tuple[int, list[bytes]]
) -> None:
    port, seen = listener
    entities = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    bomb = (
        f'<!DOCTYPE a [<!ENTITY l0 "lol">{entities}]>' + outlook_request("&l9;").split("?>", 1)[1]
    )
    external = (
        f'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">'
        f'<!ENTITY y SYSTEM "http://127.0.0.1:{port}/entity">]>'
        + outlook_request(f"&x;&y;@{settings.domain}").split("?>", 1)[1]
    )
    dtd = (
        f'<!DOCTYPE Autodiscover SYSTEM "http://127.0.0.1:{port}/dtd">'
        + outlook_request(f"jan@{settings.domain}").split("?>", 1)[1]
    )
    for body in (bomb, external, dtd):
        answer = await web.post(
            "/autodiscover/autodiscover.xml", content=body, headers=OUTLOOK_HEADERS
        )
        assert answer.status_code == 400, answer.text
        assert len(answer.content) < 100
        assert "lol" not in answer.text and "root:" not in answer.text
    await asyncio.sleep(0.2)
    assert seen == []  # nothing was fetched
    large = "<!-- " + "x" * 20_000 + " -->" + outlook_request(f"jan@{settings.domain}")
    too_large = await web.post("/autodiscover/autodiscover.xml", content=large)
    assert too_large.status_code == 413
    # The service is still there and still answers properly.
    fine = await web.post(
        "/autodiscover/autodiscover.xml",
        content=outlook_request(f"jan@{settings.domain}"),
        headers=OUTLOOK_HEADERS,
    )
    assert set(protocols(fine.content)) == {"IMAP", "SMTP"}


@pytest.mark.no_database  # made from settings alone
async def test_apple_profile_downloads_with_the_servers_and_no_password(
    web: httpx.AsyncClient, settings: Settings
) -> None:
    host = f"poczta.{settings.domain}"
    address = f"jan.kowalski@{settings.domain}"
    answer = await web.get("/mobileconfig", params={"email": address})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-apple-aspen-config"
    disposition = answer.headers["content-disposition"]
    assert disposition.startswith(f'attachment; filename="{settings.domain}.mobileconfig"')
    profile = plistlib.loads(answer.content)
    assert profile["PayloadType"] == "Configuration"
    (account,) = profile["PayloadContent"]
    assert account["PayloadType"] == "com.apple.mail.managed"
    assert account["EmailAddress"] == address
    assert (account["IncomingMailServerHostName"], account["IncomingMailServerPortNumber"]) == (
        host,
        993,
    )
    assert (account["OutgoingMailServerHostName"], account["OutgoingMailServerPortNumber"]) == (
        host,
        587,
    )
    assert account["IncomingMailServerUseSSL"] is account["OutgoingMailServerUseSSL"] is True
    assert {"IncomingPassword", "OutgoingPassword"}.isdisjoint(account)

    generic = plistlib.loads((await web.get("/mobileconfig")).content)
    assert "EmailAddress" not in generic["PayloadContent"][0]
    assert (await web.get("/mobileconfig", params={"email": "jan@example.org"})).status_code == 404
    bad = await web.get("/mobileconfig", params={"email": "<x>"})
    assert bad.status_code == 400 and "<x>" not in bad.text


@pytest.fixture
async def clerk(
    add_councillor: Callable[[str, str], Any], directory: Directory, parts: Parts
) -> CreatedAccount:
    account: CreatedAccount = await add_councillor("Urszula", "Urzędnik")
    await directory.sync_group(parts.settings.web.clerks_group, [account.dn], "Urzędnicy")
    return account


async def test_the_printed_letter_points_to_the_setup_and_its_profile_link_works(
    web: httpx.AsyncClient,
    clerk: CreatedAccount,
    add_councillor: Callable[[str, str], Any],
    settings: Settings,
) -> None:
    councillor: CreatedAccount = await add_councillor("Łukasz", "Żółć")
    csrf = await signed_in(web, clerk)
    reset = await web.post(
        f"/councillors/{councillor.address}/reset-password", data={"csrf_token": csrf}
    )
    letter_link = re.search(r'href="(/councillors/letters/[^"]+)"', reset.text)
    assert letter_link is not None
    letter = (await web.get(letter_link.group(1))).text
    assert "Thunderbird, Outlook" in letter and "iPhone, iPad" in letter
    assert "/.well-known/autoconfig/mail/config-v1.1.xml" in letter
    assert "587 lub 465" in letter and "993" in letter
    link = re.search(r"(https?://\S+/mobileconfig\?email=[^<\s]+)", letter)
    assert link is not None and link.group(1).endswith(f"?email={councillor.address}")
    url = urlsplit(link.group(1))
    profile = plistlib.loads((await web.get(f"{url.path}?{url.query}")).content)
    (account,) = profile["PayloadContent"]
    assert account["EmailAddress"] == councillor.address
    assert account["IncomingMailServerHostName"] == f"poczta.{settings.domain}"
