"""Delivery reports arriving at ``bounces+TOKEN@``: DSNs (RFC 3464), MDNs (RFC 8098), and the
bounces real mail servers send in other shapes.

``scan`` turns raw bytes into a ``DeliveryReport`` and never raises: whatever cannot be read is
a report of kind ``"none"``. Standard reports are trusted first; only a message that carries none
with a recipient in it goes on to flufl.bounce's detectors and then ours (``plain.py``). Each
failed or delayed recipient gets a reason (``domain.bounce_reasons``): user unknown, mailbox
full, … and whether the failure is permanent follows from it.

The work is bounded: at most ``MAX_INPUT`` bytes are parsed, at most ``MAX_PARTS`` MIME parts
visited, nesting followed ``MAX_DEPTH`` deep. The stdlib parser runs with ``compat32``: it keeps
report fields as written and does not spend time on structured header parsing of hostile values.
It recurses once for each level of nesting and hits Python's recursion limit at a few hundred
levels, losing the whole report; and it builds an object for each MIME part and for each block of
a delivery-status part (a megabyte of blank lines there: 300 MB and 20 seconds). So it is given
the input only up to the ``MAX_NESTING_FIELDS``-th field that may open a level (a multipart or
message/* Content-Type) and the ``MAX_PART_LINES``-th line that may start a part or a block (a
boundary-like or a blank line). flufl.bounce reads every line of every part with dozens of
patterns: it is given the first ``MAX_FLUFL_INPUT`` bytes, and nothing when they hold more than
``MAX_PARTS`` parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from email import policy
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesParser
from io import BytesIO
from typing import Literal

from mailsvc.domain.bounce_reasons import BounceReason, classify, is_permanent
from mailsvc.receipts.formats.common import (
    MAX_EXCERPT,
    collapse,
    decode_utf8_addr,
    enhanced_status,
    infer_status,
    message_id_in,
    normalize_address,
    plausible_address,
)
from mailsvc.receipts.plain import header_text, read_plain, sender_address

__all__ = ["DeliveryReport", "ReportRecipient", "is_rejection", "scan", "to_json"]

MAX_INPUT = 1024 * 1024
MAX_PARTS = 200
MAX_DEPTH = 16
MAX_EVIDENCE = 20 * 1024
MAX_BODY = 64 * 1024
MAX_BLOCKS = 500
MAX_RECIPIENTS = 1000
# Real reports carry a handful (the report, the returned message and its own parts), and
# up to MAX_BLOCKS blocks are read of a delivery-status part.
MAX_NESTING_FIELDS = 100
MAX_PART_LINES = 2000
MAX_FLUFL_INPUT = 32 * 1024

DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
MDN_TYPES = frozenset(
    {"message/disposition-notification", "message/global-disposition-notification"}
)
# Where a report returns the original message or its header (RFC 6522, RFC 6533).
RETURNED_TYPES = frozenset(
    {"text/rfc822-headers", "message/rfc822", "message/global", "message/global-headers"}
)
# Encapsulated messages: never searched for reports (a forwarded bounce is not a bounce to us).
ENCAPSULATED_TYPES = frozenset({"message/rfc822", "message/global", "message/partial"})

_MSG_ID = re.compile(r"<[^<>\s]{1,250}>")
# A Content-Type field that opens a nested level for the parser, at the start of a line (the
# parser also ends lines at a bare CR), its value possibly folded onto the next line.
_NESTING_FIELD = re.compile(
    rb"(?<![^\r\n])content-type[ \t]*:\s*(?:multipart|message)/", re.IGNORECASE
)
# A line starting with "--" or a blank line (CR, LF and CRLF all end lines for the parser).
_PART_LINE = re.compile(rb"(?:\A|(?<=\n)|(?<=\r)(?!\n))(?:--|\r|\n)")

Kind = Literal["dsn", "mdn", "none"]


@dataclass(frozen=True)
class ReportRecipient:
    """What a report says about one recipient."""

    # The address the message was sent to: Original-Recipient (RFC 3464: as the sender gave
    # it), else Final-Recipient; domain lowercased, no "rfc822;" prefix.
    address: str
    action: str  # DSN action (failed, delayed, delivered, ...) or MDN disposition type
    status: str  # "5.1.1"; "" for MDNs
    permanent: bool  # a failure that retrying will not cure (``bounce_reasons.is_permanent``)
    diagnostic: str = ""  # Diagnostic-Code text or the plain bounce's reason, ≤ 500 chars
    reason: BounceReason | None = None  # why it failed or is delayed; None for other actions
    final_recipient: str = ""  # Final-Recipient when the report names one (an alias's target)


@dataclass(frozen=True)
class DeliveryReport:
    """A parsed report: what kind, for whom, about which message, and the evidence read."""

    kind: Kind
    recipients: tuple[ReportRecipient, ...]
    original_message_id: str | None
    reporter: str = ""  # Reporting-MTA host or Reporting-UA
    evidence: str = ""  # the machine-readable part as text (≤ 20 kB) or the bounce excerpt


NOTHING = DeliveryReport(kind="none", recipients=(), original_message_id=None)


def scan(raw: bytes) -> DeliveryReport:
    """The delivery report in ``raw`` (a whole message), or a report of kind ``"none"``."""
    try:
        return _scan(bytes(raw[:MAX_INPUT]))
    except Exception:  # hostile input must never take the caller down
        return NOTHING


def to_json(report: DeliveryReport) -> dict[str, object]:
    """The report as JSON-ready data; ``kind`` and each recipient's address, action, status,
    permanent and reason are a contract."""
    return {
        "kind": report.kind,
        "recipients": [
            {
                "address": r.address,
                "action": r.action,
                "status": r.status,
                "permanent": r.permanent,
                "diagnostic": r.diagnostic,
                "reason": r.reason.value if r.reason is not None else None,
                "final_recipient": r.final_recipient or r.address,
            }
            for r in report.recipients
        ],
        "original_message_id": report.original_message_id,
    }


# --- The message as parts -------------------------------------------------------------------


@dataclass(frozen=True)
class _Parts:
    """The parts of the outer message that matter, found in one bounded walk."""

    dsn: tuple[Message, ...]
    mdn: tuple[Message, ...]
    returned: Message | None  # the first returned message or header part
    first_text: Message | None  # the first text/plain part (the human-readable explanation)
    report_type: str  # multipart/report's report-type, lowercased ("" when not a report)
    second: Message | None  # a report's second part (where the machine-readable part belongs)


def _scan(raw: bytes) -> DeliveryReport:
    raw = _bounded_structure(raw)
    msg = _parse(raw)
    parts = _walk(msg)
    if parts.dsn or (parts.report_type == "delivery-status" and _is_text(parts.second)):
        report = _read_dsn(parts)
        if report.recipients:
            return report
        return _read_plain(msg, parts, raw) or report
    if parts.mdn or (parts.report_type == "disposition-notification" and _is_text(parts.second)):
        return _read_mdn(msg, parts)
    return _read_plain(msg, parts, raw) or NOTHING


def _parse(raw: bytes) -> Message:
    return BytesParser(policy=policy.compat32).parsebytes(raw)


def _bounded_structure(raw: bytes) -> bytes:
    """``raw`` cut before its ``MAX_NESTING_FIELDS + 1``-th field that may nest (each adds at
    most two levels for the parser: a multipart/digest's part is a message by default) and its
    ``MAX_PART_LINES + 1``-th line that may start a part or a block. Reports come first in a
    message: what is cut is the end of a returned message, or junk."""
    end = len(raw)
    for pattern, limit in ((_NESTING_FIELD, MAX_NESTING_FIELDS), (_PART_LINE, MAX_PART_LINES)):
        for count, match in enumerate(pattern.finditer(raw, 0, end), start=1):
            if count > limit:
                end = match.start()
                break
    return raw[:end]


def is_rejection(entry: ReportRecipient) -> bool:
    """An MDN the mail store sent itself to refuse the message (Dovecot/Sieve reject):
    ``automatic-action/MDN-sent-automatically; deleted``. A failed delivery, not a reading."""
    return entry.action == "deleted" and "automatic-action" in entry.diagnostic.lower()


def _walk(msg: Message) -> _Parts:
    """One iterative, bounded walk: report parts are leaves, encapsulated messages not entered."""
    dsn: list[Message] = []
    mdn: list[Message] = []
    returned: Message | None = None
    first_text: Message | None = None
    report_type = ""
    second: Message | None = None
    stack: list[tuple[Message, int]] = [(msg, 0)]
    visited = 0
    while stack and visited < MAX_PARTS:
        part, depth = stack.pop()
        visited += 1
        ctype = part.get_content_type()
        if ctype in DSN_TYPES:
            dsn.append(part)
        elif ctype in MDN_TYPES:
            mdn.append(part)
        elif ctype in RETURNED_TYPES:
            returned = returned or part
        elif ctype == "text/plain" and first_text is None:
            first_text = part
        if ctype in ENCAPSULATED_TYPES or ctype in DSN_TYPES or ctype in MDN_TYPES:
            continue
        if part.is_multipart() and depth < MAX_DEPTH:
            children = [c for c in part.get_payload() if isinstance(c, Message)]
            if ctype == "multipart/report" and not report_type:
                report_type = (_param(part, "report-type") or "?").lower()
                second = children[1] if len(children) > 1 else None
            stack.extend((child, depth + 1) for child in reversed(children))
    return _Parts(tuple(dsn), tuple(mdn), returned, first_text, report_type, second)


def _param(part: Message, name: str) -> str:
    value = part.get_param(name)
    if isinstance(value, tuple):  # RFC 2231 (charset, language, value)
        value = value[2]
    return str(value) if value else ""


def _is_text(part: Message | None) -> bool:
    return part is not None and part.get_content_maintype() == "text"


def _part_text(part: Message) -> str:
    """The text of a report or returned part however the parser stored it (blocks or body)."""
    # Not get_payload() to look: without decode=True it decodes a body with 8-bit bytes with
    # the part's charset, and a charset such as "idna" or "punycode" raises there.
    if part.is_multipart():
        # The stdlib parses message/* parts as header blocks; written back they are the text.
        payload = part.get_payload()
        blocks = payload[:MAX_BLOCKS] if isinstance(payload, list) else []
        data = b"".join(_as_bytes(p) for p in blocks if isinstance(p, Message))
        cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        if cte in ("base64", "quoted-printable"):
            data = _decode_cte(data, cte)
    else:
        decoded = part.get_payload(decode=True)
        data = decoded if isinstance(decoded, bytes) else b""
    return _text_of(data[:MAX_INPUT], _param(part, "charset"))


def _as_bytes(msg: Message) -> bytes:
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=policy.compat32).flatten(msg)
    return out.getvalue()


def _decode_cte(data: bytes, cte: str) -> bytes:
    import base64
    import binascii
    import quopri

    if cte == "base64":
        try:
            return base64.b64decode(b"".join(data.split()), validate=False)
        except (binascii.Error, ValueError):
            return b""
    return quopri.decodestring(data)


def _text_of(data: bytes, charset: str) -> str:
    for name in (charset or "utf-8", "utf-8"):
        try:
            text = data.decode(name)
            break
        # ValueError: codecs such as "idna" raise UnicodeError itself, a NUL in the name
        # ValueError.
        except (LookupError, ValueError):
            continue
    else:
        text = data.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --- RFC 3464 and RFC 8098 fields -----------------------------------------------------------


def _field_blocks(text: str) -> list[dict[str, str]]:
    """Header-like blocks separated by blank lines; folded lines unfolded, first field wins."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
                if len(blocks) >= MAX_BLOCKS:
                    return blocks
            current, last = {}, ""
        elif line[0] in " \t":
            if last:
                current[last] = f"{current[last]} {line.strip()}"
        else:
            name, colon, value = line.partition(":")
            name = name.strip().lower()
            if colon and name and " " not in name:
                last = name if name not in current else ""
                if last:
                    current[name] = value.strip()
            else:
                last = ""
    if current:
        blocks.append(current)
    return blocks


def _typed_address(value: str) -> str:
    """``rfc822; a@b`` or ``utf-8; ł@b`` (RFC 3464, RFC 6533) as a plain address."""
    addr_type, semi, rest = value.partition(";")
    if not semi:
        rest, addr_type = value, ""
    if addr_type.strip().lower() == "utf-8":
        rest = decode_utf8_addr(rest)
    return normalize_address(rest)


def _typed_text(value: str) -> str:
    """``smtp; 550 …`` → ``550 …`` (the diagnostic type is not part of the text)."""
    kind, semi, rest = value.partition(";")
    if semi and re.fullmatch(r"\s*[A-Za-z][A-Za-z0-9-]{0,20}\s*", kind):
        return collapse(rest)
    return collapse(value)


def _read_dsn(parts: _Parts) -> DeliveryReport:
    sources = parts.dsn or ((parts.second,) if parts.second is not None else ())
    evidence: list[str] = []
    recipients: list[ReportRecipient] = []
    reporter = ""
    envelope_id = ""
    for part in sources:
        text = _part_text(part)
        evidence.append(text)
        for block in _field_blocks(text):
            reporter = reporter or _typed_text(block.get("reporting-mta", ""))
            envelope_id = envelope_id or block.get("x-original-message-id", "")
            recipient = _dsn_recipient(block)
            if recipient is not None and len(recipients) < MAX_RECIPIENTS:
                recipients.append(recipient)
    original = _returned_message_id(parts.returned) or _first_msg_id(envelope_id)
    return DeliveryReport(
        kind="dsn",
        recipients=tuple(recipients),
        original_message_id=original,
        reporter=reporter,
        evidence="\n".join(evidence)[:MAX_EVIDENCE],
    )


_DEFAULT_STATUS = {"failed": "5.0.0", "delayed": "4.0.0"}
# What real MTAs write in Action: besides RFC 3464's words (OpenSMTPD "error", old
# Sendmail-alikes "failure").
_ACTIONS = {"failure": "failed", "error": "failed", "fail": "failed", "delay": "delayed"}


def _dsn_recipient(block: dict[str, str]) -> ReportRecipient | None:
    final = _typed_address(block.get("final-recipient", ""))
    final = final if plausible_address(final) else ""
    address = _typed_address(block.get("original-recipient", ""))
    address = address if plausible_address(address) else final
    if not address:
        return None
    action = (collapse(block.get("action", ""), 40).lower().split(" ") or [""])[0]
    action = _ACTIONS.get(action, action)
    diagnostic = _typed_text(block.get("diagnostic-code", ""))
    status_text = block.get("status", "")
    status = enhanced_status(status_text)
    detailed = enhanced_status(diagnostic)
    if not status or (status.endswith(".0.0") and detailed[:1] == status[:1]):
        # Exim writes "Status: 5.0.0" whatever the remote said; its reply has the real detail.
        status = detailed or status
    if not status and action in _DEFAULT_STATUS:
        # "Status: 553 Exceeded maximum inbound message size": a reply code, not RFC 3463.
        status = infer_status(f"{status_text} {diagnostic}", _DEFAULT_STATUS[action])
    if not status:
        status = "2.0.0" if action else ""
    if not action:
        action = {"5": "failed", "4": "delayed", "2": "delivered"}.get(status[:1], "")
    entry = _entry(address, action, status, diagnostic, context=status_text)
    return replace(entry, final_recipient=final)


def _entry(
    address: str, action: str, status: str, diagnostic: str, *, context: str = ""
) -> ReportRecipient:
    """A report's entry, its reason and permanence read from ``status`` and the text."""
    reason = None
    if action in ("failed", "delayed"):
        reason = classify(status, f"{diagnostic} {context}")
    return ReportRecipient(
        address=address,
        action=action,
        status=status,
        permanent=action == "failed" and reason is not None and is_permanent(reason, status),
        diagnostic=diagnostic,
        reason=reason,
    )


def _read_mdn(msg: Message, parts: _Parts) -> DeliveryReport:
    sources = parts.mdn or ((parts.second,) if parts.second is not None else ())
    texts = [_part_text(p) for p in sources]
    fields: dict[str, str] = {}
    for text in texts:
        for block in _field_blocks(text):
            for name, value in block.items():
                fields.setdefault(name, value)
    address = (
        _typed_address(fields.get("final-recipient", ""))
        or _typed_address(fields.get("original-recipient", ""))
        or sender_address(msg)
    )
    disposition = collapse(fields.get("disposition", ""))
    # "manual-action/MDN-sent-manually; displayed" (RFC 2298 allowed "displayed/error").
    action = disposition.partition(";")[2].strip().split("/")[0].strip().lower()
    details = [disposition] + [
        collapse(fields[name]) for name in ("error", "failure", "warning") if fields.get(name)
    ]
    if "rejected" in header_text(msg, "Auto-Submitted").lower() and parts.first_text is not None:
        # Dovecot's rejection says why only in its human-readable part.
        details.append(_part_text(parts.first_text))
    recipients: tuple[ReportRecipient, ...] = ()
    if address and action:
        entry = ReportRecipient(
            address=address,
            action=action,
            status="",
            permanent=False,
            diagnostic=collapse(" — ".join(d for d in details if d)),
        )
        if is_rejection(entry):  # why the store refused it: "Quota exceeded", …
            entry = replace(entry, reason=classify("", entry.diagnostic))
        recipients = (entry,)
    original = _first_msg_id(fields.get("original-message-id", "")) or _returned_message_id(
        parts.returned
    )
    return DeliveryReport(
        kind="mdn",
        recipients=recipients,
        original_message_id=original,
        reporter=collapse(fields.get("reporting-ua", ""), 200),
        evidence="\n".join(texts)[:MAX_EVIDENCE],
    )


def _first_msg_id(value: str) -> str | None:
    match = _MSG_ID.search(value)
    return match.group(0) if match else None


def _returned_message_id(part: Message | None) -> str | None:
    """The Message-ID of the returned message or header (RFC 3462 text/rfc822-headers etc.)."""
    if part is None:
        return None
    if part.is_multipart():  # (not get_payload() to look: see _part_text)
        inner = next((p for p in part.get_payload() if isinstance(p, Message)), None)
        return _first_msg_id(str(inner.get("Message-ID", ""))) if inner is not None else None
    return message_id_in(_part_text(part)[:MAX_BODY])


# --- Non-standard bounces -------------------------------------------------------------------


def _more_parts_than(msg: Message, limit: int) -> bool:
    """Whether ``msg`` has more than ``limit`` parts, delivery-status blocks included."""
    stack, count = [msg], 0
    while stack:
        count += 1
        if count > limit:
            return True
        part = stack.pop()
        if part.is_multipart():
            stack.extend(p for p in part.get_payload() if isinstance(p, Message))
    return False


def _read_plain(msg: Message, parts: _Parts, raw: bytes) -> DeliveryReport | None:
    """A bounce in another shape, if mail software sent it and a detector knows it."""
    source = parts.first_text if parts.first_text is not None else msg
    body = "" if source.is_multipart() else _part_text(source)[:MAX_BODY]
    flufl_input = msg if len(raw) <= MAX_FLUFL_INPUT else _parse(raw[:MAX_FLUFL_INPUT])
    crowded = _more_parts_than(flufl_input, MAX_PARTS)
    detection = read_plain(msg, body, None if crowded else flufl_input)
    if detection is None or not detection.findings:
        return None
    recipients = tuple(
        _entry(f.address, f.action, f.status, collapse(f.diagnostic)) for f in detection.findings
    )
    original = detection.original_message_id or _returned_message_id(parts.returned)
    return DeliveryReport(
        kind="dsn",
        recipients=recipients,
        original_message_id=original,
        reporter=detection.detector,
        evidence=detection.excerpt[:MAX_EXCERPT],
    )
