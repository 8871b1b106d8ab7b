"""APScheduler wiring. Jobs are thin calls into use cases; their state lives in the database,
so a job that was due while the service was down simply runs at start-up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from apscheduler.schedulers.asyncio import AsyncIOScheduler

if TYPE_CHECKING:
    from mailsvc.app import Parts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobSpec:
    id: str
    seconds: float
    run: Callable[[Parts], Awaitable[object]]


async def councillor_lifecycle(ctx: Parts) -> object:
    """Disable accounts whose mandate ended; remove mailboxes past retention."""
    from mailsvc.app import audit_context

    service = ctx.councillors()
    audit = audit_context("scheduler: councillor-lifecycle")
    disabled = await service.apply_due_mandate_ends(audit)
    removed = await service.remove_expired(audit)
    if disabled or removed:
        log.info("lifecycle: disabled %s, removed %s", disabled, removed)
    return disabled, removed


async def relay_log_upkeep(ctx: Parts) -> object:
    """Copy final delivery states into the relay log; forget metadata past retention."""
    from datetime import timedelta

    from mailsvc.storage.db import utcnow

    refreshed = await ctx.relay_log.refresh_status()
    cutoff = utcnow() - timedelta(days=ctx.settings.relay.log_retention_days)
    purged = await ctx.relay_log.purge(cutoff)
    if purged:
        log.info("relay log: purged %d entries older than %s", purged, cutoff)
    return refreshed, purged


def job_specs(lifecycle_interval: float, upkeep_interval: float = 300.0) -> list[JobSpec]:
    """Every job of the service, with stable ids. Nothing is discovered by magic."""
    return [
        JobSpec("councillor-lifecycle", lifecycle_interval, councillor_lifecycle),
        JobSpec("relay-log-upkeep", upkeep_interval, relay_log_upkeep),
    ]


class JobRunner:
    """The scheduler plus the job runs in progress, so a stop can wait for them (a run cut off
    while the database is being closed would leave its connection behind)."""

    def __init__(self) -> None:
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.running: set[asyncio.Task[None]] = set()

    async def stop(self, grace: float = 10.0) -> None:
        self.scheduler.shutdown(wait=False)
        if not self.running:
            return
        _, late = await asyncio.wait(set(self.running), timeout=grace)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)


def start_scheduler(ctx: Parts, specs: list[JobSpec]) -> JobRunner:
    runner = JobRunner()
    for spec in specs:

        async def run(spec: JobSpec = spec) -> None:
            task = asyncio.current_task()
            assert task is not None
            runner.running.add(task)
            try:
                await spec.run(ctx)
            except asyncio.CancelledError:
                log.info("job %s interrupted by shutdown; it runs again at the next start", spec.id)
            except Exception:  # a failing job is logged and retried at its next run
                log.exception("job %s failed", spec.id)
            finally:
                runner.running.discard(task)

        runner.scheduler.add_job(
            run,
            "interval",
            seconds=spec.seconds,
            id=spec.id,
            name=spec.id,
            next_run_time=datetime.now().astimezone(),  # also once at start-up
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
    runner.scheduler.start()
    return runner
