"""Every SMTP reply the service sends, in one table. Handlers never invent reply strings."""

from __future__ import annotations

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
S451_RATE = "451 4.7.1 Too many messages from your address, please try again later"
S530_AUTH_REQUIRED = "530 5.7.0 Authentication required"
S553_SENDER_NOT_OWNED = "553 5.7.1 <{address}>: you may send only as your own address"

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
