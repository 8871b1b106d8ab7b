"""Password checks and sending volumes counted in a real SQLite database: concurrent attempts
in this process and in another process get at most the allowed number of checks; waits grow;
a success forgets; an hour's sending is capped."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from mailsvc.domain.clients import network_key
from mailsvc.storage.db import create_engine, create_schema
from mailsvc.storage.guard import PasswordGuard, SendLimits, guard_keys
from mailsvc.storage.units import ThreadUnits

T0 = datetime(2026, 12, 3, 12, 0, 0)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "guard.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await create_schema(engine)
    await engine.dispose()
    yield path


@pytest.fixture
async def units(db: Path) -> AsyncIterator[ThreadUnits]:
    units = ThreadUnits(str(db))
    yield units
    await units.close()


def test_network_keys() -> None:
    assert network_key("203.0.113.7") == "203.0.113.7"
    assert network_key("2001:db8:1:2:a:b:c:d") == "2001:db8:1:2::/64"
    assert network_key("2001:db8:1:2::1") == network_key("2001:db8:1:2:ffff::9")
    assert network_key("2001:db8:1:3::1") != network_key("2001:db8:1:2::1")
    assert network_key("::ffff:198.51.100.4") == "198.51.100.4"
    assert network_key("unknown") == "unknown"
    assert guard_keys("2001:db8::5", " Jan@Rada.Example ") == (
        "net:2001:db8::/64",
        "user:jan@rada.example",
    )


async def test_parallel_guesses_get_at_most_the_allowed_checks(units: ThreadUnits) -> None:
    guard = PasswordGuard(units, attempts=5)
    keys = guard_keys("198.51.100.9", "radny@rada.example")
    waits = await asyncio.gather(*(guard.reserve(keys, T0) for _ in range(50)))
    assert sum(1 for w in waits if w == 0) == 5
    assert all(w > 0 for w in waits if w != 0)


def _reserve_in_another_process(path: str, count: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    async def run() -> int:
        units = ThreadUnits(path)
        try:
            guard = PasswordGuard(units, attempts=5)
            keys = guard_keys("198.51.100.9", "radny@rada.example")
            waits = await asyncio.gather(*(guard.reserve(keys, T0) for _ in range(count)))
            return sum(1 for w in waits if w == 0)
        finally:
            await units.close()

    out.put(asyncio.run(run()))


async def test_the_count_holds_across_processes(db: Path, units: ThreadUnits) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    other = ctx.Process(target=_reserve_in_another_process, args=(str(db), 25, out))
    other.start()
    guard = PasswordGuard(units, attempts=5)
    keys = guard_keys("198.51.100.9", "radny@rada.example")
    ours = await asyncio.gather(*(guard.reserve(keys, T0) for _ in range(25)))
    theirs = await asyncio.to_thread(out.get, True, 60)
    await asyncio.to_thread(other.join, 60)
    assert sum(1 for w in ours if w == 0) + theirs == 5


async def test_waits_double_and_a_quiet_window_starts_afresh(units: ThreadUnits) -> None:
    guard = PasswordGuard(
        units,
        attempts=3,
        window=timedelta(minutes=15),
        base_delay=timedelta(seconds=30),
        max_delay=timedelta(minutes=10),
    )
    keys = guard_keys("198.51.100.10", "anna@rada.example")
    now = T0
    for _ in range(3):
        assert await guard.reserve(keys, now) == 0
    assert await guard.reserve(keys, now) == pytest.approx(30)
    now += timedelta(seconds=31)
    assert await guard.reserve(keys, now) == 0  # the 4th check, after the wait
    assert await guard.reserve(keys, now) == pytest.approx(60)  # the wait doubled
    now += timedelta(seconds=61)
    assert await guard.reserve(keys, now) == 0
    assert await guard.reserve(keys, now) == pytest.approx(120)
    # Far later: counted afresh, the full allowance again.
    now += timedelta(hours=1)
    for _ in range(3):
        assert await guard.reserve(keys, now) == 0
    assert await guard.reserve(keys, now) > 0


async def test_success_forgets_the_account_and_refunds_the_network(units: ThreadUnits) -> None:
    guard = PasswordGuard(units, attempts=2)
    mine = guard_keys("198.51.100.11", "ola@rada.example")
    for _ in range(2):
        assert await guard.reserve(mine, T0) == 0
    await guard.succeeded(mine)
    # The account starts afresh; the network got one try back.
    assert await guard.reserve(mine, T0) == 0
    assert await guard.reserve(mine, T0) > 0
    other_account = guard_keys("198.51.100.11", "piotr@rada.example")
    assert await guard.reserve(other_account, T0) > 0  # the network is the one blocked


async def test_one_network_cannot_lock_an_account_from_another(units: ThreadUnits) -> None:
    guard = PasswordGuard(units, attempts=3)
    attacker = guard_keys("2001:db8:bad::1", "burmistrz@rada.example")
    for _ in range(3):
        await guard.reserve(attacker, T0)
    owner = guard_keys("198.51.100.12", "burmistrz@rada.example")
    wait = await guard.reserve(owner, T0)
    assert 0 < wait <= 30  # a short backoff on the account, not a lockout for the window
    assert await guard.reserve(owner, T0 + timedelta(seconds=wait + 1)) == 0


async def test_sending_limits_per_hour(units: ThreadUnits) -> None:
    limits = SendLimits(units, messages_per_hour=3, recipients_per_hour=10)
    assert await limits.take("jan@rada.example", 4, T0)
    assert await limits.take("jan@rada.example", 4, T0)
    assert not await limits.take("jan@rada.example", 4, T0)  # 12 recipients > 10
    assert await limits.take("jan@rada.example", 2, T0)
    assert not await limits.take("jan@rada.example", 1, T0)  # a 4th message
    assert await limits.take("anna@rada.example", 1, T0)  # per account
    assert await limits.take("jan@rada.example", 1, T0 + timedelta(hours=1))  # a new hour
