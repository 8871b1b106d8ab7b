"""DKIM (RFC 6376) with dkimpy: every signature (up to a limit) verified, keys asked of ``_Dns``.

dkimpy's ``DKIM.verify(dnsfunc=...)`` takes the TXT lookup function; ours is a closure over the
message's ``_Dns``.
"""

from __future__ import annotations

import binascii
import dataclasses
import logging
import re
from dataclasses import dataclass
from typing import Any, Final

import dkim

from mailsvc.relay.smtp.authres.dns import _Dns, _DnsTemporaryFailure
from mailsvc.relay.smtp.authres.message import _header_block, _text
from mailsvc.relay.smtp.authres.results import FAIL, NEUTRAL, NONE, PASS, PERMERROR, TEMPERROR

log = logging.getLogger(__package__)  # the package's logger, as before the split

# Signatures beyond this many are not verified: each costs a DNS query and an RSA operation, and
# a sender gains nothing legitimate from more.
MAX_DKIM_SIGNATURES: Final = 5


@dataclass(frozen=True)
class _Signature:
    result: str
    domain: str = ""
    selector: str = ""
    b_prefix: str = ""


class _SenderProblems(logging.LoggerAdapter[logging.Logger]):
    """dkimpy logs a sender's bad key or signature as an error; for us it is a result, so debug."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(min(level, logging.DEBUG), msg, *args, **kwargs)


_dkim_log = _SenderProblems(logging.getLogger(__name__ + ".dkim"))
_DKIM_HEADER = re.compile(rb"^dkim-signature[ \t]*:", re.IGNORECASE | re.MULTILINE)


def _has_dkim_signature(message: bytes) -> bool:
    return _DKIM_HEADER.search(_header_block(message)) is not None


def _check_dkim(lookups: _Dns, message: bytes) -> list[_Signature]:
    try:
        verifier = dkim.DKIM(message, logger=_dkim_log)
    except Exception:
        return [_Signature(NEUTRAL)]  # signed, but the message cannot even be parsed
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    return [
        _verify_signature(verifier, idx, lookups) for idx in range(min(count, MAX_DKIM_SIGNATURES))
    ]


def _verify_signature(verifier: dkim.DKIM, idx: int, lookups: _Dns) -> _Signature:
    try:
        sig, _include, _headers = verifier.verify_headerprep(idx)
    except Exception:
        # Syntax errors, missing tags, expired: RFC 8601 calls that neutral.
        return _Signature(NEUTRAL)
    known = _Signature(
        NEUTRAL,
        domain=_text(sig.get(b"d", b"")).lower(),
        selector=_text(sig.get(b"s", b"")),
        b_prefix=re.sub(r"\s+", "", _text(sig.get(b"b", b"")))[:8],
    )
    keys: dict[str, bytes | None] = {}

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace").rstrip(".")
        records = lookups.txt(text)  # _DnsTemporaryFailure goes through dkimpy untouched
        keys[text] = records[0] if records else None
        return keys[text]

    try:
        verified = verifier.verify(idx=idx, dnsfunc=dnsfunc)
    except _DnsTemporaryFailure:
        return dataclasses.replace(known, result=TEMPERROR)
    except dkim.ValidationError:
        return dataclasses.replace(known, result=FAIL)  # the body hash did not match
    except dkim.KeyFormatError:
        return dataclasses.replace(known, result=PERMERROR)  # e.g. key too short
    except dkim.DKIMException:
        return known
    except Exception:
        log.exception("DKIM verification of d=%s failed unexpectedly", known.domain)
        return dataclasses.replace(known, result=TEMPERROR)
    if verified:
        return dataclasses.replace(known, result=PASS)
    # dkimpy answers False both for a bad signature and for a key it could not get or parse;
    # RFC 6376 makes the latter a permanent error, not a failed verification.
    if not keys or all(key is None for key in keys.values()):
        return dataclasses.replace(known, result=PERMERROR)
    for name, key in keys.items():
        try:
            dkim.evaluate_pk(name.encode("ascii", "replace"), key)
        except (dkim.DKIMException, binascii.Error, ValueError, TypeError):
            return dataclasses.replace(known, result=PERMERROR)
    return dataclasses.replace(known, result=FAIL)


_DKIM_PRECEDENCE: Final = (PASS, TEMPERROR, FAIL, PERMERROR, NEUTRAL)


def _dkim_summary(signatures: list[_Signature]) -> str:
    """pass if any signature passes; otherwise the most telling of the others."""
    if not signatures:
        return NONE
    seen = {s.result for s in signatures}
    return next((result for result in _DKIM_PRECEDENCE if result in seen), NEUTRAL)
