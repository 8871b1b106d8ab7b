"""When each scheduled job last succeeded and last failed (mailsvc.jobs writes, /metrics and
`mailsvc check` read): in the database, because the check runs in another process than the
scheduler."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from mailsvc.storage.db import utcnow
from mailsvc.storage.tables import job_runs
from mailsvc.storage.units import EngineUnits, Units

ERROR_MAX = 500


@dataclass(frozen=True)
class JobRun:
    job: str
    last_success_at: datetime | None  # naive UTC
    last_failure_at: datetime | None
    last_error: str | None


def _upsert(conn: Connection, job: str, values: dict[str, Any]) -> None:
    # Two schedulers inserting the same new row at once fail one unit: the caller logs it and
    # the job's next run updates the row.
    changed = conn.execute(update(job_runs).where(job_runs.c.job == job).values(**values))
    if not changed.rowcount:
        conn.execute(insert(job_runs).values(job=job, **values))


class JobRuns:
    def __init__(self, engine: AsyncEngine, *, units: Units | None = None) -> None:
        self.engine = engine
        # The queue's units of work when given: these writes take turns with the queue's.
        self.units: Units = units or EngineUnits(engine)

    async def succeeded(self, job: str, at: datetime | None = None) -> None:
        values = {"last_success_at": at or utcnow()}
        # Not fsync'd: a lost time is only an older one, replaced at the job's next run.
        await self.units.run(lambda conn: _upsert(conn, job, values), durable=False)

    async def failed(self, job: str, error: str, at: datetime | None = None) -> None:
        values = {"last_failure_at": at or utcnow(), "last_error": error[:ERROR_MAX]}
        await self.units.run(lambda conn: _upsert(conn, job, values), durable=False)

    async def all(self) -> dict[str, JobRun]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(job_runs).order_by(job_runs.c.job))).all()
        return {row.job: JobRun(row.job, row[1], row[2], row[3]) for row in rows}
