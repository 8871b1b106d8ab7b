"""The Authentication-Results header field (RFC 8601): writing ours, removing forged ones.

* ``authentication_results_header(results)`` gives the header field to prepend, folded, with
  every client-supplied value made safe.
* ``remove_forged_results(message, authserv_id)`` removes from the incoming header every
  Authentication-Results field (folded lines included, name in any case) whose authserv-id is our
  own, compared case-insensitively: RFC 8601 section 5, so a resident cannot hand the councillor a
  "dkim=pass" in our host's name. Fields of other authserv-ids, the body and every other byte stay
  as sent. It works on bytes, looks only at the header block, and returns the message itself when
  that block does not mention Authentication-Results (the common case, for every message).
"""

from __future__ import annotations

import re
from typing import Final

from mailsvc.relay.smtp.authres.dkim import _Signature
from mailsvc.relay.smtp.authres.results import AuthResults

# Longest property value we copy into the header; keeps every line far below 998 octets.
_MAX_VALUE: Final = 255
_FOLD_AT: Final = 78


def authentication_results_header(results: AuthResults) -> bytes:
    """The whole header field, CRLF-terminated, folded before each result and at 78 columns."""
    name = "Authentication-Results:"
    lines: list[str] = []
    line = name
    for word in _words(_printable(results.header_value)):
        word = word[:900]  # only a hand-made AuthResults could carry a longer one
        if line == name or (not line.endswith(";") and len(line) + 1 + len(word) <= _FOLD_AT):
            line = f"{line} {word}"
        else:
            lines.append(line)
            line = f"\t{word}"
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~-]+"
_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_DOMAIN.pattern}")
_TOKEN = re.compile(r"[!#$%&'*+.0-9A-Z^_`a-z{|}~-]+")


def _printable(text: str) -> str:
    """Printable ASCII only: CR, LF, other controls and non-ASCII become '?'."""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)


def _pvalue(text: str) -> str:
    """An RFC 8601 property value: as is when a plain address, domain or token, else quoted."""
    text = text.strip()
    if len(text) <= _MAX_VALUE and (
        _ADDRESS.fullmatch(text) or _DOMAIN.fullmatch(text) or _TOKEN.fullmatch(text)
    ):
        return text
    safe = _printable(text)[:_MAX_VALUE].replace("\\", "\\\\").replace('"', '\\"')
    return f'"{safe}"'


def _domain_pvalue(domain: str) -> str:
    domain = domain.strip().rstrip(".")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    return _pvalue(domain)


def _authserv(authserv_id: str) -> str:
    return _pvalue(authserv_id) if authserv_id.strip() else "localhost"


def _header_value(
    *,
    authserv_id: str,
    spf_result: str,
    sender: str,
    helo: str,
    signatures: list[_Signature],
    dmarc_result: str,
    policy: str,
    from_domain: str,
) -> str:
    parts = [_authserv(authserv_id)]

    spf_part = f"spf={spf_result}"
    if sender:
        local, _at, domain = sender.rpartition("@")
        if local and domain and _ADDRESS.fullmatch(sender) and len(sender) <= _MAX_VALUE:
            spf_part += f" smtp.mailfrom={sender}"
        elif domain:
            spf_part += f" smtp.mailfrom={_domain_pvalue(domain)}"
        else:
            spf_part += f" smtp.mailfrom={_pvalue(sender)}"
    elif helo.strip():
        spf_part += f" smtp.helo={_domain_pvalue(helo)}"
    parts.append(spf_part)

    if not signatures:
        parts.append("dkim=none")
    for signature in signatures:
        dkim_part = f"dkim={signature.result}"
        if signature.domain:
            dkim_part += f" header.d={_domain_pvalue(signature.domain)}"
        if signature.selector:
            dkim_part += f" header.s={_pvalue(signature.selector)}"
        if signature.b_prefix:
            dkim_part += f" header.b={_pvalue(signature.b_prefix)}"
        parts.append(dkim_part)

    dmarc_part = f"dmarc={dmarc_result}"
    if policy:
        dmarc_part += f" (p={policy})"
    if from_domain:
        dmarc_part += f" header.from={_domain_pvalue(from_domain)}"
    parts.append(dmarc_part)
    return "; ".join(parts)


def _words(value: str) -> list[str]:
    """Split at spaces that are outside quoted strings and comments: the places we may fold."""
    words: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    depth = 0
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and (quoted or depth):
            escaped = True
        elif ch == '"' and not depth:
            quoted = not quoted
        elif ch == "(" and not quoted:
            depth += 1
        elif ch == ")" and not quoted and depth:
            depth -= 1
        elif ch == " " and not quoted and not depth:
            if current:
                words.append("".join(current))
                current = []
            continue
        current.append(ch)
    if current:
        words.append("".join(current))
    return words


# --- forged results --------------------------------------------------------------------------


def remove_forged_results(message: bytes, authserv_id: str) -> bytes:
    """``message`` without the Authentication-Results fields that claim ``authserv_id``.

    RFC 8601 section 5: only we may speak for our authserv-id, so such a field in an incoming
    message is a forgery (or a copy of an old result of ours) and must not reach the reader.
    Fields of other authserv-ids, the body and every other byte are returned unchanged.
    """
    size = _header_size(message)
    head = message[:size]
    if b"authentication-results" not in head.lower():
        return message
    own = _comparable(_own_authserv(authserv_id))
    kept: list[bytes] = []
    removed = False
    for field in _fields(head):
        if _claims(field, own):
            removed = True
        else:
            kept.append(field)
    if not removed:
        return message
    return b"".join(kept) + message[size:]


def _claims(field: bytes, own: str) -> bool:
    """Whether ``field`` is an Authentication-Results field of ``own``, or hides one after a
    bare CR: the email package and other readers end a line there too, and would see
    "Subject: x<CR>Authentication-Results: <ours>; dkim=pass" as two fields."""
    for start in (0, *(cr.end() for cr in _BARE_CR.finditer(field))):
        name = _RESULTS_NAME.match(field, start)
        if name is not None and _comparable(_authserv_id_of(field[name.end() :])) == own:
            return True
    return False


_BARE_CR = re.compile(rb"\r(?!\n)")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_RESULTS_NAME = re.compile(rb"authentication-results[ \t]*:", re.IGNORECASE)
# An RFC 2045 token ends at white space, controls and tspecials.
_VALUE_TOKEN = re.compile(r'[^\x00-\x20\x7f()<>@,;:\\"/\[\]?=]*')


def _header_size(message: bytes) -> int:
    """Length of the header fields, up to and including the line end before the blank line.

    0 when the message starts with a blank line (no header at all); the whole message when
    there is no blank line (a message may be all header).
    """
    if message.startswith((b"\r\n", b"\n")):
        return 0
    blank = _BLANK_LINE.search(message)
    return blank.start() + 1 if blank else len(message)


def _fields(head: bytes) -> list[bytes]:
    """The header fields, each with its continuation lines and line ends, exactly as sent."""
    fields: list[bytes] = []
    start = pos = 0
    while pos < len(head):
        newline = head.find(b"\n", pos)
        pos = len(head) if newline < 0 else newline + 1
        if pos < len(head) and head[pos] in (0x20, 0x09):
            continue  # folded: the next line belongs to this field
        fields.append(head[start:pos])
        start = pos
    return fields


def _own_authserv(authserv_id: str) -> str:
    """The authserv-id our own header carries (see ``_authserv``), unquoted."""
    return authserv_id.strip() or "localhost"


def _comparable(authserv_id: str) -> str:
    # A trailing dot names the same host; a forger must not get through with "host.".
    return authserv_id.strip().rstrip(".").lower()


def _authserv_id_of(value: bytes) -> str:
    """The authserv-id of an Authentication-Results value: after any CFWS, a token or a quoted
    string (RFC 8601 section 2.2); "" when there is none."""
    text = re.sub(r"[\r\n]", "", value.decode("utf-8", "replace"))  # unfold (bare CRs too)
    i, end, depth = 0, len(text), 0
    while i < end:  # skip white space and (nested, escaped) comments
        ch = text[i]
        if ch == "\\" and depth:
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth and ch not in " \t":
            break
        i += 1
    if i >= end:
        return ""
    if text[i] == '"':
        chars: list[str] = []
        i += 1
        while i < end and text[i] != '"':
            if text[i] == "\\" and i + 1 < end:
                i += 1
            chars.append(text[i])
            i += 1
        return "".join(chars)
    token = _VALUE_TOKEN.match(text, i)
    return token.group() if token else ""
