"""The council's clock: now (naive UTC, as stored) and the council's local time.

Sessions are planned and distributions scheduled in local time; the database keeps UTC."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from datetime import UTC, datetime

from mailsvc.storage.db import utcnow


class Clock:
    def __init__(self, time_zone: str, now: Callable[[], datetime] = utcnow) -> None:
        self.tz = zoneinfo.ZoneInfo(time_zone)
        self._now = now

    def now(self) -> datetime:
        """Now as naive UTC."""
        return self._now()

    def to_utc(self, local: datetime) -> datetime:
        """A naive local time (the council's zone) as naive UTC."""
        return local.replace(tzinfo=self.tz).astimezone(UTC).replace(tzinfo=None)

    def to_local(self, utc: datetime) -> datetime:
        return utc.replace(tzinfo=UTC).astimezone(self.tz).replace(tzinfo=None)
