"""What a mail program needs to set itself up, in the three formats programs ask for.

* Thunderbird (and many others) fetch an *autoconfig* file, ``config-v1.1.xml``;
* Outlook posts a *POX autodiscover* request (``autodiscover.xml``) naming the address;
* iPhone, iPad and macOS install an Apple *configuration profile* (``.mobileconfig``).

Every document is built with ``xml.etree`` or ``plistlib``, never by pasting strings, and the
only value taken from a request, the address, is echoed only after ``address_in_domain`` has
accepted it. No password ever appears in any of them.

Pure: no I/O, no clock. ``ClientSetup`` comes from the settings (``web.mailclients``).
"""

from __future__ import annotations

import plistlib
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal, NoReturn
from urllib.parse import quote
from xml.etree import ElementTree as ET  # building only; requests are read by _StrictReader
from xml.parsers import expat

Security = Literal["none", "starttls", "tls"]

# Where programs look. Thunderbird: https://<domain>/.well-known/autoconfig/... and
# https://autoconfig.<domain>/mail/...; Outlook: https://[autodiscover.]<domain>/autodiscover/...
# (both spellings: Outlook capitalises it, Thunderbird does not).
AUTOCONFIG_PATHS = ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml")
AUTODISCOVER_PATHS = ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml")
MOBILECONFIG_PATH = "/mobileconfig"
MOBILECONFIG_TYPE = "application/x-apple-aspen-config"

_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"

# Local parts the service gives out are [a-z0-9.-]; a little wider here (a clerk's or a role
# address), but nothing that needs quoting in XML, a plist, a URL or a file name.
_ADDRESS = re.compile(r"([A-Za-z0-9._+-]{1,64})@([A-Za-z0-9.-]{1,253})")
_MAX_FIELD = 320  # longest text kept from a request element


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    security: Security


@dataclass(frozen=True)
class ClientSetup:
    """The council's servers as councillors' programs reach them."""

    domain: str
    name: str  # the council, shown as the account's description
    imap: Server
    smtp: Server
    smtps: Server | None = None  # implicit TLS (465) besides ``smtp``, when offered


def address_in_domain(text: str | None, domain: str) -> str | None:
    """``text`` as a lower-case address if it is a plain address in ``domain``, else None."""
    found = _ADDRESS.fullmatch((text or "").strip())
    if found is None or found.group(2).lower().rstrip(".") != domain.lower():
        return None
    return f"{found.group(1).lower()}@{domain.lower()}"


def is_address(text: str | None) -> bool:
    """Looks like a plain address (in any domain)."""
    return _ADDRESS.fullmatch((text or "").strip()) is not None


def mobileconfig_url(base_url: str, address: str) -> str:
    """The profile link printed for a councillor: ``<web>/mobileconfig?email=<address>``."""
    return f"{base_url.rstrip('/')}{MOBILECONFIG_PATH}?email={quote(address, safe='@')}"


# --- Thunderbird autoconfig ---------------------------------------------------------------------

_SOCKET_TYPE = {"tls": "SSL", "starttls": "STARTTLS", "none": "plain"}


def autoconfig_xml(setup: ClientSetup) -> bytes:
    """Thunderbird's ``clientConfig`` 1.1: IMAP in, SMTP out (implicit TLS second if offered);
    the login is the whole address, which the program fills in (``%EMAILADDRESS%``)."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=setup.domain)
    _text(provider, "domain", setup.domain)
    _text(provider, "displayName", setup.name)
    _text(provider, "displayShortName", setup.name)
    outgoing = [setup.smtp] if setup.smtps is None else [setup.smtp, setup.smtps]
    for kind, tag, server in [
        ("imap", "incomingServer", setup.imap),
        *(("smtp", "outgoingServer", s) for s in outgoing),
    ]:
        element = ET.SubElement(provider, tag, type=kind)
        _text(element, "hostname", server.host)
        _text(element, "port", str(server.port))
        _text(element, "socketType", _SOCKET_TYPE[server.security])
        _text(element, "username", "%EMAILADDRESS%")
        # The password itself, inside the TLS connection (Thunderbird's name for AUTH PLAIN).
        _text(element, "authentication", "password-cleartext")
    return _document(root)


# --- Outlook POX autodiscover -------------------------------------------------------------------


class UnsafeRequest(ValueError):
    """The request is not well-formed XML, or carries a DTD (entities: bombs, external files)."""


@dataclass(frozen=True)
class AutodiscoverRequest:
    address: str  # as sent, not yet validated
    schema: str


def read_autodiscover_request(body: bytes) -> AutodiscoverRequest:
    """The address and acceptable response schema of an Outlook POX request.

    Read with expat directly, refusing any DOCTYPE before its entities are declared: no
    entity is ever expanded, no external file or URL is ever fetched. ``UnsafeRequest`` for
    anything else than a plain well-formed document.
    """
    reader = _StrictReader()
    try:
        reader.parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise UnsafeRequest(f"not well-formed XML: {exc}") from None
    if reader.root != (_REQUEST_NS, "Autodiscover"):
        raise UnsafeRequest("not an Outlook autodiscover request")
    return AutodiscoverRequest(
        reader.fields["EMailAddress"], reader.fields["AcceptableResponseSchema"]
    )


class _StrictReader:
    """Collects the text of ``Autodiscover/Request/{EMailAddress,AcceptableResponseSchema}``."""

    def __init__(self) -> None:
        parser = expat.ParserCreate(encoding=None, namespace_separator=" ")
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.StartDoctypeDeclHandler = self._refuse
        parser.EntityDeclHandler = self._refuse
        parser.ExternalEntityRefHandler = self._refuse
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._characters
        self.parser = parser
        self.root: tuple[str, str] | None = None
        self.path: list[str] = []
        self.fields = {"EMailAddress": "", "AcceptableResponseSchema": ""}

    @staticmethod
    def _refuse(*_: object) -> NoReturn:
        # Raised from inside expat, which stops and passes it on: nothing after the DOCTYPE
        # (entity declarations, references) is ever read.
        raise UnsafeRequest("a DTD is not allowed in an autodiscover request")

    def _start(self, name: str, attributes: object) -> None:
        namespace, _, local = name.rpartition(" ")
        if self.root is None:
            self.root = (namespace, local)
        self.path.append(local)

    def _end(self, name: str) -> None:
        self.path.pop()

    def _characters(self, data: str) -> None:
        if len(self.path) == 3 and self.path[:2] == ["Autodiscover", "Request"]:
            field = self.path[2]
            if field in self.fields:
                self.fields[field] = (self.fields[field] + data)[:_MAX_FIELD]


def autodiscover_xml(setup: ClientSetup, address: str) -> bytes:
    """The POX response for ``address`` (already accepted by ``address_in_domain``)."""
    root = ET.Element("Autodiscover", xmlns=_RESPONSE_NS)
    response = ET.SubElement(root, "Response", xmlns=OUTLOOK_SCHEMA)
    account = ET.SubElement(response, "Account")
    _text(account, "AccountType", "email")
    _text(account, "Action", "settings")
    for kind, server in (("IMAP", setup.imap), ("SMTP", setup.smtp)):
        protocol = ET.SubElement(account, "Protocol")
        _text(protocol, "Type", kind)
        _text(protocol, "Server", server.host)
        _text(protocol, "Port", str(server.port))
        _text(protocol, "DomainRequired", "off")
        _text(protocol, "LoginName", address)
        _text(protocol, "SPA", "off")
        # Encryption overrides SSL where understood; SSL alone is what older Outlooks read.
        _text(protocol, "SSL", "off" if server.security == "none" else "on")
        _text(protocol, "Encryption", _ENCRYPTION[server.security])
        _text(protocol, "AuthRequired", "on")
        if kind == "SMTP":
            _text(protocol, "UsePOPAuth", "on")  # the same login and password as IMAP
            _text(protocol, "SMTPLast", "off")
    return _document(root)


_ENCRYPTION = {"tls": "SSL", "starttls": "TLS", "none": "None"}

# Exchange's codes: 500 "address not found", 600 "invalid request", 601 "schema not offered".
NOT_OURS = (500, "The e-mail address cannot be found.")
INVALID_REQUEST = (600, "Invalid Request")
SCHEMA_NOT_OFFERED = (601, "The requested schema is not available.")


def autodiscover_error(error: tuple[int, str]) -> bytes:
    """An autodiscover error response (no settings at all)."""
    code, message = error
    root = ET.Element("Autodiscover", xmlns=_RESPONSE_NS)
    failure = ET.SubElement(ET.SubElement(root, "Response"), "Error")
    _text(failure, "ErrorCode", str(code))
    _text(failure, "Message", message)
    ET.SubElement(failure, "DebugData")
    return _document(root)


# --- Apple configuration profile ----------------------------------------------------------------


def apple_profile(setup: ClientSetup, address: str | None) -> bytes:
    """An unsigned ``.mobileconfig`` with one IMAP account, without the password (the device
    asks for it while installing). Without ``address`` the device asks for that too.

    The identifiers are derived from the address, so installing it again replaces the first.
    """
    key = address or setup.domain
    account_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"mailsvc:mobileconfig:account:{key}")
    profile_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"mailsvc:mobileconfig:profile:{key}")
    prefix = ".".join(reversed(setup.domain.split("."))) + ".mail"
    account: dict[str, Any] = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{prefix}.account.{account_uuid}",
        "PayloadUUID": str(account_uuid).upper(),
        "PayloadDisplayName": setup.name,
        "EmailAccountDescription": setup.name,
        "EmailAccountType": "EmailTypeIMAP",
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": setup.imap.host,
        "IncomingMailServerPortNumber": setup.imap.port,
        "IncomingMailServerUseSSL": setup.imap.security != "none",
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": setup.smtp.host,
        "OutgoingMailServerPortNumber": setup.smtp.port,
        # On 587 "SSL" means STARTTLS to Apple's Mail: it upgrades the connection.
        "OutgoingMailServerUseSSL": setup.smtp.security != "none",
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    if address is not None:
        account |= {
            "EmailAddress": address,
            "IncomingMailServerUsername": address,
            "OutgoingMailServerUsername": address,
        }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{prefix}.profile.{profile_uuid}",
        "PayloadUUID": str(profile_uuid).upper(),
        "PayloadDisplayName": setup.name,
        "PayloadDescription": f"{setup.name}: {address or setup.domain}",
        "PayloadOrganization": setup.name,
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)


def profile_filename(setup: ClientSetup) -> str:
    """The download's name: the domain (already a safe file name), never the request's text."""
    return f"{setup.domain}.mobileconfig"


# --- helpers ------------------------------------------------------------------------------------


def _text(parent: ET.Element, tag: str, value: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = value
    return element


def _document(root: ET.Element) -> bytes:
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")  # escapes every text and attribute
    return f'<?xml version="1.0" encoding="utf-8"?>\n{body}\n'.encode()
