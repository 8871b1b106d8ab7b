"""Operations on the real stack: /metrics of a running service, its JSON log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailsvc.app import Service, start_service
from mailsvc.config import Settings
from mailsvc.stack import free_ports
from mailsvc.storage.db import utcnow

from .conftest import make_message, smtp_send, wait_for_deliveries
from .test_outbound import EXTERNAL, submitted

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int, path: str = "/metrics") -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{port}{path}", timeout=10)


def samples(text: str) -> Samples:
    """Every sample of a Prometheus text page, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape_until(port: int, done: Callable[[Samples], bool]) -> Samples:
    """The delivery process's counts cross a pipe after the outcome is in the database."""
    for _ in range(100):
        page = await scrape(port)
        assert page.status_code == 200
        found = samples(page.text)
        if done(found):
            return found
        await asyncio.sleep(0.1)
    return found


async def test_metrics_of_a_running_service_show_a_delivered_and_a_deferred_message(
    settings: Settings, add_councillor: Callable[..., Any], capfd: pytest.CaptureFixture[str]
) -> None:
    metrics_port, closed_port = free_ports(2)
    svc: Service = await start_service(
        settings.with_changes(
            metrics={"port": metrics_port},
            # The smarthost refuses connections: mail for other domains is deferred.
            smarthost={"port": closed_port},
            delivery={"retry_initial": 3600.0, "retry_max_interval": 3600.0},
            logging={"format": "json"},
        )
    )
    try:
        assert svc.metrics_port == metrics_port
        account = await add_councillor("Łukasz", "Żółć")
        unknown = f"nikt.taki@{settings.domain}"
        refused = await smtp_send(
            svc.smtp_port, [account.address, unknown], make_message(account.address, "Dziura")
        )
        assert list(refused) == [unknown]
        await svc.queue.enqueue(
            account.address,
            [EXTERNAL],
            submitted(account.address, EXTERNAL, "Odpowiedź"),
            origin="submission",
        )
        svc.workers.wake()
        await wait_for_deliveries(svc.queue, {"delivered", "deferred"}, count=2)

        delivered = ("mailsvc_deliveries_total", (("outcome", "delivered"), ("route", "lmtp")))
        deferred = ("mailsvc_deliveries_total", (("outcome", "deferred"), ("route", "smtp")))
        lifecycle = (
            "mailsvc_job_last_success_timestamp_seconds",
            (("job", "councillor-lifecycle"),),
        )
        found = await scrape_until(
            metrics_port,
            lambda s: s.get(delivered) == 1 and s.get(deferred) == 1 and s.get(lifecycle, 0) > 0,
        )
        assert found[delivered] == 1 and found[deferred] == 1
        assert found[("mailsvc_queue_deliveries", (("state", "deferred"),))] == 1
        assert found[("mailsvc_queue_deliveries", (("state", "queued"),))] == 0
        assert found[("mailsvc_queue_oldest_waiting_seconds", ())] >= 0
        assert found[("mailsvc_smtp_sessions_total", (("server", "inbound"),))] == 1
        reason = (("reason", "unknown_recipient"), ("server", "inbound"))
        assert found[("mailsvc_smtp_refusals_total", reason)] == 1
        assert found[("mailsvc_database_up", ())] == 1
        # Written by the service's scheduler at its first run, in the database.
        assert utcnow().timestamp() - found[lifecycle] < 120
        # No address in any label.
        assert not any("@" in value for _, labels in found for _, value in labels)
        assert (await scrape(metrics_port, "/")).status_code == 404
    finally:
        await svc.stop()

    # The delivery process wrote its log as JSON lines (a warning for the smarthost it could
    # not reach among them).
    lines = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
    child = [x for x in lines if x.get("process") == "delivery"]
    assert child, lines
    for line in child:
        assert {"time", "level", "logger", "message"} <= line.keys()
        assert line.keys() <= {"time", "level", "logger", "message", "exception", "process"}
    assert any(x["level"] == "WARNING" and "unavailable" in x["message"] for x in child)
