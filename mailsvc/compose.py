"""Building the messages and letters the service itself writes to councillors.

``build_message`` is the one way outgoing mail is put together: every display name, subject and
extra header value passes through it, so no caller can smuggle a line break into a header.
Bodies come from ``templates/`` through :mod:`mailsvc.templating`.
"""

from __future__ import annotations

import binascii
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from typing import Any

from mailsvc import templating
from mailsvc.config import Settings
from mailsvc.domain.clientsetup import AUTOCONFIG_PATHS, mobileconfig_url

# Unicode categories that end a line somewhere: controls (CR, LF, NUL, TAB, NEL, ...) and the
# line/paragraph separators that str.splitlines() honours.
_LINE_BREAKING_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
# Characters that would turn one address into several, a group, a comment or a route.
_ADDRESS_SPECIALS = frozenset('<>()[]\\,;:"')
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII except ':' (RFC 5322 ftext)
# <left@right> without spaces, brackets inside, or anything outside printable ASCII.
_MESSAGE_ID = re.compile(r"<[!-;=?-~]+@[!-;=?-~]+>")
_QP_LINE = 76  # RFC 2045 6.7: encoded lines at most 76 characters, the soft break included
_BOUNDARY = re.compile(r"=_[0-9A-Za-z_.-]{1,60}")
_SMTP = policy.SMTP
# Headers build_message sets itself, or that must never travel in a message (Bcc).
_RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "sender",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
    }
)

_SECURITY_LABELS = {
    "pl": {"none": "brak", "starttls": "STARTTLS", "tls": "SSL/TLS"},
    "en": {"none": "none", "starttls": "STARTTLS", "tls": "SSL/TLS"},
}
_WELCOME_SUBJECT = {
    "pl": "Witamy w poczcie {council_genitive}",
    "en": "Welcome to your {council} mailbox",
}
# Feminine adjectives after "Rada" take -ej in the genitive: Rada Miejska -> Rady Miejskiej.
_ADJECTIVE_GENITIVE = (("ska", "skiej"), ("cka", "ckiej"), ("nna", "nnej"), ("owa", "owej"))


def clean_header_text(value: str) -> str:
    """``value`` with every control or line-breaking character replaced by a space, and every
    lone surrogate (JSON's "\\ud800", surrogateescape's bytes) by U+FFFD.

    A header value can then never end its line and start another header, and it can always
    be encoded (a surrogate made the email package raise UnicodeEncodeError while writing).
    """
    if value.isprintable():  # the common case, at C speed: no control, separator or surrogate
        return value.strip()
    return "".join(map(_header_char, value)).strip()


def _header_char(ch: str) -> str:
    category = unicodedata.category(ch)
    if category in _LINE_BREAKING_CATEGORIES:
        return " "
    return "\ufffd" if category == "Cs" else ch


def _check_address(field_name: str, address: str) -> tuple[str, str]:
    """``(local part, domain)`` of a plain ASCII address, or ValueError naming the field."""

    def bad(reason: str) -> ValueError:
        return ValueError(f"{field_name}: {address!r} is not a usable email address ({reason})")

    if address.count("@") != 1:
        raise bad("expected exactly one @")
    if not address.isascii():
        raise bad("expected ASCII only")
    if any(ch.isspace() or not ch.isprintable() for ch in address):
        raise bad("spaces and control characters are not allowed")
    if any(ch in _ADDRESS_SPECIALS for ch in address):
        raise bad("quotes, brackets, commas and similar characters are not allowed")
    local, domain = address.split("@")
    if not local or local.startswith(".") or local.endswith(".") or ".." in local:
        raise bad("expected a local part before the @")
    if not _DOMAIN.fullmatch(domain):
        raise bad("expected a domain such as rada.example.org after the @")
    return local, domain


def _mailbox(field_name: str, mailbox: tuple[str, str]) -> Address:
    display_name, address = mailbox
    local, domain = _check_address(field_name, address)
    return Address(display_name=clean_header_text(display_name), username=local, domain=domain)


def check_address(field_name: str, address: str) -> str:
    """``address`` if it is a plain ASCII address usable in a header, else ValueError."""
    _check_address(field_name, address)
    return address


def header_field(name: str, value: str | tuple[str, str]) -> bytes:
    """One header field as the email package writes it (RFC 2047 words for non-ASCII, folded at
    78 characters), CRLF-terminated. A ``(display name, address)`` pair makes a mailbox field;
    text has control characters replaced by spaces, as in :func:`build_message`.
    """
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid header name")
    if isinstance(value, tuple):
        short = _short_mailbox_field(name, value)
        if short is not None:
            return short
    parsed: Any = _mailbox(name, value) if isinstance(value, tuple) else clean_header_text(value)
    folded: str = _SMTP.header_factory(name, parsed).fold(policy=_SMTP)
    return folded.encode("ascii")


def _short_mailbox_field(name: str, mailbox: tuple[str, str]) -> bytes | None:
    """A mailbox field written the short way: one RFC 2047 word for a name with diacritics, a
    quoted string for one with specials, the address on a line of its own when both do not
    fit in 78 characters. None when the email package must fold the name itself, or when the
    name looks like an encoded word (a reader would decode it)."""
    display_name, address = mailbox
    _check_address(name, address)
    display = clean_header_text(display_name)
    if "=?" in display or "\\" in display or any(c.isspace() and c != " " for c in display):
        return None  # (a reader collapses other spaces inside an encoded word differently)
    line = f"{name}: {formataddr((display, address), charset='utf-8')}"
    if len(line) <= 78:
        return (line + "\r\n").encode("ascii")
    # The address on a continuation line of its own, when the name alone fits on the first.
    first = line[: -(len(address) + 3)]  # without " <address>"
    if len(first) > 78 or not display:
        return None
    return f"{first}\r\n <{address}>\r\n".encode("ascii")


def message_id_field(name: str, message_ids: Iterable[str]) -> bytes:
    """``Message-ID``/``In-Reply-To``/``References`` with ids this service made: each must be a
    plain ``<left@right>``; several go on continuation lines of their own."""
    ids = list(message_ids)
    if not ids:
        raise ValueError(f"{name}: no message id")
    for mid in ids:
        if not _MESSAGE_ID.fullmatch(mid):
            raise ValueError(f"{name}: {mid!r} is not a message id")
    return (f"{name}: " + "\r\n ".join(ids) + "\r\n").encode("ascii")


def quoted_printable(text: str) -> bytes:
    """``text`` as a quoted-printable UTF-8 body with CRLF lines; CR, LF and CRLF all end a line
    (as in the email package's ``set_content``, which splits the encoded bytes)."""
    normal = b"\r\n".join(text.encode("utf-8").splitlines()) + b"\r\n"
    encoded = binascii.b2a_qp(normal, quotetabs=False, istext=True, header=False)
    lines = encoded.split(b"\r\n")
    if all(len(line) <= _QP_LINE for line in lines):
        return encoded
    # binascii can end a line with an encoded trailing space past 76 characters: fold such
    # lines again with soft breaks, never inside an "=XX" escape.
    return b"\r\n".join(part for line in lines for part in _refold(line))


def _refold(line: bytes) -> list[bytes]:
    parts = []
    while len(line) > _QP_LINE:
        cut = _QP_LINE - 1  # room for the soft break's "="
        if line[cut - 1 : cut] == b"=":
            cut -= 1
        elif line[cut - 2 : cut - 1] == b"=":
            cut -= 2
        parts.append(line[:cut] + b"=")
        line = line[cut:]
    parts.append(line)
    return parts


def alternative_body(text: str, html: str, boundary: str) -> tuple[bytes, bytes]:
    """A ``multipart/alternative`` of ``text`` and ``html``, both quoted-printable UTF-8:
    ``(its Content-Type field, its body)``. ``boundary`` must start with ``=_`` (no
    quoted-printable line can contain that) and be plain ASCII. Each part's text ends with a
    line break that the delimiter after it does not take (RFC 2046 5.1.1), as the email
    package writes it."""
    if not _BOUNDARY.fullmatch(boundary):
        raise ValueError(f"{boundary!r} is not a boundary this module writes")
    b = boundary.encode("ascii")
    content = f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'.encode("ascii")
    body = b"".join(
        [
            b"--" + b + b"\r\n",
            b'Content-Type: text/plain; charset="utf-8"\r\n',
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            quoted_printable(text),
            b"\r\n--" + b + b"\r\n",
            b'Content-Type: text/html; charset="utf-8"\r\n',
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            quoted_printable(html),
            b"\r\n--" + b + b"--\r\n",
        ]
    )
    return content, body


def build_message(
    *,
    from_addr: tuple[str, str],
    to: tuple[str, str],
    subject: str,
    text: str,
    html: str | None = None,
    headers: Mapping[str, str] | None = None,
    message_id_domain: str,
) -> EmailMessage:
    """A complete message, safe to serialise with ``bytes(msg)`` / ``msg.as_bytes()``.

    ``from_addr`` and ``to`` are ``(display name, address)``. Display names, the subject and
    ``headers`` values have control characters replaced by spaces; addresses, header names and
    ``message_id_domain`` that do not fit raise ValueError naming the field. Non-ASCII text is
    encoded as RFC 2047 words in headers and quoted-printable UTF-8 in bodies, so the message is
    plain 7-bit ASCII and needs no 8BITMIME from any server on the way. With ``html`` the message
    is multipart/alternative (text first, as clients prefer the last part they can show).
    """
    if not _DOMAIN.fullmatch(message_id_domain):
        raise ValueError(f"message_id_domain: {message_id_domain!r} is not a domain name")
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = _mailbox("from_addr", from_addr)
    msg["To"] = _mailbox("to", to)
    msg["Subject"] = clean_header_text(subject)
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=message_id_domain)
    extra = dict(headers or {})
    for name in extra:
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"headers: {name!r} is not a valid header name")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"headers: {name} is set by build_message and may not be given")
    msg.set_content(text, cte="quoted-printable")
    if html is not None:
        msg.add_alternative(html, subtype="html", cte="quoted-printable")
    # Added after the bodies: set_content drops and add_alternative moves Content-* headers.
    for name, value in extra.items():
        msg[name] = clean_header_text(value)
    return msg


# -- messages and letters to councillors ------------------------------------------------------


def council_genitive_pl(name: str) -> str:
    """The council's name in the Polish genitive: "Rada Miasta X" -> "Rady Miasta X".

    Handles names that start with "Rada" (with an adjective such as "Miejska" after it); any
    other name is returned unchanged.
    """
    words = name.split(" ")
    if words[0] != "Rada":
        return name
    words[0] = "Rady"
    if len(words) > 1:
        for ending, genitive in _ADJECTIVE_GENITIVE:
            if words[1].endswith(ending):
                words[1] = words[1][: -len(ending)] + genitive
                break
    return " ".join(words)


def _client_settings(settings: Settings) -> dict[str, Any]:
    """``imap``, ``smtp`` and ``smtps`` (None unless implicit TLS is offered) for the manual
    settings; ``autoconfig_url`` for whoever helps when a program does not find it alone."""
    labels = _SECURITY_LABELS.get(settings.language, _SECURITY_LABELS["pl"])
    out: dict[str, Any] = {"autoconfig_url": settings.web_url + AUTOCONFIG_PATHS[0]}
    for key, values in (
        ("imap", settings.client_imap),
        ("smtp", settings.client_smtp),
        ("smtps", settings.client_smtps),
    ):
        if values is None:
            out[key] = None
            continue
        host, port, security = values
        out[key] = {
            "host": host,
            "port": port,
            "security": security,
            "security_label": labels.get(security, security),
        }
    return out


def council_context(settings: Settings) -> dict[str, Any]:
    """Template values naming the council, shared by every message it sends."""
    return {
        "council": settings.council.name,
        "council_genitive": council_genitive_pl(settings.council.name),
        "office_address": settings.office_address,
    }


def _common_context(settings: Settings) -> dict[str, Any]:
    council = settings.council
    return {
        **council_context(settings),
        "helpdesk_email": council.helpdesk_email,
        "helpdesk_phone": council.helpdesk_phone,
        **_client_settings(settings),
    }


def welcome_message(
    settings: Settings, *, display_name: str, address: str, cutover: date | None = None
) -> EmailMessage:
    """The welcome message a new mailbox receives from the council office.

    It tells the councillor what to set in a mail program, that session documents will arrive
    by mail with a confirmation link (from ``cutover`` on, when given), and whom to ask.
    """
    context = {
        **_common_context(settings),
        "display_name": display_name,
        "address": address,
        "mobileconfig_url": mobileconfig_url(settings.web_url, address),
        "cutover": cutover,
    }
    language = settings.language
    subject_format = _WELCOME_SUBJECT.get(language, _WELCOME_SUBJECT["pl"])
    return build_message(
        from_addr=(settings.council.name, settings.office_address),
        to=(display_name, address),
        subject=subject_format.format(**context),
        text=templating.render("mail/welcome.txt", language, **context),
        html=templating.render("mail/welcome.html", language, **context),
        # RFC 3834: vacation responders must not answer an automatic message.
        headers={"Auto-Submitted": "auto-generated", "Content-Language": language},
        message_id_domain=settings.domain,
    )


@dataclass(frozen=True)
class CouncillorCredentials:
    """What one credentials letter prints."""

    display_name: str
    address: str
    password: str = field(repr=False)
    district: str | None = None


def credentials_letters(
    settings: Settings,
    items: Iterable[CouncillorCredentials],
    *,
    issued: date | None = None,
) -> str:
    """One print-ready HTML document with a credentials letter per item, each on its own page.

    ``issued`` is the date printed on the letters (default: today). Every value is escaped.
    """
    letters = [
        {
            "display_name": item.display_name,
            "address": item.address,
            "password": item.password,
            "district": item.district,
            "mobileconfig_url": mobileconfig_url(settings.web_url, item.address),
        }
        for item in items
    ]
    if not letters:
        raise ValueError("credentials_letters: no councillors given, nothing to print")
    return templating.render(
        "letters/credentials.html",
        settings.language,
        **_common_context(settings),
        letters=letters,
        issued=issued or date.today(),
    )


def credentials_letter(
    settings: Settings,
    *,
    display_name: str,
    address: str,
    password: str,
    district: str | None = None,
    issued: date | None = None,
) -> str:
    """The print-ready HTML credentials letter (one A4 page) for one councillor."""
    item = CouncillorCredentials(display_name, address, password, district)
    return credentials_letters(settings, [item], issued=issued)
