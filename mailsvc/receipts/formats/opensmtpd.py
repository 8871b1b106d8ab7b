"""OpenSMTPD's notice where no report part says more, which flufl.bounce does not know:
"This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail." then the kind of notice (an
error, or a delay warning) and ``addr: reason`` lines. (Its DSNs, whose ``Action: error`` is
not RFC 3464's word, are read by the standard reader.)"""

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

ID = "opensmtpd"

MARKERS = (
    "This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.",
    "This is the MAILER-DAEMON, please DO NOT REPLY to this email.",
)
FAILED = "An error has occurred while attempting to deliver a message"
DELAYED = "A message is delayed for more than"
COPY_MARKER = "Below is a copy of the original message"
# No "@" after the address's last one: with r"\S+@[^\s:]+" a long line of "@"s backtracked
# quadratically (a minute for a 64 kB line).
_RECIPIENT = re.compile(r"^(\S+@[^\s:@]+):\s*(.*)$")


def detect(bounce: PlainBounce) -> Detection | None:
    """OpenSMTPD's wording; an error notice gives ``failed``, a delay warning ``delayed``
    (success and relay notices give nothing)."""
    lines = bounce.body.split("\n")
    start = top_index(lines, *MARKERS)
    if start < 0:
        return None
    end = line_index(lines, start, COPY_MARKER)
    top = lines[start : end if end >= 0 else None]
    if line_containing(top, 0, FAILED) >= 0:
        action, default = "failed", "5.0.0"
    elif line_containing(top, 0, DELAYED) >= 0:
        action, default = "delayed", "4.0.0"
    else:
        return None
    findings = []
    for line in top:
        match = _RECIPIENT.match(line.strip())
        address = normalize_address(match.group(1)) if match else ""
        if match and address:
            reason = match.group(2)
            findings.append(Finding(address, action, infer_status(reason, default), reason))
    return Detection(
        detector=ID,
        findings=tuple(findings),
        excerpt=excerpt(lines, start, end),
        original_message_id=message_id_after(bounce.body, COPY_MARKER),
    )
