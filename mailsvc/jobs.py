"""APScheduler wiring. Jobs are thin calls into use cases; their state lives in the database,
so a job that was due while the service was down simply runs at start-up.

Jobs are of two scopes. *Cluster-wide* jobs act on what all nodes share (the database, the
directory, the mailboxes): distributions and their one-off jobs, reminders, the IMAP opened
check, the councillors' lifecycle, the relay log's upkeep. They run only on the node that leads
the scheduler (mailsvc.storage.leader): they are added when the node becomes the leader and
removed — their runs in progress cancelled — the moment it stops being it. *Node-local* jobs
look after this node's own var_dir (the capture purge) and run on every node."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from mailsvc.config import DistributionSettings, Settings
from mailsvc.directory.councillors import Councillors
from mailsvc.distribution.service import Distributions
from mailsvc.relay.delivery import capture
from mailsvc.storage.db import utcnow
from mailsvc.storage.jobruns import JobRuns
from mailsvc.storage.leader import LEADER, Leadership, Role
from mailsvc.storage.queue import MailQueue
from mailsvc.storage.register import AuditContext, os_audit_context
from mailsvc.storage.relaylog import RelayLog
from mailsvc.storage.shared_files import SharedFiles

log = logging.getLogger(__name__)


@dataclass
class JobContext:
    """What the jobs work with: the use cases and stores ``serve`` built, nothing else."""

    settings: Settings
    councillors: Councillors
    distributions: Distributions
    relay_log: RelayLog
    audit: Callable[[str], AuditContext] = os_audit_context
    runner: JobRunner | None = None
    # Where each job's last success and failure are written (for /metrics, `mailsvc check`).
    runs: JobRuns | None = None
    # The queue and the shared files (several nodes on PostgreSQL: spooled bodies' copies).
    queue: MailQueue | None = None
    shared: SharedFiles | None = None


CLUSTER = "cluster"
NODE = "node"


@dataclass(frozen=True)
class JobSpec:
    id: str
    seconds: float
    run: Callable[[JobContext], Awaitable[object]]
    # CLUSTER: only on the scheduler's leader; NODE: on every node (its own var_dir).
    scope: str = CLUSTER


async def councillor_lifecycle(ctx: JobContext) -> object:
    """Disable accounts whose mandate ended; remove mailboxes past retention."""
    service = ctx.councillors
    audit = ctx.audit("scheduler: councillor-lifecycle")
    disabled = await service.apply_due_mandate_ends(audit)
    removed = await service.remove_expired(audit)
    if disabled or removed:
        log.info("lifecycle: disabled %s, removed %s", disabled, removed)
    return disabled, removed


async def relay_log_upkeep(ctx: JobContext) -> object:
    """Copy final delivery states into the relay log; forget metadata past retention."""
    refreshed = await ctx.relay_log.refresh_status()
    cutoff = utcnow() - timedelta(days=ctx.settings.relay.log_retention_days)
    purged = await ctx.relay_log.purge(cutoff)
    if purged:
        log.info("relay log: purged %d entries older than %s", purged, cutoff)
    return refreshed, purged


async def relay_log_and_shared_upkeep(ctx: JobContext) -> object:
    """The relay log's upkeep, and (PostgreSQL) the shared copies of spooled bodies that no
    message needs any more."""
    done = await relay_log_upkeep(ctx)
    if ctx.shared is None or ctx.queue is None or not ctx.shared.enabled:
        return done
    in_use = await ctx.queue.spool_files_in_use()
    forgotten = await ctx.shared.forget_spool(in_use, ctx.settings.smtp.timeout + 60)
    if forgotten:
        log.info("shared files: %d spooled bodies no message needs forgotten", forgotten)
    return done, forgotten


async def capture_purge(ctx: JobContext) -> object:
    """Delete local-capture files older than ``smarthost.capture_retention_days`` (0: none)."""
    days = ctx.settings.smarthost.capture_retention_days
    directory = capture.capture_dir(ctx.settings.var_dir)
    purged = await asyncio.to_thread(capture.purge, directory, days)
    if purged:
        log.info("capture: purged %d files older than %d days", purged, days)
    return purged


async def distributions_sync(ctx: JobContext) -> object:
    """Send what is due (including what fell due while the service was down, reported late)
    and rebuild the one-off jobs of future distributions from the table."""
    service = ctx.distributions
    sent = 0
    for dist in await service.due():
        try:
            result = await service.send(dist.id)
            sent += result.queued
        except Exception:
            log.exception("distribution %d could not be sent; retried at the next run", dist.id)
    if ctx.runner is not None:
        await ctx.runner.plan_distributions(ctx)
    return sent


async def opened_check(ctx: JobContext) -> object:
    """Mark distribution messages the councillors have read (\\Seen over IMAP)."""
    return await ctx.distributions.check_opened()


async def reminders(ctx: JobContext) -> object:
    """Remind councillors who have not acknowledged; tell the clerk whom."""
    return await ctx.distributions.remind()


def job_specs(
    lifecycle_interval: float,
    upkeep_interval: float = 300.0,
    *,
    distribution: DistributionSettings | None = None,
) -> list[JobSpec]:
    """Every job of the service, with stable ids. Nothing is discovered by magic."""
    specs = [
        JobSpec("councillor-lifecycle", lifecycle_interval, councillor_lifecycle),
        JobSpec("relay-log-upkeep", upkeep_interval, relay_log_and_shared_upkeep),
        JobSpec("capture-purge", upkeep_interval, capture_purge, NODE),
    ]
    if distribution is not None:
        specs.append(JobSpec("distributions-sync", distribution.sync_interval, distributions_sync))
        specs.append(JobSpec("reminders", distribution.reminder_interval, reminders))
        if distribution.imap_check_interval > 0:
            specs.append(JobSpec("opened-check", distribution.imap_check_interval, opened_check))
    return specs


class JobRunner:
    """The scheduler plus the job runs in progress, so a stop can wait for them (a run cut off
    while the database is being closed would leave its connection behind), and the
    leadership: cluster-wide jobs are scheduled while this node leads, and only then."""

    def __init__(self, runs: JobRuns | None = None, leadership: Leadership | None = None) -> None:
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.running: dict[asyncio.Task[None], str] = {}
        self.runs = runs
        self.leadership = leadership if leadership is not None else Leadership(LEADER)
        self.ctx: JobContext | None = None
        self.cluster_specs: list[JobSpec] = []
        # Job ids of cluster-wide runs (interval jobs and one-off distribution jobs).
        self._cluster_ids: set[str] = set()
        self.stopped = False

    def _track(
        self, run: Callable[[], Awaitable[object]], job_id: str, *, record: bool = False
    ) -> Callable[[], Any]:
        """The job as the scheduler runs it; ``record``: its outcome is written to ``runs``."""

        async def tracked() -> None:
            task = asyncio.current_task()
            assert task is not None
            self.running[task] = job_id
            try:
                await run()
            except asyncio.CancelledError:
                log.info("job %s interrupted (shutdown or leadership lost); it runs again", job_id)
            except Exception as exc:  # a failing job is logged and retried at its next run
                log.exception("job %s failed", job_id)
                if record:
                    await self._record(job_id, f"{type(exc).__name__}: {exc}")
            else:
                if record:
                    await self._record(job_id, None)
            finally:
                self.running.pop(task, None)

        return tracked

    async def _record(self, job_id: str, error: str | None) -> None:
        if self.runs is None:
            return
        try:
            if error is None:
                await self.runs.succeeded(job_id)
            else:
                await self.runs.failed(job_id, error)
        except Exception as exc:  # the job's work is done; only its record is missing
            log.warning("job %s: its run could not be recorded: %s", job_id, exc)

    def add_interval(self, ctx: JobContext, spec: JobSpec) -> None:
        async def run(spec: JobSpec = spec) -> None:
            await spec.run(ctx)

        if spec.scope == CLUSTER:
            self._cluster_ids.add(spec.id)
        self.scheduler.add_job(
            self._track(run, spec.id, record=True),
            "interval",
            seconds=spec.seconds,
            id=spec.id,
            name=spec.id,
            next_run_time=datetime.now().astimezone(),  # also once at start-up (or lead)
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
            replace_existing=True,
        )

    def role_changed(self, role: Role) -> None:
        """The leadership's listener: lead = add the cluster-wide jobs; follow = remove them
        and cancel their runs in progress at once (another node may be starting them)."""
        if self.stopped:
            return
        if role == LEADER:
            assert self.ctx is not None
            for spec in self.cluster_specs:
                self.add_interval(self.ctx, spec)
            return
        for job in self.scheduler.get_jobs():
            if job.id in self._cluster_ids or job.id.startswith("distribution-"):
                job.remove()
        for task, job_id in list(self.running.items()):
            if job_id in self._cluster_ids or job_id.startswith("distribution-"):
                task.cancel()

    def cluster_jobs_running(self) -> list[str]:
        """Ids of the cluster-wide jobs scheduled here (empty on a follower)."""
        return sorted(
            job.id
            for job in self.scheduler.get_jobs()
            if job.id in self._cluster_ids or job.id.startswith("distribution-")
        )

    async def plan_distributions(self, ctx: JobContext) -> None:
        """One date job per scheduled distribution, at its due time; jobs of distributions
        that are no longer scheduled are removed. The table is the truth: this runs at start-up
        and after every look at it — on the leader only."""
        if not self.leadership.is_leader:
            return
        service = ctx.distributions
        wanted = {
            f"distribution-{d.id}": d
            for d in await service.store.distributions(statuses=("scheduled",))
        }
        if not self.leadership.is_leader:  # lost while reading: the new leader plans
            return
        for job in self.scheduler.get_jobs():
            if job.id.startswith("distribution-") and job.id not in wanted:
                job.remove()
        for job_id, dist in wanted.items():
            run_at = dist.due_at.replace(tzinfo=UTC)
            existing = self.scheduler.get_job(job_id)
            if existing is not None and existing.next_run_time == run_at:
                continue

            async def send(dist_id: int = dist.id) -> None:
                await service.send(dist_id)

            self.scheduler.add_job(
                self._track(send, job_id),
                "date",
                run_date=max(run_at, datetime.now(UTC)),
                id=job_id,
                name=job_id,
                replace_existing=True,
                misfire_grace_time=None,
            )

    async def stop(self, grace: float = 10.0) -> None:
        self.stopped = True
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if not self.running:
            return
        _, late = await asyncio.wait(set(self.running), timeout=grace)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)


def start_scheduler(
    ctx: JobContext, specs: list[JobSpec], leadership: Leadership | None = None
) -> JobRunner:
    """Node-local jobs at once; cluster-wide ones now if this node leads (the sole node of a
    SQLite database always does), else when it comes to lead."""
    runner = JobRunner(ctx.runs, leadership)
    ctx.runner = runner
    runner.ctx = ctx
    runner.cluster_specs = [s for s in specs if s.scope == CLUSTER]
    runner._cluster_ids = {s.id for s in runner.cluster_specs}
    for spec in specs:
        if spec.scope != CLUSTER:
            runner.add_interval(ctx, spec)
    runner.scheduler.start()
    runner.leadership.add_listener(runner.role_changed)
    if runner.leadership.is_leader:
        runner.role_changed(LEADER)
    return runner
