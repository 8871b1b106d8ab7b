"""Why a message was not delivered, as a delivery report tells it: one small vocabulary.

A report names its reason in two ways: an RFC 3463 enhanced status code (``5.1.1``) and free text
from the remote server ("550 Mailbox full"). :func:`classify` reads the code first when it is
specific, then the text, then the code's subject alone. Each reason has a nature: a failure for
an unknown user is final, a full mailbox may have room tomorrow (the same rule the relay applies
to its own deliveries, see ``outcome.classify``). :func:`is_permanent` says which.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum


class BounceReason(StrEnum):
    USER_UNKNOWN = "user_unknown"  # no such mailbox, disabled or moved account
    MAILBOX_FULL = "mailbox_full"  # over quota, storage full
    HOST_UNKNOWN = "host_unknown"  # no such domain, no MX, cannot be routed
    POLICY = "policy"  # refused as spam, by a block list, for authentication or policy
    TOO_LARGE = "too_large"  # the message exceeds a size limit
    EXPIRED = "expired"  # given up after retrying for too long
    OTHER = "other"


# A failure for this reason is final (True) or may succeed later (False); None: the status
# code's class decides (5: final, 4: temporary).
NATURE: Mapping[BounceReason, bool | None] = {
    BounceReason.USER_UNKNOWN: True,
    BounceReason.HOST_UNKNOWN: True,
    BounceReason.POLICY: True,
    BounceReason.TOO_LARGE: True,
    BounceReason.MAILBOX_FULL: False,
    BounceReason.EXPIRED: False,
    BounceReason.OTHER: None,
}

# RFC 3463 subject.detail codes that name their reason without doubt. (Not X.1.10: RFC 7505's
# null MX, but Microsoft's "RecipientNotFound"; the text decides, else the subject.)
_BY_CODE: Mapping[str, BounceReason] = {
    "1.1": BounceReason.USER_UNKNOWN,  # bad destination mailbox address
    "1.3": BounceReason.USER_UNKNOWN,  # bad destination mailbox address syntax
    "1.6": BounceReason.USER_UNKNOWN,  # destination mailbox has moved
    "2.1": BounceReason.USER_UNKNOWN,  # mailbox disabled
    "1.2": BounceReason.HOST_UNKNOWN,  # bad destination system address
    "4.3": BounceReason.HOST_UNKNOWN,  # directory server (DNS) failure
    "4.4": BounceReason.HOST_UNKNOWN,  # unable to route
    "1.7": BounceReason.POLICY,  # bad sender's mailbox address syntax
    "1.8": BounceReason.POLICY,  # bad sender's system address
    "2.2": BounceReason.MAILBOX_FULL,
    "3.1": BounceReason.MAILBOX_FULL,  # mail system (storage) full
    "2.3": BounceReason.TOO_LARGE,  # message length exceeds administrative limit
    "3.4": BounceReason.TOO_LARGE,  # message too big for system
    "4.7": BounceReason.EXPIRED,  # delivery time expired
}

# What servers write, checked in this order: the more specific wording first ("mailbox size
# limit" is a full mailbox, not a large message; "blocked ... user" is a block).
_BY_TEXT: tuple[tuple[BounceReason, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern, re.IGNORECASE))
    for reason, pattern in (
        (
            BounceReason.MAILBOX_FULL,
            r"quota|mailbox (?:is )?full|mailbox size limit|(?:in)?box (?:is )?full|"
            r"exceeded storage|storage (?:allocation|limit)|"
            r"insufficient (?:disk )?(?:space|storage)|"
            r"user (?:is )?over|disk full|skrzynka\b.{0,30}(?:pełna|przepełniona)|przepełnion",
        ),
        (
            BounceReason.TOO_LARGE,
            r"too (?:large|big)|message size|size limit|exceeds? (?:the |our )?(?:maximum|size)|"
            r"maximum (?:\w+ )?(?:message )?size|message length exceeds|za duż",
        ),
        (
            BounceReason.POLICY,
            r"spam|junk mail|block ?list|black ?list|blocked|\blisted (?:at|in|on|by)\b|"
            r"polic(?:y|ies)|virus|malware|reputation|\b(?:dmarc|spf|dkim)\b|"
            r"not (?:authori[sz]ed|permitted|allowed)|access denied|relay(?:ing)? (?:denied|not)|"
            r"unable to relay|content (?:rejected|filter)|rejected (?:for|by|due to|as)",
        ),
        (
            BounceReason.HOST_UNKNOWN,
            r"host (?:or domain name )?not found|unknown host|host unknown|"
            r"domain (?:not found|does not exist|unknown|name not found)|no such domain|"
            r"\bno (?:mx|mail exchanger|route to host)\b|name ?server error|name service error|"
            r"unrout(?:e)?able|nxdomain|could not (?:be )?resolve|dns (?:error|failure)|"
            r"null mx|does not accept (?:e-?)?mail|nieznana domena",
        ),
        (
            BounceReason.USER_UNKNOWN,
            r"user unknown|unknown (?:user|recipient|mailbox|address|local[- ]?part|alias)|"
            r"no such (?:user|mailbox|recipient|address|account|person)|"
            r"(?:user|mailbox|recipient|address|account|addressee)\b.{0,40}"
            r"(?:does not|doesn't|did not|no longer) exist|"
            r"(?:user|mailbox|recipient|account|address)\b.{0,20}(?:not found|disabled|inactive|"
            r"unavailable|invalid|suspended|deactivated|not known)|"
            r"invalid (?:recipient|mailbox|address|user)|not a valid (?:user|mailbox|recipient)|"
            r"(?:doesn't|does not|don't) have an? .{0,30}account|"
            r"no mailbox|mailbox (?:not found|unavailable)|isn't a known user|"
            r"not listed in (?:the )?(?:domino|directory|address book)|undeliverable address|"
            r"recipient (?:address )?rejected|nieznany (?:użytkownik|adresat)|nie istnieje",
        ),
        (
            BounceReason.EXPIRED,
            r"expired|retry time(?:out)? (?:exceeded|reached)|in (?:the )?queue too long|"
            r"too (?:long|many days) in (?:the )?queue|could not be delivered (?:with)?in|"
            r"not (?:been )?delivered (?:with)?in|gave up|giving up|undeliverable for",
        ),
    )
)

# The code's subject alone, when neither the detail nor the text said more.
_BY_SUBJECT: Mapping[str, BounceReason] = {
    "1": BounceReason.USER_UNKNOWN,
    "7": BounceReason.POLICY,
}

_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")


def classify(status: str, text: str = "") -> BounceReason:
    """The reason for a failure with enhanced ``status`` ("5.1.1", or "") and server ``text``."""
    match = _STATUS.match(status.strip())
    subject = detail = ""
    if match:
        _cls, subject, detail = match.groups()
        by_code = _BY_CODE.get(f"{subject}.{detail}")
        if by_code is not None:
            return by_code
    for reason, pattern in _BY_TEXT:
        if pattern.search(text):
            return reason
    return _BY_SUBJECT.get(subject, BounceReason.OTHER)


def is_permanent(reason: BounceReason, status: str) -> bool:
    """Whether a failure for ``reason`` is final: by the reason's nature, else by the class of
    ``status`` (5.x.x final, 4.x.x temporary)."""
    nature = NATURE[reason]
    if nature is not None:
        return nature
    return status.startswith("5")
