"""Non-standard bounce formats, one module each, listed explicitly in order of authority.
They stand after flufl.bounce's detectors (``receipts/plain.py``): some read what it misses
(DragonFly, OpenSMTPD, Exchange's plain NDRs), all tell why each address failed.

A detector reads a ``PlainBounce`` (a message without a standard report, already known to come
from mail software) and returns a ``Detection`` only when its producer's own wording is found at
the top of the body. The first detector that recognises the message wins.
"""

from __future__ import annotations

from typing import Protocol

from mailsvc.receipts.formats import (
    dragonfly,
    exchange,
    exim,
    gmail,
    opensmtpd,
    postfix,
    qmail,
    yahoo,
)
from mailsvc.receipts.formats.common import Detection, PlainBounce


class Detector(Protocol):
    ID: str

    def detect(self, bounce: PlainBounce) -> Detection | None: ...


# Order of authority: the most specific wording first. Stable ids are the module's ID.
DETECTORS: tuple[Detector, ...] = (
    qmail,
    yahoo,
    postfix,
    exim,
    exchange,
    gmail,
    dragonfly,
    opensmtpd,
)

__all__ = ["DETECTORS", "Detection", "Detector", "PlainBounce"]
