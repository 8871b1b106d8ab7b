"""The mail programs' setup documents (pure): Thunderbird's autoconfig, Outlook's POX
autodiscover and its request reader, the Apple profile. Over HTTP: test_web_mailclients.py."""

from __future__ import annotations

import plistlib
import time
from xml.etree import ElementTree as ET

import pytest

from mailsvc.domain import clientsetup as cs
from mailsvc.domain.clientsetup import ClientSetup, Server

DOMAIN = "rada.miasto.example"
ADDRESS = f"jan.kowalski@{DOMAIN}"
SETUP = ClientSetup(
    domain=DOMAIN,
    name="Rada Miasta Przykładowo",
    imap=Server(f"imap.{DOMAIN}", 993, "tls"),
    smtp=Server(f"smtp.{DOMAIN}", 587, "starttls"),
    smtps=Server(f"smtp.{DOMAIN}", 465, "tls"),
)
REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}"
OUTLOOK_NS = "{" + cs.OUTLOOK_SCHEMA + "}"

# Thunderbird's documented clientConfig 1.1 (wiki.mozilla.org/Thunderbird:Autoconfiguration:
# ConfigFileFormat): which element may appear inside which.
THUNDERBIRD_CHILDREN = {
    "clientConfig": {"emailProvider"},
    "emailProvider": {
        "domain",
        "displayName",
        "displayShortName",
        "incomingServer",
        "outgoingServer",
        "documentation",
    },
    "incomingServer": {"hostname", "port", "socketType", "username", "authentication"},
    "outgoingServer": {"hostname", "port", "socketType", "username", "authentication"},
}
THUNDERBIRD_SOCKET_TYPES = {"plain", "SSL", "STARTTLS"}


def outlook_request(address: str, schema: str = cs.OUTLOOK_SCHEMA) -> bytes:
    """What Outlook posts (the request schema of [MS-OXDSCLI] 2.2.4.1)."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\r\n'
        f'<Autodiscover xmlns="{REQUEST_NS}">\r\n'
        "  <Request>\r\n"
        f"    <EMailAddress>{address}</EMailAddress>\r\n"
        f"    <AcceptableResponseSchema>{schema}</AcceptableResponseSchema>\r\n"
        "  </Request>\r\n"
        "</Autodiscover>\r\n"
    ).encode()


def parse(document: bytes) -> ET.Element:
    return ET.fromstring(document)  # noqa: S314 (our own output, not a request)


def check_thunderbird_structure(element: ET.Element) -> None:
    allowed = THUNDERBIRD_CHILDREN.get(element.tag, set())
    for child in element:
        assert child.tag in allowed, f"<{child.tag}> is not documented inside <{element.tag}>"
        check_thunderbird_structure(child)


# --- addresses ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ADDRESS, ADDRESS),
        ("  Jan.Kowalski@RADA.Miasto.Example ", ADDRESS),
        (f"jan.kowalski@{DOMAIN}.", ADDRESS),
        ("jan@example.org", None),
        (f"jan@sub.{DOMAIN}", None),
        (f"jan@evil{DOMAIN}", None),
        (f"a@b@{DOMAIN}", None),
        (f"<script>@{DOMAIN}", None),
        (f'"x y"@{DOMAIN}', None),
        (f"jan\r\nx@{DOMAIN}", None),
        ("", None),
        (None, None),
        ("x" * 65 + f"@{DOMAIN}", None),
    ],
)
def test_only_plain_addresses_in_the_domain_are_accepted(
    text: str | None, expected: str | None
) -> None:
    assert cs.address_in_domain(text, DOMAIN) == expected


def test_the_profile_link_carries_the_address() -> None:
    assert (
        cs.mobileconfig_url("https://rada.example/", ADDRESS)
        == f"https://rada.example/mobileconfig?email={ADDRESS}"
    )
    assert cs.mobileconfig_url("http://h", "a+b@x").endswith("?email=a%2Bb@x")


# --- Thunderbird --------------------------------------------------------------------------------


def test_thunderbird_file_names_imap_and_both_submission_ports() -> None:
    root = parse(cs.autoconfig_xml(SETUP))
    check_thunderbird_structure(root)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == DOMAIN
    assert provider.findtext("domain") == DOMAIN
    assert provider.findtext("displayName") == "Rada Miasta Przykładowo"
    servers = [
        (
            s.tag,
            s.get("type"),
            s.findtext("hostname"),
            s.findtext("port"),
            s.findtext("socketType"),
            s.findtext("username"),
            s.findtext("authentication"),
        )
        for s in provider
        if s.tag.endswith("Server")
    ]
    login = ("%EMAILADDRESS%", "password-cleartext")
    assert servers == [
        ("incomingServer", "imap", f"imap.{DOMAIN}", "993", "SSL", *login),
        ("outgoingServer", "smtp", f"smtp.{DOMAIN}", "587", "STARTTLS", *login),
        ("outgoingServer", "smtp", f"smtp.{DOMAIN}", "465", "SSL", *login),
    ]


def test_thunderbird_file_without_implicit_tls_and_with_a_plain_test_server() -> None:
    setup = ClientSetup(DOMAIN, "R", Server("127.0.0.1", 1143, "none"), SETUP.smtp)
    root = parse(cs.autoconfig_xml(setup))
    check_thunderbird_structure(root)
    assert [s.findtext("socketType") for s in root.iter() if s.tag.endswith("Server")] == [
        "plain",
        "STARTTLS",
    ]
    assert {s.text for s in root.iter("socketType")} <= THUNDERBIRD_SOCKET_TYPES


def test_names_with_markup_are_escaped_not_interpreted() -> None:
    name = 'Rada <b>Miasta</b> & "Gminy" ]]>'
    setup = ClientSetup(DOMAIN, name, SETUP.imap, SETUP.smtp)
    root = parse(cs.autoconfig_xml(setup))
    assert root.findtext("emailProvider/displayName") == name
    assert root.find(".//b") is None
    assert plistlib.loads(cs.apple_profile(setup, ADDRESS))["PayloadDisplayName"] == name


# --- Outlook ------------------------------------------------------------------------------------


def test_an_outlook_request_is_read() -> None:
    asked = cs.read_autodiscover_request(outlook_request("Jan.Kowalski@rada.miasto.example"))
    assert asked == cs.AutodiscoverRequest("Jan.Kowalski@rada.miasto.example", cs.OUTLOOK_SCHEMA)


BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">\n' for i in range(1, 10)).replace(
        "&lol0;", "&lol;"
    )
    + f']>\n<Autodiscover xmlns="{REQUEST_NS}"><Request>'
    "<EMailAddress>&lol9;</EMailAddress></Request></Autodiscover>"
).encode()
EXTERNAL_FILE = (
    '<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    f'<Autodiscover xmlns="{REQUEST_NS}"><Request>'
    "<EMailAddress>&xxe;</EMailAddress></Request></Autodiscover>"
).encode()
PARAMETER_ENTITY = (
    '<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>\n'
    f'<Autodiscover xmlns="{REQUEST_NS}"/>'
).encode()
EXTERNAL_DTD = (
    '<?xml version="1.0"?>\n<!DOCTYPE Autodiscover SYSTEM "http://127.0.0.1:9/x.dtd">\n'
    f'<Autodiscover xmlns="{REQUEST_NS}"/>'
).encode()


@pytest.mark.parametrize(
    "body",
    [BILLION_LAUGHS, EXTERNAL_FILE, PARAMETER_ENTITY, EXTERNAL_DTD],
    ids=["billion-laughs", "external-file", "parameter-entity", "external-dtd"],
)
def test_any_dtd_is_refused_before_an_entity_is_declared(body: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(cs.UnsafeRequest, match="DTD is not allowed"):
        cs.read_autodiscover_request(body)
    assert time.perf_counter() - started < 0.5  # nothing was expanded


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<Autodiscover>&undefined;</Autodiscover>", "not well-formed"),
        (b"not xml at all", "not well-formed"),
        (b"", "not well-formed"),
        (b"<Autodiscover><Request>", "not well-formed"),
        (b"<Autodiscover><Request/></Autodiscover>", "not an Outlook autodiscover request"),
        (f'<Other xmlns="{REQUEST_NS}"/>'.encode(), "not an Outlook autodiscover request"),
    ],
)
def test_other_malformed_requests_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(cs.UnsafeRequest, match=reason):
        cs.read_autodiscover_request(body)


def test_request_fields_are_bounded() -> None:
    asked = cs.read_autodiscover_request(outlook_request("a" * 100_000 + "@x"))
    assert len(asked.address) == 320


def test_outlook_response_names_imap_and_smtp_for_the_address() -> None:
    root = parse(cs.autodiscover_xml(SETUP, ADDRESS))
    assert root.tag == f"{RESPONSE_NS}Autodiscover"
    account = root.find(f"{OUTLOOK_NS}Response/{OUTLOOK_NS}Account")
    assert account is not None
    assert account.findtext(f"{OUTLOOK_NS}AccountType") == "email"
    assert account.findtext(f"{OUTLOOK_NS}Action") == "settings"
    protocols = {
        p.findtext(f"{OUTLOOK_NS}Type"): {c.tag.removeprefix(OUTLOOK_NS): c.text for c in p}
        for p in account.findall(f"{OUTLOOK_NS}Protocol")
    }
    assert set(protocols) == {"IMAP", "SMTP"}
    imap, smtp = protocols["IMAP"], protocols["SMTP"]
    assert (imap["Server"], imap["Port"], imap["SSL"], imap["Encryption"]) == (
        f"imap.{DOMAIN}",
        "993",
        "on",
        "SSL",
    )
    assert (smtp["Server"], smtp["Port"], smtp["SSL"], smtp["Encryption"]) == (
        f"smtp.{DOMAIN}",
        "587",
        "on",
        "TLS",
    )
    for protocol in (imap, smtp):
        assert protocol["LoginName"] == ADDRESS
        assert protocol["AuthRequired"] == "on" and protocol["SPA"] == "off"


def test_outlook_error_carries_no_settings() -> None:
    document = cs.autodiscover_error(cs.NOT_OURS)
    root = parse(document)
    assert root.findtext(f"{RESPONSE_NS}Response/{RESPONSE_NS}Error/{RESPONSE_NS}ErrorCode") == (
        "500"
    )
    assert b"Protocol" not in document and b"imap." not in document


# --- Apple --------------------------------------------------------------------------------------


def test_apple_profile_carries_the_servers_and_no_password() -> None:
    profile = plistlib.loads(cs.apple_profile(SETUP, ADDRESS))
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    (account,) = profile["PayloadContent"]
    assert account["PayloadType"] == "com.apple.mail.managed"
    assert account["EmailAccountType"] == "EmailTypeIMAP"
    assert account["EmailAddress"] == ADDRESS
    assert (
        account["IncomingMailServerHostName"],
        account["IncomingMailServerPortNumber"],
        account["IncomingMailServerUseSSL"],
        account["IncomingMailServerUsername"],
    ) == (f"imap.{DOMAIN}", 993, True, ADDRESS)
    assert (
        account["OutgoingMailServerHostName"],
        account["OutgoingMailServerPortNumber"],
        account["OutgoingMailServerUseSSL"],
        account["OutgoingMailServerUsername"],
    ) == (f"smtp.{DOMAIN}", 587, True, ADDRESS)
    assert account["OutgoingPasswordSameAsIncomingPassword"] is True
    assert {"IncomingPassword", "OutgoingPassword"}.isdisjoint(account)
    assert profile["PayloadIdentifier"].startswith("example.miasto.rada.mail.")


def test_apple_profile_identifiers_are_stable_per_address() -> None:
    first = plistlib.loads(cs.apple_profile(SETUP, ADDRESS))
    again = plistlib.loads(cs.apple_profile(SETUP, ADDRESS))
    other = plistlib.loads(cs.apple_profile(SETUP, f"anna.nowak@{DOMAIN}"))
    assert first["PayloadUUID"] == again["PayloadUUID"] != other["PayloadUUID"]
    assert first["PayloadIdentifier"] == again["PayloadIdentifier"]
    assert first["PayloadIdentifier"] != other["PayloadIdentifier"]


def test_apple_profile_without_an_address_leaves_it_to_the_device() -> None:
    (account,) = plistlib.loads(cs.apple_profile(SETUP, None))["PayloadContent"]
    assert "EmailAddress" not in account and "IncomingMailServerUsername" not in account
    assert account["IncomingMailServerHostName"] == f"imap.{DOMAIN}"
    assert cs.profile_filename(SETUP) == f"{DOMAIN}.mobileconfig"
