"""Microsoft Exchange / Office 365 plain-text non-delivery reports (when no report part came):

- Exchange 2007 and later: "Delivery has failed to these recipients or groups:" then each
  address and its explanation; "Diagnostic information for administrators:" then each address
  and its ``#550 5.1.1 …`` line.
- Exchange 2000/2003: "Your message … did not reach the following recipient(s):" then
  ``addr on DATE`` lines with indented reasons ending in ``<host #5.1.1>``.
"""

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

ID = "exchange"

MODERN = (
    "Delivery has failed to these recipients or groups:",
    "Delivery has failed to these recipients or distribution lists:",
)
DIAGNOSTIC = "Diagnostic information for administrators:"
LEGACY = ("did not reach the following recipient(s):", "did not reach the following recipient:")
ORIGINAL = "Original message headers:"
_SEPARATOR = "____"


def detect(bounce: PlainBounce) -> Detection | None:
    """Exchange's wording, modern or legacy."""
    lines = bounce.body.split("\n")
    start = top_index(lines, *MODERN)
    if start >= 0:
        return _modern(bounce, lines, start)
    start = top_index(lines, *LEGACY)
    if start >= 0:
        return _legacy(lines, start)
    return None


def _first_token_address(line: str) -> str:
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return ""
    first = stripped.split()[0].split("<mailto:")[0]
    return normalize_address(first) if "@" in first else ""


def _modern(bounce: PlainBounce, lines: list[str], start: int) -> Detection:
    diagnostic_at = line_index(lines, start, DIAGNOSTIC)
    end = diagnostic_at if diagnostic_at > 0 else len(lines)
    reasons: dict[str, list[str]] = {}
    current = ""
    for line in lines[start + 1 : end]:
        if line.strip().startswith(_SEPARATOR):
            break
        address = _first_token_address(line)
        if address:
            current = address
            reasons.setdefault(current, [])
        elif current and line.strip():
            reasons[current].append(line.strip())
    codes: dict[str, str] = {}
    if diagnostic_at > 0:
        current = ""
        for line in lines[diagnostic_at + 1 :]:
            if line.strip().startswith(ORIGINAL):
                break
            address = _first_token_address(line)
            if address:
                current = address
            elif current and line.strip() and current not in codes:
                codes[current] = line.strip()
    findings = []
    for address, reason_lines in reasons.items():
        code = codes.get(address, "")
        status = infer_status(code, "") or infer_status(" ".join(reason_lines), "5.0.0")
        action = "delayed" if status.startswith("4") else "failed"
        findings.append(Finding(address, action, status, code or " ".join(reason_lines)))
    return Detection(
        detector=ID,
        findings=tuple(findings),
        excerpt=excerpt(lines, start, line_index(lines, start, ORIGINAL)),
        original_message_id=message_id_after(bounce.body, ORIGINAL),
    )


def _legacy(lines: list[str], start: int) -> Detection:
    entries: list[tuple[str, list[str]]] = []
    for line in lines[start + 1 :]:
        stripped = line.strip()
        if not line.startswith((" ", "\t")) and " on " in stripped:
            address = _first_token_address(stripped.split(" on ")[0])
            if address:
                entries.append((address, []))
                continue
        if stripped and entries and line.startswith((" ", "\t")):
            entries[-1][1].append(stripped)
    findings = tuple(
        Finding(address, "failed", infer_status(" ".join(reason), "5.0.0"), " ".join(reason))
        for address, reason in entries
    )
    return Detection(detector=ID, findings=findings, excerpt=excerpt(lines, max(start - 8, 0), -1))
