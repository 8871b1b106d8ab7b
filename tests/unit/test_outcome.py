"""Delivery outcomes are classified once (mailsvc.domain.outcome), and a temporary fault of the
directory is never turned into a permanent refusal at the submission port."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiosmtpd.smtp import Envelope
from aiosmtpd.smtp import Session as SmtpSession

from mailsvc.config import DEFAULT_CONFIG, load_settings
from mailsvc.domain.outcome import Outcome, Reply, classify, enhanced_code, settle
from mailsvc.relay.smtp import replies
from mailsvc.relay.smtp.submission import SubmissionHandler
from provisioning.errors import DirectoryError, DirectoryUnavailable


@pytest.mark.parametrize(
    ("code", "text", "outcome"),
    [
        (250, "2.0.0 <x@y> Saved", Outcome.DELIVERED),
        (451, "4.3.0 Temporary internal failure", Outcome.TEMPORARY),
        (421, "4.4.2 Connection dropped", Outcome.TEMPORARY),
        (550, "5.1.1 <x@y> User doesn't exist", Outcome.PERMANENT),
        (554, "5.7.1 Rejected", Outcome.PERMANENT),
        # A full mailbox may have room tomorrow (RFC 5321 4.5.3.1.10); a too-big message never.
        (552, "5.2.2 <x@y> Mailbox is full", Outcome.TEMPORARY),
        (552, "5.3.4 Message too big for system", Outcome.PERMANENT),
        (552, "Error: message size exceeds fixed maximum", Outcome.PERMANENT),
    ],
)
def test_a_reply_is_classified_once(code: int, text: str, outcome: Outcome) -> None:
    assert classify(code, text) is outcome
    reply = Reply(code, text)
    assert reply.outcome is outcome
    assert (reply.ok, reply.temporary, reply.permanent) == (
        outcome is Outcome.DELIVERED,
        outcome is Outcome.TEMPORARY,
        outcome is Outcome.PERMANENT,
    )


def test_enhanced_codes_are_read_from_the_start_of_the_text() -> None:
    assert enhanced_code("5.2.2 Mailbox is full") == "5.2.2"
    assert enhanced_code(" 4.7.1 slow down") == "4.7.1"
    assert enhanced_code("Mailbox 5.2.2 is full") is None


def test_a_temporary_failure_becomes_final_when_the_retry_period_has_run_out() -> None:
    full = Reply(552, "5.2.2 Mailbox is full")
    period = timedelta(days=5)
    assert settle(full, age=timedelta(hours=1), retry_period=period) is Outcome.TEMPORARY
    assert settle(full, age=period, retry_period=period) is Outcome.PERMANENT
    assert settle(Reply(250, "ok"), age=period * 2, retry_period=period) is Outcome.DELIVERED


class _DirectoryDown:
    """Answers AUTH elsewhere; here only the group look-up, which fails."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def expand_group(self, name: str) -> Any:
        raise self.error


@pytest.mark.parametrize("error", [DirectoryUnavailable("timeout"), DirectoryError("busy")])
async def test_sending_as_a_group_while_the_directory_is_down_is_a_451(error: Exception) -> None:
    settings = load_settings(DEFAULT_CONFIG, env={"MAILSVC_VAR_DIR": str(Path("/nonexistent"))})
    # No queue is reached before MAIL is answered (its units only back the AUTH guard).
    queue = cast(Any, SimpleNamespace(units=None))
    handler = SubmissionHandler(settings, cast(Any, _DirectoryDown(error)), queue)
    session = SmtpSession(loop=cast(Any, None))
    session.authenticated = True
    session.auth_data = SimpleNamespace(login=f"anna.nowak@{settings.domain}".encode())
    reply = await handler.handle_MAIL(
        cast(Any, None), session, Envelope(), f"rada@{settings.domain}", []
    )
    assert reply == replies.S451_DIRECTORY


def test_reply_text_is_stored_without_control_characters() -> None:
    """A server's reply may carry any byte; what is stored (and shown, and hashed into the
    receipts' evidence) has no NUL, escape or carriage return, and keeps its lines."""
    from mailsvc.domain.outcome import stored_text

    assert stored_text("550 5.1.1 no\x00such \x1b[31muser\x7f") == "550 5.1.1 no?such ?[31muser?"
    assert stored_text("452-first\r\n452 second\tline") == "452-first\n452 second\tline"
    assert stored_text("bare\rcarriage\x85return") == "bare?carriage?return"
    assert stored_text("Łódź: skrzynka pełna") == "Łódź: skrzynka pełna"
