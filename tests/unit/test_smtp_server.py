"""Pure pieces of the SMTP protocol object: reply codes, limiters, the fast per-connection init."""

from __future__ import annotations

import types

import pytest

from mailsvc.config import load_settings
from mailsvc.smtp.inbound import InboundHandler, smtp_factory
from mailsvc.smtp.server import ConnectionLimiter, CouncilSMTP, RateLimiter, with_enhanced_code


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("552 Error: Too much mail data", "552 5.3.4 Message too big for this system"),
        ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
        (
            '500 Error: command "FOO" not recognized',
            '500 5.5.1 Error: command "FOO" not recognized',
        ),
        ("550 5.1.1 <x>: no such mailbox here", "550 5.1.1 <x>: no such mailbox here"),
        ("250 HELP", "250 HELP"),
        ("220 mail.example ESMTP", "220 mail.example ESMTP"),
        ("421-4.7.0 first", "421-4.7.0 first"),
    ],
)
def test_error_replies_get_enhanced_codes(line: str, expected: str) -> None:
    assert with_enhanced_code(line) == expected


def test_connection_limiter_counts_per_ip_and_total() -> None:
    limiter = ConnectionLimiter(total_max=3, per_ip_max=2)
    assert limiter.acquire("a") and limiter.acquire("a")
    assert not limiter.acquire("a")
    assert limiter.acquire("b")
    assert not limiter.acquire("c")  # total reached
    limiter.release("a")
    assert limiter.acquire("c")


def test_rate_limiter_uses_a_sliding_minute() -> None:
    rate = RateLimiter(per_minute=2)
    assert rate.allow("ip", now=0.0) and rate.allow("ip", now=1.0)
    assert not rate.allow("ip", now=59.0)
    assert rate.allow("other", now=59.0)
    assert rate.allow("ip", now=60.5)


async def test_fast_init_copies_the_state_of_a_full_init() -> None:
    settings = load_settings(env={})
    handler = InboundHandler(settings, None, None)  # type: ignore[arg-type]
    make = smtp_factory(settings, handler)
    first, second = make(), make()  # the first runs aiosmtpd's __init__, the second copies
    slow = CouncilSMTP(
        handler,
        limiter=ConnectionLimiter(1, 1),
        max_bad_commands=10,
        hostname=settings.smtp_hostname,
        data_size_limit=settings.smtp.max_message_size,
        enable_SMTPUTF8=True,
        ident="mailsvc",
        timeout=settings.smtp.timeout,
    )
    assert set(vars(second)) == set(vars(first)) == set(vars(slow))
    for name in ("_smtp_methods", "_auth_methods"):
        assert set(getattr(second, name)) == set(getattr(slow, name))
    for method in second._smtp_methods.values():
        assert isinstance(method, types.MethodType) and method.__self__ is second
    for attr in second._auth_methods.values():
        assert attr.method.__self__ is (second if attr.is_builtin else handler)
    assert second._stream_reader is not first._stream_reader
    assert second.session is None and second.transport is None
