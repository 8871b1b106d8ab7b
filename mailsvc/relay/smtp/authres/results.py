"""The RFC 8601 result keywords, and one message's results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

PASS: Final = "pass"  # noqa: S105 (a result keyword, not a password)
FAIL: Final = "fail"
SOFTFAIL: Final = "softfail"
NEUTRAL: Final = "neutral"
NONE: Final = "none"
TEMPERROR: Final = "temperror"
PERMERROR: Final = "permerror"


@dataclass(frozen=True)
class AuthResults:
    """One message's results, each an RFC 8601 result keyword; ``header_value`` is unfolded."""

    spf: str
    dkim: str
    dmarc: str
    header_value: str
