"""Delivery status notifications (RFC 3464) for recipients that failed for good.

A bounce is a multipart/report (report-type=delivery-status) from MAILER-DAEMON@<domain>, sent
with the null return path (MAIL FROM:<>) so that it can never be bounced itself:

1. text/plain for people, from ``templates/mail/dsn.<language>.txt.j2``;
2. message/delivery-status: Reporting-MTA, Arrival-Date, and per recipient Final-Recipient,
   Action: failed, Status, Diagnostic-Code (the reply we got);
3. text/rfc822-headers: the header of the original message (never its body).

Never sent to the null sender, and never about a message that is itself a report or an
automatic message of ours, so bounces cannot loop.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.utils import format_datetime

from mailsvc import templating
from mailsvc.compose import build_message, clean_header_text, council_context
from mailsvc.config import Settings
from mailsvc.domain.localtime import local_time
from mailsvc.domain.outcome import Reply
from mailsvc.domain.wording import format_duration
from mailsvc.relay.delivery.headers import (
    header_block,
    header_text,
    is_delivery_report,
    parse_header,
)

MAILER_DAEMON = "MAILER-DAEMON"
# Status when retries ran out (RFC 3463: X.4.7 delivery time expired).
STATUS_EXPIRED = "4.4.7"
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
_SUBJECT = {
    "pl": "Niedostarczona wiadomość: {subject}",
    "en": "Undelivered mail: {subject}",
}
_SUBJECT_NONE = {"pl": "Niedostarczona wiadomość", "en": "Undelivered mail"}
_FROM_NAME = {"pl": "System pocztowy", "en": "Mail Delivery System"}
_AUTOMATIC_LOCAL_PARTS = frozenset({"mailer-daemon", "postmaster"})


@dataclass(frozen=True)
class Failure:
    """One recipient that will not get the message."""

    recipient: str
    reply: Reply
    expired: bool = False  # temporary failures until the retry period ran out


def bounce_refusal(mail_from: str, body: bytes, local_domains: Sequence[str]) -> str | None:
    """Why no bounce may be sent about this message (None: a bounce may be sent)."""
    if not mail_from:
        return "null sender"
    local, _, domain = mail_from.rpartition("@")
    if local.lower() in _AUTOMATIC_LOCAL_PARTS:
        return "sender is a mail system address"
    header = parse_header(body)
    if is_delivery_report(header):
        return "the message is itself a delivery report"
    auto = header_text(header, "Auto-Submitted").lower()
    ours = domain.lower() in local_domains
    if ours and auto and auto.split(";")[0].strip() != "no":
        return "an automatic message of ours"
    return None


def status_of(reply: Reply, expired: bool) -> str:
    """The RFC 3463 status for a failed recipient: the reply's own enhanced code if it gives a
    permanent one, X.4.7 after the retry period, otherwise 5.0.0."""
    if expired:
        return STATUS_EXPIRED
    match = _ENHANCED.match(reply.text)
    if match and match.group(1) == "5":
        return match.group(0)
    return "5.0.0"


def _field(value: str) -> str:
    return " ".join(clean_header_text(value).split())


def _address_type(address: str) -> str:
    # RFC 6533: addresses that are not ASCII are of type utf-8.
    return "rfc822" if address.isascii() else "utf-8"


def delivery_status(
    *, reporting_mta: str, arrival: datetime, queue_id: str, failures: Sequence[Failure]
) -> EmailMessage:
    """The message/delivery-status part."""
    part = EmailMessage(policy=policy.SMTP)
    part["Content-Type"] = "message/delivery-status"
    per_message = Message(policy=policy.SMTP)
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    per_message["X-Mailsvc-Queue-ID"] = queue_id
    per_message["Arrival-Date"] = format_datetime(arrival)
    blocks: list[Message | str] = [per_message]
    for failure in failures:
        block = Message(policy=policy.SMTP)
        block["Final-Recipient"] = f"{_address_type(failure.recipient)}; {failure.recipient}"
        block["Action"] = "failed"
        block["Status"] = status_of(failure.reply, failure.expired)
        block["Diagnostic-Code"] = f"smtp; {_field(str(failure.reply))}"
        blocks.append(block)
    part.set_payload(blocks)
    return part


def _headers_part(original: bytes) -> EmailMessage:
    block = header_block(original)
    part = EmailMessage(policy=policy.SMTP)
    if block.isascii():
        part.set_content(block.decode("ascii") + "\r\n", subtype="rfc822-headers", cte="7bit")
        part.set_param("charset", "us-ascii")
    else:
        text = block.decode("utf-8", "replace") + "\r\n"
        part.set_content(text, subtype="rfc822-headers", cte="quoted-printable")
    del part["MIME-Version"]
    return part


def build_dsn(
    settings: Settings,
    *,
    queue_id: str,
    mail_from: str,
    arrival: datetime,
    original: bytes,
    failures: Sequence[Failure],
) -> EmailMessage:
    """The bounce to ``mail_from`` about ``failures`` of the message ``original``."""
    if not failures:
        raise ValueError("build_dsn: no failed recipients")
    language = settings.language
    header = parse_header(original)
    subject = header_text(header, "Subject")
    arrived = local_time(arrival, settings.zone)
    context = {
        **council_context(settings),
        "sender": mail_from,
        "subject": subject,
        "arrival": arrived,
        "arrival_time": f"{arrived:%H:%M}",
        "retry_period": format_duration(settings.delivery.retry_period, language),
        "queue_id": queue_id,
        "failures": [
            {"recipient": f.recipient, "reply": _field(str(f.reply)), "expired": f.expired}
            for f in failures
        ],
    }
    subject_line = (
        _SUBJECT.get(language, _SUBJECT["pl"]).format(subject=subject)
        if subject
        else _SUBJECT_NONE.get(language, _SUBJECT_NONE["pl"])
    )
    msg = build_message(
        from_addr=(
            _FROM_NAME.get(language, _FROM_NAME["pl"]),
            f"{MAILER_DAEMON}@{settings.domain}",
        ),
        to=("", mail_from),
        subject=subject_line,
        text=templating.render("mail/dsn.txt", language, **context),
        headers={"Auto-Submitted": "auto-replied", "Content-Language": language},
        message_id_domain=settings.domain,
    )
    msg.make_mixed()
    msg.attach(
        delivery_status(
            reporting_mta=settings.smtp_hostname,
            arrival=arrival.replace(tzinfo=UTC) if arrival.tzinfo is None else arrival,
            queue_id=queue_id,
            failures=failures,
        )
    )
    msg.attach(_headers_part(original))
    msg.replace_header("Content-Type", "multipart/report; report-type=delivery-status")
    return msg
