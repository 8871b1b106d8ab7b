"""Gmail's plain-text notice (as sent before Gmail attached RFC 3464 reports):
"Delivery to the following recipient failed permanently:" then indented addresses and
"Technical details of permanent failure:"."""

from __future__ import annotations

from mailsvc.receipts.formats.common import (
    Detection,
    Finding,
    PlainBounce,
    excerpt,
    infer_status,
    line_index,
    message_id_after,
    normalize_address,
    top_index,
)

ID = "gmail"

FAILED = (
    "Delivery to the following recipient failed permanently:",
    "Delivery to the following recipients failed permanently:",
)
DELAYED = (
    "Delivery to the following recipient has been delayed:",
    "Delivery to the following recipients have been delayed:",
    "Delivery to the following recipient failed temporarily:",
)
DETAILS = "Technical details of "
ORIGINAL = "----- Original message -----"


def detect(bounce: PlainBounce) -> Detection | None:
    """Gmail's wording; the other server's reply in the technical details gives the status."""
    lines = bounce.body.split("\n")
    start = top_index(lines, *FAILED, *DELAYED)
    if start < 0:
        return None
    delayed = lines[start].strip().startswith(DELAYED)
    action, default = ("delayed", "4.0.0") if delayed else ("failed", "5.0.0")
    details_at = line_index(lines, start, DETAILS)
    original_at = line_index(lines, start, ORIGINAL)
    addresses = [
        normalize_address(line)
        for line in lines[start + 1 : details_at if details_at > 0 else start + 20]
        if line.startswith(" ") and line.strip()
    ]
    details = ""
    if details_at > 0:
        details = " ".join(lines[details_at + 1 : original_at if original_at > 0 else None])
    reply = details.partition("The error that the other server returned was:")[2] or details
    findings = tuple(
        Finding(a, action, infer_status(reply, default), details) for a in addresses if a
    )
    return Detection(
        detector=ID,
        findings=findings,
        excerpt=excerpt(lines, start, original_at),
        original_message_id=message_id_after(bounce.body, ORIGINAL),
    )
