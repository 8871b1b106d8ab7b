"""Bounces without a usable standard report: the stages after the RFC 3464/8098 reader.

1. flufl.bounce's detectors (GNU Mailman's, a dependency): which addresses failed, permanently
   or temporarily. They know two decades of real producers (AOL, Yahoo, Exim, qmail, Exchange,
   GroupWise, SMTP32, "simple match" wordings, …) but say nothing of why.
2. Our own detectors (``formats.DETECTORS``) for what flufl.bounce misses.

flufl.bounce decides who failed; the status, diagnostic and reason of each of its addresses
come from our detector when one recognises the same message (a producer's own wording also
tells a delay warning from a failure), else from the lines of the text that name the address.

Only a message that mail software sent reaches either stage (``sent_by_mail_software``): a
person's forward, reply or vacation notice may quote a bounce and is none. A wrong reading is
still contained: the VERP token names the delivery, and the sink credits a report only when it
names that delivery's address.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from email.header import decode_header, make_header
from email.message import Message

from flufl.bounce import all_failures

from mailsvc.domain.header_addresses import header_addresses
from mailsvc.receipts.formats import DETECTORS
from mailsvc.receipts.formats.common import (
    MAX_EXCERPT,
    Detection,
    Finding,
    PlainBounce,
    collapse,
    infer_status,
    message_id_in,
    normalize_address,
    plausible_address,
)

__all__ = ["FLUFL", "header_text", "read_plain", "sender_address", "sent_by_mail_software"]

log = logging.getLogger(__name__)

FLUFL = "flufl.bounce"  # the reporter named for what its detectors found
MAX_FLUFL_ADDRESSES = 1000
_CONTEXT_LINES = 6  # lines read after the one naming an address, up to a blank line

# flufl.bounce logs each detector it runs at INFO and a traceback before re-raising a
# detector's error; both are noise here (errors are caught and logged below, once).
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

# Forwards and replies quote bounces; what a person sends on is never itself a bounce.
_HUMAN_SUBJECT = re.compile(r"^\s*(?:re|fw|fwd|pd|odp|aw|wg|tr|rv|sv|vs)\s*(?:\[\d+\])?\s*:", re.I)
# Mail software's names, compared with letters only ("Mail.Delivery.System", "MAILER-DAEMON").
_SOFTWARE_NAMES = (
    "mailerdaemon",
    "maildaemon",
    "mdaemon",
    "postmaster",
    "maildelivery",
    "deliverysubsystem",
    "deliverysystem",
    "mailadministrator",
    "systemadministrator",
    "microsoftexchange",
)
# A bounce's subject, for senders that use a plain address without a name (gateways, scanners).
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|non-?deliver|deliver\w*\W+(?:fail|error|problem|warn|status|notif|report|delay)|"
    r"(?:fail|error)\w*\W+(?:deliver|notice)|not\W+(?:be\W+)?delivered|returned\W+(?:mail|to)|"
    r"mail\W+(?:system\W+)?error|bounce|niedostarcz|nie\W+dostarczono",
    re.IGNORECASE,
)
_AUTO_REPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Vacation")


def read_plain(msg: Message, body: str, for_flufl: Message | None) -> Detection | None:
    """The failures a non-standard bounce reports, or None. ``body`` is the text of its
    human-readable part ("" when it has none that a detector can read); ``for_flufl`` the
    message flufl.bounce reads, ``msg`` itself or its beginning (None: flufl.bounce is not
    asked; its detectors take time in proportion to every line of every part)."""
    if not sent_by_mail_software(msg):
        return None
    bounce = PlainBounce(
        subject=header_text(msg, "Subject"),
        sender=sender_address(msg),
        body=body,
        failed_recipients=tuple(
            filter(None, map(normalize_address, header_text(msg, "X-Failed-Recipients").split(",")))
        ),
    )
    ours = _own_detection(bounce) if body else None
    temporary, permanent = _flufl(for_flufl) if for_flufl is not None else ([], [])
    if not temporary and not permanent:
        return ours
    return _with_details(temporary, permanent, ours, body)


def sent_by_mail_software(msg: Message) -> bool:
    """Sent by mail software (MAILER-DAEMON, postmaster, Exchange, a gateway without a name),
    not a person's forward, reply or vacation notice (those are sent with an empty Return-Path
    too, so that is no sign)."""
    subject = header_text(msg, "Subject")
    if _HUMAN_SUBJECT.match(subject):
        return False
    if "vacation" in header_text(msg, "Auto-Submitted").lower():
        return False
    if any(msg.get(name) is not None for name in _AUTO_REPLY_HEADERS):
        return False
    pairs = header_addresses([str(msg.get("From", ""))[:1000]]) or []
    name, address = pairs[0] if pairs else ("", "")
    if "@" not in address:
        if msg.get("From") is not None:
            return True  # "From: Mail Delivery System <>", "From: MAILER-DAEMON"
        return_path = str(msg.get("Return-Path", ""))
        return return_path.strip() == "<>" or _software_name(return_path)
    local = address.rpartition("@")[0]
    if _software_name(local) or _software_name(name):
        return True
    # A gateway or scanner signs with a bare address; a person's mail program adds a name.
    return not name.strip() and bool(_BOUNCE_SUBJECT.search(subject))


def _software_name(text: str) -> bool:
    letters = re.sub(r"[^a-z]", "", text.lower())
    return any(name in letters for name in _SOFTWARE_NAMES)


def _own_detection(bounce: PlainBounce) -> Detection | None:
    for detector in DETECTORS:
        detection = detector.detect(bounce)
        if detection is None:
            continue
        findings = tuple(f for f in detection.findings if plausible_address(f.address))
        if findings:
            return replace(detection, findings=findings)
    return None


def _flufl(msg: Message) -> tuple[list[str], list[str]]:
    """flufl.bounce's (temporary, permanent) addresses, normalised, implausible ones dropped."""
    try:
        temporary, permanent = all_failures(msg)
    except Exception as exc:  # its detectors raise on malformed input (a From with no address)
        log.info("flufl.bounce could not read a report: %s: %s", type(exc).__name__, exc)
        return [], []
    return _addresses(temporary), _addresses(permanent)


def _addresses(found: frozenset[bytes]) -> list[str]:
    addresses = []
    for raw in sorted(found)[:MAX_FLUFL_ADDRESSES]:
        address = normalize_address(raw.decode("ascii", errors="replace"))
        if plausible_address(address) and address not in addresses:
            addresses.append(address)
    return addresses


def _with_details(
    temporary: list[str], permanent: list[str], ours: Detection | None, body: str
) -> Detection:
    known = {f.address.lower(): f for f in ours.findings} if ours is not None else {}
    lines = body.split("\n")
    single = len(set(temporary) | set(permanent)) == 1
    findings = []
    for address, action in [(a, "failed") for a in permanent] + [
        (a, "delayed") for a in temporary if a not in permanent
    ]:
        finding = known.get(address.lower())
        if finding is None:
            context = _context(lines, address) or (body[:MAX_EXCERPT] if single else "")
            default = "5.0.0" if action == "failed" else "4.0.0"
            finding = Finding(address, action, infer_status(context, default), collapse(context))
        findings.append(finding)
    findings.sort(key=lambda f: (_position(body, f.address), f.address))
    return Detection(
        detector=FLUFL if ours is None else f"{FLUFL}+{ours.detector}",
        findings=tuple(findings),
        excerpt=ours.excerpt if ours is not None else body.strip()[:MAX_EXCERPT],
        original_message_id=(
            ours.original_message_id if ours is not None else message_id_in(body[:MAX_EXCERPT])
        ),
    )


def _context(lines: list[str], address: str) -> str:
    """The line naming ``address`` and the lines after it, up to a blank line: where plain
    bounces put the remote server's reply."""
    wanted = address.lower()
    for index, line in enumerate(lines):
        if wanted in line.lower():
            chosen = [line.strip()]
            for following in lines[index + 1 : index + 1 + _CONTEXT_LINES]:
                if not following.strip():
                    break
                chosen.append(following.strip())
            return "\n".join(chosen)
    return ""


def _position(body: str, address: str) -> int:
    at = body.lower().find(address.lower())
    return at if at >= 0 else len(body)


def header_text(msg: Message, name: str) -> str:
    """A header decoded (RFC 2047) and collapsed; "" when missing or unreadable."""
    value = msg.get(name)
    if value is None:
        return ""
    text = str(value)
    try:
        text = str(make_header(decode_header(text)))
    except (ValueError, LookupError, UnicodeError):
        pass
    return collapse(text, 1000)


def sender_address(msg: Message) -> str:
    """The From address (domain lowercased), or ""."""
    for _name, address in header_addresses([str(msg.get("From", ""))[:1000]]) or []:
        normalized = normalize_address(address)
        if normalized:
            return normalized
    return ""
