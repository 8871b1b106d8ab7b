"""qmail-send's bounce: "Hi. This is the qmail-send program at HOST." then ``<addr>:`` blocks."""

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

ID = "qmail"

MARKER = "Hi. This is the qmail-send program at "
COPY_MARKERS = (
    "--- Below this line is a copy of the message.",
    "--- Below this line is the original bounce.",
    "--- Enclosed are the original headers of the message.",
)


def detect(bounce: PlainBounce) -> Detection | None:
    """qmail's wording; every ``<addr>:`` block is a failure (qmail sends no delay notices)."""
    lines = bounce.body.split("\n")
    start = top_index(lines, MARKER)
    if start < 0:
        return None
    findings = []
    for address, reason in angle_blocks(lines, start + 1, COPY_MARKERS):
        normalized = normalize_address(address)
        if normalized:
            findings.append(Finding(normalized, "failed", infer_status(reason, "5.0.0"), reason))
    end = line_index(lines, start, *COPY_MARKERS)
    return Detection(
        detector=ID,
        findings=tuple(findings),
        excerpt=excerpt(lines, start, end),
        original_message_id=next(
            (m for m in (message_id_after(bounce.body, c) for c in COPY_MARKERS) if m), None
        ),
    )
