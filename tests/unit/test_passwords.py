"""Argon2id hashing: the configured cost in the hash, and never on the event loop's thread."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from mailsvc.config import Settings, validate
from mailsvc.errors import ConfigError
from mailsvc.passwords import hash_new_password, hash_new_passwords
from provisioning import passwords
from provisioning.passwords import (
    Argon2Params,
    hash_password,
    hash_passwords,
    ssha_hash,
    verify_password,
)


def test_the_default_cost_is_owasps_minimum_for_argon2id() -> None:
    hashed = hash_password("a-password-123456789")

    assert hashed.startswith("{ARGON2}$argon2id$v=19$m=19456,t=2,p=1$")
    assert verify_password("a-password-123456789", hashed)
    assert not verify_password("another-password-1234", hashed)


async def test_the_configured_cost_is_the_one_in_the_hash() -> None:
    settings = Settings().with_changes(
        provisioning={"argon2_memory_kib": 8192, "argon2_time_cost": 3, "argon2_parallelism": 2}
    )

    one = await hash_new_password(settings, "a-password-123456789")
    many = await hash_new_passwords(settings, ["first-password-12345", "second-password-1234"])

    for hashed in (one, *many):
        assert hashed.startswith("{ARGON2}$argon2id$v=19$m=8192,t=3,p=2$")
    assert verify_password("a-password-123456789", one)
    assert verify_password("first-password-12345", many[0])
    assert verify_password("second-password-1234", many[1])
    assert not verify_password("first-password-12345", many[1])


def test_an_existing_ssha_hash_still_verifies() -> None:
    hashed = ssha_hash("old-password-1234567")

    assert hashed.startswith("{SSHA}")
    assert verify_password("old-password-1234567", hashed)
    assert not verify_password("wrong-password-12345", hashed)


async def test_hashing_runs_on_the_pool_threads_never_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []
    real = passwords.hash_password

    def recording(password: str, params: Argon2Params) -> str:
        seen.append(threading.get_ident())
        return real(password, params)

    monkeypatch.setattr(passwords, "hash_password", recording)
    hashed = await hash_passwords([f"password-number-{i:04}" for i in range(6)])

    assert len(seen) == 6 and threading.get_ident() not in seen
    assert all(verify_password(f"password-number-{i:04}", h) for i, h in enumerate(hashed))


async def test_the_loop_keeps_serving_while_a_batch_is_hashed() -> None:
    """A ticker every 5 ms must not stall for the batch: on the loop it would stop for all of
    it. (Scheduling on a busy machine adds a little, hence half the batch as the bound.)"""
    params = Argon2Params(memory_kib=19456, time_cost=4)
    gaps: list[float] = []
    stop = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    start = time.perf_counter()
    await hash_passwords([f"password-number-{i:04}" for i in range(8)], params)
    batch = time.perf_counter() - start
    stop.set()
    await ticker

    assert batch > 0.1  # a batch long enough to tell the difference
    assert max(gaps) < batch / 2, (max(gaps), batch)


def test_the_c_hash_releases_the_gil() -> None:
    """The pool hashes in parallel only if argon2-cffi lets go of the GIL in its C call: the
    main thread keeps running Python code while another thread hashes."""
    params = Argon2Params(memory_kib=65536, time_cost=4)
    done = threading.Event()

    def hash_once() -> None:
        hash_password("a-password-123456789", params)
        done.set()

    worker = threading.Thread(target=hash_once)
    start = time.perf_counter()
    worker.start()
    longest, last = 0.0, time.perf_counter()
    while not done.is_set():
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    worker.join()
    took = time.perf_counter() - start

    assert took > 0.1
    assert longest < took / 2, (longest, took)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"argon2_time_cost": 0}, "provisioning.argon2_time_cost = 0"),
        ({"argon2_parallelism": 0}, "provisioning.argon2_parallelism = 0: expected 1 to 255"),
        ({"argon2_memory_kib": 16, "argon2_parallelism": 4}, "at least 8 KiB per lane (32"),
    ],
)
def test_a_cost_argon2_refuses_is_refused_at_start(changes: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(Settings().with_changes(provisioning=changes))
