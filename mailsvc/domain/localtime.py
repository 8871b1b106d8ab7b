"""The council's local time. Stored times are naive UTC; people read the configured time zone
(``distribution.timezone``) in pages, mail and reports alike."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo


def local_time(moment: datetime, zone: tzinfo) -> datetime:
    """A stored time (naive means UTC) in ``zone``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone)


def session_local_time(moment: datetime, zone: tzinfo) -> datetime:
    """A session's date (naive means already local: sessions are planned in local time) as an
    aware time in ``zone``."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=zone)
    return moment.astimezone(zone)
