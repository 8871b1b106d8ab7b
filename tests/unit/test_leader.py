"""The scheduler's leadership as the jobs see it: cluster-wide jobs only while leading, their runs
cancelled the moment the lead is lost; node-local jobs always; the setting checked."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from mailsvc.config import DEFAULT_CONFIG, load_settings
from mailsvc.config.check import validate
from mailsvc.errors import ConfigError
from mailsvc.jobs import CLUSTER, NODE, JobContext, JobSpec, job_specs, start_scheduler
from mailsvc.storage.leader import (
    FOLLOWER,
    LEADER,
    Leadership,
    PgLeadership,
    asyncpg_dsn,
    leadership_for,
)


@pytest.mark.parametrize("value", [0.0, -1.0, 61.0])
def test_leader_retry_seconds_out_of_range_is_named(value: float) -> None:
    settings = load_settings(DEFAULT_CONFIG, env={}).with_changes(
        cluster={"leader_retry_seconds": value}
    )
    with pytest.raises(ConfigError, match=r"cluster\.leader_retry_seconds"):
        validate(settings)


def test_the_default_config_documents_leader_retry_seconds() -> None:
    assert "leader_retry_seconds = 3.0" in DEFAULT_CONFIG.read_text(encoding="utf-8")
    assert load_settings(DEFAULT_CONFIG, env={}).cluster.leader_retry_seconds == 3.0


def test_sqlite_leads_alone_postgresql_contends_and_no_scheduler_follows() -> None:
    base = load_settings(DEFAULT_CONFIG, env={}).with_changes(cluster={"node_id": "n1"})
    assert leadership_for(base).role == LEADER
    assert leadership_for(base, scheduler=False).role == FOLLOWER
    pg = base.with_changes(database={"url": "postgresql+asyncpg://mailsvc:s%40cret@db:5433/m"})
    contender = leadership_for(pg)
    assert isinstance(contender, PgLeadership) and contender.role == FOLLOWER
    assert contender.dsn == "postgresql://mailsvc:s%40cret@db:5433/m"
    assert asyncpg_dsn("postgresql+asyncpg://u@h/d?ssl=require") == "postgresql://u@h/d?ssl=require"


def test_every_job_has_a_scope_and_only_the_capture_purge_is_node_local() -> None:
    from mailsvc.config import DistributionSettings

    specs = job_specs(60.0, distribution=DistributionSettings(imap_check_interval=60.0))
    scopes = {s.id: s.scope for s in specs}
    assert scopes.pop("capture-purge") == NODE
    assert set(scopes.values()) == {CLUSTER}
    assert {"distributions-sync", "reminders", "opened-check", "councillor-lifecycle"} <= set(
        scopes
    )


@pytest.mark.asyncio
async def test_cluster_jobs_come_with_the_lead_and_go_with_it_at_once() -> None:
    started = asyncio.Event()
    runs: list[str] = []

    async def long_cluster_job(ctx: JobContext) -> object:
        runs.append("cluster")
        started.set()
        await asyncio.sleep(60)
        return None

    async def local_job(ctx: JobContext) -> object:
        runs.append("local")
        return None

    leadership = Leadership(FOLLOWER)
    specs = [
        JobSpec("sync", 3600.0, long_cluster_job, CLUSTER),
        JobSpec("purge", 3600.0, local_job, NODE),
    ]
    ctx = cast(JobContext, type("Ctx", (), {"runs": None, "runner": None})())
    runner = start_scheduler(ctx, specs, leadership)
    try:
        await asyncio.sleep(0.3)
        assert runs == ["local"]  # a follower runs its node's jobs only
        assert runner.cluster_jobs_running() == []

        leadership._set(LEADER)
        assert runner.cluster_jobs_running() == ["sync"]
        await asyncio.wait_for(started.wait(), 5)
        (task,) = [t for t, job in runner.running.items() if job == "sync"]

        leadership._set(FOLLOWER)  # lost: removed, and the run in progress cancelled
        assert runner.cluster_jobs_running() == []
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)
        assert task.done() and not runner.running
    finally:
        await runner.stop(grace=1.0)
    leadership._set(LEADER)  # after the stop: nothing is scheduled again
    assert runner.cluster_jobs_running() == []


@pytest.mark.asyncio
async def test_wait_for_a_role_that_does_not_come_times_out() -> None:
    leadership = Leadership(FOLLOWER)
    assert not await leadership.wait_for(LEADER, within=0.1)
    asyncio.get_running_loop().call_later(0.05, leadership._set, LEADER)
    assert await leadership.wait_for(LEADER, within=2.0)
