"""Exim's plain bounce and delay warning (before Exim sent RFC 3464 reports):
"This message was created automatically by mail delivery software." then indented addresses,
each followed by its more deeply indented reason."""

from __future__ import annotations

import re

from mailsvc.receipts.formats.common import (
    Detection,
    Finding,
    PlainBounce,
    excerpt,
    infer_status,
    line_containing,
    line_index,
    message_id_after,
    normalize_address,
    top_index,
)

ID = "exim"

MARKER = "This message was created automatically by mail delivery software."
FAILED_LIST = ("The following address(es) failed:", "The following addresses failed:")
DELAYED_LIST = (
    "The address to which the message has not yet been delivered is:",
    "The addresses to which the message has not yet been delivered are:",
)
COPY_MARKERS = (
    "------ This is a copy of the message, including all the headers.",
    "------ This is a copy of the message's headers.",
    "------ This is a copy of the body of the message",
)
_ADDRESS_LINE = re.compile(r"^ {1,3}(\S.*)$")  # two spaces in Exim's own text
_REASON_LINE = re.compile(r"^ {4,}(\S.*)$")


def detect(bounce: PlainBounce) -> Detection | None:
    """Exim's wording; a failure list gives ``failed``, a delay warning ``delayed``."""
    lines = bounce.body.split("\n")
    start = top_index(lines, MARKER)
    if start < 0:
        return None
    # Exim fills its paragraphs: the list's heading may end a line that began with other words.
    failed_at = line_containing(lines, start, *FAILED_LIST)
    delayed_at = line_containing(lines, start, *DELAYED_LIST)
    if failed_at >= 0:
        action, default, list_at = "failed", "5.0.0", failed_at
    elif delayed_at >= 0:
        action, default, list_at = "delayed", "4.0.0", delayed_at
    else:
        return None
    entries: list[tuple[str, list[str]]] = []
    for line in lines[list_at + 1 :]:
        if line.strip().startswith(COPY_MARKERS):
            break
        reason_match = _REASON_LINE.match(line)
        address_match = _ADDRESS_LINE.match(line)
        if reason_match and entries:
            entries[-1][1].append(reason_match.group(1))
        elif address_match:
            entries.append((address_match.group(1), []))
        elif line.strip() and entries:
            break  # Exim's closing prose: the list has ended
    findings = []
    for address, reason_lines in entries:
        normalized = normalize_address(address.split(" ")[0])
        if normalized:
            reason = " ".join(reason_lines)
            findings.append(Finding(normalized, action, infer_status(reason, default), reason))
    end = line_index(lines, start, *COPY_MARKERS)
    return Detection(
        detector=ID,
        findings=tuple(findings),
        excerpt=excerpt(lines, start, end),
        original_message_id=next(
            (m for m in (message_id_after(bounce.body, c) for c in COPY_MARKERS) if m), None
        ),
    )
