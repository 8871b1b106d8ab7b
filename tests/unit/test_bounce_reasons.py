"""Why a delivery failed: RFC 3463 codes and servers' wording read into one vocabulary."""

from __future__ import annotations

import pytest

from mailsvc.domain.bounce_reasons import NATURE, BounceReason, classify, is_permanent
from mailsvc.domain.vocabulary import REASON_LABELS, reason_label

R = BounceReason


@pytest.mark.parametrize(
    ("status", "text", "reason"),
    [
        # A specific code names its reason, whatever the text adds.
        ("5.1.1", "550 5.1.1 <a@b>: Recipient address rejected", R.USER_UNKNOWN),
        (
            "5.2.1",
            "550 5.2.1 The email account that you tried to reach is disabled",
            R.USER_UNKNOWN,
        ),
        ("5.1.2", "550 5.1.2 bad destination system", R.HOST_UNKNOWN),
        ("4.4.4", "", R.HOST_UNKNOWN),
        ("5.2.2", "552 5.2.2 Skrzynka odbiorcy jest przepełniona", R.MAILBOX_FULL),
        ("5.3.4", "552 5.3.4 Message size exceeds fixed limit", R.TOO_LARGE),
        ("5.2.3", "", R.TOO_LARGE),
        ("4.4.7", "451 4.4.7 Message delayed", R.EXPIRED),
        ("5.1.8", "553 5.1.8 sender domain does not exist", R.POLICY),
        # A generic or ambiguous code: the text decides.
        ("5.0.0", "550 Mailbox disabled", R.USER_UNKNOWN),
        (
            "5.0.0",
            "554: delivery error: This user doesn't have a yahoo.com account",
            R.USER_UNKNOWN,
        ),
        (
            "5.7.1",
            "554 5.7.1 <a@inbox.lv>: Recipient address rejected: Nonexistent user",
            R.USER_UNKNOWN,
        ),
        (
            "5.1.10",
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found",
            R.USER_UNKNOWN,
        ),
        ("5.0.0", "552 Quota exceeded (mailbox for user is full)", R.MAILBOX_FULL),
        ("5.0.0", "Mailbox size limit exceeded", R.MAILBOX_FULL),
        ("5.0.0", "553 Exceeded maximum inbound message size", R.TOO_LARGE),
        (
            "5.0.0",
            "Host or domain name not found. Name service error for name=x.example",
            R.HOST_UNKNOWN,
        ),
        ("5.0.0", "Unrouteable address", R.HOST_UNKNOWN),
        ("5.0.0", "550 Message rejected because it is listed at zen.spamhaus.org", R.POLICY),
        ("5.7.26", "550 5.7.26 Unauthenticated email is not accepted (DMARC)", R.POLICY),
        (
            "4.4.1",
            "I'm not going to try again; this message has been in the queue too long.",
            R.EXPIRED,
        ),
        ("5.0.0", "retry timeout exceeded", R.EXPIRED),
        # Nothing said: the code's subject, else other.
        ("5.1.0", "", R.USER_UNKNOWN),
        ("5.7.0", "", R.POLICY),
        ("4.3.0", "451 4.3.0 Temporary lookup failure", R.OTHER),
        ("", "", R.OTHER),
    ],
)
def test_classify(status: str, text: str, reason: BounceReason) -> None:
    assert classify(status, text) is reason


@pytest.mark.parametrize(
    ("reason", "status", "permanent"),
    [
        (R.USER_UNKNOWN, "4.0.0", True),  # an unknown user stays unknown
        (R.HOST_UNKNOWN, "5.1.2", True),
        (R.POLICY, "5.7.1", True),
        (R.TOO_LARGE, "5.3.4", True),
        (R.MAILBOX_FULL, "5.2.2", False),  # may have room tomorrow (as outcome.classify)
        (R.EXPIRED, "5.4.7", False),
        (R.OTHER, "5.0.0", True),  # no nature of its own: the class decides
        (R.OTHER, "4.0.0", False),
    ],
)
def test_permanence_follows_the_reason_then_the_class(
    reason: BounceReason, status: str, permanent: bool
) -> None:
    assert is_permanent(reason, status) is permanent


def test_every_reason_has_a_nature_and_both_labels() -> None:
    assert set(NATURE) == set(BounceReason) == set(REASON_LABELS)
    assert reason_label(R.MAILBOX_FULL, "pl") == "skrzynka pełna"
    assert reason_label("policy", "en") == "spam/policy block"
