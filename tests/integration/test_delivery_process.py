"""Delivery in a second process (delivery.separate_process, the default), on the real stack."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosmtplib

from mailsvc.app import start_service
from mailsvc.config import Settings
from mailsvc.relay.delivery.process import DeliveryProcess
from mailsvc.relay.delivery.worker import DeliveryWorkers

from .conftest import make_message, smtp_send, wait_for_deliveries, wait_for_inbox


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def test_serve_delivers_from_a_second_process_that_stops_with_it(
    settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Łukasz", "Żółć")
    service = await start_service(settings, scheduler=False)
    try:
        assert isinstance(service.workers, DeliveryProcess)
        child = service.workers.pid
        assert child is not None and child != os.getpid() and alive(child)
        # A resident's message, accepted here and delivered there; then a burst, to see the
        # two processes share the queue without losing or repeating anything.
        await smtp_send(service.smtp_port, [account.address], make_message(account.address, "1"))
        assert len(await wait_for_inbox(settings, account.address, account.password)) == 1
        # (an asyncio client: smtplib in threads would take the executor's threads that
        # the server's directory lookups need in this same process)
        await asyncio.gather(
            *(
                aiosmtplib.send(
                    make_message(account.address, n),
                    hostname="127.0.0.1",
                    port=service.smtp_port,
                    sender="jan@example.org",
                    recipients=[account.address],
                )
                for n in "23456789"
            )
        )
        rows = await wait_for_deliveries(service.queue, {"delivered"}, count=9)
        assert [r.status for r in rows] == ["delivered"] * 9
        inbox = await wait_for_inbox(settings, account.address, account.password, count=9)
        assert len(inbox) == 9
    finally:
        await service.stop()
    assert not alive(child)


async def test_a_message_queued_by_the_acceptor_wakes_the_delivery_process_at_once(
    settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    # The delivery process polls an idle queue only every few seconds: delivery within a
    # second shows that the acceptor's wake-up crossed the pipe.
    account = await add_councillor("Anna", "Szybka")
    service = await start_service(settings, scheduler=False)
    try:
        await asyncio.sleep(0.5)  # the dispatcher has found the queue empty and sleeps
        loop = asyncio.get_running_loop()
        sent = loop.time()
        await smtp_send(service.smtp_port, [account.address], make_message(account.address, "x"))
        rows = await wait_for_deliveries(service.queue, {"delivered"}, within=1.5)
        assert [r.status for r in rows] == ["delivered"], loop.time() - sent
    finally:
        await service.stop()


async def test_inline_delivery_stays_available(
    settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Piotr", "Jednoprocesowy")
    service = await start_service(
        settings.with_changes(delivery={"separate_process": False}), scheduler=False
    )
    try:
        assert isinstance(service.workers, DeliveryWorkers)
        await smtp_send(service.smtp_port, [account.address], make_message(account.address, "x"))
        assert len(await wait_for_inbox(settings, account.address, account.password)) == 1
    finally:
        await service.stop()


async def test_a_delivery_process_that_dies_is_started_again(
    settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Ewa", "Wytrwała")
    service = await start_service(settings, scheduler=False)
    try:
        assert isinstance(service.workers, DeliveryProcess)
        first = service.workers.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)  # as the OOM killer would
        # Accepted while no delivery process runs: waits in the queue, then arrives.
        await smtp_send(service.smtp_port, [account.address], make_message(account.address, "x"))
        inbox = await wait_for_inbox(settings, account.address, account.password, within=20)
        assert len(inbox) == 1
        second = service.workers.pid
        assert second is not None and second != first and alive(second)
    finally:
        await service.stop()
    assert not alive(second)
