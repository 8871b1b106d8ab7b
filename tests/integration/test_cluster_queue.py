"""Several nodes sharing the delivery queue on a real PostgreSQL, delivering to the real Dovecot.

Each "node" here is what a `mailsvc serve` process has: its own engine (its own connections),
its own ``MailQueue`` under its own node id and, where delivery is involved, its own
``DeliveryWorkers``. They share one fresh PostgreSQL database per test (``pg_url``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mailsvc.app import open_database
from mailsvc.config import Settings
from mailsvc.domain.outcome import Reply
from mailsvc.relay.counters import DELIVERIES, LATE_OUTCOMES, TAKEOVERS, Counters
from mailsvc.relay.delivery.body import PartedBody
from mailsvc.relay.delivery.worker import DeliveryWorkers
from mailsvc.storage.db import create_engine, utcnow
from mailsvc.storage.nodes import Heartbeat
from mailsvc.storage.queue import ROUTE_LMTP, MailQueue
from mailsvc.storage.tables import deliveries, nodes

from .conftest import make_message, wait_for_inbox
from .test_cli import run_cli

# Several nodes on one PostgreSQL whatever the suite's database: run in the PostgreSQL pass.
pytestmark = pytest.mark.postgresql_only


@pytest.fixture
def settings(settings: Settings, pg_url: str) -> Settings:
    """The integration settings on a fresh PostgreSQL database, with short leases."""
    return settings.with_changes(
        database={"url": pg_url},
        cluster={"lease_seconds": 1.0, "heartbeat_seconds": 0.2},
        delivery={"workers": 2, "separate_process": False},
    )


class Nodes:
    """Queues of several nodes on the test's database (each its own engine), closed after."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engines: list[AsyncEngine] = []
        self.queues: list[MailQueue] = []
        self.workers: list[DeliveryWorkers] = []

    async def queue(self, node: str, *, lease_seconds: float | None = None) -> MailQueue:
        if not self.engines:  # the first one makes the schema
            engine = await open_database(self.settings)
        else:
            engine = create_engine(self.settings.database_url)
        self.engines.append(engine)
        queue = MailQueue(
            engine,
            local_domains=(self.settings.domain,),
            node=node,
            lease_seconds=lease_seconds or self.settings.cluster.lease_seconds,
        )
        self.queues.append(queue)
        return queue

    async def workers_of(
        self,
        node: str,
        *,
        counters: Counters | None = None,
        max_idle: float = 5.0,
        start: bool = True,
    ) -> DeliveryWorkers:
        workers = DeliveryWorkers(await self.queue(node), self.settings, counters=counters)
        workers.max_idle = max_idle
        self.workers.append(workers)
        if start:
            await workers.start()
        return workers

    async def close(self) -> None:
        for workers in self.workers:
            await workers.stop()
        for queue in self.queues:
            await queue.close()
        for engine in self.engines:
            await engine.dispose()


@pytest.fixture
async def cluster(settings: Settings, directory: Any) -> AsyncIterator[Nodes]:
    made = Nodes(settings)
    yield made
    await made.close()


async def _enqueue(queue: MailQueue, recipients: Sequence[str], count: int) -> list[str]:
    ids = []
    for i in range(count):
        body = make_message(recipients[0], f"Sprawa nr {i}").as_bytes()
        ids.append(await queue.enqueue("jan@example.org", recipients, body, "127.0.0.1"))
    return ids


async def _statuses(engine: AsyncEngine) -> list[tuple[int, str, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(deliveries.c.id, deliveries.c.status, deliveries.c.node_id).order_by(
                deliveries.c.id
            )
        )
        return [tuple(r) for r in rows.all()]  # type: ignore[misc]


async def _until(check: Callable[[], Awaitable[bool]], within: float = 20.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_two_nodes_claiming_at_once_never_take_the_same_delivery(
    cluster: Nodes, settings: Settings
) -> None:
    # Leases longer than the test: no claim may pass to the other node by takeover here.
    a = await cluster.queue("node-a", lease_seconds=600)
    b = await cluster.queue("node-b", lease_seconds=600)
    recipients = [f"r{i}@{settings.domain}" for i in range(3)]
    await _enqueue(a, recipients, 150)
    taken: dict[str, list[int]] = {"node-a": [], "node-b": []}

    async def claim_all(queue: MailQueue) -> None:
        while True:
            claim = await queue.claim(ROUTE_LMTP, 3)
            for message in claim.messages:
                taken[queue.node] += [d[0] for d in message.deliveries]
            if not claim.messages and not claim.more:
                return

    await asyncio.gather(claim_all(a), claim_all(b), claim_all(a), claim_all(b))
    both = taken["node-a"] + taken["node-b"]
    assert len(both) == len(set(both)) == 450  # each delivery claimed once, none left
    assert taken["node-a"] and taken["node-b"]  # both nodes took part
    rows = await _statuses(a.engine)
    owner = {i: n for i, _, n in rows}
    assert all(owner[i] == "node-a" for i in taken["node-a"])
    assert all(owner[i] == "node-b" for i in taken["node-b"])
    assert {s for _, s, _ in rows} == {"inflight"}


async def test_two_nodes_deliver_every_message_once_to_dovecot(
    cluster: Nodes, settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Anna", "Nowak")
    counters = [Counters(), Counters()]
    await cluster.workers_of("node-a", counters=counters[0])
    await cluster.workers_of("node-b", counters=counters[1])
    sender = await cluster.queue("acceptor")
    await _enqueue(sender, [account.address], 40)
    inbox = await wait_for_inbox(settings, account.address, account.password, 40, within=60)
    assert len(inbox) == 40

    async def all_delivered() -> bool:
        return {s for _, s, _ in await _statuses(sender.engine)} == {"delivered"}

    assert await _until(all_delivered)
    await asyncio.sleep(0.5)  # a duplicate would have arrived by now
    inbox = await wait_for_inbox(settings, account.address, account.password, 41, within=0.5)
    subjects = [m.split(b"Subject: ", 1)[1].split(b"\n", 1)[0] for m in inbox]
    assert len(subjects) == len(set(subjects)) == 40
    done = [c.get(DELIVERIES, ROUTE_LMTP, "delivered") for c in counters]
    assert sum(done) == 40
    assert all(c.get(TAKEOVERS) == 0 for c in counters)


async def test_an_expired_claim_is_taken_over_and_the_late_outcome_is_not_applied(
    cluster: Nodes, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    a = await cluster.queue("node-a", lease_seconds=0.5)
    b = await cluster.queue("node-b", lease_seconds=30)
    events: dict[str, list[tuple[str, int]]] = {"node-a": [], "node-b": []}
    a.on_lease_event = lambda name, n: events["node-a"].append((name, n))
    b.on_lease_event = lambda name, n: events["node-b"].append((name, n))
    await _enqueue(a, [f"x@{settings.domain}"], 1)
    (first,) = (await a.claim(ROUTE_LMTP, 5)).messages
    # Node a holds it: node b finds nothing while the lease holds.
    assert (await b.claim(ROUTE_LMTP, 5)).messages == []
    await asyncio.sleep(0.8)  # node a "died": no renewal, the lease passes
    with caplog.at_level(logging.WARNING, logger="mailsvc.storage.queue.mailqueue"):
        (second,) = (await b.claim(ROUTE_LMTP, 5)).messages
    assert [d[0] for d in second.deliveries] == [d[0] for d in first.deliveries]
    assert events["node-b"] == [(TAKEOVERS, 1)]
    assert "taken over from node node-a" in caplog.text
    assert "duplicate is possible" in caplog.text
    delivery_id = first.deliveries[0][0]
    # Node a comes back and reports its (late) outcome: not applied, counted.
    await a.record(first.id, [(delivery_id, "failed", "550 5.1.1 late", None)])
    assert events["node-a"] == [(LATE_OUTCOMES, 1)]
    assert await _statuses(a.engine) == [(delivery_id, "inflight", "node-b")]
    # Node b's outcome is.
    await b.record(second.id, [(delivery_id, "delivered", "250 2.0.0 ok", None)])
    assert await _statuses(a.engine) == [(delivery_id, "delivered", "node-b")]
    assert events["node-b"] == [(TAKEOVERS, 1)]


async def test_a_restarted_node_takes_back_only_its_own_claims(
    cluster: Nodes, settings: Settings
) -> None:
    a = await cluster.queue("node-a")
    b = await cluster.queue("node-b", lease_seconds=60)
    await _enqueue(a, [f"x@{settings.domain}"], 2)
    assert len((await a.claim(ROUTE_LMTP, 1)).messages) == 1
    assert len((await b.claim(ROUTE_LMTP, 1)).messages) == 1
    again = await cluster.queue("node-a")  # node a after a restart: same id
    assert await again.release_claims() == 1
    rows = await _statuses(a.engine)
    assert sorted(s for _, s, _ in rows) == ["inflight", "queued"]
    assert [n for _, s, n in rows if s == "inflight"] == ["node-b"]
    assert await again.release_claims() == 0


class _SlowLmtp:
    """The real LMTP client to Dovecot, started only after ``delay`` seconds (a slow server)."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner = inner
        self.delay = delay

    async def deliver(
        self,
        mail_from: str,
        recipients: Sequence[str],
        body: bytes | PartedBody,
        *,
        dsn_envid: str | None = None,
    ) -> dict[str, Reply]:
        await asyncio.sleep(self.delay)
        result: dict[str, Reply] = await self.inner.deliver(
            mail_from, recipients, body, dsn_envid=dsn_envid
        )
        return result

    async def close(self) -> None:
        await self.inner.close()


async def test_renewal_keeps_a_slow_delivery_from_being_taken_over(
    cluster: Nodes, settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Piotr", "Wolny")
    counters = Counters()
    # Its dispatchers not started: the test makes the claim and the attempt itself.
    slow = await cluster.workers_of("node-slow", counters=counters, start=False)
    slow.renewal.start()
    assert slow.renewal.interval == pytest.approx(0.2)
    other = await cluster.queue("node-other")
    await _enqueue(other, [account.address], 1)
    (message,) = (await slow.queue.claim(ROUTE_LMTP, 1)).messages
    client = _SlowLmtp(slow.client(ROUTE_LMTP), delay=3.0)  # three leases long
    attempt = asyncio.create_task(slow.deliver(client, message))
    stolen = []
    while not attempt.done():  # the other node keeps trying to take it
        stolen += (await other.claim(ROUTE_LMTP, 5)).messages
        await asyncio.sleep(0.1)
    await attempt
    await client.close()
    assert stolen == []
    assert slow.renewal.rounds >= 5
    assert counters.get(TAKEOVERS) == 0 and counters.get(LATE_OUTCOMES) == 0
    assert [s for _, s, _ in await _statuses(other.engine)] == ["delivered"]
    inbox = await wait_for_inbox(settings, account.address, account.password)
    assert len(inbox) == 1


async def test_notify_wakes_an_idle_node_without_polling(
    cluster: Nodes, settings: Settings, add_councillor: Callable[..., Any]
) -> None:
    account = await add_councillor("Ewa", "Szybka")
    # A poll interval far beyond the test's wait: only the notification can wake it.
    idle = await cluster.workers_of("node-idle", max_idle=600)
    assert idle.listener is not None
    await asyncio.wait_for(idle.listener.listening.wait(), 10)
    await asyncio.sleep(0.3)  # its dispatchers found nothing and wait
    acceptor = await cluster.queue("node-acceptor")
    await _enqueue(acceptor, [account.address], 1)
    inbox = await wait_for_inbox(settings, account.address, account.password, within=10)
    assert len(inbox) == 1
    assert idle.listener.notifications >= 1


async def test_listener_reconnects_after_its_connection_is_killed(
    cluster: Nodes, settings: Settings, add_councillor: Callable[..., Any], pg_server: str
) -> None:
    account = await add_councillor("Olga", "Trwała")
    idle = await cluster.workers_of("node-idle", max_idle=600)
    assert idle.listener is not None
    await asyncio.wait_for(idle.listener.listening.wait(), 10)
    name = settings.database_url.rsplit("/", 1)[1]
    killed = await asyncio.to_thread(
        run_psql,
        pg_server,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "  # noqa: S608 (a test's own name)
        f"WHERE datname = '{name}' AND query LIKE 'LISTEN%'",
    )
    assert killed.strip() == "1"

    async def listening_again() -> bool:
        return idle.listener is not None and idle.listener.listening.is_set()

    await asyncio.sleep(0.2)
    assert await _until(listening_again, 15)
    acceptor = await cluster.queue("node-acceptor")
    await _enqueue(acceptor, [account.address], 1)
    inbox = await wait_for_inbox(settings, account.address, account.password, within=10)
    assert len(inbox) == 1


def run_psql(url: str, sql: str) -> str:
    import subprocess

    out = subprocess.run(
        ["psql", "-qAtX", url, "-c", sql], check=True, capture_output=True, text=True
    )
    return out.stdout


async def test_cluster_status_shows_up_stopped_and_down_nodes(
    cluster: Nodes, settings: Settings
) -> None:
    engine = (await cluster.queue("node-up")).engine
    up = Heartbeat(engine, "node-up", 0.2, lambda: "leader")
    stopped = Heartbeat(engine, "node-stopped", 0.2, lambda: "follower")
    down = Heartbeat(engine, "node-down", 0.2, lambda: "follower")
    for beat in (up, stopped, down):
        await beat.start()
    try:
        await stopped.stop()
        # node-down dies: no stop recorded, its heartbeat grows old, its claim's lease passes.
        assert down._task is not None
        down._task.cancel()
        dead = await cluster.queue("node-down", lease_seconds=0.2)
        await _enqueue(dead, [f"x@{settings.domain}"], 1)
        assert len((await dead.claim(ROUTE_LMTP, 1)).messages) == 1
        async with engine.begin() as conn:
            await conn.execute(
                update(nodes)
                .where(nodes.c.node_id == "node-down")
                .values(heartbeat_at=func.timezone("UTC", func.now()) - timedelta(seconds=30))
            )
        await asyncio.sleep(0.4)  # the claim's lease passes
        extra = {"MAILSVC_CLUSTER__HEARTBEAT_SECONDS": "0.2"}
        proc = await asyncio.to_thread(run_cli, settings, "cluster", "status", "--json", **extra)
        assert proc.returncode == 0, proc.stderr
        status = json.loads(proc.stdout)
        assert status["heartbeat_seconds"] == 0.2
        assert status["down_after_seconds"] == pytest.approx(0.6)
        by_id = {n["node_id"]: n for n in status["nodes"]}
        assert set(by_id) == {"node-up", "node-stopped", "node-down"}
        assert set(by_id["node-up"]) == {
            "node_id",
            "host",
            "pid",
            "role",
            "version",
            "state",
            "started_at",
            "heartbeat_at",
            "heartbeat_age_seconds",
            "stopped_at",
            "inflight",
            "expired_leases",
        }
        assert by_id["node-up"]["state"] == "up"
        assert by_id["node-up"]["role"] == "leader"
        assert by_id["node-stopped"]["state"] == "stopped"
        assert by_id["node-stopped"]["stopped_at"] is not None
        assert by_id["node-down"]["state"] == "down"
        assert by_id["node-down"]["heartbeat_age_seconds"] >= 30
        assert (by_id["node-down"]["inflight"], by_id["node-down"]["expired_leases"]) == (1, 1)
        assert (by_id["node-up"]["inflight"], by_id["node-up"]["expired_leases"]) == (0, 0)

        proc = await asyncio.to_thread(
            run_cli, settings, "cluster", "status", **extra, MAILSVC_LANGUAGE="en"
        )
        assert proc.returncode == 0, proc.stderr
        lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
        assert " up " in lines["node-up"] and " leader " in lines["node-up"]
        assert " stopped " in lines["node-stopped"]
        assert " down " in lines["node-down"]
        assert lines["node-down"].split()[-2:] == ["1", "1"]
        proc = await asyncio.to_thread(run_cli, settings, "cluster", "status", **extra)
        assert "zatrzymany" in proc.stdout and "nie odpowiada" in proc.stdout
    finally:
        await up.stop()


async def test_a_heartbeat_keeps_the_node_up(cluster: Nodes) -> None:
    engine = (await cluster.queue("node-a")).engine
    beat = Heartbeat(engine, "node-a", 0.1, lambda: "follower")
    await beat.start()
    try:

        async def first_beat() -> Any:
            async with engine.connect() as conn:
                return (
                    await conn.execute(
                        select(nodes.c.started_at, nodes.c.heartbeat_at, nodes.c.pid)
                    )
                ).one()

        started, first, pid = await first_beat()
        assert pid > 0

        async def moved() -> bool:
            return (await first_beat())[1] > first

        assert await _until(moved, 5)
    finally:
        await beat.stop()
    async with engine.connect() as conn:
        stopped_at = (await conn.execute(select(nodes.c.stopped_at))).scalar_one()
    assert stopped_at is not None and stopped_at >= started
    assert stopped_at <= utcnow() + timedelta(minutes=5)
