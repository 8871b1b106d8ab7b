"""Password checks and sending volumes counted in the database, so that every process (the
relay, its delivery child, the web, a second node) sees the same counts, across restarts.

**Password checks** (:class:`PasswordGuard`): before a password is checked (a directory bind),
one attempt is *reserved* for each key (the client's network and the account) in a write
transaction. Concurrent attempts are serialised there, so 50 parallel guesses get at most
``attempts`` checks. Past ``attempts`` failures, a key waits before its next check, the wait
doubling with each further failure up to ``max_delay`` (a backoff, not a lockout: the real
owner of an account an attacker hammers can still sign in every few minutes). A success forgets
the account's failures and gives the network back its attempt. Counts older than ``window``
without a new failure start afresh.

**Sending volumes** (:class:`SendLimits`): messages and recipients per account and hour, for
the per-councillor limits of submission.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from mailsvc.config import Settings
from mailsvc.domain.clients import network_key
from mailsvc.storage.db import utcnow
from mailsvc.storage.tables import auth_throttle, send_counts
from mailsvc.storage.units import Units


def _insert_missing(conn: Connection, table: Table, rows: list[dict[str, object]]) -> None:
    """INSERT … ON CONFLICT DO NOTHING, on SQLite and PostgreSQL alike."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).on_conflict_do_nothing()
    conn.execute(statement, rows)


def password_guard(settings: Settings, units: Units) -> PasswordGuard:
    """The guard every password check of the service shares (SMTP AUTH, the clerks' sign-in):
    ``web.login_attempts`` per ``web.login_window_minutes``."""
    window = timedelta(minutes=settings.web.login_window_minutes)
    return PasswordGuard(units, attempts=settings.web.login_attempts, window=window)


async def at_least(started: float, seconds: float) -> None:
    """Sleep until ``seconds`` after ``started`` (``time.monotonic``): a refused password takes
    the same time whether the account exists or not."""
    remaining = started + seconds - time.monotonic()
    if remaining > 0:
        await asyncio.sleep(remaining)


def guard_keys(client_ip: str, account: str) -> tuple[str, str]:
    """The keys of one password check: the client's network and the account."""
    return f"net:{network_key(client_ip)}", f"user:{account.strip().lower()[:254]}"


@dataclass(frozen=True)
class PasswordGuard:
    units: Units
    attempts: int = 5
    window: timedelta = timedelta(minutes=15)
    base_delay: timedelta = timedelta(seconds=30)
    max_delay: timedelta = timedelta(minutes=15)

    async def reserve(self, keys: Sequence[str], now: datetime | None = None) -> float:
        """Seconds to wait before a password may be checked for ``keys`` (nothing counted), or
        0.0: the check may go ahead and already counts as a failure until :meth:`succeeded`."""
        moment = now or utcnow()

        def work(conn: Connection) -> float:
            _insert_missing(
                conn,
                auth_throttle,
                [{"key": k, "failures": 0, "updated_at": moment} for k in keys],
            )
            rows = conn.execute(
                select(auth_throttle).where(auth_throttle.c.key.in_(list(keys))).with_for_update()
            ).all()
            wait = 0.0
            current: dict[str, int] = {}
            for row in rows:
                failures = row.failures
                blocked = row.blocked_until
                if blocked is not None and blocked > moment:
                    wait = max(wait, (blocked - moment).total_seconds())
                elif row.updated_at < moment - self.window:
                    failures = 0  # quiet for a whole window: start afresh
                current[row.key] = failures
            if wait > 0:
                return wait
            for key, failures in current.items():
                failures += 1
                blocked_until = None
                if failures >= self.attempts:
                    delay = self.base_delay * (2 ** min(failures - self.attempts, 20))
                    blocked_until = moment + min(delay, self.max_delay)
                conn.execute(
                    update(auth_throttle)
                    .where(auth_throttle.c.key == key)
                    .values(failures=failures, blocked_until=blocked_until, updated_at=moment)
                )
            return 0.0

        return await self.units.run(work)

    async def succeeded(self, keys: Sequence[str]) -> None:
        """The password was right: forget the account's failures, refund the network's try."""

        def work(conn: Connection) -> None:
            for key in keys:
                if key.startswith("user:"):
                    conn.execute(auth_throttle.delete().where(auth_throttle.c.key == key))
                else:
                    conn.execute(
                        update(auth_throttle)
                        .where(auth_throttle.c.key == key, auth_throttle.c.failures > 0)
                        .values(failures=auth_throttle.c.failures - 1, blocked_until=None)
                    )

        await self.units.run(work)

    async def release(self, keys: Sequence[str]) -> None:
        """The check could not be made (the directory was down): give the attempt back."""

        def work(conn: Connection) -> None:
            conn.execute(
                update(auth_throttle)
                .where(auth_throttle.c.key.in_(list(keys)), auth_throttle.c.failures > 0)
                .values(failures=auth_throttle.c.failures - 1)
            )

        await self.units.run(work)

    async def forget_before(self, moment: datetime) -> int:
        """Drop keys untouched since ``moment`` (and not blocked any more)."""

        def work(conn: Connection) -> int:
            result = conn.execute(
                auth_throttle.delete().where(
                    auth_throttle.c.updated_at < moment,
                    (auth_throttle.c.blocked_until.is_(None))
                    | (auth_throttle.c.blocked_until < moment),
                )
            )
            return int(result.rowcount or 0)

        return await self.units.run(work)


@dataclass(frozen=True)
class SendLimits:
    """Messages and recipients per account and hour (0: no limit)."""

    units: Units
    messages_per_hour: int = 100
    recipients_per_hour: int = 500

    async def take(self, account: str, recipients: int, now: datetime | None = None) -> bool:
        """Count one message to ``recipients`` recipients for ``account`` in this hour; False
        (nothing counted) when that would exceed a limit."""
        moment = now or utcnow()
        hour = moment.replace(minute=0, second=0, microsecond=0)
        key = {"account": account.lower()[:254], "hour": hour}

        def work(conn: Connection) -> bool:
            _insert_missing(conn, send_counts, [{**key, "messages": 0, "recipients": 0}])
            row = conn.execute(
                select(send_counts.c.messages, send_counts.c.recipients)
                .where(send_counts.c.account == key["account"], send_counts.c.hour == hour)
                .with_for_update()
            ).one()
            if self.messages_per_hour and row.messages + 1 > self.messages_per_hour:
                return False
            if self.recipients_per_hour and row.recipients + recipients > self.recipients_per_hour:
                return False
            conn.execute(
                update(send_counts)
                .where(send_counts.c.account == key["account"], send_counts.c.hour == hour)
                .values(
                    messages=send_counts.c.messages + 1,
                    recipients=send_counts.c.recipients + recipients,
                )
            )
            conn.execute(send_counts.delete().where(send_counts.c.hour < hour - timedelta(days=1)))
            return True

        return await self.units.run(work)
