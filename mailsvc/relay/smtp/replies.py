"""Every SMTP reply the service sends, in one table. Handlers never invent reply strings;
aiosmtpd's own error lines are rewritten here to carry enhanced status codes (RFC 2034)."""

from __future__ import annotations

import re

from mailsvc.domain.relay import RefusalKind

S250_OK = "250 2.0.0 OK"
S250_RCPT_OK = "250 2.1.5 OK"
S250_MAIL_OK = "250 2.1.0 OK"
S250_QUEUED = "250 2.0.0 OK: queued as {queue_id}"
# A DSN or MDN for a distribution message, credited to its delivery.
S250_REPORT = "250 2.6.0 Report received"
S451_DIRECTORY = "451 4.4.3 Directory temporarily unavailable, please try again later"
S451_STORAGE = "451 4.3.0 Message could not be stored, please try again later"
S451_LOCAL_ERROR = "451 4.3.0 Local error, please try again later"
S452_TOO_MANY_RCPT = "452 4.5.3 Too many recipients"
S501_BAD_SENDER = "501 5.1.7 Bad sender address syntax"
S550_UNKNOWN = "550 5.1.1 <{address}>: no such mailbox here"
S550_RELAY = "550 5.7.1 <{address}>: relay access denied"
S553_BAD_SYNTAX = "553 5.1.3 <{address}>: bad recipient address syntax"
S550_MANDATE_ENDED = (
    "550 5.1.6 <{address}>: this councillor's mandate has ended; "
    "please write to the council office at <{office}>"
)
S554_NO_RECIPIENTS = "554 5.5.1 No valid recipients"
S552_TOO_BIG = "552 5.3.4 Message too big for this system"
S421_TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, please try again later"
S421_TOO_MANY_ERRORS = "421 4.7.0 Too many errors, closing the connection"
S421_SESSION_TOO_LONG = "421 4.7.0 Session time limit reached, closing the connection"
# After too many refused recipients from one client: unknown addresses and ended mandates alike,
# so that guessing cannot tell which addresses ever existed.
S550_NOT_HERE = (
    "550 5.1.1 <{address}>: no such mailbox here; "
    "to reach the council, please write to the council office at <{office}>"
)
# Mail claiming the council's own domain on port 25 without proving it (SPF or DKIM).
S550_OWN_DOMAIN_SENDER = (
    "550 5.7.1 <{address}>: mail from {domain} is accepted only through the submission "
    "port {port} with authentication"
)
S550_OWN_DOMAIN_FROM = (
    "550 5.7.1 From: {domain} is the council's own domain; such mail is accepted only "
    "through the submission port {port} with authentication"
)
S451_RATE = "451 4.7.1 Too many messages from your address, please try again later"
S530_AUTH_REQUIRED = "530 5.7.0 Authentication required"
S553_SENDER_NOT_OWNED = "553 5.7.1 <{address}>: you may send only as your own address"
# Submission's AUTH.
S235_OK = "235 2.7.0 Authentication successful"
S535_INVALID = "535 5.7.8 Authentication credentials invalid"
S454_AUTH_TEMP = "454 4.7.0 Temporary authentication failure, please try again later"
S501_BASE64 = "501 5.5.2 Cannot decode the authentication data"
S421_AUTH_FAILURES = "421 4.7.0 Too many failed authentications, closing the connection"
S454_AUTH_WAIT = "454 4.7.0 Too many failed authentications, please try again in {seconds} s"
S553_FROM_NOT_OWNED = (
    "553 5.7.1 {field}: <{address}>: you may send only as your own address or a group you belong to"
)
S550_NO_FROM = "550 5.6.0 The message has no From field"
S550_NUL_IN_HEADER = (
    "550 5.6.0 Header line {line} of the message contains a NUL byte, which mail may not contain"
    " (RFC 5322)"
)
S451_SEND_LIMIT = "451 4.7.1 Sending limit for this hour reached, please try again later"
# The local capture (the embedded default's smarthost).
S250_CAPTURED = "250 2.0.0 OK: captured as {name}"
S451_NOT_STORED = "451 4.3.0 Capture could not store the message"

REFUSALS: dict[RefusalKind, str] = {
    RefusalKind.BAD_SYNTAX: S553_BAD_SYNTAX,
    RefusalKind.RELAY_DENIED: S550_RELAY,
    RefusalKind.UNKNOWN_USER: S550_UNKNOWN,
    RefusalKind.MANDATE_ENDED: S550_MANDATE_ENDED,
    RefusalKind.TOO_MANY_RECIPIENTS: S452_TOO_MANY_RCPT,
}


def refusal_reply(kind: RefusalKind, address: str, office: str) -> str:
    # Addresses are echoed only after stripping CR/LF so a reply can never be split.
    safe = address.replace("\r", "").replace("\n", "")[:256]
    return REFUSALS[kind].format(address=safe, office=office)


_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}\b")

# aiosmtpd's own error texts → our replies (matched on the start of the line). Its texts are
# pinned by tests/unit/test_aiosmtpd_pin.py.
_REWRITES: tuple[tuple[str, str], ...] = (
    ("552 Error: Too much mail data", S552_TOO_BIG),
    ("552 Error: message size exceeds", S552_TOO_BIG),
    ("500 Line too long", "500 5.5.2 Line too long"),
    ("500 Command line too long", "500 5.5.2 Command line too long"),
    ("500 Error: bad syntax", "500 5.5.2 Syntax error"),
    ("500 Error: strict ASCII mode", "500 5.5.2 Syntax error: non-ASCII data"),
    ("530 Must issue a STARTTLS command first", "530 5.7.0 Must issue a STARTTLS command first"),
    ("554 Command refused due to lack of security", "554 5.7.0 TLS handshake failed"),
)
# Default enhanced code per reply code (RFC 3463) when aiosmtpd sends none.
_DEFAULT_ENHANCED = {
    "421": "4.3.0",
    "451": "4.3.0",
    "454": "4.7.0",
    "500": "5.5.1",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
}


def with_enhanced_code(line: str) -> str:
    """Give an error reply line an enhanced status code (RFC 2034) if it has none."""
    if line[:1] not in ("4", "5") or _HAS_ENHANCED.match(line):
        return line
    for prefix, replacement in _REWRITES:
        if line.startswith(prefix):
            return replacement
    code, sep, text = line[:3], line[3:4], line[4:]
    enhanced = _DEFAULT_ENHANCED.get(code, f"{code[0]}.0.0")
    return f"{code}{sep or ' '}{enhanced} {text}"


# -- why a reply refused: fixed codes for /metrics (never the address or text it names) ---------

_REASONS: tuple[tuple[str, str], ...] = (
    (S421_TOO_MANY_CONNECTIONS, "too_many_connections"),
    (S421_TOO_MANY_ERRORS, "too_many_errors"),
    (S421_SESSION_TOO_LONG, "session_time_limit"),
    (S421_AUTH_FAILURES, "too_many_auth_failures"),
    (S451_RATE, "rate_limited"),
    (S451_SEND_LIMIT, "send_limit"),
    (S451_DIRECTORY, "directory_unavailable"),
    (S451_STORAGE, "storage_unavailable"),
    (S451_LOCAL_ERROR, "local_error"),
    (S452_TOO_MANY_RCPT, "too_many_recipients"),
    (S454_AUTH_TEMP, "auth_unavailable"),
    (S454_AUTH_WAIT, "auth_throttled"),
    (S501_BAD_SENDER, "bad_sender"),
    (S501_BASE64, "auth_syntax"),
    (S530_AUTH_REQUIRED, "auth_required"),
    (S535_INVALID, "auth_invalid"),
    (S550_NOT_HERE, "unknown_recipient"),
    (S550_UNKNOWN, "unknown_recipient"),
    (S550_RELAY, "relay_denied"),
    (S550_MANDATE_ENDED, "mandate_ended"),
    (S550_OWN_DOMAIN_SENDER, "own_domain_unauthenticated"),
    (S550_OWN_DOMAIN_FROM, "own_domain_unauthenticated"),
    (S550_NO_FROM, "no_from"),
    (S550_NUL_IN_HEADER, "nul_in_header"),
    (S552_TOO_BIG, "too_big"),
    (S553_BAD_SYNTAX, "bad_recipient"),
    (S553_SENDER_NOT_OWNED, "sender_not_owned"),
    (S553_FROM_NOT_OWNED, "sender_not_owned"),
    (S554_NO_RECIPIENTS, "no_recipients"),
    (S451_NOT_STORED, "storage_unavailable"),
    ("530 5.7.0 Must issue a STARTTLS command first", "tls_required"),
    ("554 5.7.0 TLS handshake failed", "tls_failed"),
)


def _template(reply: str) -> re.Pattern[str]:
    """A reply constant as a pattern: its {fields} match anything."""
    pieces = re.split(r"\{[a-z_]+\}", reply)
    return re.compile(".*?".join(map(re.escape, pieces)), re.DOTALL)


_REASON_PATTERNS = tuple((_template(reply), reason) for reply, reason in _REASONS)


def refusal_reason(line: str) -> str | None:
    """The fixed code of a 4xx/5xx reply (None for any other): one of ours by its constant,
    anything else aiosmtpd says by its class (a syntax or sequence error, another failure)."""
    if line[:1] not in ("4", "5"):
        return None
    for pattern, reason in _REASON_PATTERNS:
        if pattern.fullmatch(line):
            return reason
    if line[:3] in ("500", "501", "502", "503", "504"):
        return "protocol_error"
    return "other_temporary" if line[:1] == "4" else "other_permanent"
