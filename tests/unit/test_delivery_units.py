"""Pure pieces of delivery: LMTP data encoding, backoff, next-state decisions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mailsvc.config import DeliverySettings
from mailsvc.relay.delivery.lmtp import Reply, encode_data
from mailsvc.relay.delivery.worker import decide
from mailsvc.storage.db import utcnow
from mailsvc.storage.queue import backoff


@pytest.mark.parametrize(
    ("body", "wire"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b"a\nb", b"a\r\nb\r\n.\r\n"),
        (b".hidden\r\n", b"..hidden\r\n.\r\n"),
        (b"x\r\n.\r\ny\r\n", b"x\r\n..\r\ny\r\n.\r\n"),
        (b"x\r\n..two\r\n", b"x\r\n...two\r\n.\r\n"),
    ],
)
def test_encode_data_stuffs_dots_and_terminates(body: bytes, wire: bytes) -> None:
    assert encode_data(body) == wire


def test_backoff_doubles_up_to_the_maximum() -> None:
    waits = [backoff(n, 60, 3600) for n in range(1, 10)]
    assert waits[:4] == [timedelta(seconds=s) for s in (60, 120, 240, 480)]
    assert waits[-1] == timedelta(seconds=3600)


def test_decide_maps_replies_to_states() -> None:
    s = DeliverySettings(retry_initial=10, retry_max_interval=100, retry_period=3600)
    now = utcnow()
    assert decide(Reply(250, "2.0.0 ok"), 0, now, s) == ("delivered", None)
    assert decide(Reply(550, "5.1.1 no such user"), 0, now, s) == ("failed", None)
    status, next_at = decide(Reply(451, "4.3.0 try later"), 0, now, s)
    assert status == "deferred" and next_at is not None
    assert timedelta(seconds=9) < next_at - utcnow() <= timedelta(seconds=10)
    # A temporary failure past the retry period becomes permanent.
    old = now - timedelta(seconds=3601)
    assert decide(Reply(451, "4.3.0 try later"), 5, old, s) == ("failed", None)
