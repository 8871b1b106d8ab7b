"""``/metrics`` in the Prometheus text format, served by `mailsvc serve` on ``metrics.port``.

Counters come from the relay's ``Counters`` (sessions, refusals, AUTH failures, delivery
outcomes, also those of the delivery process); gauges are read from the database at scrape
time (``mailsvc.storage.snapshot``): before each scrape the handler awaits a fresh snapshot
(at most one query round per ``SNAPSHOT_MAX_AGE``, shared by concurrent scrapes), and the
collector then only reads what it holds, so the event loop never waits on a driver. The
snapshot reads through an engine of its own: under SQLite's WAL it then never queues behind the
service's writes for the one pooled connection.

The registry is the server's own (not prometheus_client's global one): two services in one
process, as in the tests, do not mix their figures. The endpoint is a small asyncio server:
GET /metrics, nothing else, one request per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from mailsvc.config import Settings
from mailsvc.errors import MailsvcError
from mailsvc.relay.counters import (
    AUTH_FAILURES,
    DELIVERIES,
    LABELS,
    LATE_OUTCOMES,
    SMTP_SESSIONS,
    TAKEOVERS,
    Counters,
)
from mailsvc.storage import snapshot
from mailsvc.storage.db import create_engine
from mailsvc.storage.queue import ROUTES

log = logging.getLogger(__name__)

# A scrape reuses a snapshot younger than this (seconds).
SNAPSHOT_MAX_AGE = 1.0
# A client must send its request within this many seconds.
REQUEST_TIMEOUT = 10.0
_HEADER_LINES = 100

_COUNTER_HELP = {
    SMTP_SESSIONS: "SMTP connections accepted",
    "smtp_refusals": "SMTP 4xx/5xx replies and refused connections, by fixed reason code",
    AUTH_FAILURES: "Failed AUTH on the submission port",
    DELIVERIES: "Recorded outcomes of delivery attempts (one per recipient and attempt)",
    TAKEOVERS: "In-flight deliveries this node took over from another whose lease expired"
    " (each a possible duplicate)",
    LATE_OUTCOMES: "Delivery outcomes not applied: the claim had been taken over by another node",
}
# Series shown as 0 before anything happened, so that rate() has a start.
_KNOWN: dict[str, list[tuple[str, ...]]] = {
    SMTP_SESSIONS: [("inbound",), ("submission",)],
    AUTH_FAILURES: [("invalid_credentials",), ("throttled",), ("connection_limit",)],
    DELIVERIES: [
        (route, outcome) for route in ROUTES for outcome in ("delivered", "deferred", "failed")
    ],
    TAKEOVERS: [()],
    LATE_OUTCOMES: [()],
}


def _epoch(at: datetime) -> float:
    return at.replace(tzinfo=UTC).timestamp()


class ServiceCollector(Collector):
    """The service's figures, from the counters and the last snapshot."""

    def __init__(self, counters: Counters, jobs: Sequence[str]) -> None:
        self.counters = counters
        self.jobs = list(jobs)
        self.snapshot: snapshot.Snapshot | None = None
        self.database_up = False

    def collect(self) -> Iterable[Metric]:
        yield from self._counters()
        up = GaugeMetricFamily(
            "mailsvc_database_up", "1 if the last read of the database for /metrics worked"
        )
        up.add_metric([], 1.0 if self.database_up else 0.0)
        yield up
        if self.snapshot is not None:
            yield from self._gauges(self.snapshot)

    def _counters(self) -> Iterable[Metric]:
        counted: dict[str, dict[tuple[str, ...], int]] = {name: {} for name in LABELS}
        for name, labels, count in self.counters.items():
            counted[name][labels] = count
        for name, label_names in LABELS.items():
            family = CounterMetricFamily(
                f"mailsvc_{name}", _COUNTER_HELP[name], labels=list(label_names)
            )
            values = dict.fromkeys(_KNOWN.get(name, []), 0) | counted[name]
            for labels, count in sorted(values.items()):
                family.add_metric(list(labels), float(count))
            yield family

    def _gauges(self, snap: snapshot.Snapshot) -> Iterable[Metric]:
        queue = GaugeMetricFamily(
            "mailsvc_queue_deliveries",
            "Deliveries in the queue by state (dead: waiting for an operator)",
            labels=["state"],
        )
        for state, count in snap.queue.items():
            queue.add_metric([state], float(count))
        yield queue
        oldest = GaugeMetricFamily(
            "mailsvc_queue_oldest_waiting_seconds",
            "Age of the oldest message with a delivery still waiting (0: none)",
        )
        age = (snap.taken_at - snap.oldest_waiting).total_seconds() if snap.oldest_waiting else 0
        oldest.add_metric([], max(0.0, age))
        yield oldest
        leases = GaugeMetricFamily(
            "mailsvc_delivery_leases",
            "In-flight deliveries by the node holding their claim and whether its lease still"
            " holds (held) or has passed (expired: due for takeover)",
            labels=["node", "state"],
        )
        for (node, state), count in sorted(snap.leases.items()):
            leases.add_metric([node, state], float(count))
        yield leases
        progress = GaugeMetricFamily(
            "mailsvc_distribution_recipients",
            "Recipients of each distribution being sent or still delivered, by state",
            labels=["distribution", "state"],
        )
        for dist_id, states in sorted(snap.distributions.items()):
            for state, count in states.items():
                progress.add_metric([str(dist_id), state], float(count))
        yield progress
        receipts = GaugeMetricFamily(
            "mailsvc_receipts",
            "Councillors' receipts of distributions started within distribution.link_valid_days,"
            " by state",
            labels=["state"],
        )
        for state, count in sorted(snap.receipts.items()):
            receipts.add_metric([state], float(count))
        yield receipts
        success = GaugeMetricFamily(
            "mailsvc_job_last_success_timestamp_seconds",
            "When each scheduled job last succeeded (Unix time; 0: never)",
            labels=["job"],
        )
        failure = GaugeMetricFamily(
            "mailsvc_job_last_failure_timestamp_seconds",
            "When each scheduled job last failed (Unix time; 0: never)",
            labels=["job"],
        )
        for job in sorted(set(self.jobs) | snap.jobs.keys()):
            run = snap.jobs.get(job)
            ok = run.last_success_at if run else None
            bad = run.last_failure_at if run else None
            success.add_metric([job], _epoch(ok) if ok else 0.0)
            failure.add_metric([job], _epoch(bad) if bad else 0.0)
        yield success
        yield failure


class Metrics:
    """The registry and the snapshot that feeds it."""

    def __init__(self, settings: Settings, counters: Counters, jobs: Sequence[str]) -> None:
        self.settings = settings
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = ServiceCollector(counters, jobs)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)  # memory, CPU, open files of this process
        self.engine: AsyncEngine = create_engine(settings.database_url)
        self._lock = asyncio.Lock()
        self._taken = -SNAPSHOT_MAX_AGE

    async def refresh(self) -> None:
        async with self._lock:  # concurrent scrapes share one round of queries
            if time.monotonic() - self._taken < SNAPSHOT_MAX_AGE:
                return
            try:
                self.collector.snapshot = await snapshot.take(
                    self.engine, receipt_days=self.settings.distribution.link_valid_days
                )
                self.collector.database_up = True
            except Exception as exc:  # the counters are still worth serving
                log.warning("metrics: the database could not be read: %s", exc)
                self.collector.database_up = False
            self._taken = time.monotonic()

    async def render(self) -> bytes:
        await self.refresh()
        return generate_latest(self.registry)

    async def close(self) -> None:
        await self.engine.dispose()


class MetricsServer:
    """GET /metrics on ``host:port`` (port 0: any free one, see ``port``)."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self._requested = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self._requested, reuse_address=True
        )
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.metrics.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                request = await reader.readline()
                for _ in range(_HEADER_LINES):  # the headers say nothing we need
                    if await reader.readline() in (b"\r\n", b"\n", b""):
                        break
            await self._answer(writer, request.decode("latin-1").split())
        except (TimeoutError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, writer: asyncio.StreamWriter, request: list[str]) -> None:
        if len(request) != 3 or not request[2].startswith("HTTP/"):
            status, body, kind = "400 Bad Request", b"bad request\n", "text/plain"
        elif request[0] not in ("GET", "HEAD"):
            status, body, kind = "405 Method Not Allowed", b"GET only\n", "text/plain"
        elif request[1].split("?", 1)[0] != "/metrics":
            status, body, kind = "404 Not Found", b"see /metrics\n", "text/plain"
        else:
            status, body, kind = "200 OK", await self.metrics.render(), CONTENT_TYPE_LATEST
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + (b"" if request[:1] == ["HEAD"] else body))
        await writer.drain()


async def start_metrics(
    settings: Settings, counters: Counters, jobs: Sequence[str]
) -> MetricsServer:
    """The endpoint on ``metrics.host:metrics.port``, serving ``counters`` and the database's
    figures (``jobs``: the scheduled jobs' ids, shown before their first run)."""
    host, port = settings.metrics.host, settings.metrics.port
    server = MetricsServer(Metrics(settings, counters, jobs), host, port)
    try:
        await server.start()
    except OSError as exc:
        await server.stop()
        raise MailsvcError(f"metrics: cannot listen on {host}:{port}: {exc.strerror}") from None
    return server
