"""Yahoo's (qmail-derived) bounce: "Sorry, we were unable to deliver your message to the following
address." then ``<addr>:`` blocks with "Remote host said: …"."""

from __future__ import annotations

from mailsvc.receipts.formats.common import (
    Detection,
    Finding,
    PlainBounce,
    angle_blocks,
    excerpt,
    infer_status,
    line_index,
    message_id_after,
    normalize_address,
    top_index,
)

ID = "yahoo"

MARKERS = (
    "Sorry, we were unable to deliver your message to the following address",
    "Unable to deliver message to the following address(es).",
)
COPY_MARKER = "--- Below this line is a copy of the message."


def detect(bounce: PlainBounce) -> Detection | None:
    """Yahoo's wording; every block is a failure: like qmail, it sends this only when it has
    given up ("(#4.4.1) I'm not going to try again" is a final failure for a temporary cause)."""
    lines = bounce.body.split("\n")
    start = top_index(lines, *MARKERS)
    if start < 0:
        return None
    findings = []
    for address, reason in angle_blocks(lines, start + 1, (COPY_MARKER,)):
        normalized = normalize_address(address)
        if normalized:
            findings.append(Finding(normalized, "failed", infer_status(reason, "5.0.0"), reason))
    return Detection(
        detector=ID,
        findings=tuple(findings),
        excerpt=excerpt(lines, start, line_index(lines, start, COPY_MARKER)),
        original_message_id=message_id_after(bounce.body, COPY_MARKER),
    )
