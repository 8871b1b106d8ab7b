"""One scheduler leader among the services on one PostgreSQL database: exactly one leads, the
cluster-wide jobs run only there, and when the leader's connection dies (terminated by the
server, or dropped by the node) another node leads within seconds."""

from __future__ import annotations

from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import select

from mailsvc.app import start_service
from mailsvc.cli.check import run_checks
from mailsvc.config import Settings
from mailsvc.storage.leader import asyncpg_dsn, scheduler_leader
from mailsvc.storage.tables import job_runs
from provisioning.directory import Directory
from tests.integration.cluster_nodes import (
    cluster_jobs,
    first_node,
    leaders,
    other_node,
    wait_until,
)

# Several nodes on one PostgreSQL whatever the suite's database: run in the PostgreSQL pass.
pytestmark = [pytest.mark.asyncio, pytest.mark.postgresql_only]


@pytest.fixture
def settings(settings: Settings, pg_url: str) -> Settings:
    return first_node(settings, pg_url)


async def test_one_leader_runs_the_cluster_jobs_and_another_takes_over_within_seconds(
    settings: Settings, directory: Directory, tmp_path: Path
) -> None:
    a = await start_service(settings)
    b = await start_service(other_node(settings, tmp_path / "b", "node-b"))
    stopped = []
    try:
        # The first to start leads (its first try is made before start_service returns).
        assert leaders([a, b]) == ["node-a"]
        assert b.leadership.role == "follower"
        assert await scheduler_leader(a.engine) == "node-a"
        assert "distributions-sync" in cluster_jobs(a) and "reminders" in cluster_jobs(a)
        assert cluster_jobs(b) == []
        # Node-local jobs run everywhere.
        assert b.scheduler is not None and b.scheduler.scheduler.get_job("capture-purge")

        # The server cuts the leader's connection (as when its machine is gone and TCP
        # keepalives give up): node-b leads within a few retries, node-a follows at once.
        pid = await wait_until(lambda: _backend_pid(settings, "node-a"))
        assert pid, "node-a holds no advisory lock"
        await _sql(settings, "SELECT pg_terminate_backend($1)", pid)
        assert await b.leadership.wait_for("leader", within=5.0), "node-b did not take the lead"
        assert await a.leadership.wait_for("follower", within=5.0)
        assert leaders([a, b]) == ["node-b"]
        assert await scheduler_leader(a.engine) == "node-b"
        assert cluster_jobs(a) == []
        assert "distributions-sync" in cluster_jobs(b)

        # The new leader's jobs run: its sync is recorded after the takeover.
        taken_over = await _last_success(b, "distributions-sync")
        assert await wait_until(lambda: _later(b, "distributions-sync", taken_over), within=5.0), (
            "the new leader did not run the cluster-wide jobs"
        )

        # `mailsvc check` names the leader.
        results = await run_checks(b.settings, dns=False)
        line = next(r for r in results if r[0] == "scheduler-leader")
        assert line[1] and "node-b" in line[2], line

        # Stopped cleanly: the lock goes with the connection and node-a leads again.
        await b.stop()
        stopped = [b]
        assert await a.leadership.wait_for("leader", within=5.0)
        assert "distributions-sync" in cluster_jobs(a)
    finally:
        for service in (b, a):
            if service not in stopped:
                await service.stop()


async def test_a_node_that_drops_its_connection_hands_over_the_lead(
    settings: Settings, directory: Directory, tmp_path: Path
) -> None:
    a = await start_service(settings)
    b = await start_service(other_node(settings, tmp_path / "b", "node-b"))
    c = await start_service(other_node(settings, tmp_path / "c", "node-c"))
    try:
        assert leaders([a, b, c]) == ["node-a"]
        await a.leadership.lose_connection()  # type: ignore[attr-defined]
        assert await wait_until(lambda: _one_other_leads([a, b, c]), within=5.0), (
            f"no single new leader: {leaders([a, b, c])}"
        )
    finally:
        for service in (c, b, a):
            await service.stop()


async def _one_other_leads(services: list) -> bool:  # type: ignore[type-arg]
    found = leaders(services)
    return len(found) == 1 and found != ["node-a"]


async def _sql(settings: Settings, query: str, *args: object) -> object:
    """One value from the test's database on a connection of the test's own."""
    conn = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def _backend_pid(settings: Settings, node: str) -> object:
    return await _sql(
        settings,
        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $1",
        node,
    )


async def _last_success(service: object, job: str) -> object:
    engine = service.engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        row = (await conn.execute(select(job_runs).where(job_runs.c.job == job))).first()
    return None if row is None else row.last_success_at


async def _later(service: object, job: str, before: object) -> bool:
    now = await _last_success(service, job)
    return now is not None and (before is None or now > before)
