"""Operations on the real stack: /metrics of a running service, its JSON log, `mailsvc check`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailsvc.app import Service, start_service
from mailsvc.cli.check import published_dns, run_checks
from mailsvc.cli.dns import dns_plan
from mailsvc.config import Settings
from mailsvc.relay.smtp.tls import self_signed_pair
from mailsvc.stack import free_ports
from mailsvc.storage.db import create_engine, create_schema, utcnow
from mailsvc.storage.jobruns import JobRuns

from .conftest import make_message, smtp_send, wait_for_deliveries
from .dns_zone import ResidentDns, resident_dns
from .test_outbound import EXTERNAL, submitted
from .test_submission import auth_plain, tls_client

__all__ = ["resident_dns"]  # a fixture, used by name

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

        def wrong_password() -> int:
            client = tls_client(svc.submission_port)
            try:
                plain = auth_plain(account.address, "wrong-password-123")
                return client.docmd("AUTH", f"PLAIN {plain}")[0]
            finally:
                client.close()

        assert await asyncio.to_thread(wrong_password) == 535
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
        # The councillor who mistyped the password.
        assert found[("mailsvc_smtp_sessions_total", (("server", "submission"),))] == 1
        failed = ("mailsvc_smtp_auth_failures_total", (("reason", "invalid_credentials"),))
        assert found[failed] == 1
        reason = (("reason", "auth_invalid"), ("server", "submission"))
        assert found[("mailsvc_smtp_refusals_total", reason)] == 1
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


def _names(results: list[tuple[str, bool, str]]) -> list[str]:
    return [name for name, _, _ in results]


def _result(results: list[tuple[str, bool, str]], name: str) -> tuple[bool, str]:
    found = [(ok, detail) for n, ok, detail in results if n == name]
    assert len(found) == 1, results
    return found[0]


async def test_check_fails_on_an_expiring_certificate_low_disk_and_a_late_scheduler(
    settings: Settings, local_stack: Any, tmp_path: Path
) -> None:
    key, cert = self_signed_pair("mail.rada.example", [], days=3)
    (tmp_path / "key.pem").write_bytes(key)
    (tmp_path / "cert.pem").write_bytes(cert)
    tls = {"tls_cert": str(tmp_path / "cert.pem"), "tls_key": str(tmp_path / "key.pem")}
    expiring = settings.with_changes(
        smtp=tls, language="en", distribution={"sync_interval": 10.0, "imap_check_interval": 0.0}
    )

    results = await run_checks(expiring, dns=False)
    assert _names(results) == [
        "config",
        "directory",
        "mailstore",
        "database",
        "tls-cert",
        "dns",
        "disk",
        "scheduler",
        "scheduler-leader",
    ]
    ok, detail = _result(results, "tls-cert")
    assert not ok and "2 days left, fewer than 14" in detail
    assert _result(results, "disk")[0]
    # No job has run in this database yet: nothing to judge.
    assert _result(results, "scheduler") == (True, "no job has run yet (has `mailsvc serve` run?)")
    # Nobody leads a PostgreSQL database no service has used yet, and that is no failure.
    assert _result(results, "scheduler-leader") == (
        (True, "sole node (SQLite)")
        if expiring.database_url.startswith("sqlite")
        else (True, "no node leads the scheduler (is `mailsvc serve` running?)")
    )

    # The same certificate with a lower bar, an impossible free-space bar, late jobs.
    engine = create_engine(settings.database_url)
    try:
        await create_schema(engine)
        runs = JobRuns(engine)
        for job in ("councillor-lifecycle", "relay-log-upkeep", "capture-purge", "reminders"):
            await runs.succeeded(job)
        await runs.succeeded("distributions-sync", utcnow() - timedelta(hours=2))
        await runs.failed("distributions-sync", "OperationalError: disk I/O error")
    finally:
        await engine.dispose()
    results = await run_checks(expiring, dns=False, cert_days=2, min_free_mb=10**9)
    assert _result(results, "tls-cert")[0]
    ok, detail = _result(results, "disk")
    assert not ok and "at least 976562.5 GB required" in detail
    ok, detail = _result(results, "scheduler")
    assert not ok
    assert detail == (
        "distributions-sync: last successful run 2 h ago (due every 10 s), "
        "last error: OperationalError: disk I/O error"
    )


async def test_check_compares_the_published_dns_records_with_the_expected_ones(
    settings: Settings, resident_dns: ResidentDns
) -> None:
    s = settings.with_changes(
        smtp={"dns_resolver": resident_dns.resolver}, language="en", mta_sts={"mode": "testing"}
    )
    expected = {(r.type, r.name): r for r in (await dns_plan(s)).records}
    zone = resident_dns.zone
    mx = expected[("MX", f"{s.domain}.")]
    zone.records[(s.domain, "MX")] = [mx.value]
    zone.txt(s.domain, "google-site-verification=abc")  # another TXT beside SPF
    zone.txt(s.domain, expected[("TXT", f"{s.domain}.")].value.replace(" ", "  "))
    zone.txt(f"_dmarc.{s.domain}", "v=DMARC1; p=quarantine")

    results = await run_checks(s, cert_days=14)
    dns = {" ".join(d.split()[:2]): (ok, d) for n, ok, d in results if n == "dns"}
    assert len(dns) == len(expected)
    assert dns[f"MX {s.domain}."] == (True, f"MX {s.domain}. published")
    assert dns[f"TXT {s.domain}."][0]  # whitespace inside the record does not matter
    ok, detail = dns[f"TXT _dmarc.{s.domain}."]
    assert not ok and detail.startswith(
        f"TXT _dmarc.{s.domain}. different: v=DMARC1; p=quarantine; expected: "
    )
    ok, detail = dns[f"TXT _mta-sts.{s.domain}."]
    assert not ok and " missing; expected: " in detail
    assert (s.domain, "MX") in zone.queries


async def test_check_without_a_dns_answer_fails_in_one_line(settings: Settings) -> None:
    (closed,) = free_ports(1)  # nothing answers on it
    s = settings.with_changes(smtp={"dns_resolver": f"127.0.0.1:{closed}"}, language="en")
    results = await published_dns(s, lifetime=0.5)
    assert len(results) == 1
    name, ok, detail = results[0]
    assert (name, ok) == ("dns", False)
    assert detail.startswith(f"no answer from the DNS server 127.0.0.1:{closed} (LifetimeTimeout")
    # A domain that cannot be in public DNS, without a resolver of its own: skipped.
    skipped = await published_dns(settings.with_changes(language="en"))
    assert skipped == [("dns", True, f"skipped: {settings.domain} is not in public DNS")]
