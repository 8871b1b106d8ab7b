"""The service on a database made before schema migrations (tests/fixtures/pre_migration.sql,
by the code of commit dd74305): it refuses to start, `mailsvc check` says why, and after
`mailsvc db upgrade` it starts with the old queue in it."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from mailsvc.app import start_service
from mailsvc.cli.db import cmd_db
from mailsvc.cli.main import run_checks
from mailsvc.config import Settings
from mailsvc.storage import schema
from mailsvc.storage.schema import SchemaVersionError
from provisioning.directory import Directory

FIXTURE = Path(__file__).parents[1] / "fixtures" / "pre_migration.sql"


async def test_the_service_starts_on_a_database_from_before_migrations_after_db_upgrade(
    settings: Settings, directory: Directory
) -> None:
    # Delivery in this process: starting its own is not the point here, and takes seconds.
    settings = settings.with_changes(delivery={"separate_process": False})
    database = make_url(settings.database_url).database
    assert database is not None
    with sqlite3.connect(database) as db:
        db.executescript(FIXTURE.read_text(encoding="utf-8"))
        queued = [qid for (qid,) in db.execute("SELECT queue_id FROM messages ORDER BY id")]

    with pytest.raises(SchemaVersionError, match=r"before schema migrations.*mailsvc db upgrade"):
        await start_service(settings, scheduler=False)
    checks = {name: (ok, detail) for name, ok, detail in await run_checks(settings)}
    assert checks["directory"][0] and checks["mailstore"][0], checks
    ok, detail = checks["database"]
    assert not ok and "mailsvc db upgrade" in detail, detail

    upgrade = argparse.Namespace(action="upgrade")
    assert await asyncio.to_thread(cmd_db, settings, upgrade) == 0
    service = await start_service(settings, scheduler=False)
    try:
        shown = [await service.queue.show(qid) for qid in queued]
        assert [m.mail_from if m else None for m in shown] == ["mieszkaniec@example.org", ""]
        checks = {name: (ok, detail) for name, ok, detail in await run_checks(settings)}
        assert checks["database"] == (True, f"sqlite+aiosqlite, schema {schema.head()}")
    finally:
        await service.stop()
