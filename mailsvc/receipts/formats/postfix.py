"""Postfix without DSN (before 2.3, or a notice stripped of its report part):
"This is the mail system at host HOST." … "The mail system" then ``<addr>: reason`` lines."""

from __future__ import annotations

from mailsvc.receipts.formats.common import (
    Detection,
    Finding,
    PlainBounce,
    angle_blocks,
    excerpt,
    infer_status,
    normalize_address,
    top_index,
)

ID = "postfix"

MARKERS = ("This is the mail system at host ", "This is the Postfix program at host ")
WARNING = "THIS IS A WARNING ONLY"
# Postfix also writes success notices ("successfully delivered"): only these wordings fail.
FAILURE = ("could not be delivered", "could not deliver")


def detect(bounce: PlainBounce) -> Detection | None:
    """Postfix's wording; a delay warning gives ``delayed`` recipients."""
    lines = bounce.body.split("\n")
    start = top_index(lines, *MARKERS)
    if start < 0:
        return None
    intro = " ".join(" ".join(lines[start : start + 40]).split())
    delayed = WARNING in intro
    if not delayed and not any(wording in intro for wording in FAILURE):
        return None
    action, default = ("delayed", "4.0.0") if delayed else ("failed", "5.0.0")
    findings = []
    for address, reason in angle_blocks(lines, start + 1, ("Content-", "--")):
        normalized = normalize_address(address)
        if normalized:
            findings.append(Finding(normalized, action, infer_status(reason, default), reason))
    return Detection(detector=ID, findings=tuple(findings), excerpt=excerpt(lines, start, -1))
