"""DragonFly Mail Agent (dma), which flufl.bounce does not know: "This is the DragonFly Mail
Agent vX at HOST." then "There was an error delivering your mail to <addr>." and the reason.
dma writes one such notice per recipient, and only when it has given up."""

from __future__ import annotations

import re

from mailsvc.receipts.formats.common import (
    TOP_LINES,
    Detection,
    Finding,
    PlainBounce,
    collapse,
    excerpt,
    infer_status,
    line_index,
    message_id_after,
    normalize_address,
    top_index,
)

ID = "dragonfly"

MARKER = "This is the DragonFly Mail Agent"
COPY_MARKERS = ("Original message follows.", "Message headers follow.")
_TARGET = re.compile(r"^There was an error delivering your mail to <([^<>\s]{1,320})>\.?$")


def detect(bounce: PlainBounce) -> Detection | None:
    lines = bounce.body.split("\n")
    start = top_index(lines, MARKER)
    if start < 0:
        return None
    for index in range(start + 1, min(len(lines), start + TOP_LINES)):
        match = _TARGET.match(lines[index].strip())
        if match:
            break
    else:
        return None
    address = normalize_address(match.group(1))
    end = line_index(lines, index, *COPY_MARKERS)
    reason = collapse(" ".join(lines[index + 1 : end if end >= 0 else None]))
    findings = (Finding(address, "failed", infer_status(reason, "5.0.0"), reason),)
    return Detection(
        detector=ID,
        findings=findings if address else (),
        excerpt=excerpt(lines, start, end),
        original_message_id=next(
            (m for m in (message_id_after(bounce.body, c) for c in COPY_MARKERS) if m), None
        ),
    )
