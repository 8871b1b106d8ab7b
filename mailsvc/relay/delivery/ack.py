"""Acknowledgements to residents (RFC 3834 auto-replies).

After a resident's message reaches a councillor's mailbox, the resident is told so — at most once
per (sender, councillor, day in the council's time zone; the queue's acknowledgements table
keeps that promise). The reply is ``Auto-Submitted: auto-replied``, refers to the original by
In-Reply-To and References, and goes out with the null return path, so nothing ever answers or
bounces it.

It repeats nothing the sender wrote: not the Subject, not a word of the text. Whoever sends can
put anything there, and an answer that quotes it carries their words to the address they gave
(even a shortened, cleaned subject fits "CHEAP PILLS" and a domain name). The resident's mail
program shows the acknowledgement with the message it answers (In-Reply-To and References), and
its text names the time of delivery and the councillors.

:func:`ack_refusal` holds the rules of RFC 3834 section 2 on when not to reply at all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime, tzinfo
from email.message import EmailMessage

from mailsvc import templating
from mailsvc.compose import build_message, council_context
from mailsvc.config import Settings
from mailsvc.domain.localtime import local_time
from mailsvc.relay.delivery.headers import (
    header_text,
    is_delivery_report,
    message_ids,
    parse_header,
)

# The acknowledgement's From: replies to it are refused at RCPT (a reserved local part).
ACK_FROM_LOCAL_PART = "noreply"
_SUBJECT = {"pl": "Potwierdzenie dostarczenia", "en": "Delivery confirmation"}
# Senders that are programs, lists or mail systems (RFC 3834 section 2, and common practice).
_MACHINE_SENDER = re.compile(
    r"""^(
        mailer-daemon | postmaster | listserv | majordomo | mailman
        | no-?reply | do-?not-?reply | donotreply | noreply[-.+].* | bounces?([-+].*)?
        | owner-.* | .*-owner | .*-request | .*-bounces?([-+].*)?
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
_BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})
_LIST_HEADERS = (
    "List-Id",
    "List-Unsubscribe",
    "List-Post",
    "List-Help",
    "List-Subscribe",
    "List-Owner",
    "List-Archive",
)
# Microsoft's way of asking for no automatic replies.
_SUPPRESS = frozenset({"all", "autoreply", "oof"})


def ack_refusal(
    mail_from: str, body: bytes, local_domains: Sequence[str], *, origin: str
) -> str | None:
    """Why this message gets no acknowledgement (None: it may get one)."""
    if origin != "inbound":
        return f"origin is {origin}, not a resident's message"
    if not mail_from:
        return "null sender"
    local, at, domain = mail_from.rpartition("@")
    if not at or not local:
        return "sender is not an address"
    domain = domain.lower()
    if any(domain == d or domain.endswith("." + d) for d in local_domains):
        return "sender in our own domain"
    if _MACHINE_SENDER.match(local):
        return "sender is a program, list or mail system"
    header = parse_header(body)
    auto = header_text(header, "Auto-Submitted").lower()
    if auto and auto.split(";")[0].strip() != "no":
        return f"Auto-Submitted: {auto}"
    if header_text(header, "Precedence").lower() in _BULK_PRECEDENCE:
        return "bulk or list precedence"
    for name in _LIST_HEADERS:
        if header.get(name) is not None:
            return f"mailing list ({name})"
    suppress = {
        word.strip().lower() for word in header_text(header, "X-Auto-Response-Suppress").split(",")
    }
    if suppress & _SUPPRESS:
        return "X-Auto-Response-Suppress"
    if is_delivery_report(header):
        return "a delivery report"
    return None


def acknowledgement_day(delivered_at: datetime, zone: tzinfo) -> date:
    """The day that counts for "once per day": the council's local date."""
    return local_time(delivered_at, zone).date()


def build_acknowledgement(
    settings: Settings,
    *,
    mail_from: str,
    original: bytes,
    delivered_at: datetime,
    councillors: Sequence[tuple[str, str]],
) -> EmailMessage:
    """The acknowledgement to ``mail_from`` that ``original`` reached these councillors'
    mailboxes at ``delivered_at``; ``councillors`` are (name, address) pairs."""
    if not councillors:
        raise ValueError("build_acknowledgement: no councillors")
    language = settings.language
    header = parse_header(original)
    when = local_time(delivered_at, settings.zone)
    context = {
        **council_context(settings),
        "delivered": when,
        "delivered_time": f"{when:%H:%M}",
        "councillors": [
            {"name": name or address, "address": address} for name, address in councillors
        ],
    }
    extra = {"Auto-Submitted": "auto-replied", "Content-Language": language}
    original_id = message_ids(header, "Message-ID")[:1]
    if original_id:
        # RFC 3834 3.1.5: In-Reply-To the original, References its References plus it.
        references = [*message_ids(header, "References")[-10:], original_id[0]]
        extra["In-Reply-To"] = original_id[0]
        extra["References"] = " ".join(dict.fromkeys(references))
    return build_message(
        from_addr=(
            settings.council.name,
            settings.relay.acknowledge_from or f"{ACK_FROM_LOCAL_PART}@{settings.domain}",
        ),
        to=("", mail_from),
        subject=_SUBJECT.get(language, _SUBJECT["pl"]),
        text=templating.render("mail/ack.txt", language, **context),
        headers=extra,
        message_id_domain=settings.domain,
    )
